"""The ensemble over gRPC on a live local tritonserver, and the `route` command."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from model_selector.core.config import load_config
from model_selector.data.loaders import load_mmlu_pro, load_natural_prompts
from model_selector.serve.client import RouterClient, RouterUnavailable, route
from model_selector.serve.server import free_ports

from .conftest import CONFIG

SEED_QUERY = "Calculate the derivative of sin(x) * cos(x)"
HEADERS = ["x-vsr-selected-model", "x-vsr-selected-decision", "x-vsr-selected-category",
           "x-vsr-selected-algorithm", "x-vsr-selected-confidence", "x-selected-model"]


def test_route_returns_every_header(server):
    config = load_config(CONFIG)
    headers = route(SEED_QUERY, server.grpc_url)
    assert list(headers) == HEADERS
    assert headers["x-vsr-selected-model"] in config.model_names
    assert headers["x-selected-model"] == headers["x-vsr-selected-model"]
    assert headers["x-vsr-selected-decision"] in {d.name for d in config.decisions} | {""}
    assert headers["x-vsr-selected-algorithm"] in {"knn", "kmeans", "svm", "mlp", "single", "default"}
    assert re.fullmatch(r"[01]\.\d{4}", headers["x-vsr-selected-confidence"])


@pytest.mark.parametrize("query, domain, decision", [
    ("What must a plaintiff prove to win a negligence lawsuit?", "law", "humanities_decision"),
    ("What were the main causes of World War I?", "history", "humanities_decision"),
    ("What are the early symptoms of type 2 diabetes and how is it treated?", "health", "health_decision"),
    ("Explain how a rise in interest rates affects bond prices.", "economics", "business_decision"),
    ("What is the time complexity of quicksort?", "computer science", "code_decision"),
    ("How do I create a for loop in JavaScript?", "computer science", "code_decision"),
    ("Calculate the derivative of sin(x) * cos(x)", "math", "math_decision"),
])
def test_short_natural_questions_reach_their_domain(server, query, domain, decision):
    headers = route(query, server.grpc_url)
    assert (headers["x-vsr-selected-category"], headers["x-vsr-selected-decision"]) == (domain, decision)


def _natural_validation_sample(per_domain: int = 4) -> tuple[list[str], list[str]]:
    """A fixed random sample of the natural validation prompts (never trained on), `per_domain` of each
    domain, ordered by a hash of the text."""
    _, validation = load_natural_prompts()
    order = sorted(range(len(validation)),
                   key=lambda i: hashlib.sha256(f"serving-test:{validation.queries[i]}".encode()).hexdigest())
    picked: dict[str, list[str]] = {}
    for i in order:
        if len(picked.setdefault(validation.categories[i], [])) < per_domain:
            picked[validation.categories[i]].append(validation.queries[i])
    return [q for qs in picked.values() for q in qs], [c for c, qs in picked.items() for _ in qs]


def test_natural_prompts_of_every_domain_reach_their_domain(server, built_repository):
    """Real prompts (code, pasted text, other languages), 4 of each domain: the served ensemble routes them as
    the in-process graphs do, most to their own domain (0.85 on the whole validation split), few unrouted."""
    from model_selector.measure.router import InProcessRouter

    queries, categories = _natural_validation_sample()
    with RouterClient(server.grpc_url) as client:
        served = client.select(queries)
    router = InProcessRouter(built_repository)
    for query, routed in zip(queries, served):
        expected = router.route_query(query)
        assert (routed.domain, routed.decision, routed.selected_model) == \
               (expected.domain, expected.decision, expected.selected_model), query[:60]
    accuracy = np.mean([r.domain == c for r, c in zip(served, categories)])
    assert len(queries) == 56 and accuracy >= 0.75, accuracy
    assert np.mean([not r.decision for r in served]) <= 0.05


def _mixed_length_queries() -> list[str]:
    bench = load_mmlu_pro(load_config(CONFIG).model_names)
    by_length = sorted(bench.queries, key=len)
    long_ones = [by_length[int(i)] for i in np.linspace(0, len(by_length) - 1, 10)]
    return [SEED_QUERY, "hi", "", "How do I create a for loop in JavaScript?",
            "What were the main causes of World War I?", "日本の首都はどこですか？ 🚀"] + long_ones


def test_query_alone_equals_query_in_a_batch_of_16(server):
    queries = _mixed_length_queries()
    assert len(queries) == 16 and len({len(q) for q in queries}) >= 12
    with RouterClient(server.grpc_url) as client:
        batched = client.select(queries)
        alone = [client.select([q])[0] for q in queries]
    for query, b, a in zip(queries, batched, alone):
        assert (b.selected_model, b.decision, b.domain, b.algorithm) == \
               (a.selected_model, a.decision, a.domain, a.algorithm), query[:60]
        assert b.confidence == pytest.approx(a.confidence, abs=1e-4)
        assert b.domain_confidence == pytest.approx(a.domain_confidence, abs=1e-4)


def test_routes_are_counted_in_metrics(server):
    route(SEED_QUERY, server.grpc_url)
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    assert re.search(r'^model_selector_routes_total\{.*model="[^"]+".*\} [1-9]', body, re.M)


def test_route_command_prints_headers(server):
    out = subprocess.run([sys.executable, "-m", "model_selector.cli", "route", SEED_QUERY, "--url", server.grpc_url],
                         capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == HEADERS
    as_json = subprocess.run([sys.executable, "-m", "model_selector.cli", "route", SEED_QUERY, "--url",
                              server.grpc_url, "--json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(as_json)["x-vsr-selected-model"] == lines[0].split(": ")[1]


def test_route_with_no_server_says_so():
    (port,) = free_ports(1)
    with pytest.raises(RouterUnavailable, match="not reachable.*model-selector serve"):
        route(SEED_QUERY, f"127.0.0.1:{port}")
    result = subprocess.run([sys.executable, "-m", "model_selector.cli", "route", SEED_QUERY, "--url",
                             f"127.0.0.1:{port}"], capture_output=True, text=True)
    assert result.returncode == 2 and "not reachable" in result.stderr


def test_serve_refuses_an_unbuilt_repository(tmp_path):
    from model_selector.serve.server import LocalTritonServer, ServeError

    with pytest.raises(ServeError, match="run `model-selector build`"):
        LocalTritonServer(tmp_path / "nowhere").start()
    (tmp_path / "repo" / "text_embedding").mkdir(parents=True)
    (tmp_path / "repo" / "text_embedding" / "config.pbtxt").write_text('name: "text_embedding"\nbackend: "onnxruntime"\n')
    with pytest.raises(ServeError, match=r"broken build output: .*text_embedding/1/model.onnx is missing.*--force"):
        LocalTritonServer(tmp_path / "repo").start()


def test_a_stopped_server_leaves_no_runtime_copy_and_a_failed_one_keeps_its_log(built_repository):
    from model_selector.serve.server import LocalTritonServer, ServeError

    with LocalTritonServer.on_free_ports(built_repository, watchdog=False) as running:
        runtime = running.runtime
        assert (runtime / "models").is_dir()
    assert not runtime.exists()

    failing = LocalTritonServer.on_free_ports(built_repository, watchdog=False, extra_args=("--log-verbose=loud",))
    with pytest.raises(ServeError, match=r"exited with code \d+ before it was ready") as refused:
        failing.start()
    assert f"(full log: {failing.log_file})" in str(refused.value)
    assert "log-verbose" in failing.log_file.read_text()
    assert sorted(p.name for p in failing.runtime.iterdir()) == ["tritonserver.log"]
    shutil.rmtree(failing.runtime)
