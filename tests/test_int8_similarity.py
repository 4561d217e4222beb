"""The KNN graph's int8 similarities against their numpy twin, on this machine's onnxruntime kernels."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from model_selector.build.onnx_graphs import int8_similarity, quantize_keys, topk_weighted_table


def test_int8_graph_equals_numpy_on_every_cpu():
    """Every key is its own one-hot table row, so the output is each query's normalised top-k
    similarities. Unit vectors with large same-sign components make the u8 x s8 kernel of CPUs
    without VNNI saturate; the graph must match the exact int32 products wherever it runs."""
    rng = np.random.default_rng(0)
    direction = np.abs(rng.normal(size=384))

    def unit(n: int) -> np.ndarray:
        v = direction + 0.5 * rng.normal(size=(n, 384))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    keys, queries = unit(64), unit(16)
    int8_keys = quantize_keys(keys)
    graph = topk_weighted_table(keys, np.eye(len(keys), dtype=np.float32), k=len(keys), temperature=None,
                                int8_keys=int8_keys)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"embedding": queries})[0]

    similarity = int8_similarity(queries, *int8_keys)
    assert similarity.min() > 0.3  # every weight is a similarity, none clipped
    expected = similarity / similarity.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(similarity, queries @ keys.T, atol=0.005)
