"""`model-selector import`: vLLM Semantic Router's pretrained selectors as ONNX graphs.

The reference stores its KNN, KMeans, SVM and MLP selectors as JSON (`knn_model.json`,
`kmeans_model.json`, `svm_model.json`, `mlp_model.json`; Hugging Face repo
`abdallah1008/semantic-router-ml-models`). They work on the reference's features: the
1024-d Qwen3-Embedding-0.6B vector followed by a 14-d one-hot of the query's domain, in
the order of `config.DOMAINS` (the reference's category list). Each graph here computes
those features from `embedding` and `domain_probs` and scores every catalog model so
that the decision step's masked argmax picks what the reference picks:

- KMeans: the model of the nearest centroid. Score = -(squared distance to the nearest
  centroid of that model), so a decision restricted to some models gets the nearest
  centroid among theirs.
- KNN: the reference's vote over the k nearest stored records (one per query x model):
  each neighbour adds 0.9 x quality + 0.1 x speed to its model, speed = 1 - the
  neighbour's latency min-max-normalised over the k neighbours (0 when they are all
  equal). Ties among neighbours at equal distance go to the earlier record; ties in the
  vote go to the decision step's rule (the reference breaks them at random).
- SVM: the true scikit-learn decision from the file's `support_vectors`, `dual_coef`,
  `intercept`: one-vs-one votes, ties to the lower class index as libsvm does. The
  reference itself serves `rbf_classifiers` with every alpha set to 1 and one shared
  rho, which is not the SVM it trained; we serve the trained one.
- MLP: the file's `layers` in order, as the reference runs them: linear, ReLU, batch norm
  with its running statistics, dropout as identity, in fp32. Score = the output logit of
  each model, so the masked argmax picks the reference's choice (it breaks exact ties
  toward the last model; the decision step's rule breaks them here).

Models the catalog has but an artifact does not know score -1e9: they are chosen only
when a decision allows nothing else. Imported scores are votes, not qualities, so the
decision step applies no cost trade-off to them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from model_selector.build.onnx_graphs import copy_renamed, make_model
from model_selector.core import layout
from model_selector.core.algorithms import ALGORITHMS, KMEANS, KNN, MLP, SVM
from model_selector.core.config import DOMAINS
from model_selector.core.files import sha256_files

log = logging.getLogger(__name__)

HUB_REPO = "abdallah1008/semantic-router-ml-models"
ARTIFACT_FILES = {a.name: a.reference_artifact for a in ALGORITHMS.values()}
MLP_LAYER_TYPES = ("linear", "relu", "batch_norm", "dropout")
REFERENCE_BACKBONE = "qwen3-0.6b"
REFERENCE_EMBEDDING_DIM = 1024
UNKNOWN_MODEL_SCORE = -1e9
QUALITY_WEIGHT, SPEED_WEIGHT = 0.9, 0.1


class ArtifactError(ValueError):
    """A reference artifact that cannot be imported, with the file and the reason."""


@dataclass(frozen=True)
class KmeansArtifact:
    centroids: np.ndarray  # [C, D]
    cluster_models: list[str]


@dataclass(frozen=True)
class KnnArtifact:
    k: int
    embeddings: np.ndarray  # [N, D], one row per (query, model) record
    labels: list[str]
    qualities: np.ndarray
    latencies_ns: np.ndarray


@dataclass(frozen=True)
class SvmArtifact:
    kernel: str  # "rbf" or "linear"
    gamma: float
    support_vectors: np.ndarray  # [S, D], grouped by class
    dual_coef: np.ndarray  # [C - 1, S]
    intercept: np.ndarray  # [C (C - 1) / 2]
    n_support: list[int]
    classes: list[str]


@dataclass(frozen=True)
class MlpArtifact:
    layers: list[dict]  # checked, in order; arrays as float32: linear {weight [out, in], bias [out]},
    # batch_norm {weight, bias, running_mean, running_var, eps}, relu {}, dropout {}
    model_names: list[str]  # output order
    feature_dim: int


Artifact = KmeansArtifact | KnnArtifact | SvmArtifact | MlpArtifact


def _matrix(data: dict, key: str, where: str) -> np.ndarray:
    try:
        value = np.asarray(data[key], dtype=np.float64)
    except KeyError:
        raise ArtifactError(f"{where}: no `{key}`") from None
    except (TypeError, ValueError):
        raise ArtifactError(f"{where}: `{key}` must be numbers") from None
    return value


def load_artifact(algorithm: str, path: Path) -> Artifact:
    """Read and check one reference artifact file."""
    where = str(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{where}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or data.get("algorithm", algorithm) != algorithm:
        raise ArtifactError(f"{where}: not a {algorithm} artifact (algorithm: {data.get('algorithm')!r})"
                            if isinstance(data, dict) else f"{where}: expected a JSON object")
    if data.get("trained") is False:
        raise ArtifactError(f"{where}: the artifact says it was never trained (`trained: false`)")
    if algorithm == KMEANS.name:
        centroids = _matrix(data, "centroids", where)
        models = data.get("cluster_models")
        if centroids.ndim != 2 or not isinstance(models, list) or len(models) != len(centroids):
            raise ArtifactError(f"{where}: `centroids` must be [clusters x features] with one `cluster_models` "
                                "entry per centroid")
        return KmeansArtifact(centroids, [str(m) for m in models])
    if algorithm == KNN.name:
        embeddings = _matrix(data, "embeddings", where)
        labels = data.get("labels")
        qualities, latencies = _matrix(data, "qualities", where), _matrix(data, "latencies", where)
        if embeddings.ndim != 2 or not isinstance(labels, list) or \
                not len(embeddings) == len(labels) == len(qualities) == len(latencies):
            raise ArtifactError(f"{where}: `embeddings` [records x features], `labels`, `qualities` and "
                                "`latencies` must have one entry per record")
        k = int(data.get("k", 5))
        if k < 1:
            raise ArtifactError(f"{where}: k must be at least 1, got {k}")
        return KnnArtifact(min(k, len(labels)), embeddings, [str(m) for m in labels], qualities, latencies)
    if algorithm == SVM.name:
        missing = [key for key in ("support_vectors", "dual_coef", "intercept", "n_support", "classes")
                   if key not in data]
        if missing:
            raise ArtifactError(f"{where}: no {', '.join(missing)}: the file lacks the trained scikit-learn SVM "
                                "(its `rbf_classifiers` block is the reference's lossy export and is not imported)")
        kernel = str(data.get("kernel_type", "Rbf")).lower()
        if kernel not in ("rbf", "linear"):
            raise ArtifactError(f"{where}: kernel_type {data.get('kernel_type')!r} is not supported (Rbf, Linear)")
        vectors, dual = _matrix(data, "support_vectors", where), _matrix(data, "dual_coef", where)
        classes, n_support = [str(c) for c in data["classes"]], [int(n) for n in data["n_support"]]
        intercept = _matrix(data, "intercept", where).reshape(-1)
        c = len(classes)
        if c < 2 or len(n_support) != c or sum(n_support) != len(vectors) or dual.shape != (c - 1, len(vectors)) \
                or len(intercept) != c * (c - 1) // 2:
            raise ArtifactError(f"{where}: support_vectors, dual_coef, intercept, n_support and classes do not "
                                "describe one multi-class SVC")
        return SvmArtifact(kernel, float(data.get("gamma", 1.0)), vectors, dual, intercept, n_support, classes)
    if algorithm == MLP.name:
        return _load_mlp(data, where)
    raise ArtifactError(f"unknown algorithm {algorithm!r}")


def _load_mlp(data: dict, where: str) -> MlpArtifact:
    names, layers = data.get("model_names"), data.get("layers")
    if not isinstance(names, list) or not names:
        raise ArtifactError(f"{where}: no `model_names` (the output order of the network)")
    if not isinstance(layers, list) or not layers:
        raise ArtifactError(f"{where}: no `layers` (the network's nn.Sequential, in order)")
    checked: list[dict] = []
    width = data.get("feature_dim")
    for i, layer in enumerate(layers):
        at = f"{where}: layers[{i}]"
        kind = layer.get("type") if isinstance(layer, dict) else None
        if kind not in MLP_LAYER_TYPES:
            raise ArtifactError(f"{at}: type {kind!r}; expected one of {', '.join(MLP_LAYER_TYPES)}")
        if kind == "linear":
            weight = _matrix(layer, "weight", at)
            bias = np.zeros(weight.shape[0]) if layer.get("bias") is None else _matrix(layer, "bias", at)
            if weight.ndim != 2 or bias.shape != (weight.shape[0],):
                raise ArtifactError(f"{at}: `weight` must be [out_features][in_features] and `bias` [out_features]")
            if width is not None and weight.shape[1] != width:
                raise ArtifactError(f"{at}: takes {weight.shape[1]} inputs but the layer before gives {width}")
            width = weight.shape[0]
            checked.append({"type": kind, "weight": weight.astype(np.float32), "bias": bias.astype(np.float32)})
        elif kind == "batch_norm":
            stats = {key: _matrix(layer, key, at).astype(np.float32)
                     for key in ("weight", "bias", "running_mean", "running_var")}
            if width is None or any(v.shape != (width,) for v in stats.values()):
                raise ArtifactError(f"{at}: weight, bias, running_mean and running_var must have one entry per "
                                    f"feature of the layer before ({width})")
            checked.append({"type": kind, **stats, "eps": np.float32(layer.get("eps", 1e-5))})
        else:
            checked.append({"type": kind})
    linears = [layer for layer in checked if layer["type"] == "linear"]
    if not linears:
        raise ArtifactError(f"{where}: the network has no linear layer")
    if width != len(names):
        raise ArtifactError(f"{where}: the network ends with {width} outputs but `model_names` names {len(names)}")
    return MlpArtifact(checked, [str(m) for m in names], int(linears[0]["weight"].shape[1]))


def artifact_models(artifact: Artifact) -> set[str]:
    if isinstance(artifact, KmeansArtifact):
        return set(artifact.cluster_models)
    if isinstance(artifact, KnnArtifact):
        return set(artifact.labels)
    if isinstance(artifact, MlpArtifact):
        return set(artifact.model_names)
    return set(artifact.classes)


def artifact_feature_dim(artifact: Artifact) -> int:
    if isinstance(artifact, KmeansArtifact):
        return artifact.centroids.shape[1]
    if isinstance(artifact, KnnArtifact):
        return artifact.embeddings.shape[1]
    if isinstance(artifact, MlpArtifact):
        return artifact.feature_dim
    return artifact.support_vectors.shape[1]


class _Graph:
    """Nodes and initializers of one selector graph over (embedding, domain_probs)."""

    def __init__(self, embedding_dim: int):
        self.embedding_dim = embedding_dim
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {
            "axes1": np.array([1], dtype=np.int64), "axes2": np.array([2], dtype=np.int64),
            "zero": np.array(0.0, dtype=np.float32), "one": np.array(1.0, dtype=np.float32),
            "minus_two": np.array(-2.0, dtype=np.float32),
        }
        self.node("ArgMax", ["domain_probs"], ["domain_index"], axis=1, keepdims=0)
        self.inits["depth"] = np.array([len(DOMAINS)], dtype=np.int64)
        self.inits["one_hot_values"] = np.array([0.0, 1.0], dtype=np.float32)
        self.node("OneHot", ["domain_index", "depth", "one_hot_values"], ["domain_one_hot"], axis=-1)
        self.node("Concat", ["embedding", "domain_one_hot"], ["features"], axis=1)

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def squared_distances(self, points: np.ndarray, name: str) -> str:
        """[B, len(points)] squared L2 distances from the features to `points`."""
        self.inits[f"{name}_t"] = points.T.astype(np.float32)
        self.inits[f"{name}_sq"] = (points ** 2).sum(axis=1).astype(np.float32)[None, :]
        self.node("Mul", ["features", "features"], [f"{name}_x_sq_elems"])
        self.node("ReduceSum", [f"{name}_x_sq_elems", "axes1"], [f"{name}_x_sq"], keepdims=1)
        self.node("MatMul", ["features", f"{name}_t"], [f"{name}_dot"])
        self.node("Mul", [f"{name}_dot", "minus_two"], [f"{name}_minus_two_dot"])
        self.node("Add", [f"{name}_minus_two_dot", f"{name}_x_sq"], [f"{name}_partial"])
        self.node("Add", [f"{name}_partial", f"{name}_sq"], [f"{name}_d2_raw"])
        self.node("Max", [f"{name}_d2_raw", "zero"], [f"{name}_d2"])
        return f"{name}_d2"

    def model(self, scores: str, catalog: list[str], name: str) -> onnx.ModelProto:
        self.node("Identity", [scores], ["scores"])
        return make_model(
            self.nodes,
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", self.embedding_dim]),
             helper.make_tensor_value_info("domain_probs", TensorProto.FLOAT, ["batch", len(DOMAINS)])],
            [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", len(catalog)])],
            self.inits, name)


def _columns(names: list[str], catalog: list[str]) -> np.ndarray:
    """[len(names), len(catalog)] one-hot placement of each name's column."""
    placement = np.zeros((len(names), len(catalog)), dtype=np.float32)
    for row, name in enumerate(names):
        placement[row, catalog.index(name)] = 1.0
    return placement


def _unknown_bias(known: set[str], catalog: list[str]) -> np.ndarray:
    return np.array([[0.0 if m in known else UNKNOWN_MODEL_SCORE for m in catalog]], dtype=np.float32)


def kmeans_graph(artifact: KmeansArtifact, catalog: list[str], embedding_dim: int) -> onnx.ModelProto:
    g = _Graph(embedding_dim)
    d2 = g.squared_distances(artifact.centroids, "centroids")
    # [C, M]: 0 where the centroid routes to the model, else a large distance.
    g.inits["cluster_mask"] = np.where(_columns(artifact.cluster_models, catalog) > 0, 0.0,
                                       -UNKNOWN_MODEL_SCORE).astype(np.float32)
    g.node("Unsqueeze", [d2, "axes2"], ["d2_3d"])
    g.node("Add", ["d2_3d", "cluster_mask"], ["d2_per_model"])  # [B, C, M]
    g.node("ReduceMin", ["d2_per_model"], ["nearest_d2"], axes=[1], keepdims=0)  # opset 17: axes attribute
    g.node("Neg", ["nearest_d2"], [KMEANS.scores_output])
    return g.model(KMEANS.scores_output, catalog, "reference_kmeans")


def knn_graph(artifact: KnnArtifact, catalog: list[str], embedding_dim: int) -> onnx.ModelProto:
    g = _Graph(embedding_dim)
    d2 = g.squared_distances(artifact.embeddings, "records")
    g.inits.update({
        "k": np.array([artifact.k], dtype=np.int64),
        "qualities": artifact.qualities.astype(np.float32),
        "latencies": (artifact.latencies_ns / 1e9).astype(np.float32),  # seconds: min-max is scale-free
        "record_models": _columns(artifact.labels, catalog),  # [N, M]
        "quality_weight": np.array(QUALITY_WEIGHT, dtype=np.float32),
        "speed_weight": np.array(SPEED_WEIGHT, dtype=np.float32),
        "tiny": np.array(1e-12, dtype=np.float32),
        "unknown_bias": _unknown_bias(set(artifact.labels), catalog),
    })
    g.node("TopK", [d2, "k"], ["top_d2", "top_idx"], axis=1, largest=0, sorted=1)
    g.node("Gather", ["qualities", "top_idx"], ["top_quality"], axis=0)  # [B, k]
    g.node("Gather", ["latencies", "top_idx"], ["top_latency"], axis=0)
    g.node("ReduceMin", ["top_latency"], ["latency_min"], axes=[1], keepdims=1)
    g.node("ReduceMax", ["top_latency"], ["latency_max"], axes=[1], keepdims=1)
    g.node("Sub", ["latency_max", "latency_min"], ["latency_range"])
    g.node("Max", ["latency_range", "tiny"], ["latency_range_safe"])
    g.node("Sub", ["top_latency", "latency_min"], ["latency_offset"])
    g.node("Div", ["latency_offset", "latency_range_safe"], ["latency_norm"])
    g.node("Sub", ["one", "latency_norm"], ["speed"])
    g.node("Mul", ["top_quality", "quality_weight"], ["quality_part"])
    g.node("Mul", ["speed", "speed_weight"], ["speed_part"])
    g.node("Add", ["quality_part", "speed_part"], ["vote"])  # [B, k]
    g.node("Gather", ["record_models", "top_idx"], ["neighbour_models"], axis=0)  # [B, k, M]
    g.node("Unsqueeze", ["vote", "axes2"], ["vote_3d"])
    g.node("Mul", ["neighbour_models", "vote_3d"], ["votes_per_model"])
    g.node("ReduceSum", ["votes_per_model", "axes1"], ["votes"], keepdims=0)
    g.node("Add", ["votes", "unknown_bias"], [KNN.scores_output])
    return g.model(KNN.scores_output, catalog, "reference_knn")


def svm_graph(artifact: SvmArtifact, catalog: list[str], embedding_dim: int) -> onnx.ModelProto:
    classes = artifact.classes
    c = len(classes)
    starts = np.concatenate([[0], np.cumsum(artifact.n_support)])
    pairs = [(i, j) for i in range(c) for j in range(i + 1, c)]
    coef = np.zeros((len(artifact.support_vectors), len(pairs)))
    for p, (i, j) in enumerate(pairs):
        coef[starts[i]:starts[i + 1], p] = artifact.dual_coef[j - 1, starts[i]:starts[i + 1]]
        coef[starts[j]:starts[j + 1], p] = artifact.dual_coef[i, starts[j]:starts[j + 1]]
    intercept = artifact.intercept.copy()
    if c == 2:  # scikit-learn stores the binary case with flipped signs
        coef, intercept = -coef, -intercept
    first = np.zeros((len(pairs), c), dtype=np.float32)
    second = np.zeros((len(pairs), c), dtype=np.float32)
    for p, (i, j) in enumerate(pairs):
        first[p, i], second[p, j] = 1.0, 1.0

    g = _Graph(embedding_dim)
    g.inits.update({
        "pair_coef": coef.astype(np.float32), "pair_intercept": intercept.astype(np.float32),
        "first_class": first, "second_class": second,
        # libsvm: among equal vote counts the lower class index wins.
        "class_tiebreak": (-1e-3 * np.arange(c, dtype=np.float32))[None, :],
        "class_columns": _columns(classes, catalog),
        "unknown_bias": _unknown_bias(set(classes), catalog),
    })
    if artifact.kernel == "rbf":
        d2 = g.squared_distances(artifact.support_vectors, "support")
        g.inits["neg_gamma"] = np.array(-artifact.gamma, dtype=np.float32)
        g.node("Mul", [d2, "neg_gamma"], ["kernel_logits"])
        g.node("Exp", ["kernel_logits"], ["kernel"])
    else:
        g.inits["support_t"] = artifact.support_vectors.T.astype(np.float32)
        g.node("MatMul", ["features", "support_t"], ["kernel"])
    g.node("MatMul", ["kernel", "pair_coef"], ["pair_raw"])
    g.node("Add", ["pair_raw", "pair_intercept"], ["pair_decision"])  # [B, P]
    g.node("Greater", ["pair_decision", "zero"], ["first_wins_bool"])
    g.node("Cast", ["first_wins_bool"], ["first_wins"], to=TensorProto.FLOAT)
    g.node("Sub", ["one", "first_wins"], ["second_wins"])
    g.node("MatMul", ["first_wins", "first_class"], ["first_votes"])
    g.node("MatMul", ["second_wins", "second_class"], ["second_votes"])
    g.node("Add", ["first_votes", "second_votes"], ["class_votes"])  # [B, C]
    g.node("Add", ["class_votes", "class_tiebreak"], ["class_scores"])
    g.node("MatMul", ["class_scores", "class_columns"], ["catalog_scores"])
    g.node("Add", ["catalog_scores", "unknown_bias"], [SVM.scores_output])
    return g.model(SVM.scores_output, catalog, "reference_svm")


def mlp_graph(artifact: MlpArtifact, catalog: list[str], embedding_dim: int) -> onnx.ModelProto:
    g = _Graph(embedding_dim)
    h = "features"
    for i, layer in enumerate(artifact.layers):
        kind = layer["type"]
        if kind == "linear":
            g.inits[f"w{i}"], g.inits[f"b{i}"] = layer["weight"].T.copy(), layer["bias"]
            g.node("MatMul", [h, f"w{i}"], [f"l{i}_raw"])
            g.node("Add", [f"l{i}_raw", f"b{i}"], [f"l{i}"])
        elif kind == "relu":
            g.node("Relu", [h], [f"l{i}"])
        elif kind == "batch_norm":  # torch's eval-mode formula, step by step in fp32
            g.inits[f"mean{i}"] = layer["running_mean"]
            g.inits[f"std{i}"] = np.sqrt(layer["running_var"] + layer["eps"]).astype(np.float32)
            g.inits[f"gain{i}"], g.inits[f"shift{i}"] = layer["weight"], layer["bias"]
            g.node("Sub", [h, f"mean{i}"], [f"l{i}_centred"])
            g.node("Div", [f"l{i}_centred", f"std{i}"], [f"l{i}_normed"])
            g.node("Mul", [f"l{i}_normed", f"gain{i}"], [f"l{i}_scaled"])
            g.node("Add", [f"l{i}_scaled", f"shift{i}"], [f"l{i}"])
        else:  # dropout: identity at inference
            continue
        h = f"l{i}"
    g.inits["output_models"] = _columns(artifact.model_names, catalog)  # [classes, M]
    g.inits["unknown_bias"] = _unknown_bias(set(artifact.model_names), catalog)
    g.node("MatMul", [h, "output_models"], ["logits_per_model"])
    g.node("Add", ["logits_per_model", "unknown_bias"], [MLP.scores_output])
    return g.model(MLP.scores_output, catalog, "reference_mlp")


GRAPH_BUILDERS = {KMEANS.name: kmeans_graph, KNN.name: knn_graph, SVM.name: svm_graph, MLP.name: mlp_graph}


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers that no graph output depends on."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def splice_into_heads(heads: onnx.ModelProto, imported: dict[str, onnx.ModelProto]) -> onnx.ModelProto:
    """`heads` with each `<algorithm>_scores` output computed by the imported graph instead."""
    spliced = onnx.ModelProto()
    spliced.CopyFrom(heads)
    graph = spliced.graph
    for algorithm, model in imported.items():
        output = f"{algorithm}_scores"
        retired = f"{algorithm}/native_scores"
        for node in graph.node:
            node.output[:] = [retired if name == output else name for name in node.output]
        copy_renamed(graph, model.graph, f"reference_{algorithm}", {"scores": output})
    _prune(graph)
    onnx.checker.check_model(spliced)
    return spliced


def download_artifacts(repo_id: str = HUB_REPO, cache_dir: Path | None = None) -> Path:
    """The reference's selector files from the Hugging Face hub (cached); a clear error offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(ARTIFACT_FILES.values()),
                                      cache_dir=str(cache_dir) if cache_dir else None))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise ArtifactError(f"could not download {repo_id} from the Hugging Face hub ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:200]}); download {', '.join(ARTIFACT_FILES.values())} "
                            "elsewhere and pass their directory with --from") from None


def import_artifacts(source: Path, repository: Path) -> dict[str, dict]:
    """Replace the repository's selectors by the reference artifacts found in `source`."""
    manifest = layout.read_manifest(repository)
    backbone = manifest["backbone"]
    if backbone["name"] != REFERENCE_BACKBONE or backbone["embedding_dim"] != REFERENCE_EMBEDDING_DIM:
        raise ArtifactError(
            f"{repository} is built on the {backbone['name']} backbone ({backbone['embedding_dim']}-d); the "
            f"reference's selectors expect Qwen3-Embedding-0.6B features ({REFERENCE_EMBEDDING_DIM}-d embedding + "
            f"{len(DOMAINS)}-d domain one-hot), so they pair only with the {REFERENCE_BACKBONE} backbone: run "
            f"`model-selector build --embedding {REFERENCE_BACKBONE} --no-domain-tuning` first")
    if backbone.get("domain_tuned"):
        raise ArtifactError(
            f"{repository} has a domain-tuned backbone; the reference's selectors were trained on the untuned "
            f"{REFERENCE_BACKBONE} embeddings: run `model-selector build --embedding {REFERENCE_BACKBONE} "
            "--no-domain-tuning` first")
    decision_dir = repository / layout.DECISION / layout.VERSION
    selectors_path = decision_dir / "selectors.json"
    selectors = json.loads(selectors_path.read_text())
    catalog = selectors["models"]
    found = {a: source / f for a, f in ARTIFACT_FILES.items() if (source / f).is_file()}
    if not found:
        raise ArtifactError(f"{source}: none of {', '.join(ARTIFACT_FILES.values())} is there")
    graphs, imported = {}, {}
    for algorithm, path in found.items():
        artifact = load_artifact(algorithm, path)
        feature_dim = artifact_feature_dim(artifact)
        if feature_dim != REFERENCE_EMBEDDING_DIM + len(DOMAINS):
            raise ArtifactError(f"{path}: {feature_dim}-d features; the reference's layout is "
                                f"{REFERENCE_EMBEDDING_DIM} + {len(DOMAINS)} = {REFERENCE_EMBEDDING_DIM + len(DOMAINS)}")
        unknown = sorted(artifact_models(artifact) - set(catalog))
        if unknown:
            raise ArtifactError(f"{path} routes to model(s) missing from the repository's catalog: "
                                f"{', '.join(unknown)}; add them to `models` in router.yaml and rebuild")
        graphs[algorithm] = GRAPH_BUILDERS[algorithm](artifact, catalog, REFERENCE_EMBEDDING_DIM)
        imported[algorithm] = {"file": path.name, "sha256": sha256_files(path)}
        log.info("imported the reference's %s selector from %s", algorithm, path)
    heads_path = repository / layout.HEADS / layout.VERSION / "model.onnx"
    onnx.save(splice_into_heads(onnx.load(str(heads_path)), graphs), str(heads_path))
    selectors["imported"] = {**selectors.get("imported", {}), **imported}
    selectors_path.write_text(json.dumps(selectors, indent=1))
    return imported
