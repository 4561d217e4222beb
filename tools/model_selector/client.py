"""A small gRPC client: route queries through the `model_selector` ensemble, get routing headers."""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .contract import ENSEMBLE, ENSEMBLE_OUTPUTS, STRING_OUTPUTS
from .decision_engine import Route


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
        data = np.array([q.encode("utf-8") for q in queries], dtype=np.object_).reshape(-1, 1)
        tensor = grpcclient.InferInput("query", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        outputs = [grpcclient.InferRequestedOutput(name) for name in ENSEMBLE_OUTPUTS]
        try:
            result = self._client.infer(ENSEMBLE, [tensor], outputs=outputs, client_timeout=self.timeout_s)
        except InferenceServerException as err:
            if err.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"):
                raise RouterUnavailable(f"Triton at {self.url} is not reachable ({err.message()}); "
                                        "start it with `model-selector serve`") from None
            raise
        columns = {}
        for name in ENSEMBLE_OUTPUTS:
            values = result.as_numpy(name).reshape(-1)
            columns[name] = [v.decode("utf-8") for v in values] if name in STRING_OUTPUTS else values.tolist()
        return [Route(**{name: columns[name][i] for name in ENSEMBLE_OUTPUTS}) for i in range(len(queries))]


def route(query: str, url: str = "localhost:8001") -> dict[str, str]:
    """The routing headers for one query."""
    with RouterClient(url) as client:
        return routing_headers(client.select([query])[0])
