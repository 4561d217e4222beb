"""Hardening against a real local tritonserver: bad requests over gRPC and HTTP, overload,
a killed python stub, broken build outputs, live reload, and what a server must not leak.

Each test records what it exercised (requests, failures, latencies, memory); the figures
are printed at the end of the pytest run."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio_grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

import model_selector
from model_selector.core import layout
from model_selector.core.config import load_config
from model_selector.core.contract import ENSEMBLE
from model_selector.core.layout import BrokenRepository, check_built
from model_selector.measure.benchmark import LoadGenerator, process_tree_rss_mb, query_sets
from model_selector.serve.client import RouterClient
from model_selector.serve.lifecycle import ReloadError, reload_config, reload_selectors
from model_selector.serve.runtime import SYS_PATH_HEADER
from model_selector.serve.server import LocalTritonServer, ServeError

from .conftest import CONFIG

MATH = "Calculate the derivative of sin(x) * cos(x)"
HISTORY = "What were the main causes of World War I?"


def grpc_infer(url: str, data: np.ndarray, datatype: str = "BYTES", name: str = "query"):
    tensor = grpcclient.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    with grpcclient.InferenceServerClient(url) as client:
        return client.infer(ENSEMBLE, [tensor], client_timeout=60)


def texts(*queries) -> np.ndarray:
    return np.array([[q if isinstance(q, bytes) else q.encode("utf-8")] for q in queries], dtype=np.object_)


ODD_QUERIES = {
    "empty": b"",
    "whitespace": b" \t\n  ",
    "1 MB": ("The quick brown fox jumps over the lazy dog. " * 23_302).encode()[: 1 << 20],
    "invalid UTF-8": b"\xff\xfe\xc3\x28 what is \xa0\xa1 entropy?",
    "NUL bytes": b"what is\x00 the\x00 derivative of x^2?",
    "CJK": "量子力学中的不确定性原理是什么？".encode(),
    "emoji": "🚀🔥 how do rockets work? 🌕".encode(),
    "right-to-left": "ما هي أسباب الحرب العالمية الأولى؟".encode(),
}


@pytest.mark.parametrize("kind", list(ODD_QUERIES))
def test_odd_texts_are_routed(server, kind):
    result = grpc_infer(server.grpc_url, texts(ODD_QUERIES[kind]))
    model = result.as_numpy("selected_model").reshape(-1)[0].decode()
    assert model in load_config(CONFIG).model_names


def test_odd_rows_do_not_change_their_neighbours_routes(server):
    with RouterClient(server.grpc_url) as client:
        alone = client.select([MATH, HISTORY])
    result = grpc_infer(server.grpc_url, texts(MATH, *ODD_QUERIES.values(), HISTORY))
    models = [m.decode() for m in result.as_numpy("selected_model").reshape(-1)]
    decisions = [d.decode() for d in result.as_numpy("decision").reshape(-1)]
    assert (models[0], decisions[0]) == (alone[0].selected_model, alone[0].decision)
    assert (models[-1], decisions[-1]) == (alone[1].selected_model, alone[1].decision)


BAD_GRPC_REQUESTS = {
    "wrong dtype": (lambda: np.array([[7]], dtype=np.int32), "INT32", "query",
                    r"data-type is 'INT32', but model 'model_selector' expects 'BYTES'"),
    "wrong shape": (lambda: texts("a", "b").reshape(1, 2), "BYTES", "query", r"unexpected shape for input 'query'"),
    "batch over max_batch_size": (lambda: texts(*["q"] * 65), "BYTES", "query",
                                  r"batch-size must be <= 64"),
    "unknown input": (lambda: texts("a"), "BYTES", "question", r"unexpected inference input 'question'"),
}


@pytest.mark.parametrize("case", list(BAD_GRPC_REQUESTS))
def test_malformed_grpc_requests_get_invalid_arg(server, case):
    make, datatype, name, message = BAD_GRPC_REQUESTS[case]
    with pytest.raises(InferenceServerException, match=message) as info:
        grpc_infer(server.grpc_url, make(), datatype, name)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_missing_input_gets_invalid_arg(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as client, \
            pytest.raises(InferenceServerException, match="expected 1 inputs but got 0") as info:
        client.infer(ENSEMBLE, [])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_bad_requests_do_not_disturb_concurrent_good_ones(server, measurements):
    bad = list(BAD_GRPC_REQUESTS.values())
    outcomes: list[tuple[str, str]] = []

    def send(i: int) -> None:
        if i % 2:
            make, datatype, name, _ = bad[i // 2 % len(bad)]
            try:
                grpc_infer(server.grpc_url, make(), datatype, name)
                outcomes.append(("bad", "answered"))
            except InferenceServerException as err:
                outcomes.append(("bad", err.status()))
        else:
            result = grpc_infer(server.grpc_url, texts(MATH))
            outcomes.append(("good", result.as_numpy("decision").reshape(-1)[0].decode()))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(outcomes)
    assert counts == {("good", "math_decision"): 32, ("bad", "StatusCode.INVALID_ARGUMENT"): 32}
    measurements.append(f"bad requests mixed with good ones: {dict(counts)}")


def _http_infer(server, body: bytes | dict) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"http://127.0.0.1:{server.http_port}/v2/models/{ENSEMBLE}/infer", content=content,
                      headers={"content-type": "application/json"}, timeout=60)


def _json_query(*queries: str | int, datatype: str = "BYTES", shape: list[int] | None = None) -> dict:
    return {"inputs": [{"name": "query", "datatype": datatype, "shape": shape or [len(queries), 1],
                        "data": list(queries)}]}


def test_http_json_requests(server):
    response = _http_infer(server, _json_query(MATH, "量子力学", "🚀 what\u0000 is thrust?", "ما هي الجاذبية؟", ""))
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["decision"][0] == "math_decision" and len(outputs["selected_model"]) == 5

    for body, status, message in [
        # Triton's HTTP frontend answers an unparsable body with 500, and says why.
        (b'{"inputs": [', 500, "failed to parse the request JSON buffer"),
        (_json_query(7, datatype="INT32"), 400, "expects 'BYTES'"),
        ({"inputs": []}, 400, "expected 1 inputs but got 0"),
        (_json_query(*["q"] * 65), 400, "batch-size must be <= 64"),
        (_json_query("a", "b", shape=[1, 2]), 400, "unexpected shape for input 'query'"),
    ]:
        response = _http_infer(server, body)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["error"], response.text


def test_invalid_utf8_over_http_binary_tensors(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    tensor = httpclient.InferInput("query", [2, 1], "BYTES")
    tensor.set_data_from_numpy(texts(ODD_QUERIES["invalid UTF-8"], MATH), binary_data=True)
    result = client.infer(ENSEMBLE, [tensor])
    assert [d.decode() for d in result.as_numpy("decision").reshape(-1)][1] == "math_decision"
    client.close()


def test_an_overload_burst_is_refused_quickly_and_nothing_hangs(server, measurements):
    burst, limit_s = 2000, 60.0

    async def run() -> list[tuple[str, float]]:
        clients = [aio_grpcclient.InferenceServerClient(server.grpc_url) for _ in range(4)]

        async def one(i: int) -> tuple[str, float]:
            tensor = aio_grpcclient.InferInput("query", [1, 1], "BYTES")
            tensor.set_data_from_numpy(texts(f"burst question {i}: what is the speed of light?"))
            started = time.perf_counter()
            try:
                await clients[i % 4].infer(ENSEMBLE, [tensor], client_timeout=limit_s)
                return "ok", time.perf_counter() - started
            except InferenceServerException as err:
                kind = "rejected" if err.status() == "StatusCode.UNAVAILABLE" and \
                    "Exceeds maximum queue size" in err.message() else f"{err.status()}: {err.message()}"
                return kind, time.perf_counter() - started

        try:
            return await asyncio.gather(*(one(i) for i in range(burst)))
        finally:
            for client in clients:
                await client.close()

    started = time.perf_counter()
    outcomes = asyncio.run(run())
    elapsed = time.perf_counter() - started
    kinds = Counter(kind for kind, _ in outcomes)
    assert set(kinds) <= {"ok", "rejected"}, kinds
    assert kinds["ok"] > 0 and kinds["rejected"] > 0, kinds
    assert elapsed < limit_s
    rejected = sorted(t for kind, t in outcomes if kind == "rejected")
    served = sorted(t for kind, t in outcomes if kind == "ok")
    measurements.append(f"burst of {burst}: {kinds['ok']} served (max {served[-1]:.2f} s), {kinds['rejected']} "
                        f"refused with UNAVAILABLE (median {np.median(rejected):.3f} s, max {rejected[-1]:.3f} s), "
                        f"0 hung; {elapsed:.1f} s in all")
    with RouterClient(server.grpc_url) as client:  # and the server goes on serving
        assert client.select([MATH])[0].decision == "math_decision"


@pytest.mark.slow
def test_soak_20000_requests_at_concurrency_64(server, measurements):
    queries = query_sets()["short"]
    total, concurrency = 20_000, 64

    async def run() -> tuple[list[float], list[float], float, list[str], float, float]:
        load = LoadGenerator(server.grpc_url, queries)
        try:
            await load.closed_loop(concurrency, 2000, 0)  # warm-up: caches and allocators settle
            rss_before = process_tree_rss_mb(server.process.pid)
            latencies, elapsed = await load.closed_loop(concurrency, total, 2000)
            rss_after = process_tree_rss_mb(server.process.pid)
            return latencies, elapsed, load.errors, rss_before, rss_after
        finally:
            await load.close()

    latencies, elapsed, errors, rss_before, rss_after = asyncio.run(run())
    tenth = len(latencies) // 10
    p99_first = float(np.percentile(latencies[:tenth], 99)) * 1000
    p99_last = float(np.percentile(latencies[-tenth:], 99)) * 1000
    measurements.append(
        f"soak: {total} requests at concurrency {concurrency} in {elapsed:.0f} s ({total / elapsed:.0f} req/s), "
        f"{len(errors)} failures; p99 first tenth {p99_first:.0f} ms, last tenth {p99_last:.0f} ms; server RSS "
        f"{rss_before:.0f} -> {rss_after:.0f} MB ({(rss_after / rss_before - 1) * 100:+.1f}%)")
    assert errors == [] and len(latencies) == total
    assert p99_last <= 2 * p99_first
    assert rss_after < 1.10 * rss_before


# --- a server of its own: these tests kill stubs and reload models ----------------------

@pytest.fixture(scope="module")
def own_repository(built_repository, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("hardening") / "model_repository"
    shutil.copytree(built_repository, copy)
    return copy


@pytest.fixture(scope="module")
def own_server(own_repository):
    with LocalTritonServer.on_free_ports(own_repository) as running:
        yield running


class Traffic:
    """Closed-loop routing of one query from a few threads, recording every outcome."""

    def __init__(self, url: str, query: str = MATH, threads: int = 4):
        self.url, self.query = url, query
        self.outcomes: list[tuple[float, float, str | None, str | None]] = []  # start, end, model, error
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with RouterClient(self.url) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    model, error = client.select([self.query])[0].selected_model, None
                except InferenceServerException as err:
                    model, error = None, err.message()
                self.outcomes.append((started, time.monotonic(), model, error))

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    @property
    def failures(self) -> list[tuple[float, float, str | None, str | None]]:
        return [o for o in self.outcomes if o[3] is not None]


def _stub_pid(server: LocalTritonServer, model: str) -> int | None:
    """The python stub of `model` in this server's runtime repository."""
    model_py = f"{server.runtime}/models/{model}/".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"triton_python_backend_stub") and argv[1].startswith(model_py):
                return int(entry.name)
    return None


def test_a_killed_decision_stub_is_restarted(own_server, measurements):
    pid = _stub_pid(own_server, layout.DECISION)
    assert pid is not None
    with Traffic(own_server.grpc_url) as traffic:
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        time.sleep(8.0)
    failures = traffic.failures
    assert failures  # requests in flight to the dead stub fail: the kill was felt
    assert all("Stub process 'decision_0_0' is not healthy" in f[3] for f in failures), failures[:3]
    recovered_at = max((f[1] for f in failures), default=killed_at)
    assert recovered_at - killed_at < 10.0
    after = [o for o in traffic.outcomes if o[0] > recovered_at]
    assert len(after) > 50 and all(o[3] is None for o in after)
    assert own_server.watchdog.restarts == [layout.DECISION]
    assert _stub_pid(own_server, layout.DECISION) not in (None, pid)
    in_flight = sum(1 for f in failures if f[0] <= killed_at)
    late = max((f[0] - killed_at for f in failures if f[0] > killed_at), default=0.0)
    measurements.append(f"decision stub killed under load (4 clients): {len(failures)} of {len(traffic.outcomes)} "
                        f"requests failed ({in_flight} in flight at the kill, the others sent within {late:.1f} s "
                        f"of it), the last answered {recovered_at - killed_at:.1f} s after the kill; "
                        f"{len(after)} requests after that, 0 failures")


def _config_routing_math_to(model: str, path: Path) -> Path:
    data = yaml.safe_load(CONFIG.read_text())
    data["decisions"][0]["modelRefs"] = [{"model": model}]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_live_reload_of_router_yaml_and_selectors_loses_nothing(own_server, own_repository, tmp_path,
                                                                measurements):
    new_config = _config_routing_math_to("mathstral-7B", tmp_path / "router.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text(new_config.read_text().replace("name: math\n", "name: maths\n", 1))
    with Traffic(own_server.grpc_url) as traffic:
        time.sleep(1.0)
        reloaded = reload_config(own_server.grpc_url, new_config, own_repository)
        switched_at = time.monotonic()
        time.sleep(1.0)
        with pytest.raises(ReloadError, match="unknown domain 'maths'.*keeps its configuration|"
                                              "keeps its configuration.*unknown domain 'maths'"):
            reload_config(own_server.grpc_url, broken, own_repository)
        result = subprocess.run([sys.executable, "-m", "model_selector.cli", "reload", "--url", own_server.grpc_url,
                                 "--config", str(broken), "--repository", str(own_repository)],
                                capture_output=True, text=True)
        assert result.returncode == 2 and "unknown domain 'maths'" in result.stderr
        reload_selectors(own_server.grpc_url, own_repository)
        time.sleep(1.0)
    assert reloaded.model == layout.DECISION and reloaded.version >= 2
    assert traffic.failures == []
    late = [o[2] for o in traffic.outcomes if o[0] > switched_at + 0.1]
    assert late and set(late) == {"mathstral-7B"}
    assert (own_repository / layout.DECISION / layout.VERSION / "router.yaml").read_text() == new_config.read_text()
    measurements.append(f"live reload (router.yaml, refused broken config, router_heads + decision) under load: "
                        f"{len(traffic.outcomes)} requests, 0 failures")


def test_a_decision_with_the_mlp_algorithm_routes_as_in_process(own_server, own_repository, tmp_path):
    """`algorithm: {type: mlp}`, as the reference's current e2e profile sets for math, served live:
    the served ensemble picks what the same graphs and decision engine pick in-process."""
    from model_selector.measure.router import InProcessRouter

    original = (own_repository / layout.DECISION / layout.VERSION / "router.yaml").read_text()
    data = yaml.safe_load(CONFIG.read_text())
    data["decisions"][0]["algorithm"] = {"type": "mlp"}
    mlp_config = tmp_path / "router.yaml"
    mlp_config.write_text(yaml.safe_dump(data, sort_keys=False))
    queries = [MATH, "Solve for x: 3x + 7 = 22", "What is the integral of 1/x?", "Prove that the square root of 2 "
               "is irrational."]
    try:
        reload_config(own_server.grpc_url, mlp_config, own_repository)
        with RouterClient(own_server.grpc_url) as client:
            served = client.select(queries)
        in_process = InProcessRouter(own_repository)
        expected = [in_process.route_query(q) for q in queries]
    finally:
        original_path = tmp_path / "original.yaml"
        original_path.write_text(original)
        reload_config(own_server.grpc_url, original_path, own_repository)
    math = [r for r in served if r.decision == "math_decision"]
    assert len(math) >= 3 and {r.algorithm for r in math} == {"mlp"}
    assert [(r.decision, r.algorithm, r.selected_model) for r in served] == \
        [(r.decision, r.algorithm, r.selected_model) for r in expected]


def test_a_config_the_server_cannot_load_leaves_the_old_one_serving(own_server, own_repository):
    """Bypass the client-side check: Triton itself must keep the old decision model."""
    with grpcclient.InferenceServerClient(own_server.grpc_url) as client:
        served = client.get_model_config(layout.DECISION, as_json=True)["config"]
        served["version_policy"] = {"latest": {"num_versions": 1}}
        decision_dir = own_repository / layout.DECISION / layout.VERSION
        files = {"file:1/model.py": (SYS_PATH_HEADER + (decision_dir / "model.py").read_text()).encode(),
                 "file:1/router.yaml": b"models: [unclosed",
                 "file:1/selectors.json": (decision_dir / "selectors.json").read_bytes()}
        with pytest.raises(InferenceServerException, match="invalid YAML"):
            client.load_model(layout.DECISION, config=json.dumps(served), files=files)
    with RouterClient(own_server.grpc_url) as client:
        assert client.select([MATH])[0].decision == "math_decision"


@pytest.mark.parametrize("target, content, message", [
    ("text_embedding/1/model.onnx", b"not a protobuf", r"text_embedding/1/model.onnx is unreadable"),
    ("tokenizer/1/tokenizer.json", b"{\"version\": ", r"tokenizer/1/tokenizer.json is unreadable"),
    ("decision/1/router.yaml", b"models: [unclosed", r"decision/1/router.yaml is unreadable \(.*invalid YAML"),
    ("decision/1/selectors.json", None, r"decision/1/selectors.json is missing"),
])
def test_broken_build_outputs_are_refused_by_name(built_repository, tmp_path, target, content, message):
    copy = tmp_path / "model_repository"
    shutil.copytree(built_repository, copy, symlinks=True, ignore=shutil.ignore_patterns("model.onnx"))
    for name in layout.ONNX_MODELS:
        (copy / name / layout.VERSION / "model.onnx").symlink_to(built_repository / name / layout.VERSION / "model.onnx")
    (copy / target).unlink()
    if content is not None:
        (copy / target).write_bytes(content)
    with pytest.raises(BrokenRepository, match=message + r".*model-selector build --force"):
        check_built(copy)
    with pytest.raises(ServeError, match=message):
        LocalTritonServer(copy).start()


@pytest.mark.parametrize("command", ["serve", "gateway", "mock-llm", "demo"])
def test_every_server_binds_to_localhost_by_default(command):
    from model_selector.cli.main import build_parser

    assert build_parser().parse_args([command]).host == "127.0.0.1"


def test_query_text_stays_out_of_the_server_log(server):
    marker = "zebra-marker-7c1f: what is the airspeed velocity of an unladen swallow?"
    with RouterClient(server.grpc_url) as client:
        client.select([marker])
    assert marker not in server.log_file.read_text(errors="replace")


PACKAGE = Path(model_selector.__file__).parent
SERVING_CODE = sorted([*PACKAGE.glob("triton_models/*/model.py"), *PACKAGE.glob("core/*.py"),
                       *PACKAGE.glob("serve/*.py")])


@pytest.mark.parametrize("path", SERVING_CODE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_serving_code_never_unpickles(path):
    import re

    source = path.read_text()
    for pattern in (r"\bimport pickle\b", r"\bjoblib\b", r"\bcloudpickle\b", r"torch\.load", r"allow_pickle\s*=\s*True",
                    r"yaml\.load\(", r"yaml\.unsafe_load", r"\bdill\b"):
        assert not re.search(pattern, source), f"{path}: {pattern}"
