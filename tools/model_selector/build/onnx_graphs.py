"""Hand-built ONNX graphs for the classifier and selectors.

Each graph is an exact transcription of the numpy model it comes from (`train.py`), so
tests can compare them one to one. The selectors take `embedding` [batch, dim] (unit-norm)
and `domain_probs` [batch, 14]; the domain classifier takes the token tensors as well.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def make_model(nodes: list, inputs: list, outputs: list, initializers: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
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


def gated_lexical_classifier(idf: np.ndarray, token_weights: np.ndarray, embedding_weights: np.ndarray,
                             bias: np.ndarray, output: str = "domain_probs") -> onnx.ModelProto:
    """Two experts mixed by a gate (`train.gated_mixture`) over the logits
    tfidf(tokens) @ token_weights + embedding @ embedding_weights + bias, whose 2C + 1 columns are
    the exam expert's C logits, the natural expert's C and the gate's one.

    tfidf is the sublinear, L2-normalised TF-IDF vector of the query's token ids: a token
    type seen c times has the value idf x (1 + log c). The graph works per occurrence: an
    occurrence of a type seen c times carries 1/c of that type's value, so sums over the
    sequence are sums over types. Counts come from comparing every position with every
    other (padding masked out).
    """
    vocab, columns = token_weights.shape
    classes = (columns - 1) // 2
    inits = {
        "idf": idf.astype(np.float32),
        "token_weights": token_weights.astype(np.float32),
        "embedding_weights": embedding_weights.astype(np.float32),
        "bias": bias.astype(np.float32),
        "one": np.array(1.0, dtype=np.float32),
        "eps": np.array(1e-12, dtype=np.float32),
        "axes1": np.array([1], dtype=np.int64),
        "axes2": np.array([2], dtype=np.int64),
        **{f"{part}_{end}": np.array([value], dtype=np.int64) for part, (start, stop) in
           (("exam", (0, classes)), ("natural", (classes, 2 * classes)), ("gate", (2 * classes, columns)))
           for end, value in (("start", start), ("stop", stop))},
    }
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),  # [B, T]
        helper.make_node("Unsqueeze", ["input_ids", "axes2"], ["ids_rows"]),  # [B, T, 1]
        helper.make_node("Unsqueeze", ["input_ids", "axes1"], ["ids_cols"]),  # [B, 1, T]
        helper.make_node("Equal", ["ids_rows", "ids_cols"], ["same_bool"]),
        helper.make_node("Cast", ["same_bool"], ["same"], to=TensorProto.FLOAT),  # [B, T, T]
        helper.make_node("Unsqueeze", ["mask", "axes1"], ["mask_cols"]),
        helper.make_node("Mul", ["same", "mask_cols"], ["same_real"]),
        helper.make_node("ReduceSum", ["same_real", "axes2"], ["counts_raw"], keepdims=0),  # [B, T]
        helper.make_node("Max", ["counts_raw", "one"], ["counts"]),  # padding: no log(0)
        helper.make_node("Log", ["counts"], ["log_counts"]),
        helper.make_node("Add", ["log_counts", "one"], ["tf"]),
        helper.make_node("Gather", ["idf", "input_ids"], ["token_idf"], axis=0),
        helper.make_node("Mul", ["tf", "token_idf"], ["value"]),  # the type's tf-idf, per occurrence
        helper.make_node("Div", ["mask", "counts"], ["share"]),  # 1/c per real occurrence
        helper.make_node("Mul", ["value", "value"], ["value_sq"]),
        helper.make_node("Mul", ["value_sq", "share"], ["value_sq_share"]),
        helper.make_node("ReduceSum", ["value_sq_share", "axes1"], ["norm_sq"], keepdims=1),  # [B, 1]
        helper.make_node("Max", ["norm_sq", "eps"], ["norm_sq_safe"]),
        helper.make_node("Sqrt", ["norm_sq_safe"], ["norm"]),
        helper.make_node("Mul", ["value", "share"], ["value_share"]),
        helper.make_node("Div", ["value_share", "norm"], ["occurrence_weight"]),  # [B, T]
        helper.make_node("Unsqueeze", ["occurrence_weight", "axes1"], ["occurrence_weight3"]),  # [B, 1, T]
        helper.make_node("Gather", ["token_weights", "input_ids"], ["token_rows"], axis=0),  # [B, T, C]
        helper.make_node("MatMul", ["occurrence_weight3", "token_rows"], ["lexical3"]),  # [B, 1, C]
        helper.make_node("Squeeze", ["lexical3", "axes1"], ["lexical"]),
        helper.make_node("MatMul", ["embedding", "embedding_weights"], ["dense"]),
        helper.make_node("Add", ["lexical", "dense"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
        *[helper.make_node("Slice", ["logits", f"{part}_start", f"{part}_stop", "axes1"], [f"{part}_logits"])
          for part in ("exam", "natural", "gate")],
        helper.make_node("Softmax", ["exam_logits"], ["exam_probs"], axis=-1),
        helper.make_node("Softmax", ["natural_logits"], ["natural_probs"], axis=-1),
        helper.make_node("Sigmoid", ["gate_logits"], ["gate"]),  # [B, 1]
        helper.make_node("Sub", ["exam_probs", "natural_probs"], ["expert_gap"]),
        helper.make_node("Mul", ["gate", "expert_gap"], ["gated_gap"]),
        helper.make_node("Add", ["natural_probs", "gated_gap"], [output]),  # gate x exam + (1 - gate) x natural
    ]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        _embedding_input(embedding_weights.shape[0]),
    ]
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", classes])
    return make_model(nodes, inputs, [out], inits, "domain_classifier")


def with_domain_prior(model: onnx.ModelProto, table: np.ndarray, weight: float,
                      output: str = "scores") -> onnx.ModelProto:
    """(1 - weight) x the selector's own scores + weight x domain_probs @ table.

    `table` [14, M] is each domain's expected quality per model; the blend pulls a
    selector's noisy local estimate toward what the query's domain says.
    """
    graph = model.graph
    own = f"{output}_own"
    for node in graph.node:
        node.output[:] = [own if name == output else name for name in node.output]
    graph.input.append(helper.make_tensor_value_info("domain_probs", TensorProto.FLOAT, ["batch", table.shape[0]]))
    for name, value in {"prior_table": table.astype(np.float32),
                        "prior_weight": np.array(weight, dtype=np.float32),
                        "own_weight": np.array(1.0 - weight, dtype=np.float32)}.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
    graph.node.extend([
        helper.make_node("MatMul", ["domain_probs", "prior_table"], ["prior"]),
        helper.make_node("Mul", ["prior", "prior_weight"], ["prior_part"]),
        helper.make_node("Mul", [own, "own_weight"], ["own_part"]),
        helper.make_node("Add", ["own_part", "prior_part"], [output]),
    ])
    onnx.checker.check_model(model)
    return model


def quantize_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, D] keys as int8 with one scale per key: (rint(keys / scale), scale = max|key| / 127)."""
    keys = keys.astype(np.float32)
    scale = np.maximum(np.abs(keys).max(axis=1), np.float32(1e-12)) / np.float32(127)
    return np.clip(np.rint(keys / scale[:, None]), -127, 127).astype(np.int8), scale.astype(np.float32)


def int8_similarity(x: np.ndarray, keys_q: np.ndarray, key_scale: np.ndarray) -> np.ndarray:
    """x . keys^T as `topk_weighted_table(int8_keys=True)` computes it: each row of x is
    quantized to int8 with its own scale (so a row's result never depends on its batch),
    the products are exact int32, and both scales are applied after."""
    x = x.astype(np.float32)
    row_scale = np.maximum(np.abs(x).max(axis=1, keepdims=True), np.float32(1e-12)) / np.float32(127)
    x_q = np.rint(x / row_scale).astype(np.int32)
    return (x_q @ keys_q.T.astype(np.int32)).astype(np.float32) * row_scale * key_scale[None, :]


def _int8_similarity_nodes(keys_q: np.ndarray, key_scale: np.ndarray, inits: dict[str, np.ndarray]) -> list:
    """The graph of `int8_similarity`. Query and keys both go in as uint8 with zero point 128, and
    (q + 128) - 128 is exact. Not uint8 x int8: on x86 CPUs without VNNI (AVX2 only, e.g. AMD EPYC
    before Zen 4) onnxruntime's u8 x s8 kernel adds pairs of products in int16 and saturates, so
    neighbours came out wrong there; its u8 x u8 kernel widens first and is exact everywhere."""
    inits.update({
        "keys_u8_t": np.ascontiguousarray((keys_q.T.astype(np.int16) + 128).astype(np.uint8)),
        "key_scale": key_scale[None, :],
        "scale_floor": np.array(1e-12, dtype=np.float32),
        "int8_max": np.array(127, dtype=np.float32),
        "offset": np.array(128, dtype=np.float32),
        "zero_point": np.array(128, dtype=np.uint8),
    })
    return [
        helper.make_node("Abs", ["embedding"], ["abs_embedding"]),
        helper.make_node("ReduceMax", ["abs_embedding"], ["row_max"], axes=[1], keepdims=1),
        helper.make_node("Max", ["row_max", "scale_floor"], ["row_range"]),
        helper.make_node("Div", ["row_range", "int8_max"], ["row_scale"]),  # [B, 1]
        helper.make_node("Div", ["embedding", "row_scale"], ["scaled"]),
        helper.make_node("Round", ["scaled"], ["rounded"]),  # half to even, as np.rint
        helper.make_node("Add", ["rounded", "offset"], ["shifted"]),
        helper.make_node("Cast", ["shifted"], ["embedding_q"], to=TensorProto.UINT8),
        helper.make_node("MatMulInteger", ["embedding_q", "keys_u8_t", "zero_point", "zero_point"], ["dot_q"]),  # [B, N] int32
        helper.make_node("Cast", ["dot_q"], ["dot"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["dot", "row_scale"], ["dot_row"]),
        helper.make_node("Mul", ["dot_row", "key_scale"], ["similarity"]),
    ]


def topk_weighted_table(keys: np.ndarray, table: np.ndarray, k: int, temperature: float | None,
                        output: str = "scores", name: str = "selector",
                        int8_keys: tuple[np.ndarray, np.ndarray] | None = None,
                        extra_tables: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Weighted mean of `table` rows over the k keys most similar to the embedding.

    similarity = embedding . keys^T; weights over the top k are softmax(temperature x
    similarity) when a temperature is given, else the similarities clipped at 1e-6.
    KNN uses it over training queries (quality table = their results), KMeans over
    centroids (table = per-cluster mean quality). With `int8_keys` (`quantize_keys(keys)`) the
    similarities are `int8_similarity`'s: a quarter of the memory traffic, which bounds this
    step at batch 1. Each of `extra_tables` (output name -> [N, M'] table) becomes one more
    output, averaged with the same neighbours and weights.
    """
    n, dim = keys.shape
    k = min(k, n)
    inits = {
        "k": np.array([k], dtype=np.int64),
        "axes1": np.array([1], dtype=np.int64),
        "axes2": np.array([2], dtype=np.int64),
    }
    if int8_keys is not None:
        nodes = _int8_similarity_nodes(*int8_keys, inits)
    else:
        inits["keys_t"] = keys.T.astype(np.float32)
        nodes = [helper.make_node("MatMul", ["embedding", "keys_t"], ["similarity"])]
    nodes.append(helper.make_node("TopK", ["similarity", "k"], ["top_sim", "top_idx"], axis=1, largest=1, sorted=1))
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
    nodes.append(helper.make_node("Unsqueeze", ["weights", "axes2"], ["weights3"]))  # [B, k, 1]
    outputs = []
    for table_name, table_output, values in [("table", output, table), *(
            (f"{extra}_table", extra, values) for extra, values in (extra_tables or {}).items())]:
        inits[table_name] = values.astype(np.float32)
        nodes += [
            helper.make_node("Gather", [table_name, "top_idx"], [f"{table_output}_rows"], axis=0),  # [B, k, M]
            helper.make_node("Mul", [f"{table_output}_rows", "weights3"], [f"{table_output}_weighted"]),
            helper.make_node("ReduceSum", [f"{table_output}_weighted", "axes1"], [table_output], keepdims=0),
        ]
        outputs.append(helper.make_tensor_value_info(table_output, TensorProto.FLOAT, ["batch", values.shape[1]]))
    return make_model(nodes, [_embedding_input(dim)], outputs, inits, name)


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
    return make_model(nodes, [_embedding_input(dim)], [out], inits, "svm_selector")


def mlp_probabilities(weights: list[np.ndarray], biases: list[np.ndarray], output: str = "scores") -> onnx.ModelProto:
    """ReLU hidden layers and a sigmoid output per model: P(correct) for each catalog model."""
    inits: dict[str, np.ndarray] = {}
    nodes, h = [], "embedding"
    for i, (w, b) in enumerate(zip(weights, biases)):
        inits[f"w{i}"], inits[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        nodes += [helper.make_node("MatMul", [h, f"w{i}"], [f"z{i}_raw"]),
                  helper.make_node("Add", [f"z{i}_raw", f"b{i}"], [f"z{i}"])]
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
            h = f"h{i}"
    nodes.append(helper.make_node("Sigmoid", [f"z{len(weights) - 1}"], [output]))
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", weights[-1].shape[1]])
    return make_model(nodes, [_embedding_input(weights[0].shape[0])], [out], inits, "mlp_selector")


SHARED_TENSORS = ("input_ids", "attention_mask", "embedding", "domain_probs")


def copy_renamed(target: onnx.GraphProto, source: onnx.GraphProto, prefix: str, renames: dict[str, str]) -> None:
    """Copy `source`'s nodes and initializers into `target`, every private name under `prefix/`."""
    def rename(name: str) -> str:
        if name in renames:
            return renames[name]
        return name if name in SHARED_TENSORS or not name else f"{prefix}/{name}"

    for node in source.node:
        copy = target.node.add()
        copy.CopyFrom(node)
        copy.name = f"{prefix}/{node.name}" if node.name else ""
        copy.input[:] = [rename(name) for name in node.input]
        copy.output[:] = [rename(name) for name in node.output]
    for initializer in source.initializer:
        copy = target.initializer.add()
        copy.CopyFrom(initializer)
        copy.name = rename(initializer.name)


def combine_heads(classifier: onnx.ModelProto, selectors: dict[str, onnx.ModelProto]) -> onnx.ModelProto:
    """One graph for everything after the embedding: the domain classifier and every selector.

    In: input_ids, attention_mask, embedding. Out: domain_probs, `<algorithm>_scores`, and any
    further output a selector graph has under its own name (KNN's `expected_output_tokens`).
    One model instead of four saves a sequential hop and three model instances per query
    (docs/performance.md); each part stays the exact graph its tests check.
    """
    graph = helper.make_graph([], "router_heads", list(classifier.graph.input), list(classifier.graph.output))
    copy_renamed(graph, classifier.graph, "classifier", {})
    extras = []
    for algorithm, model in selectors.items():
        scores, *own_extras = model.graph.output
        copy_renamed(graph, model.graph, algorithm, {"scores": f"{algorithm}_scores",
                                                     **{extra.name: extra.name for extra in own_extras}})
        graph.output.add().CopyFrom(scores)
        graph.output[-1].name = f"{algorithm}_scores"
        extras += own_extras
    graph.output.extend(extras)
    combined = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="model-selector")
    combined.ir_version = 8
    onnx.checker.check_model(combined)
    return combined
