"""The gateway's request parsing and error mapping, in process through an ASGI transport: no Triton
and no LLM. A Triton address nothing listens on makes routing fail as it does when Triton is down.
The live gateway in front of a real tritonserver and mock LLMs is test_gateway's."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from model_selector.core.config import PACKAGED_CONFIG, load_config
from model_selector.serve.gateway import create_gateway_app
from model_selector.serve.server import free_ports


def offline_config(fallback: bool = False):
    """The default configuration with every model behind one local port nothing listens on."""
    config = load_config(PACKAGED_CONFIG)
    upstream = config.gateway.upstream.model_copy(update={"base_url": f"http://127.0.0.1:{free_ports(1)[0]}/v1",
                                                          "api_key_env": None})
    return config.model_copy(update={
        "models": [m.model_copy(update={"base_url": None, "api_key_env": None}) for m in config.models],
        "gateway": config.gateway.model_copy(update={"upstream": upstream, "fallback_to_default_model": fallback})})


@contextlib.asynccontextmanager
async def gateway_client(fallback: bool = False):
    app = create_gateway_app(offline_config(fallback), f"127.0.0.1:{free_ports(1)[0]}")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield client


def run(coroutine):
    return asyncio.run(coroutine)


# (body, status, what the message says): refused before any routing; test_gateway sends them to the live gateway.
BAD_REQUESTS = [
    (b'{"model": "auto", "messages": [', 400, "not valid JSON"),
    (b'\xff\xfe', 400, "not valid JSON"),
    (b'["auto"]', 400, "must be a JSON object"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "`model` is required"),
    (b'{"model": "auto", "messages": [{"role": "system", "content": "hi"}]}', 400, "no user message"),
    (b'{"model": "auto", "messages": []}', 400, "non-empty list"),
    (b'{"model": "auto"}', 400, "non-empty list"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": 7}]}', 400, "must be a string or a list"),
    (b'{"model": "gpt-5-ultra", "messages": [{"role": "user", "content": "hi"}]}', 404, "does not exist"),
]


@pytest.mark.parametrize("body, status, message", BAD_REQUESTS)
def test_bad_requests_get_openai_errors_before_any_routing(body, status, message):
    async def scenario():
        async with gateway_client() as client:
            return await client.post("/v1/chat/completions", content=body,
                                     headers={"content-type": "application/json"})

    response = run(scenario())
    assert response.status_code == status
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    if status == 404:
        assert error["code"] == "model_not_found" and "auto" in error["message"]


def test_an_oversized_body_is_a_413_whether_declared_or_not():
    from model_selector.serve.gateway import MAX_BODY_BYTES

    async def scenario():
        async with gateway_client() as client:
            declared = await client.post("/v1/chat/completions", content=b"{}",
                                         headers={"content-length": str(MAX_BODY_BYTES + 1)})
            sent = await client.post("/v1/chat/completions", content=b" " * (MAX_BODY_BYTES + 1))
            return declared, sent

    for response in run(scenario()):
        assert response.status_code == 413 and "MiB" in response.json()["error"]["message"]


def test_a_router_that_is_down_is_a_503_to_retry_and_not_ready():
    async def scenario():
        async with gateway_client() as client:
            chat = await client.post("/v1/chat/completions", json={
                "model": "auto", "messages": [{"role": "user", "content": "What is 2+2?"}]})
            return chat, await client.get("/ready"), await client.get("/health"), await client.get("/metrics")

    chat, ready, health, metrics = run(scenario())
    assert chat.status_code == 503 and chat.headers["retry-after"] == "1"
    assert chat.json()["error"]["code"] == "router_unavailable" and "retry later" in chat.json()["error"]["message"]
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "router_unavailable"
    assert health.status_code == 200  # liveness does not depend on Triton
    assert 'model_selector_gateway_requests_total{decision="",model="",status="503"} 1.0' in metrics.text


def test_with_fallback_a_down_router_sends_the_request_to_the_default_model():
    """The default model's endpoint is down too: the 502 names the model it fell back to."""
    config = load_config(PACKAGED_CONFIG)

    async def scenario():
        async with gateway_client(fallback=True) as client:
            chat = await client.post("/v1/chat/completions", json={
                "model": "auto", "messages": [{"role": "user", "content": "What is 2+2?"}]})
            return chat, await client.get("/metrics")

    chat, metrics = run(scenario())
    assert chat.status_code == 502 and chat.json()["error"]["code"] == "upstream_unreachable", chat.text
    assert repr(config.default_model) in chat.json()["error"]["message"]
    assert 'model_selector_gateway_fallbacks_total{reason="unreachable"} 1.0' in metrics.text


def test_models_list_and_unknown_endpoints():
    config = load_config(PACKAGED_CONFIG)

    async def scenario():
        async with gateway_client() as client:
            return await client.get("/v1/models"), await client.get("/v1/completions")

    models, missing = run(scenario())
    assert [m["id"] for m in models.json()["data"]] == ["auto", "MoM", *config.model_names]
    assert missing.status_code == 404 and "POST /v1/chat/completions" in missing.json()["error"]["message"]
