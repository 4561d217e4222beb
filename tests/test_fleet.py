"""A fleet in miniature: one gateway in front of two real tritonservers. Requests spread over both,
and losing one mid-load loses no request. Plus the address forms `--url` accepts."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
import tritonclient.grpc as grpcclient

from model_selector.core.contract import ENSEMBLE
from model_selector.serve.client import DNS_ATTEMPTS, Replicas, RouterClient, parse_targets
from model_selector.serve.server import LocalTritonServer, free_ports

from .test_gateway import API_KEY_ENV, MATH_QUERY, _start, chat, gateway_config, mock_llms  # noqa: F401

QUERIES = [MATH_QUERY, "How do I create a for loop in JavaScript?", "What is the statute of limitations for fraud?",
           "What causes inflation to rise?", "Who won the battle of Hastings?", "What are symptoms of anemia?"]


def test_url_forms_and_their_errors():
    assert parse_targets("localhost:8001") == ["localhost:8001"]
    assert parse_targets(" a:8001, b:8001 ,a:8001") == ["a:8001", "b:8001"]
    assert parse_targets("dns:///triton-headless.ns.svc:8001") == ["dns:///triton-headless.ns.svc:8001"]
    for bad in ["", "localhost", "a:8001,b", "http://a:8001", "a:port"]:
        with pytest.raises(ValueError, match="host:port"):
            parse_targets(bad)


def test_replicas_take_turns_and_skip_one_that_just_failed():
    replicas = Replicas(["a:1", "b:1", "c:1"], cooldown_s=60)
    assert [replicas.attempts()[0] for _ in range(4)] == ["a:1", "b:1", "c:1", "a:1"]
    replicas.failed("b:1")
    assert replicas.attempts() == ["c:1", "a:1", "b:1"]  # b's turn, but it failed: tried last
    assert replicas.attempts() == ["c:1", "a:1", "b:1"]
    replicas.answered("b:1", [])
    assert replicas.attempts() == ["a:1", "b:1", "c:1"]
    assert Replicas(["dns:///t:1"]).attempts() == ["dns:///t:1"] * DNS_ATTEMPTS


def test_a_dns_name_routes_with_round_robin_balancing(server):
    """`dns:///name:port` is a gRPC target with round-robin over the name's records (one here)."""
    with RouterClient(f"dns:///localhost:{server.grpc_port}") as client:
        assert client.select([MATH_QUERY])[0].decision == "math_decision"


def test_gateway_bad_url_is_one_clear_error():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "model_selector.cli", "gateway", "--url", "triton"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "bad Triton address 'triton'" in result.stderr
    assert "Traceback" not in result.stderr


def _ensemble_count(url: str) -> int:
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(ENSEMBLE, as_json=True)
    return int(stats["model_stats"][0].get("inference_count", 0))


@pytest.mark.slow
def test_the_gateway_spreads_over_two_replicas_and_survives_losing_one(server, gateway_config, mock_llms,
                                                                        measurements):
    second = LocalTritonServer.on_free_ports(server.repository, watchdog=False)
    second.start()
    (port,) = free_ports(1)
    gateway = _start(["gateway", "--url", f"{server.grpc_url},{second.grpc_url}", "--config", str(gateway_config)],
                     port, env={API_KEY_ENV: "secret"})
    url = f"http://127.0.0.1:{port}"
    answered: list[tuple[float, int, str | None]] = []  # (when, status, the routing decision header)
    stop = threading.Event()

    def load(worker: int) -> None:
        i = worker
        while not stop.is_set():
            response = chat(url, QUERIES[i % len(QUERIES)])
            answered.append((time.monotonic(), response.status_code, response.headers.get("x-vsr-selected-decision")))
            i += 1

    try:
        assert httpx.get(f"{url}/ready", timeout=10).status_code == 200
        before = {u: _ensemble_count(u) for u in (server.grpc_url, second.grpc_url)}
        workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(4)
        spread = {u: _ensemble_count(u) - before[u] for u in before}
        os.killpg(second.process.pid, signal.SIGKILL)  # the replica, its python stubs, mid-load
        killed_at = time.monotonic()
        time.sleep(5)
        stop.set()
        for worker in workers:
            worker.join(90)
        assert httpx.get(f"{url}/ready", timeout=10).status_code == 200  # one replica left is enough
    finally:
        stop.set()
        gateway.terminate()
        gateway.wait(10)
        second.stop()

    results = [(when - killed_at, status, decision) for when, status, decision in answered]
    before_kill = [r for r in results if r[0] < 0]
    after_kill = [r for r in results if r[0] >= 0]
    failures = [r for r in results if r[1] != 200]
    late_failures = [r for r in after_kill if r[1] != 200 and r[0] > 1.0]
    measurements.append(f"fleet: {len(before_kill)} requests over 2 replicas (ensemble calls {spread}), "
                        f"{len(after_kill)} after one was killed; {len(failures)} failed "
                        f"({len(late_failures)} later than 1 s after the kill)")
    assert all(n >= 5 for n in spread.values()), spread  # both replicas served a share of the load
    assert min(spread.values()) >= 0.25 * sum(spread.values()), spread
    assert len(after_kill) >= 20
    assert not late_failures and not failures, failures[:5]  # retried on the surviving replica
    assert all(r[2] is not None for r in results)  # every answer carries its routing headers


def test_restricted_model_control_reloads_only_with_its_header(built_repository, tmp_path):
    """The chart's `modelControl.mode: explicit`: Triton's model-repository protocol behind a header.
    Routing needs no header; `model-selector reload` without it is refused, with it served."""
    import shutil
    import subprocess
    import sys

    from .conftest import CONFIG

    repository = tmp_path / "model_repository"
    shutil.copytree(built_repository, repository)
    restricted = "model-repository,shared-memory,trace,logging:model-control-key=s3cret"
    with LocalTritonServer.on_free_ports(repository, watchdog=False,
                                         extra_args=(f"--grpc-restricted-protocol={restricted}",)) as server:
        with RouterClient(server.grpc_url) as client:
            assert client.select([MATH_QUERY])[0].decision == "math_decision"

        def reload(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "model_selector.cli", "reload", "--url", server.grpc_url,
                                   "--config", str(CONFIG), "--repository", str(repository), *extra],
                                  capture_output=True, text=True, timeout=120)

        refused = reload()
        assert refused.returncode == 2 and "--header NAME=VALUE" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert "triton-grpc-protocol-model-control-key" in refused.stderr  # Triton names the header it expects
        assert reload("--header", "triton-grpc-protocol-model-control-key=wrong").returncode == 2
        served = reload("--header", "triton-grpc-protocol-model-control-key=s3cret")
        assert served.returncode == 0 and "decision: now serving version 2" in served.stdout, served.stderr
        with RouterClient(server.grpc_url) as client:
            assert client.select([MATH_QUERY])[0].decision == "math_decision"
