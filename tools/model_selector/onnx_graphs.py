"""Hand-built ONNX graphs for the classifier and selectors.

Each graph takes `embedding` [batch, dim] (unit-norm) and is an exact transcription of
the numpy model it comes from (`train.py`), so tests can compare them one to one.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes: list, inputs: list, outputs: list, initializers: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, inputs, outputs,
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="model-selector")
    model.ir_version = 8  # loadable by the onnxruntime of older Triton images too
    onnx.checker.check_model(model)
    return model


def _embedding_input(dim: int):
    return helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])


def mlp_softmax(weights: list[np.ndarray], biases: list[np.ndarray], output: str = "domain_probs") -> onnx.ModelProto:
    """Softmax(ReLU(... ReLU(x W0 + b0) ...) Wn + bn): logistic regression when there is one layer."""
    nodes, inits, current = [], {}, "embedding"
    for i, (w, b) in enumerate(zip(weights, biases)):
        inits[f"W{i}"], inits[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]))
        current = f"z{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"h{i}"]))
            current = f"h{i}"
    nodes.append(helper.make_node("Softmax", [current], [output], axis=-1))
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", weights[-1].shape[1]])
    return _model(nodes, [_embedding_input(weights[0].shape[0])], [out], inits, "domain_classifier")


def topk_weighted_table(keys: np.ndarray, table: np.ndarray, k: int, temperature: float | None,
                        output: str = "scores", name: str = "selector") -> onnx.ModelProto:
    """Weighted mean of `table` rows over the k keys most similar to the embedding.

    similarity = embedding . keys^T; weights over the top k are softmax(temperature x
    similarity) when a temperature is given, else the similarities clipped at 1e-6.
    KNN uses it over training queries (quality table = their results), KMeans over
    centroids (table = per-cluster mean quality).
    """
    n, dim = keys.shape
    k = min(k, n)
    inits = {
        "keys_t": keys.T.astype(np.float32),
        "table": table.astype(np.float32),
        "k": np.array([k], dtype=np.int64),
        "axes1": np.array([1], dtype=np.int64),
        "axes2": np.array([2], dtype=np.int64),
    }
    nodes = [
        helper.make_node("MatMul", ["embedding", "keys_t"], ["similarity"]),
        helper.make_node("TopK", ["similarity", "k"], ["top_sim", "top_idx"], axis=1, largest=1, sorted=1),
    ]
    if temperature is not None:
        inits["temperature"] = np.array(temperature, dtype=np.float32)
        nodes += [
            helper.make_node("Mul", ["top_sim", "temperature"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["weights"], axis=1),
        ]
    else:
        inits["eps"] = np.array(1e-6, dtype=np.float32)
        nodes += [
            helper.make_node("Max", ["top_sim", "eps"], ["raw_weights"]),
            helper.make_node("ReduceSum", ["raw_weights", "axes1"], ["weight_sum"], keepdims=1),
            helper.make_node("Div", ["raw_weights", "weight_sum"], ["weights"]),
        ]
    nodes += [
        helper.make_node("Gather", ["table", "top_idx"], ["neighbour_rows"], axis=0),  # [B, k, M]
        helper.make_node("Unsqueeze", ["weights", "axes2"], ["weights3"]),  # [B, k, 1]
        helper.make_node("Mul", ["neighbour_rows", "weights3"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axes1"], [output], keepdims=0),
    ]
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", table.shape[1]])
    return _model(nodes, [_embedding_input(dim)], [out], inits, name)


def rbf_svm_probabilities(vectors: np.ndarray, dual_coef: np.ndarray, intercept: np.ndarray,
                          gamma: float, prob_a: np.ndarray, prob_b: np.ndarray,
                          output: str = "scores") -> onnx.ModelProto:
    """Per-model Platt-scaled RBF SVMs sharing one kernel evaluation.

    vectors [S, D] is the union of every model's support vectors and dual_coef [S, M]
    holds each model's coefficients (zero where a vector is not that model's support
    vector), so f = exp(-gamma |x - s|^2) @ dual_coef + intercept, and
    P(correct) = 1 / (1 + exp(prob_a * f + prob_b)), per model, as libsvm computes it.
    """
    s, dim = vectors.shape
    inits = {
        "vectors_t": vectors.T.astype(np.float32),
        "vector_sq": (vectors.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)[None, :],
        "dual_coef": dual_coef.astype(np.float32),
        "intercept": intercept.astype(np.float32),
        "neg_gamma": np.array(-gamma, dtype=np.float32),
        "minus_two": np.array(-2.0, dtype=np.float32),
        "zero": np.array(0.0, dtype=np.float32),
        "one": np.array(1.0, dtype=np.float32),
        "prob_a": prob_a.astype(np.float32),
        "prob_b": prob_b.astype(np.float32),
        "axes1": np.array([1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Mul", ["embedding", "embedding"], ["x_sq_elems"]),
        helper.make_node("ReduceSum", ["x_sq_elems", "axes1"], ["x_sq"], keepdims=1),  # [B, 1]
        helper.make_node("MatMul", ["embedding", "vectors_t"], ["dot"]),  # [B, S]
        helper.make_node("Mul", ["dot", "minus_two"], ["minus_two_dot"]),
        helper.make_node("Add", ["minus_two_dot", "x_sq"], ["partial"]),
        helper.make_node("Add", ["partial", "vector_sq"], ["sq_dist_raw"]),
        helper.make_node("Max", ["sq_dist_raw", "zero"], ["sq_dist"]),
        helper.make_node("Mul", ["sq_dist", "neg_gamma"], ["kernel_logits"]),
        helper.make_node("Exp", ["kernel_logits"], ["kernel"]),
        helper.make_node("MatMul", ["kernel", "dual_coef"], ["decision_raw"]),  # [B, M]
        helper.make_node("Add", ["decision_raw", "intercept"], ["decision"]),
        helper.make_node("Mul", ["decision", "prob_a"], ["platt_a"]),
        helper.make_node("Add", ["platt_a", "prob_b"], ["platt"]),
        helper.make_node("Exp", ["platt"], ["platt_exp"]),
        helper.make_node("Add", ["platt_exp", "one"], ["platt_denominator"]),
        helper.make_node("Reciprocal", ["platt_denominator"], [output]),
    ]
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", dual_coef.shape[1]])
    return _model(nodes, [_embedding_input(dim)], [out], inits, "svm_selector")
