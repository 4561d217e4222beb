"""A small gRPC client: route queries through the `model_selector` ensemble, get routing headers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .contract import ENSEMBLE, ENSEMBLE_OUTPUTS, STRING_OUTPUTS


class RouterUnavailable(ConnectionError):
    """The Triton server cannot be reached or the ensemble is not ready."""


@dataclass(frozen=True)
class Selection:
    selected_model: str
    decision: str
    domain: str
    domain_confidence: float
    algorithm: str
    confidence: float

    def headers(self) -> dict[str, str]:
        return {
            "x-vsr-selected-model": self.selected_model,
            "x-vsr-selected-decision": self.decision,
            "x-vsr-selected-category": self.domain,
            "x-vsr-selected-algorithm": self.algorithm,
            "x-vsr-selected-confidence": f"{self.confidence:.4f}",
            "x-selected-model": self.selected_model,
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

    def select(self, queries: list[str]) -> list[Selection]:
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
        return [Selection(*(columns[name][i] for name in ENSEMBLE_OUTPUTS)) for i in range(len(queries))]


def route(query: str, url: str = "localhost:8001") -> dict[str, str]:
    """The routing headers for one query."""
    with RouterClient(url) as client:
        return client.select([query])[0].headers()
