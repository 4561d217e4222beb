"""A small gRPC client: route queries through the `model_selector` ensemble, get routing headers.

`RouterClient` is blocking; `AsyncRouterClient` (tritonclient's asyncio API) serves the gateway.
Both take one Triton address (`host:8001`), several (`a:8001,b:8001`), or a DNS name with one
record per replica (`dns:///triton-headless:8001`, gRPC round-robin over every record, as behind a
Kubernetes headless Service). Routing has no side effects, so a call that failed because a
replica went away is retried on another one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio_grpcclient
from tritonclient.utils import InferenceServerException

from model_selector.core.contract import ENSEMBLE, ENSEMBLE_OUTPUTS, STRING_OUTPUTS
from model_selector.core.decision_engine import Route

UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
DNS_SCHEME = "dns:///"
_KEEPALIVE = grpcclient.KeepAliveOptions()
# tritonclient's own channel defaults, plus round-robin over every record of a DNS name.
_ROUND_ROBIN = [
    ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", _KEEPALIVE.keepalive_time_ms),
    ("grpc.keepalive_timeout_ms", _KEEPALIVE.keepalive_timeout_ms),
    ("grpc.keepalive_permit_without_calls", _KEEPALIVE.keepalive_permit_without_calls),
    ("grpc.http2.max_pings_without_data", _KEEPALIVE.http2_max_pings_without_data),
    ("grpc.lb_policy_name", "round_robin"),
]
# Attempts for a DNS target: gRPC moves off a failed record by itself, one retry covers the
# requests that were in flight on it.
DNS_ATTEMPTS = 3


class RouterUnavailable(ConnectionError):
    """The Triton server cannot be reached or the ensemble is not ready."""


def routing_headers(route: Route) -> dict[str, str]:
    """The gateway's view of a route: the x-vsr-* response headers and the upstream `x-selected-model`."""
    return {
        "x-vsr-selected-model": route.selected_model,
        "x-vsr-selected-decision": route.decision,
        "x-vsr-selected-category": route.domain,
        "x-vsr-selected-algorithm": route.algorithm,
        "x-vsr-selected-confidence": f"{route.confidence:.4f}",
        "x-selected-model": route.selected_model,
    }


def parse_targets(url: str) -> list[str]:
    """`host:port`, `a:port,b:port` or `dns:///name:port` -> the gRPC targets to spread calls over."""
    targets = [t.strip() for t in url.split(",") if t.strip()]
    if not targets:
        raise ValueError(f"no Triton address in {url!r}: give host:port, several separated by commas, "
                         "or dns:///name:port")
    for target in targets:
        address = target.removeprefix(DNS_SCHEME)
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or "/" in address:
            raise ValueError(f"bad Triton address {target!r}: expected host:port (e.g. localhost:8001) "
                             "or dns:///name:port")
    return list(dict.fromkeys(targets))


@dataclass
class Replicas:
    """Which target to try next: round-robin, skipping for `cooldown_s` a target that just failed
    (unless every target has)."""

    targets: list[str]
    cooldown_s: float = 2.0
    _next: int = 0
    _failed_at: dict[str, float] = field(default_factory=dict)

    def attempts(self) -> list[str]:
        """Every target once, starting with the next in turn, the healthy ones first."""
        start, self._next = self._next, (self._next + 1) % len(self.targets)
        ordered = self.targets[start:] + self.targets[:start]
        now = time.monotonic()
        healthy = [t for t in ordered if now - self._failed_at.get(t, -1e9) >= self.cooldown_s]
        tries = healthy + [t for t in ordered if t not in healthy]
        if len(tries) == 1 and tries[0].startswith(DNS_SCHEME):
            return tries * DNS_ATTEMPTS
        return tries

    def failed(self, target: str) -> None:
        self._failed_at[target] = time.monotonic()

    def answered(self, target: str, routes: list[Route]) -> list[Route]:
        self._failed_at.pop(target, None)
        return routes

    def unreachable(self, target: str, err: InferenceServerException) -> RouterUnavailable:
        """The error to raise if no other target answers; re-raises what another replica would not fix."""
        if err.status() not in UNREACHABLE:
            raise err
        self.failed(target)
        return unavailable(target, err)


def _request(module, queries: list[str]):
    data = np.array([q.encode("utf-8") for q in queries], dtype=np.object_).reshape(-1, 1)
    tensor = module.InferInput("query", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return [tensor], [module.InferRequestedOutput(name) for name in ENSEMBLE_OUTPUTS]


def _routes(result, n: int) -> list[Route]:
    columns = {}
    for name in ENSEMBLE_OUTPUTS:
        values = result.as_numpy(name).reshape(-1)
        columns[name] = [v.decode("utf-8") for v in values] if name in STRING_OUTPUTS else values.tolist()
    return [Route(**{name: columns[name][i] for name in ENSEMBLE_OUTPUTS}) for i in range(n)]


def unavailable(url: str, err: InferenceServerException) -> RouterUnavailable:
    message = err.message() or ""
    if "Exceeds maximum queue size" in message:
        return RouterUnavailable(f"Triton at {url} is overloaded: its queue is full and it refused the request; "
                                 "retry after a short backoff")
    return RouterUnavailable(f"Triton at {url} is not reachable ({message}); start it with `model-selector serve`")


def _grpc_clients(module, targets: list[str]) -> dict:
    return {t: module.InferenceServerClient(t, channel_args=_ROUND_ROBIN if t.startswith(DNS_SCHEME) else None)
            for t in targets}


class RouterClient:
    def __init__(self, url: str = "localhost:8001", timeout_s: float = 30.0):
        self.url = url
        self.timeout_s = timeout_s
        self._replicas = Replicas(parse_targets(url))
        self._clients = _grpc_clients(grpcclient, self._replicas.targets)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def select(self, queries: list[str]) -> list[Route]:
        """Route a batch of queries in one request."""
        inputs, outputs = _request(grpcclient, queries)
        error = None
        for target in self._replicas.attempts():
            try:
                result = self._clients[target].infer(ENSEMBLE, inputs, outputs=outputs, client_timeout=self.timeout_s)
                return self._replicas.answered(target, _routes(result, len(queries)))
            except InferenceServerException as err:
                error = self._replicas.unreachable(target, err)
        raise error


class AsyncRouterClient:
    """The asyncio twin of `RouterClient`; create and use it inside one event loop."""

    def __init__(self, url: str = "localhost:8001", timeout_s: float = 30.0):
        self.url = url
        self.timeout_s = timeout_s
        self._replicas = Replicas(parse_targets(url))
        self._clients = _grpc_clients(aio_grpcclient, self._replicas.targets)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    async def select(self, queries: list[str]) -> list[Route]:
        inputs, outputs = _request(aio_grpcclient, queries)
        error = None
        for target in self._replicas.attempts():
            try:
                result = await self._clients[target].infer(ENSEMBLE, inputs, outputs=outputs,
                                                           client_timeout=self.timeout_s)
                return self._replicas.answered(target, _routes(result, len(queries)))
            except InferenceServerException as err:
                error = self._replicas.unreachable(target, err)
        raise error

    async def ready(self) -> bool:
        """Whether at least one replica serves the ensemble."""
        for client in self._clients.values():
            try:
                if await client.is_model_ready(ENSEMBLE, client_timeout=self.timeout_s):
                    return True
            except InferenceServerException:
                continue
        return False


def route(query: str, url: str = "localhost:8001") -> dict[str, str]:
    """The routing headers for one query."""
    with RouterClient(url) as client:
        return routing_headers(client.select([query])[0])
