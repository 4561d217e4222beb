"""A small gRPC client: route queries through the `model_selector` ensemble, get routing headers.

`RouterClient` is blocking; `AsyncRouterClient` (tritonclient's asyncio API) serves the gateway.
"""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio_grpcclient
from tritonclient.utils import InferenceServerException

from .contract import ENSEMBLE, ENSEMBLE_OUTPUTS, STRING_OUTPUTS
from .decision_engine import Route

UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")


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


class RouterClient:
    def __init__(self, url: str = "localhost:8001", timeout_s: float = 30.0):
        self.url = url
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def select(self, queries: list[str]) -> list[Route]:
        """Route a batch of queries in one request."""
        inputs, outputs = _request(grpcclient, queries)
        try:
            result = self._client.infer(ENSEMBLE, inputs, outputs=outputs, client_timeout=self.timeout_s)
        except InferenceServerException as err:
            if err.status() in UNREACHABLE:
                raise unavailable(self.url, err) from None
            raise
        return _routes(result, len(queries))


class AsyncRouterClient:
    """The asyncio twin of `RouterClient`; create and use it inside one event loop."""

    def __init__(self, url: str = "localhost:8001", timeout_s: float = 30.0):
        self.url = url
        self.timeout_s = timeout_s
        self._client = aio_grpcclient.InferenceServerClient(url)

    async def close(self) -> None:
        await self._client.close()

    async def select(self, queries: list[str]) -> list[Route]:
        inputs, outputs = _request(aio_grpcclient, queries)
        try:
            result = await self._client.infer(ENSEMBLE, inputs, outputs=outputs, client_timeout=self.timeout_s)
        except InferenceServerException as err:
            if err.status() in UNREACHABLE:
                raise unavailable(self.url, err) from None
            raise
        return _routes(result, len(queries))


def route(query: str, url: str = "localhost:8001") -> dict[str, str]:
    """The routing headers for one query."""
    with RouterClient(url) as client:
        return routing_headers(client.select([query])[0])
