"""Train the domain classifier and the KNN, KMeans and SVM selectors on embeddings.

Every trained object has a numpy `predict` and a `to_onnx` that is its exact transcription;
the tests hold the two to the same choices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from sklearn.calibration import CalibratedClassifierCV
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from tqdm import tqdm

from . import onnx_graphs
from .config import DOMAINS, KmeansSettings, KnnSettings, SvmSettings

log = logging.getLogger(__name__)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class DomainClassifier:
    weights: np.ndarray  # [D, 14]
    bias: np.ndarray  # [14]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _softmax(x @ self.weights + self.bias)

    def to_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.mlp_softmax([self.weights], [self.bias])


def train_domain_classifier(x: np.ndarray, labels: np.ndarray, c: float = 10.0) -> DomainClassifier:
    """Multinomial logistic regression over the 14 domains."""
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(x, labels)
    weights = np.zeros((x.shape[1], len(DOMAINS)), dtype=np.float32)
    bias = np.full(len(DOMAINS), -1e4, dtype=np.float32)  # a domain absent from training never wins
    weights[:, clf.classes_] = clf.coef_.T
    bias[clf.classes_] = clf.intercept_
    return DomainClassifier(weights, bias)


def _topk_weighted(keys: np.ndarray, table: np.ndarray, x: np.ndarray, k: int, temperature: float | None) -> np.ndarray:
    similarity = x @ keys.T
    k = min(k, keys.shape[0])
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    top_sim = np.take_along_axis(similarity, top, axis=1)
    if temperature is None:
        weights = np.maximum(top_sim, 1e-6)
        weights = weights / weights.sum(axis=1, keepdims=True)
    else:
        weights = _softmax(temperature * top_sim)
    return (table[top] * weights[:, :, None]).sum(axis=1)


@dataclass
class KnnSelector:
    keys: np.ndarray  # [N, D] unique training queries
    quality: np.ndarray  # [N, M] their results per model
    k: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _topk_weighted(self.keys, self.quality, x, self.k, None)

    def to_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.topk_weighted_table(self.keys, self.quality, self.k, None, name="knn_selector")


def train_knn(x: np.ndarray, quality: np.ndarray, settings: KnnSettings) -> KnnSelector:
    return KnnSelector(x.astype(np.float32), quality.astype(np.float32), settings.k)


@dataclass
class KmeansSelector:
    centroids: np.ndarray  # [C, D] unit-norm
    quality: np.ndarray  # [C, M] mean result per cluster and model
    top_k: int
    temperature: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _topk_weighted(self.centroids, self.quality, x, self.top_k, self.temperature)

    def to_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.topk_weighted_table(self.centroids, self.quality, self.top_k, self.temperature,
                                               name="kmeans_selector")


def train_kmeans(x: np.ndarray, quality: np.ndarray, settings: KmeansSettings) -> KmeansSelector:
    """Spherical-ish k-means on unit-norm embeddings; soft top-k cluster weighting (Avengers-Pro)."""
    km = KMeans(n_clusters=settings.n_clusters, n_init=4, random_state=settings.seed)
    assignment = km.fit_predict(x)
    centroids = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    prior = quality.mean(axis=0)
    table = np.empty((settings.n_clusters, quality.shape[1]), dtype=np.float32)
    for c in range(settings.n_clusters):
        members = quality[assignment == c]
        # Shrink small clusters toward the global mean (5 pseudo-queries).
        table[c] = (members.sum(axis=0) + 5 * prior) / (len(members) + 5)
    return KmeansSelector(centroids.astype(np.float32), table, settings.top_k, settings.temperature)


@dataclass
class SvmSelector:
    vectors: np.ndarray  # [S, D] union of all models' support vectors
    dual_coef: np.ndarray  # [S, M]
    intercept: np.ndarray  # [M]
    gamma: float
    prob_a: np.ndarray  # [M]
    prob_b: np.ndarray  # [M]

    def predict(self, x: np.ndarray) -> np.ndarray:
        sq = (x**2).sum(axis=1)[:, None] - 2 * x @ self.vectors.T + (self.vectors**2).sum(axis=1)[None, :]
        decision = np.exp(-self.gamma * np.maximum(sq, 0)) @ self.dual_coef + self.intercept
        return 1.0 / (1.0 + np.exp(self.prob_a * decision + self.prob_b))

    def to_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.rbf_svm_probabilities(self.vectors, self.dual_coef, self.intercept, self.gamma,
                                                 self.prob_a, self.prob_b)


def fit_model_svms(x: np.ndarray, quality: np.ndarray, settings: SvmSettings,
                   model_names: list[str]) -> list[CalibratedClassifierCV | float]:
    """One Platt-calibrated RBF SVC per model (correct vs not); a constant when a model's labels never vary."""
    rng = np.random.default_rng(settings.seed)
    rows = rng.permutation(len(x))[: settings.max_train]
    fitted: list[CalibratedClassifierCV | float] = []
    for m, _ in enumerate(tqdm(model_names, desc="svm", unit="model")):
        labels = (quality[rows, m] >= 0.5).astype(int)
        if labels.min() == labels.max():
            fitted.append(float(labels[0]))
            continue
        svc = SVC(C=settings.C, kernel="rbf", gamma=settings.gamma, random_state=settings.seed)
        calibrated = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=3)
        fitted.append(calibrated.fit(x[rows], labels))
    return fitted


def svm_selector_from(fitted: list[CalibratedClassifierCV | float], gamma: float, dim: int) -> SvmSelector:
    """Merge per-model SVCs into one kernel evaluation sharing the union of their support vectors."""
    svcs = [f.calibrated_classifiers_[0].estimator if isinstance(f, CalibratedClassifierCV) else None
            for f in fitted]
    union: dict[bytes, int] = {}
    vectors: list[np.ndarray] = []
    for svc in svcs:
        for v in svc.support_vectors_ if svc is not None else []:
            key = v.astype(np.float32).tobytes()
            if key not in union:
                union[key] = len(vectors)
                vectors.append(v.astype(np.float32))
    stacked = np.stack(vectors) if vectors else np.zeros((1, dim), dtype=np.float32)
    m = len(fitted)
    dual = np.zeros((len(stacked), m), dtype=np.float64)
    intercept, prob_a, prob_b = np.zeros(m), np.zeros(m), np.zeros(m)
    for j, (model, svc) in enumerate(zip(fitted, svcs)):
        if svc is None:
            # A constant probability p: zero slope and 1 / (1 + exp(b)) = p.
            p = min(max(model, 1e-4), 1 - 1e-4)
            prob_b[j] = np.log((1 - p) / p)
            continue
        idx = [union[v.astype(np.float32).tobytes()] for v in svc.support_vectors_]
        np.add.at(dual[:, j], idx, svc.dual_coef_[0])
        intercept[j] = svc.intercept_[0]
        # sklearn's sigmoid calibration: P(class 1) = 1 / (1 + exp(a * decision_function + b)).
        calibrator = model.calibrated_classifiers_[0].calibrators[0]
        prob_a[j], prob_b[j] = calibrator.a_, calibrator.b_
    return SvmSelector(stacked, dual.astype(np.float32), intercept.astype(np.float32), gamma,
                       prob_a.astype(np.float32), prob_b.astype(np.float32))
