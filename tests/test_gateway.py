"""The OpenAI-compatible gateway over real HTTP: gateway and mock LLMs (started with the CLI)
in front of the real local tritonserver."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from model_selector.core.config import load_config
from model_selector.serve.client import route
from model_selector.serve.gateway import GatewayError, create_gateway_app, routing_text, serve_in_thread
from model_selector.serve.server import free_ports
from tests.test_gateway_app import BAD_REQUESTS

from .conftest import CONFIG

MATH_QUERY = "Calculate the derivative of sin(x) * cos(x)"
KEYED_MODEL = "Phi-3-mini-4k-instruct"  # behind a mock that demands an API key
DEAD_MODEL = "Mistral-7B-Instruct-v0.2"  # its endpoint is down
PLAIN_MODEL = "DeepSeek-Coder-V2"
API_KEY_ENV = "MODEL_SELECTOR_TEST_PHI_KEY"


def _start(args: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "model_selector.cli", *args, "--port", str(port)],
                               env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"{args[0]} did not start on port {port}")


MOCK_PORT, KEYED_MOCK_PORT, DEAD_PORT = free_ports(3)


@pytest.fixture(scope="module")
def gateway_config(tmp_path_factory) -> Path:
    """configs/router.yaml with every model on one mock LLM, one model behind a keyed mock and one on a dead port."""
    data = yaml.safe_load(CONFIG.read_text())
    data["gateway"]["upstream"]["base_url"] = f"http://127.0.0.1:{MOCK_PORT}/v1"
    for model in data["models"]:
        if model["name"] == KEYED_MODEL:
            model.update(base_url=f"http://127.0.0.1:{KEYED_MOCK_PORT}/v1", upstream_model="phi-3-mini",
                         api_key_env=API_KEY_ENV)
        if model["name"] == DEAD_MODEL:
            model["base_url"] = f"http://127.0.0.1:{DEAD_PORT}/v1"
    path = tmp_path_factory.mktemp("gateway") / "router.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def mock_llms():
    processes = [_start(["mock-llm"], MOCK_PORT), _start(["mock-llm", "--api-key", "secret"], KEYED_MOCK_PORT)]
    yield
    for process in processes:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def gateway(server, gateway_config, mock_llms):
    (port,) = free_ports(1)
    process = _start(["gateway", "--url", server.grpc_url, "--config", str(gateway_config)], port,
                     env={API_KEY_ENV: "secret"})
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


def chat(url: str, content: str | list, model: str = "auto", **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": content}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def answer(response: httpx.Response) -> str:
    return response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("alias", ["auto", "MoM"])
def test_routed_request_reaches_the_chosen_model_with_routing_headers(gateway, server, alias):
    response = chat(gateway, MATH_QUERY, model=alias)
    assert response.status_code == 200, response.text
    expected = route(MATH_QUERY, server.grpc_url)  # the same query straight through the ensemble
    for name in ("x-vsr-selected-model", "x-vsr-selected-decision", "x-vsr-selected-category",
                 "x-vsr-selected-algorithm", "x-vsr-selected-confidence"):
        assert response.headers[name] == expected[name], name
    assert response.headers["x-vsr-selected-decision"] == "math_decision"
    selected = response.headers["x-vsr-selected-model"]
    assert answer(response) == f"[{selected}] mock answer to: {MATH_QUERY}"
    assert response.headers["x-mock-received-selected-model"] == selected  # sent upstream


def test_routing_uses_the_last_user_message_and_text_parts(gateway, server):
    parts = [{"type": "text", "text": "What were the main causes"}, {"type": "text", "text": "of World War I?"}]
    response = chat(gateway, parts)
    assert response.status_code == 200, response.text
    assert response.headers["x-vsr-selected-category"] == "history"
    assert response.headers["x-vsr-selected-model"] == \
        route("What were the main causes of World War I?", server.grpc_url)["x-vsr-selected-model"]


def test_streaming_passes_chunks_through(gateway):
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", timeout=60, json={
            "model": "auto", "stream": True, "messages": [{"role": "user", "content": MATH_QUERY}]}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-vsr-selected-decision"] == "math_decision"
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) > 5
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    selected = response.headers["x-vsr-selected-model"]
    assert text == f"[{selected}] mock answer to: {MATH_QUERY}"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_named_model_passes_through_unrouted(gateway):
    response = chat(gateway, MATH_QUERY, model=PLAIN_MODEL)
    assert response.status_code == 200
    assert response.headers["x-vsr-selected-model"] == PLAIN_MODEL
    assert "x-vsr-selected-decision" not in response.headers
    assert response.headers["x-mock-received-selected-model"] == PLAIN_MODEL
    assert answer(response).startswith(f"[{PLAIN_MODEL}]")


def test_upstream_model_id_and_api_key_come_from_the_config(gateway):
    response = chat(gateway, "hello", model=KEYED_MODEL)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "phi-3-mini"
    assert response.headers["x-vsr-selected-model"] == KEYED_MODEL


@pytest.mark.parametrize("body, status, message", BAD_REQUESTS)
def test_bad_requests_get_openai_errors(gateway, body, status, message):
    response = httpx.post(f"{gateway}/v1/chat/completions", content=body, timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    if status == 404:
        assert error["code"] == "model_not_found" and "auto" in error["message"]


def test_an_oversized_body_is_refused_and_a_long_message_is_routed(gateway):
    from model_selector.serve.gateway import MAX_BODY_BYTES

    too_big = chat(gateway, "x" * (MAX_BODY_BYTES + 1))
    assert too_big.status_code == 413 and "MiB" in too_big.json()["error"]["message"]
    long_one = chat(gateway, MATH_QUERY + " " + "and so on " * 200_000)  # 2 MB of text
    assert long_one.status_code == 200 and long_one.headers["x-vsr-selected-algorithm"] != "fallback"


def test_upstream_errors_pass_through_with_their_status(gateway):
    response = chat(gateway, MATH_QUERY, mock_error={"status": 429, "message": "Rate limit reached"})
    assert response.status_code == 429
    assert response.json()["error"]["message"] == "Rate limit reached"
    assert response.headers["x-vsr-selected-decision"] == "math_decision"


def test_an_unreachable_upstream_is_a_502_naming_the_model(gateway):
    response = chat(gateway, "hi", model=DEAD_MODEL)
    assert response.status_code == 502
    assert DEAD_MODEL in response.json()["error"]["message"] and "unreachable" in response.json()["error"]["message"]


def test_concurrent_requests_each_get_their_own_route(gateway):
    queries = [MATH_QUERY, "What were the main causes of World War I?", "How do I sort a list in Python?",
               "What must a plaintiff prove to win a negligence lawsuit?"] * 8

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*[client.post(f"{gateway}/v1/chat/completions", json={
                "model": "auto", "messages": [{"role": "user", "content": q}]}) for q in queries])

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * len(queries)
    for query, response in zip(queries, responses):
        assert answer(response) == f"[{response.headers['x-vsr-selected-model']}] mock answer to: {query}"
    by_query = {}
    for query, response in zip(queries, responses):
        by_query.setdefault(query, set()).add(response.headers["x-vsr-selected-decision"])
    assert all(len(decisions) == 1 for decisions in by_query.values())


def test_models_endpoint_and_metrics(gateway):
    listed = [m["id"] for m in httpx.get(f"{gateway}/v1/models").json()["data"]]
    assert listed[:2] == ["auto", "MoM"] and set(load_config(CONFIG).model_names) <= set(listed)
    chat(gateway, MATH_QUERY)
    metrics = httpx.get(f"{gateway}/metrics").text
    assert 'model_selector_gateway_requests_total{decision="math_decision"' in metrics
    assert 'decision="passthrough"' in metrics
    routed = next(line for line in metrics.splitlines()
                  if line.startswith("model_selector_gateway_routing_seconds_count"))
    assert float(routed.split()[-1]) >= 1
    assert "model_selector_gateway_upstream_seconds_bucket" in metrics


def test_without_triton_the_gateway_answers_503_or_falls_back(gateway_config, mock_llms, monkeypatch):
    (dead_triton, port, fallback_port) = free_ports(3)
    config = load_config(gateway_config)
    fallback = config.model_copy(update={"gateway": config.gateway.model_copy(
        update={"fallback_to_default_model": True})})
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with serve_in_thread(create_gateway_app(config, f"127.0.0.1:{dead_triton}"), "127.0.0.1", port) as url, \
            serve_in_thread(create_gateway_app(fallback, f"127.0.0.1:{dead_triton}"), "127.0.0.1",
                            fallback_port) as fallback_url:
        response = chat(url, MATH_QUERY)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "router_unavailable"
        assert chat(url, MATH_QUERY, model=PLAIN_MODEL).status_code == 200  # pass-through needs no router
        missing_key = chat(url, "hi", model=KEYED_MODEL)
        assert missing_key.status_code == 502 and API_KEY_ENV in missing_key.json()["error"]["message"]

        response = chat(fallback_url, MATH_QUERY)
        assert response.status_code == 200
        assert response.headers["x-vsr-selected-algorithm"] == "fallback"
        assert response.headers["x-vsr-selected-model"] == config.default_model
        assert 'model_selector_gateway_fallbacks_total{reason="unreachable"} 1.0' in \
            httpx.get(f"{fallback_url}/metrics").text


def test_a_full_triton_queue_is_reported_as_overload_not_as_down():
    from tritonclient.utils import InferenceServerException

    from model_selector.serve.client import unavailable

    full = InferenceServerException("in ensemble 'model_selector', Exceeds maximum queue size",
                                    status="StatusCode.UNAVAILABLE")
    assert "overloaded" in str(unavailable("h:1", full)) and "serve" not in str(unavailable("h:1", full))
    down = InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")
    assert "not reachable" in str(unavailable("h:1", down))


def test_routing_text_rules():
    assert routing_text({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                      {"role": "user", "content": "c"}]}) == "c"
    assert routing_text({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "what is this"}]}]}) == "what is this"
    with pytest.raises(GatewayError, match="no user message"):
        routing_text({"messages": [{"role": "assistant", "content": "b"}]})
