"""`model-selector import`: the reference's selectors, converted to ONNX, choose what the
reference's own rules choose.

KMeans is checked with the real artifact the reference commits (`data/reference/
kmeans_model.json`, copied from its repository). KNN and SVM artifacts are not available
offline, so they are written here the way the reference's trainer writes them, from small
synthetic data, and checked against the reference's KNN vote and the trained scikit-learn
SVM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.cluster import KMeans
from sklearn.svm import SVC

from model_selector.compat.reference_selectors import (
    ArtifactError,
    download_artifacts,
    import_artifacts,
    kmeans_graph,
    knn_graph,
    load_artifact,
    mlp_graph,
    splice_into_heads,
    svm_graph,
)
from model_selector.core import layout
from model_selector.core.config import DOMAINS
from model_selector.core.contract import EXPECTED_TOKENS

DATA = Path(__file__).parent / "data" / "reference"
REFERENCE_MODELS = ["codellama-7b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b"]
# A catalog model the artifacts never heard of: it must never be chosen while others are allowed.
CATALOG = REFERENCE_MODELS + ["gpt-4o-2024-05-13"]


def random_inputs(n: int, embedding_dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=(n, embedding_dim)).astype(np.float32)
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
    domain_probs = rng.dirichlet(np.full(len(DOMAINS), 0.3), size=n).astype(np.float32)
    return embedding, domain_probs


def reference_features(embedding: np.ndarray, domain_probs: np.ndarray) -> np.ndarray:
    """The reference's layout: embedding, then a one-hot of the query's domain."""
    one_hot = np.eye(len(DOMAINS))[np.argmax(domain_probs, axis=1)]
    return np.concatenate([embedding.astype(np.float64), one_hot], axis=1)


def choose(model: onnx.ModelProto, embedding: np.ndarray, domain_probs: np.ndarray,
           allowed: list[str] | None = None) -> list[str]:
    """The catalog model the decision step would pick from these scores (no cost weight)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    scores = session.run(["scores"], {"embedding": embedding, "domain_probs": domain_probs})[0]
    if allowed is not None:
        scores = np.where(np.isin(CATALOG, allowed)[None, :], scores, -np.inf)
    return [CATALOG[i] for i in np.argmax(scores, axis=1)]


# --- KMeans: the reference's committed artifact ------------------------------------------

def reference_kmeans_rule(features: np.ndarray, artifact: dict, allowed: list[str] | None = None) -> list[str]:
    centroids = np.asarray(artifact["centroids"])
    models = artifact["cluster_models"]
    distances = ((features[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    if allowed is not None:
        distances[:, [m not in allowed for m in models]] = np.inf
    return [models[i] for i in np.argmin(distances, axis=1)]


def test_the_reference_kmeans_artifact_imports_exactly():
    artifact_json = json.loads((DATA / "kmeans_model.json").read_text())
    graph = kmeans_graph(load_artifact("kmeans", DATA / "kmeans_model.json"), CATALOG, 1024)
    embedding, domain_probs = random_inputs(3000, 1024, seed=1)
    features = reference_features(embedding, domain_probs)
    assert choose(graph, embedding, domain_probs) == reference_kmeans_rule(features, artifact_json)
    allowed = ["llama-3.2-1b", "mistral-7b"]
    assert choose(graph, embedding, domain_probs, allowed) == reference_kmeans_rule(features, artifact_json, allowed)
    assert len(set(reference_kmeans_rule(features, artifact_json))) == 3  # every routed model is exercised


# --- KNN: written like the reference's trainer, one row per (query, model) record --------

def synthetic_records(n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """(features, model, quality, latency in ns) per record, as the reference's trainer sees them."""
    rng = np.random.default_rng(seed)
    embedding, domain_probs = random_inputs(n_queries, dim, seed)
    features = reference_features(embedding, domain_probs)
    rows, labels, qualities, latencies = [], [], [], []
    for query in features:
        for model in REFERENCE_MODELS:
            rows.append(query)
            labels.append(model)
            qualities.append(rng.uniform())
            latencies.append(rng.uniform(0.2, 9.0) * 1e9)
    return np.array(rows), labels, np.array(qualities), np.array(latencies)


def write_reference_knn(path: Path, k: int, features, labels, qualities, latencies) -> dict:
    artifact = {"algorithm": "knn", "trained": True, "k": k, "embeddings": features.tolist(), "labels": labels,
                "qualities": qualities.tolist(), "latencies": latencies.tolist()}
    path.write_text(json.dumps(artifact))
    return artifact


def reference_knn_rule(features: np.ndarray, artifact: dict) -> list[str]:
    stored = np.asarray(artifact["embeddings"])
    qualities, latencies = np.asarray(artifact["qualities"]), np.asarray(artifact["latencies"])
    chosen = []
    for x in features:
        distances = ((stored - x) ** 2).sum(axis=1)
        nearest = np.argsort(distances, kind="stable")[: artifact["k"]]
        lat = latencies[nearest]
        spread = lat.max() - lat.min()
        speed = 1.0 - ((lat - lat.min()) / spread if spread > 0 else np.zeros_like(lat))
        votes: dict[str, float] = {}
        for index, s in zip(nearest, speed):
            model = artifact["labels"][index]
            votes[model] = votes.get(model, 0.0) + 0.9 * qualities[index] + 0.1 * s
        chosen.append(max(votes, key=votes.get))
    return chosen


def test_a_reference_knn_artifact_votes_like_the_reference(tmp_path):
    dim = 24
    records = synthetic_records(60, dim, seed=2)
    artifact = write_reference_knn(tmp_path / "knn_model.json", 5, *records)
    graph = knn_graph(load_artifact("knn", tmp_path / "knn_model.json"), CATALOG, dim)
    embedding, domain_probs = random_inputs(2000, dim, seed=3)
    expected = reference_knn_rule(reference_features(embedding, domain_probs), artifact)
    assert choose(graph, embedding, domain_probs) == expected
    assert len(set(expected)) == len(REFERENCE_MODELS)


# --- SVM: the trained scikit-learn SVC, not the reference's lossy export -----------------

def write_reference_svm(path: Path, features, labels, qualities, gamma: float = 1.0) -> SVC:
    """Train as the reference does (RBF SVC, C=1, records repeated 1-3 times by quality) and
    write both its lossy `rbf_classifiers` block and the true scikit-learn arrays."""
    repeats = 1 + np.round(2 * qualities).astype(int)
    x = np.repeat(features, repeats, axis=0)
    y = np.repeat(np.array(labels), repeats)
    svc = SVC(kernel="rbf", gamma=gamma, C=1.0).fit(x, y)
    starts = np.concatenate([[0], np.cumsum(svc.n_support_)])
    lossy = [{"model_name": str(c), "alpha": [1.0] * int(svc.n_support_[i]),
              "support_vectors": svc.support_vectors_[starts[i]:starts[i + 1]].tolist(),
              "rho": float(-svc.intercept_[0]), "gamma": gamma} for i, c in enumerate(svc.classes_)]
    path.write_text(json.dumps({
        "algorithm": "svm", "trained": True, "model_names": [str(c) for c in svc.classes_], "kernel_type": "Rbf",
        "gamma": gamma, "rbf_classifiers": lossy, "linear_classifiers": [],
        "support_vectors": svc.support_vectors_.tolist(), "dual_coef": svc.dual_coef_.tolist(),
        "intercept": svc.intercept_.tolist(), "n_support": svc.n_support_.tolist(),
        "classes": [str(c) for c in svc.classes_],
    }))
    return svc


@pytest.mark.parametrize("models", [REFERENCE_MODELS, REFERENCE_MODELS[1:3]], ids=["4 classes", "2 classes"])
def test_a_reference_svm_artifact_decides_like_the_trained_svc(tmp_path, models):
    dim = 12
    features, labels, qualities, _ = synthetic_records(40, dim, seed=4)
    keep = np.isin(labels, models)
    svc = write_reference_svm(tmp_path / "svm_model.json", features[keep], list(np.array(labels)[keep]),
                              qualities[keep])
    graph = svm_graph(load_artifact("svm", tmp_path / "svm_model.json"), CATALOG, dim)
    embedding, domain_probs = random_inputs(2000, dim, seed=5)
    expected = list(svc.predict(reference_features(embedding, domain_probs)))
    assert choose(graph, embedding, domain_probs) == expected
    assert len(set(expected)) > 1


def test_an_svm_file_without_the_trained_arrays_is_refused(tmp_path):
    path = tmp_path / "svm_model.json"
    path.write_text(json.dumps({"algorithm": "svm", "trained": True, "kernel_type": "Rbf", "rbf_classifiers": []}))
    with pytest.raises(ArtifactError, match="lacks the trained scikit-learn SVM"):
        load_artifact("svm", path)


# --- MLP: the reference's network, layer by layer --------------------------------------

def write_reference_mlp(path: Path, feature_dim: int, hidden: list[int], models: list[str], seed: int) -> dict:
    """`mlp_model.json` as the reference's trainer writes it, with generated weights: Linear, ReLU,
    BatchNorm1d (running statistics), Dropout per hidden layer, then the output Linear."""
    rng = np.random.default_rng(seed)
    layers, width = [], feature_dim
    for size in hidden:
        layers += [{"type": "linear", "in_features": width, "out_features": size,
                    "weight": rng.normal(0, 1 / np.sqrt(width), (size, width)).tolist(),
                    "bias": rng.normal(0, 0.1, size).tolist()},
                   {"type": "relu"},
                   {"type": "batch_norm", "num_features": size, "weight": rng.uniform(0.5, 1.5, size).tolist(),
                    "bias": rng.normal(0, 0.1, size).tolist(), "running_mean": rng.uniform(0, 0.5, size).tolist(),
                    "running_var": rng.uniform(0.05, 0.5, size).tolist(), "eps": 1e-5},
                   {"type": "dropout", "p": 0.1}]
        width = size
    layers.append({"type": "linear", "in_features": width, "out_features": len(models),
                   "weight": rng.normal(0, 1 / np.sqrt(width), (len(models), width)).tolist(), "bias": None})
    artifact = {"algorithm": "mlp", "trained": True, "model_names": models, "feature_dim": feature_dim,
                "n_classes": len(models), "hidden_sizes": hidden, "dropout": 0.1, "layers": layers,
                "learning_rate": 0.001, "epochs": 100, "batch_size": 32}
    path.write_text(json.dumps(artifact))
    return artifact


def reference_mlp_rule(features: np.ndarray, artifact: dict) -> list[str]:
    """The reference's inference, re-implemented from its description: f32, dropout as identity,
    batch norm with running statistics, argmax with the last maximum winning a tie."""
    h = features.astype(np.float32)
    for layer in artifact["layers"]:
        if layer["type"] == "linear":
            h = h @ np.asarray(layer["weight"], dtype=np.float32).T
            if layer["bias"] is not None:
                h = h + np.asarray(layer["bias"], dtype=np.float32)
        elif layer["type"] == "relu":
            h = np.maximum(h, 0)
        elif layer["type"] == "batch_norm":
            f = {k: np.asarray(layer[k], dtype=np.float32) for k in ("weight", "bias", "running_mean", "running_var")}
            h = (h - f["running_mean"]) / np.sqrt(f["running_var"] + np.float32(layer["eps"])) * f["weight"] + f["bias"]
    last_max = h.shape[1] - 1 - np.argmax(h[:, ::-1], axis=1)
    return [artifact["model_names"][i] for i in last_max]


@pytest.mark.parametrize("hidden", [[32, 16], [8]], ids=["the reference's shape, smaller", "one hidden layer"])
def test_a_reference_mlp_artifact_chooses_like_the_reference(tmp_path, hidden):
    dim = 20
    artifact = write_reference_mlp(tmp_path / "mlp_model.json", dim + len(DOMAINS), hidden, REFERENCE_MODELS, seed=7)
    graph = mlp_graph(load_artifact("mlp", tmp_path / "mlp_model.json"), CATALOG, dim)
    embedding, domain_probs = random_inputs(2000, dim, seed=8)
    expected = reference_mlp_rule(reference_features(embedding, domain_probs), artifact)
    assert choose(graph, embedding, domain_probs) == expected
    assert len(set(expected)) == len(REFERENCE_MODELS)
    allowed = REFERENCE_MODELS[1:3]  # a decision's modelRefs: the best of the allowed logits
    masked = choose(graph, embedding, domain_probs, allowed)
    assert set(masked) <= set(allowed) and len(set(masked)) == 2


@pytest.mark.parametrize("damage, message", [
    (lambda a: a["layers"].insert(1, {"type": "gelu"}), r"layers\[1\]: type 'gelu'; expected one of linear"),
    (lambda a: a["layers"][0].update(weight=[[0.0] * 3] * 8), r"layers\[0\]: takes 3 inputs but the layer before gives 34"),
    (lambda a: a["layers"][2].update(running_var=[1.0]), r"layers\[2\]: weight, bias, running_mean and running_var"),
    (lambda a: a.update(model_names=REFERENCE_MODELS[:3]), r"ends with 4 outputs but `model_names` names 3"),
    (lambda a: a.pop("layers"), r"no `layers`"),
], ids=["unknown layer", "wrong width", "batch norm size", "names", "no layers"])
def test_a_malformed_mlp_artifact_is_refused_with_the_layer_named(tmp_path, damage, message):
    artifact = write_reference_mlp(tmp_path / "mlp_model.json", 20 + len(DOMAINS), [8], REFERENCE_MODELS, seed=9)
    damage(artifact)
    (tmp_path / "mlp_model.json").write_text(json.dumps(artifact))
    with pytest.raises(ArtifactError, match=message):
        load_artifact("mlp", tmp_path / "mlp_model.json")


# --- Into a repository ------------------------------------------------------------------

def test_import_refuses_a_repository_on_another_backbone(built_repository, tmp_path):
    before = (built_repository / layout.HEADS / layout.VERSION / "model.onnx").stat().st_mtime
    with pytest.raises(ArtifactError, match="pair only with the qwen3-0.6b backbone.*--embedding qwen3-0.6b"):
        import_artifacts(DATA, built_repository)
    result = subprocess.run([sys.executable, "-m", "model_selector.cli", "import", "--from", str(DATA),
                             "--repository", str(built_repository)], capture_output=True, text=True)
    assert result.returncode == 2 and "qwen3-0.6b" in result.stderr
    assert (built_repository / layout.HEADS / layout.VERSION / "model.onnx").stat().st_mtime == before


def test_import_refuses_a_domain_tuned_backbone(built_repository, tmp_path):
    manifest = json.loads((built_repository / layout.MANIFEST).read_text())
    manifest["backbone"].update(name="qwen3-0.6b", embedding_dim=1024, domain_tuned=True)
    (tmp_path / layout.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="domain-tuned backbone.*--embedding qwen3-0.6b --no-domain-tuning"):
        import_artifacts(DATA, tmp_path)


def test_hub_unreachable_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ArtifactError, match="could not download .* pass their directory with --from"):
        download_artifacts(cache_dir=tmp_path)


def test_imported_selectors_splice_into_router_heads(built_repository, tmp_path):
    """The splice keeps the classifier and the other selectors, and swaps one output.

    The MiniLM repository stands in for a Qwen3 one: the graphs are the same whatever
    the embedding width, so a KMeans artifact over its 384 + 14 features is enough."""
    from model_selector.measure.router import repository_embedder

    selectors = json.loads((built_repository / layout.DECISION / layout.VERSION / "selectors.json").read_text())
    catalog = selectors["models"]
    dim = json.loads((built_repository / "manifest.json").read_text())["backbone"]["embedding_dim"]
    train_embedding, train_probs = random_inputs(400, dim, seed=6)
    kmeans = KMeans(n_clusters=6, n_init=3, random_state=0).fit(reference_features(train_embedding, train_probs))
    artifact = {"algorithm": "kmeans", "trained": True, "centroids": kmeans.cluster_centers_.tolist(),
                "cluster_models": [catalog[i % len(catalog)] for i in range(6)]}
    (tmp_path / "kmeans_model.json").write_text(json.dumps(artifact))
    graph = kmeans_graph(load_artifact("kmeans", tmp_path / "kmeans_model.json"), catalog, dim)
    heads = onnx.load(str(built_repository / layout.HEADS / layout.VERSION / "model.onnx"))
    spliced = splice_into_heads(heads, {"kmeans": graph})

    queries = ["Calculate the derivative of sin(x) * cos(x)", "What were the main causes of World War I?",
               "How do I sort a list in Python?", "What is the function of the mitochondria?"]
    embedder = repository_embedder(built_repository)
    input_ids, attention_mask = embedder.tokenizer.encode(queries)
    embedding = embedder.embed_batch(queries)
    feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "embedding": embedding}
    names = ["domain_probs", "knn_scores", "kmeans_scores", "svm_scores", "mlp_scores", EXPECTED_TOKENS]
    before = dict(zip(names, ort.InferenceSession(heads.SerializeToString()).run(names, feeds)))
    after = dict(zip(names, ort.InferenceSession(spliced.SerializeToString()).run(names, feeds)))
    for name in ("domain_probs", "knn_scores", "svm_scores", "mlp_scores", EXPECTED_TOKENS):
        np.testing.assert_array_equal(before[name], after[name])
    expected = reference_kmeans_rule(reference_features(embedding, before["domain_probs"]), artifact)
    assert [catalog[i] for i in np.argmax(after["kmeans_scores"], axis=1)] == expected
    assert len(spliced.graph.node) < len(heads.graph.node) + len(graph.graph.node)  # the old KMeans is pruned
