"""A plain Avengers-Pro-style KMeans router: the simple strong baseline the configured router must beat.

No domains, no decisions, no prior: 32 k-means clusters over the query embeddings; a query's
estimate of each model's quality and cost is the mean over the members of its 3 nearest
clusters, weighted by softmax(-9 x cosine distance); it goes to the model maximising
quality - cost_weight x cost over the whole pool. The cost weight is chosen by 5-fold
cross-fitting on the training queries: the best pooled quality within `budget` x the best
single model's cost. Trained on the same queries as the repository it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

N_CLUSTERS = 32
TOP_K = 3
TEMPERATURE = 9.0
FOLDS = 5
BUDGET = 0.33
COST_WEIGHTS = [0.0] + [float(w) for w in np.geomspace(1e-4, 100.0, 121)]


@dataclass(frozen=True)
class PlainKmeansRouter:
    centroids: np.ndarray  # [C, D], unit norm
    quality: np.ndarray  # [C, M] mean correctness of each model on each cluster's members
    cost: np.ndarray  # [C, M] mean cost

    def estimates(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N, M] expected quality and cost per model."""
        distance = 1.0 - x @ self.centroids.T
        top = np.argsort(distance, axis=1, kind="stable")[:, :TOP_K]
        logits = -TEMPERATURE * np.take_along_axis(distance, top, axis=1)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        return (self.quality[top] * weights[:, :, None]).sum(axis=1), (self.cost[top] * weights[:, :, None]).sum(axis=1)


def fit(x: np.ndarray, quality: np.ndarray, cost: np.ndarray, seed: int = 0) -> PlainKmeansRouter:
    km = KMeans(n_clusters=min(N_CLUSTERS, len(x)), n_init=4, random_state=seed).fit(x)
    centroids = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    members = [km.labels_ == c for c in range(km.n_clusters)]
    return PlainKmeansRouter(centroids, np.stack([quality[m].mean(axis=0) for m in members]),
                             np.stack([cost[m].mean(axis=0) for m in members]))


def choose(quality_estimate: np.ndarray, cost_estimate: np.ndarray, weight: float) -> np.ndarray:
    return np.argmax(quality_estimate - weight * cost_estimate, axis=1)


def _point(picked: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    rows = np.arange(len(picked))
    return float(quality[rows, picked].mean()), float(cost[rows, picked].mean())


def cross_fitted_cost_weight(x: np.ndarray, quality: np.ndarray, cost: np.ndarray, budget: float = BUDGET,
                             folds: int = FOLDS, seed: int = 0) -> float:
    """The cost weight whose cross-fitted routes of the training queries have the best quality within
    `budget` x the best single model's cost (the cheapest weight if none is within it)."""
    fold = np.random.default_rng(seed).permutation(len(x)) % folds
    quality_estimate, cost_estimate = np.empty_like(quality), np.empty_like(cost)
    for f in range(folds):
        router = fit(x[fold != f], quality[fold != f], cost[fold != f], seed)
        quality_estimate[fold == f], cost_estimate[fold == f] = router.estimates(x[fold == f])
    best = int(np.argmax(quality.mean(axis=0)))
    limit = budget * cost[:, best].mean()
    points = [(w, *_point(choose(quality_estimate, cost_estimate, w), quality, cost)) for w in COST_WEIGHTS]
    within = [(q, -w) for w, q, c in points if c <= limit]
    return -max(within)[1] if within else COST_WEIGHTS[-1]


def reference(train_x: np.ndarray, train_quality: np.ndarray, train_cost: np.ndarray, test_x: np.ndarray,
              test_quality: np.ndarray, test_cost: np.ndarray, budget: float = BUDGET) -> tuple[dict, np.ndarray]:
    """Trained on the training queries, the cost weight cross-fitted there; scored on the test queries:
    the chosen point and the whole cost-weight curve, and the model index chosen for each test query."""
    weight = cross_fitted_cost_weight(train_x, train_quality, train_cost, budget)
    router = fit(train_x, train_quality, train_cost)
    quality_estimate, cost_estimate = router.estimates(test_x)
    picked = choose(quality_estimate, cost_estimate, weight)
    quality, cost = _point(picked, test_quality, test_cost)
    curve = []
    for w in COST_WEIGHTS:
        q, c = _point(choose(quality_estimate, cost_estimate, w), test_quality, test_cost)
        curve.append({"cost_weight": round(w, 6), "quality": round(q, 4), "cost_per_1k": round(c, 4)})
    return {"cost_weight": round(weight, 6), "quality": round(quality, 4), "cost_per_1k": round(cost, 4),
            "settings": {"clusters": N_CLUSTERS, "top_k": TOP_K, "temperature": TEMPERATURE, "folds": FOLDS,
                         "budget": budget}, "curve": curve}, picked
