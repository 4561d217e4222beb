"""Train the domain classifier and the KNN, KMeans, SVM and MLP selectors on embeddings.

Every trained object has a numpy `predict` and a `to_onnx` that is its exact transcription;
the tests hold the two to the same choices.
"""

from __future__ import annotations

import logging
import os
import warnings
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnx
from scipy import sparse
from sklearn.calibration import CalibratedClassifierCV
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC
from tqdm import tqdm

from model_selector.build import onnx_graphs
from model_selector.core.algorithms import KMEANS, KNN, MLP, SVM
from model_selector.core.config import DOMAINS, KmeansSettings, KnnSettings, MlpSettings, SelectorSettings, SvmSettings
from model_selector.core.contract import EXPECTED_TOKENS
from model_selector.core.tokenization import token_counts

log = logging.getLogger(__name__)

CALIBRATION_FOLDS = 3


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def tfidf(counts: sparse.csr_matrix, idf: np.ndarray) -> sparse.csr_matrix:
    """Sublinear TF-IDF, L2-normalised per row: idf x (1 + log count) / norm."""
    values = counts.copy().astype(np.float64)
    values.data = (1.0 + np.log(values.data)) * idf[values.indices]
    norms = np.sqrt(np.asarray(values.multiply(values).sum(axis=1)).ravel())
    return sparse.diags(1.0 / np.maximum(norms, 1e-6)) @ values


@dataclass
class LabelledRows:
    """Training rows for one part of the domain classifier: token counts (as the served tokenizer
    produces them, `token_counts`), embeddings, labels and sample weights."""

    counts: sparse.csr_matrix
    embeddings: np.ndarray
    labels: np.ndarray
    weights: np.ndarray

    @classmethod
    def stack(cls, parts: list[LabelledRows]) -> LabelledRows:
        return cls(sparse.vstack([p.counts for p in parts]).tocsr(), np.vstack([p.embeddings for p in parts]),
                   np.concatenate([p.labels for p in parts]), np.concatenate([p.weights for p in parts]))


def gated_mixture(logits: np.ndarray) -> np.ndarray:
    """[B, 2 x 14 + 1] logits -> [B, 14]: gate x softmax(exam expert) + (1 - gate) x softmax(natural expert)."""
    n = len(DOMAINS)
    gate = 1.0 / (1.0 + np.exp(-logits[:, 2 * n:2 * n + 1]))
    return gate * _softmax(logits[:, :n]) + (1.0 - gate) * _softmax(logits[:, n:2 * n])


@dataclass
class DomainClassifier:
    """Two experts and a gate, each a linear model over the query's token TF-IDF and its embedding.

    Exam questions and chat prompts about one subject are phrased so differently that one linear
    model trained on both loses on each. The exam expert learns from MMLU-Pro, the natural expert
    from real prompts, and the gate (the probability that the query is an exam question with
    options) weighs them. Words carry the topic ("JavaScript", "plaintiff") where the small
    embedding model blurs it; the embedding generalises beyond the words seen in training.
    Columns: exam expert's 14 logits, natural expert's 14, the gate's one.
    """

    idf: np.ndarray  # [V]
    token_weights: np.ndarray  # [V, 29]
    embedding_weights: np.ndarray  # [D, 29]
    bias: np.ndarray  # [29]

    def predict(self, input_ids: np.ndarray, attention_mask: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        lexical = tfidf(token_counts(input_ids, attention_mask, len(self.idf)), self.idf) @ self.token_weights
        return gated_mixture(lexical + embedding @ self.embedding_weights + self.bias)

    def to_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.gated_lexical_classifier(self.idf, self.token_weights, self.embedding_weights, self.bias)


def _linear(features: sparse.csr_matrix, rows: LabelledRows, classes: int, c: float) -> np.ndarray:
    """[features + 1, classes] multinomial logistic regression weights, bias last; classes
    absent from `rows` get a bias that never wins."""
    clf = LogisticRegression(C=c, max_iter=3000)
    clf.fit(features, rows.labels, sample_weight=rows.weights)
    weights = np.zeros((features.shape[1] + 1, classes))
    weights[-1] = -1e4
    if classes == 1:  # binary: sklearn fits one column, the logit of class 1
        weights[:-1, 0], weights[-1, 0] = clf.coef_[0], clf.intercept_[0]
        return weights
    weights[:-1, clf.classes_] = clf.coef_.T
    weights[-1, clf.classes_] = clf.intercept_
    return weights


def train_domain_classifier(exam: LabelledRows, natural: LabelledRows, gate: LabelledRows,
                            natural_prior_shift: np.ndarray | None = None, c_exam: float = 10.0,
                            c_natural: float = 3.0, c_gate: float = 10.0) -> DomainClassifier:
    """The exam expert on `exam`, the natural expert on `natural`, the gate on `gate` (label 1: an
    exam question). One idf for all three, from the gate's rows, which hold each text once.
    `natural_prior_shift` [14] is added to the natural expert's log-odds: where the traffic's
    domain mix differs from the training prompts'."""
    n, vocab = gate.counts.shape
    document_frequency = np.bincount(gate.counts.indices, minlength=vocab)
    idf = np.log((1.0 + n) / (1.0 + document_frequency)) + 1.0

    def features(rows: LabelledRows) -> sparse.csr_matrix:
        return sparse.hstack([tfidf(rows.counts, idf), sparse.csr_matrix(rows.embeddings)]).tocsr()

    weights = np.hstack([_linear(features(exam), exam, len(DOMAINS), c_exam),
                         _linear(features(natural), natural, len(DOMAINS), c_natural),
                         _linear(features(gate), gate, 1, c_gate)])
    if natural_prior_shift is not None:
        weights[-1, len(DOMAINS):2 * len(DOMAINS)] += natural_prior_shift
    return DomainClassifier(idf.astype(np.float32), weights[:vocab].astype(np.float32),
                            weights[vocab:-1].astype(np.float32), weights[-1].astype(np.float32))


@dataclass
class DomainPrior:
    """What a query's domain alone says: expected quality per domain and model."""

    table: np.ndarray  # [14, M]
    weight: float  # share of the prior in a selector's output

    def blend(self, own: np.ndarray, domain_probs: np.ndarray) -> np.ndarray:
        return (1.0 - self.weight) * own + self.weight * (domain_probs @ self.table)


def domain_quality_table(domain_probs: np.ndarray, quality: np.ndarray, shrinkage: float = 5.0) -> np.ndarray:
    """[14, M]: mean quality per domain, each query counted by its domain probability (so data
    without category labels works too), shrunk toward the overall mean by `shrinkage` queries."""
    overall = quality.mean(axis=0)
    mass = domain_probs.sum(axis=0)[:, None]
    return ((domain_probs.T @ quality + shrinkage * overall) / (mass + shrinkage)).astype(np.float32)


def _topk_weighted(keys: np.ndarray, table: np.ndarray, x: np.ndarray, k: int, temperature: float | None,
                   int8_keys: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    similarity = x @ keys.T if int8_keys is None else onnx_graphs.int8_similarity(x, *int8_keys)
    k = min(k, keys.shape[0])
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    top_sim = np.take_along_axis(similarity, top, axis=1)
    if temperature is None:
        weights = np.maximum(top_sim, 1e-6)
        weights = weights / weights.sum(axis=1, keepdims=True)
    else:
        weights = _softmax(temperature * top_sim)
    return (table[top] * weights[:, :, None]).sum(axis=1)


class Selector(ABC):
    """Predicted quality per catalog model: the algorithm's own estimate blended with the domain prior."""

    prior: DomainPrior

    @abstractmethod
    def own(self, x: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def own_onnx(self) -> onnx.ModelProto: ...

    def predict(self, x: np.ndarray, domain_probs: np.ndarray) -> np.ndarray:
        return self.prior.blend(self.own(x), domain_probs)

    def to_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.with_domain_prior(self.own_onnx(), self.prior.table, self.prior.weight)


@dataclass
class KnnSelector(Selector):
    """Similarities to the training queries are computed with int8 keys (onnx_graphs.int8_similarity):
    within about 0.003 of the fp32 ones, at a quarter of the memory traffic."""

    keys: np.ndarray  # [N, D] unique training queries
    quality: np.ndarray  # [N, M] their results per model
    output_tokens: np.ndarray  # [N, M] each model's answer length on them
    k: int
    prior: DomainPrior

    def __post_init__(self) -> None:
        self.keys_int8 = onnx_graphs.quantize_keys(self.keys)

    def own(self, x: np.ndarray) -> np.ndarray:
        return _topk_weighted(self.keys, self.quality, x, self.k, None, int8_keys=self.keys_int8)

    def expected_output_tokens(self, x: np.ndarray) -> np.ndarray:
        """[B, M] each model's answer length to expect for these queries: the neighbours' average,
        with the same weights as the quality. What an answer costs depends on the question (a
        derivation runs longer than a definition), so the decision step prices each query by it."""
        return _topk_weighted(self.keys, self.output_tokens, x, self.k, None, int8_keys=self.keys_int8)

    def own_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.topk_weighted_table(self.keys, self.quality, self.k, None, name="knn_selector",
                                               int8_keys=self.keys_int8,
                                               extra_tables={EXPECTED_TOKENS: self.output_tokens})


def with_typical_tokens(output_tokens: np.ndarray, typical: np.ndarray) -> np.ndarray:
    """[N, M] output token counts, each unknown one (NaN) replaced by its model's typical count [M]."""
    return np.where(np.isnan(output_tokens), typical[None, :], output_tokens).astype(np.float32)


def train_knn(x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray, settings: KnnSettings,
              table: np.ndarray) -> KnnSelector:
    """`output_tokens` [N, M] without gaps (`with_typical_tokens`)."""
    if np.isnan(output_tokens).any():
        raise ValueError("output_tokens has unknown (NaN) counts; fill them with with_typical_tokens")
    return KnnSelector(x.astype(np.float32), quality.astype(np.float32), output_tokens.astype(np.float32),
                       settings.k, DomainPrior(table, settings.domain_prior_weight))


@dataclass
class KmeansSelector(Selector):
    centroids: np.ndarray  # [C, D] unit-norm
    quality: np.ndarray  # [C, M] mean result per cluster and model
    top_k: int
    temperature: float
    prior: DomainPrior

    def own(self, x: np.ndarray) -> np.ndarray:
        return _topk_weighted(self.centroids, self.quality, x, self.top_k, self.temperature)

    def own_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.topk_weighted_table(self.centroids, self.quality, self.top_k, self.temperature,
                                               name="kmeans_selector")


def train_kmeans(x: np.ndarray, quality: np.ndarray, settings: KmeansSettings, table: np.ndarray) -> KmeansSelector:
    """Spherical-ish k-means on unit-norm embeddings; soft top-k cluster weighting (Avengers-Pro)."""
    km = KMeans(n_clusters=min(settings.n_clusters, len(x)), n_init=4, random_state=settings.seed)
    assignment = km.fit_predict(x)
    centroids = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    prior = quality.mean(axis=0)
    cluster_quality = np.empty((km.n_clusters, quality.shape[1]), dtype=np.float32)
    for c in range(km.n_clusters):
        members = quality[assignment == c]
        # Shrink small clusters toward the global mean (5 pseudo-queries).
        cluster_quality[c] = (members.sum(axis=0) + 5 * prior) / (len(members) + 5)
    return KmeansSelector(centroids.astype(np.float32), cluster_quality, settings.top_k, settings.temperature,
                          DomainPrior(table, settings.domain_prior_weight))


@dataclass
class SvmSelector(Selector):
    vectors: np.ndarray  # [S, D] union of all models' support vectors
    dual_coef: np.ndarray  # [S, M]
    intercept: np.ndarray  # [M]
    gamma: float
    prob_a: np.ndarray  # [M]
    prob_b: np.ndarray  # [M]
    prior: DomainPrior

    def own(self, x: np.ndarray) -> np.ndarray:
        sq = (x**2).sum(axis=1)[:, None] - 2 * x @ self.vectors.T + (self.vectors**2).sum(axis=1)[None, :]
        decision = np.exp(-self.gamma * np.maximum(sq, 0)) @ self.dual_coef + self.intercept
        return 1.0 / (1.0 + np.exp(self.prob_a * decision + self.prob_b))

    def own_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.rbf_svm_probabilities(self.vectors, self.dual_coef, self.intercept, self.gamma,
                                                 self.prob_a, self.prob_b)


def fit_model_svms(x: np.ndarray, quality: np.ndarray, settings: SvmSettings,
                   model_names: list[str]) -> list[CalibratedClassifierCV | float]:
    """One Platt-calibrated RBF SVC per model (correct vs not); a constant when a model's labels never vary."""
    rng = np.random.default_rng(settings.seed)
    rows = rng.permutation(len(x))[: settings.max_train]
    x_rows = x[rows]

    def fit(m: int) -> CalibratedClassifierCV | float:
        labels = (quality[rows, m] >= 0.5).astype(int)
        if np.bincount(labels, minlength=2).min() < CALIBRATION_FOLDS:
            # Too few right (or wrong) answers to fit and calibrate: the observed rate.
            return float(labels.mean())
        svc = SVC(C=settings.C, kernel="rbf", gamma=settings.gamma, random_state=settings.seed)
        calibrated = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=CALIBRATION_FOLDS)
        return calibrated.fit(x_rows, labels)

    # libsvm trains without holding the GIL, so the models' fits share the cores as threads; each
    # fit is deterministic, so the result does not depend on how many run at once.
    workers = max(1, min(len(model_names), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fit, range(len(model_names))), total=len(model_names), desc=SVM.name,
                         unit="model"))


def svm_selector_from(fitted: list[CalibratedClassifierCV | float], settings: SvmSettings, dim: int,
                      table: np.ndarray) -> SvmSelector:
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
    return SvmSelector(stacked, dual.astype(np.float32), intercept.astype(np.float32), settings.gamma,
                       prob_a.astype(np.float32), prob_b.astype(np.float32),
                       DomainPrior(table, settings.domain_prior_weight))


@dataclass
class MlpSelector(Selector):
    weights: list[np.ndarray]  # [D, H1], [H1, H2], ..., [Hn, M]
    biases: list[np.ndarray]
    prior: DomainPrior

    def own(self, x: np.ndarray) -> np.ndarray:
        h = x.astype(np.float32)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = np.maximum(h @ w + b, 0.0)
        return 1.0 / (1.0 + np.exp(-(h @ self.weights[-1] + self.biases[-1])))

    def own_onnx(self) -> onnx.ModelProto:
        return onnx_graphs.mlp_probabilities(self.weights, self.biases)


def train_mlp(x: np.ndarray, quality: np.ndarray, settings: MlpSettings, table: np.ndarray) -> MlpSelector:
    """One network for every model: multi-label (correct or not per model, as the SVMs are fit),
    so its sigmoid outputs are per-model qualities that masking and the cost trade-off can use."""
    network = MLPClassifier(hidden_layer_sizes=settings.hidden_sizes, alpha=settings.alpha,
                            max_iter=settings.max_iter, random_state=settings.seed)
    with warnings.catch_warnings():
        # A few epochs on purpose: longer training overfits the 0/1 labels (README, Routing quality).
        warnings.simplefilter("ignore", ConvergenceWarning)
        network.fit(x, (quality >= 0.5).astype(int))
    return MlpSelector([w.astype(np.float32) for w in network.coefs_],
                       [b.astype(np.float32) for b in network.intercepts_],
                       DomainPrior(table, settings.domain_prior_weight))


def train_selectors(x: np.ndarray, domain_probs: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray,
                    settings: SelectorSettings, model_names: list[str]) -> dict[str, Selector]:
    """Every selector on the same training queries ([N, D] embeddings, [N, M] quality and
    output tokens); the KNN selector also estimates each model's answer length."""
    table = domain_quality_table(domain_probs, quality)
    svms = fit_model_svms(x, quality, settings.svm, model_names)
    return {
        KNN.name: train_knn(x, quality, output_tokens, settings.knn, table),
        KMEANS.name: train_kmeans(x, quality, settings.kmeans, table),
        SVM.name: svm_selector_from(svms, settings.svm, x.shape[1], table),
        MLP.name: train_mlp(x, quality, settings.mlp, table),
    }
