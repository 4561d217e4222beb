"""`model-selector gateway`: an OpenAI-compatible HTTP front that routes chat requests.

`model: auto` (or `MoM`) sends the last user message through the Triton ensemble, rewrites
`model` to the chosen model's upstream id and forwards the request to that model's endpoint
(`configs/router.yaml`: `gateway.upstream`, per-model `base_url`, `upstream_model`,
`api_key_env`). The answer comes back unchanged, streamed chunk by chunk when asked, with the
x-vsr-* routing headers; the upstream request carries `x-selected-model`. A catalog model's
own name passes through unrouted. Errors use OpenAI's error format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.background import BackgroundTask
from tritonclient.utils import InferenceServerException

from model_selector.core.config import RouterConfig
from model_selector.core.decision_engine import Route
from model_selector.serve.client import AsyncRouterClient, RouterUnavailable, routing_headers

log = logging.getLogger(__name__)

ROUTED_MODELS = ("auto", "MoM")
# Response headers that describe the upstream connection, not the answer: not passed on.
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                         "content-type", "date", "server", "proxy-authenticate", "trailer", "upgrade"})
# Bounds what one request can make the embedding model read; the tokenizer truncates anyway.
MAX_ROUTED_CHARS = 32_000
# Bodies above this are refused (413) before they are parsed.
MAX_BODY_BYTES = 8 << 20


class GatewayError(Exception):
    """An error answered to the client in OpenAI's format."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        # A refused or unreachable router is worth retrying shortly.
        headers = {"retry-after": "1"} if self.status == 503 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


def routing_text(body: dict) -> str:
    """The text a request is routed on: its last user message (text parts joined)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError(400, "`messages` must be a non-empty list of chat messages", param="messages")
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content[:MAX_ROUTED_CHARS]
        if isinstance(content, list):
            texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
            return " ".join(t for t in texts if isinstance(t, str))[:MAX_ROUTED_CHARS]
        raise GatewayError(400, "the last user message's `content` must be a string or a list of content parts",
                           param="messages")
    raise GatewayError(400, "no user message to route on: add a message with role `user`", param="messages")


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry
    requests: Counter
    routing_seconds: Histogram
    upstream_seconds: Histogram
    fallbacks: Counter

    @classmethod
    def create(cls) -> GatewayMetrics:
        registry = CollectorRegistry()
        fast = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
        slow = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
        return cls(
            registry=registry,
            requests=Counter("model_selector_gateway_requests", "Chat requests by selected model and decision "
                             "(decision `passthrough` for a named model, `none` when no decision matched)",
                             ["model", "decision", "status"], registry=registry),
            routing_seconds=Histogram("model_selector_gateway_routing_seconds",
                                      "Time to route a request through the Triton ensemble", buckets=fast,
                                      registry=registry),
            upstream_seconds=Histogram("model_selector_gateway_upstream_seconds",
                                       "Time until the upstream model's response headers arrive", ["model"],
                                       buckets=slow, registry=registry),
            fallbacks=Counter("model_selector_gateway_fallbacks", "Requests sent to the default model because "
                              "routing failed", ["reason"], registry=registry),
        )


class Gateway:
    """The gateway's clients, metrics and request handling; `create_gateway_app` wires them to routes."""

    def __init__(self, config: RouterConfig, router_url: str, source: str = "router.yaml"):
        self.config, self.router_url, self.source = config, router_url, source
        self.settings = config.gateway
        self.metrics = GatewayMetrics.create()
        self.catalog = set(config.model_names)
        self.router: AsyncRouterClient | None = None  # both made in the app's event loop, by `lifespan`
        self.http: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI):
        config = self.config
        missing = sorted({e.api_key_env for e in map(config.endpoint, config.model_names)
                          if e.api_key_env and e.api_key_env not in os.environ})
        if missing:
            log.warning("API key variable(s) %s not set: requests to the models that need them will fail",
                        ", ".join(missing))
        self.router = AsyncRouterClient(self.router_url, timeout_s=self.settings.routing_timeout_s)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(self.settings.upstream.timeout_s, connect=10.0))
        log.info("gateway routing through Triton at %s; %d catalog models", self.router_url, len(self.catalog))
        yield
        await self.http.aclose()
        await self.router.close()

    async def choose(self, body: dict) -> dict[str, str]:
        """The routing headers for a request to `auto`: Triton's choice, or the default model on fallback."""
        text = routing_text(body)
        started = time.perf_counter()
        try:
            route = (await self.router.select([text]))[0]
        except (RouterUnavailable, InferenceServerException) as err:
            message = err.message() if isinstance(err, InferenceServerException) else str(err)
            reason = ("overloaded" if "overloaded" in message else "unreachable") \
                if isinstance(err, RouterUnavailable) else "error"
            if not self.settings.fallback_to_default_model:
                log.error("routing failed: %s", message)
                raise GatewayError(503, f"the router is unavailable ({message}); retry later or name a model",
                                   "server_error", "router_unavailable") from None
            self.metrics.fallbacks.labels(reason).inc()
            log.warning("routing failed (%s); falling back to %s", message, self.config.default_model)
            route = Route(self.config.default_model, "", "", 0.0, "fallback", 0.0)
        self.metrics.routing_seconds.observe(time.perf_counter() - started)
        if route.selected_model not in self.catalog:
            raise GatewayError(502, f"the router chose {route.selected_model!r}, which is not in the gateway's "
                               f"catalog ({self.source}); serve the repository built from the same router.yaml",
                               "server_error", "model_not_in_catalog")
        return routing_headers(route)

    def upstream_request(self, model: str, body: dict) -> tuple[str, dict, dict[str, str]]:
        """URL, body and headers of the request to `model`'s endpoint."""
        endpoint = self.config.endpoint(model)
        headers = {"content-type": "application/json", "x-selected-model": model}
        if endpoint.api_key_env:
            key = os.environ.get(endpoint.api_key_env)
            if not key:
                raise GatewayError(502, f"no API key for {model!r}: set the environment variable "
                                   f"{endpoint.api_key_env} for the gateway", "server_error", "missing_api_key")
            headers["authorization"] = f"Bearer {key}"
        return f"{endpoint.base_url}/chat/completions", {**body, "model": endpoint.model}, headers

    async def chat_completions(self, request: Request) -> Response:
        model, decision, status = "", "", 500
        try:
            body = parse_body(await _body_within_limit(request))
            requested = body["model"]
            if requested in ROUTED_MODELS:
                headers = await self.choose(body)
                decision = headers["x-vsr-selected-decision"] or "none"
            elif requested in self.catalog:
                headers = {"x-vsr-selected-model": requested, "x-selected-model": requested}
                decision = "passthrough"
            else:
                raise GatewayError(404, f"The model `{requested}` does not exist: use `auto` to route or one of "
                                   f"{', '.join(sorted(self.catalog))}", code="model_not_found", param="model")
            model = headers["x-selected-model"]
            response = await self.forward(model, body, headers)
            status = response.status_code
            return response
        except GatewayError as err:
            status = err.status
            return err.response()
        finally:
            self.metrics.requests.labels(model or "", decision or "", str(status)).inc()

    async def forward(self, model: str, body: dict, headers: dict[str, str]) -> Response:
        """The upstream's answer, streamed when asked, with the routing headers added."""
        url, payload, upstream_headers = self.upstream_request(model, body)
        started = time.perf_counter()
        try:
            upstream = await self.http.send(
                self.http.build_request("POST", url, json=payload, headers=upstream_headers), stream=True)
        except httpx.TimeoutException:
            raise GatewayError(504, f"{model!r} at {url} did not answer in time", "server_error",
                               "upstream_timeout") from None
        except httpx.HTTPError as err:
            raise GatewayError(502, f"{model!r} at {url} is unreachable ({type(err).__name__}); check its "
                               "base_url in the gateway configuration", "server_error", "upstream_unreachable") from None
        self.metrics.upstream_seconds.labels(model).observe(time.perf_counter() - started)
        response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        response_headers.update((k, v) for k, v in headers.items() if k.startswith("x-vsr-"))
        media_type = upstream.headers.get("content-type")
        if body.get("stream") is True and upstream.status_code < 400:
            return StreamingResponse(upstream.aiter_bytes(), status_code=upstream.status_code, media_type=media_type,
                                     headers=response_headers, background=BackgroundTask(upstream.aclose))
        try:
            content = await upstream.aread()
        finally:
            await upstream.aclose()
        return Response(content, status_code=upstream.status_code, media_type=media_type, headers=response_headers)

    async def models(self) -> dict:
        names = [*ROUTED_MODELS, *self.config.model_names]
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                            "owned_by": "model-selector"} for name in names]}

    async def health(self) -> dict:
        """Liveness: the process answers, whatever Triton does."""
        return {"status": "ok"}

    async def ready(self) -> JSONResponse:
        """Readiness: at least one Triton replica serves the ensemble, so routed requests can succeed."""
        if await self.router.ready():
            return JSONResponse({"status": "ready"})
        return GatewayError(503, f"no Triton replica at {self.router_url} serves the model_selector ensemble yet",
                            "server_error", "router_unavailable").response()

    async def prometheus(self) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _body_within_limit(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:  # refused before it is read
        raise _too_large()
    return await request.body()


def _too_large() -> GatewayError:
    return GatewayError(413, f"the request body is over {MAX_BODY_BYTES >> 20} MiB; shorten the messages")


def parse_body(raw: bytes) -> dict:
    """A chat request's JSON body, checked to be an object naming a model."""
    if len(raw) > MAX_BODY_BYTES:
        raise _too_large()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GatewayError(400, f"the request body is not valid JSON ({err})") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    requested = body.get("model")
    if not isinstance(requested, str) or not requested:
        raise GatewayError(400, "`model` is required: `auto` to route, or a model name", param="model")
    return body


async def _not_found(_request: Request, _exc) -> JSONResponse:
    return GatewayError(404, "no such endpoint: the gateway serves POST /v1/chat/completions, GET /v1/models, "
                        "GET /health, GET /ready and GET /metrics", code="not_found").response()


def create_gateway_app(config: RouterConfig, router_url: str, source: str = "router.yaml") -> FastAPI:
    """The gateway as an ASGI app; `config` gives the catalog and every model's endpoint."""
    gateway = Gateway(config, router_url, source)
    app = FastAPI(title="model-selector gateway", lifespan=gateway.lifespan)
    app.post("/v1/chat/completions")(gateway.chat_completions)
    app.get("/v1/models")(gateway.models)
    app.get("/health")(gateway.health)
    app.get("/ready")(gateway.ready)
    app.get("/metrics")(gateway.prometheus)
    app.exception_handler(404)(_not_found)
    return app


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str, port: int, timeout_s: float = 30.0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a background thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"could not start an HTTP server on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
