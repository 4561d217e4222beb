"""Decision semantics: match a decision from domain probabilities, then pick its model.

Matching follows the reference: a `domain` condition matches when that domain's
probability reaches the threshold; AND needs every child (confidence = mean), OR any
(confidence = max of the matching children), NOT its single child to fail. Among matched
decisions the highest priority wins, then the higher confidence, then the name.

Selection is ours: the selector's per-model predicted quality, restricted to the
decision's candidates, minus `cost_weight` x the model's expected cost (USD per 1,000
queries); ties go to the cheaper model. The expected cost is the catalog price times the
answer length expected for this query (router_heads' `expected_output_tokens`), or, where
none is given, the model's typical answer length.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_selector.core.config import DOMAINS, Decision, DomainCondition, RouterConfig, RuleNode, load_config


@dataclass(frozen=True)
class Route:
    selected_model: str
    decision: str
    domain: str
    domain_confidence: float
    algorithm: str
    confidence: float


def evaluate_rule(node: RuleNode | DomainCondition, probs: dict[str, float], threshold: float) -> tuple[bool, float]:
    """Whether a rule matches, and its confidence."""
    if isinstance(node, DomainCondition):
        p = probs[node.name]
        return p >= threshold, p
    results = [evaluate_rule(child, probs, threshold) for child in node.conditions]
    if node.operator == "AND":
        return all(m for m, _ in results), float(np.mean([c for _, c in results]))
    if node.operator == "OR":
        matched = [c for m, c in results if m]
        return bool(matched), max(matched) if matched else max(c for _, c in results)
    matched, conf = results[0]  # NOT
    return not matched, 1.0 - conf


class DecisionEngine:
    def __init__(self, config: RouterConfig, model_names: list[str], expected_cost_per_1k: dict[str, float],
                 vote_algorithms: Collection[str] = ()):
        missing = [m for m in config.model_names if m not in model_names]
        if missing:
            raise ValueError(f"the selectors were not trained for catalog model(s) {missing}; rebuild the repository")
        self.config = config
        self.model_names = list(model_names)
        self._index = {m: i for i, m in enumerate(self.model_names)}
        # Columns outside the catalog are never candidates (validation), so their cost is moot.
        self.cost = np.array([expected_cost_per_1k.get(m, 0.0) for m in self.model_names], dtype=np.float64)
        catalog = set(config.model_names)
        self.price_per_1k_tokens = np.array([config.price(m) / 1000.0 if m in catalog else 0.0
                                             for m in self.model_names], dtype=np.float64)
        # Selectors imported from the reference score votes, not qualities: no cost trade-off.
        self.vote_algorithms = frozenset(vote_algorithms)
        # Highest priority first, then name: the order in which ties are broken.
        self._decisions = sorted(config.decisions, key=lambda d: (-d.priority, d.name))

    def match(self, domain_probs: np.ndarray) -> tuple[Decision | None, float]:
        probs = {name: float(p) for name, p in zip(DOMAINS, domain_probs)}
        best: tuple[Decision, float] | None = None
        for decision in self._decisions:
            matched, conf = evaluate_rule(decision.rules, probs, self.config.domain_threshold)
            if not matched:
                continue
            if best is None or (decision.priority == best[0].priority and conf > best[1]):
                best = (decision, conf)
        return (best[0], best[1]) if best else (None, 0.0)

    def query_cost(self, expected_output_tokens: np.ndarray | None) -> np.ndarray:
        """[M] USD per 1,000 such queries: price x the answer length expected for this query."""
        if expected_output_tokens is None:
            return self.cost
        return self.price_per_1k_tokens * np.asarray(expected_output_tokens, dtype=np.float64)

    def choose(self, quality: np.ndarray, candidates: list[str], cost_weight: float, cost: np.ndarray) -> str:
        """The best candidate by quality - cost_weight x cost [M]; ties to the cheaper, then by name."""
        return candidates[int(self._best_candidates(quality[None], candidates, cost_weight, cost[None])[0])]

    def _best_candidates(self, quality: np.ndarray, candidates: list[str], cost_weight: float,
                         cost: np.ndarray) -> np.ndarray:
        """`choose` for every row of quality and cost [N, M]: [N] positions in `candidates`."""
        idx = np.array([self._index[m] for m in candidates])
        quality, cost = quality[:, idx].astype(np.float64), cost[:, idx]
        utility = quality - cost_weight * cost
        by_name = np.broadcast_to(np.argsort(np.argsort(np.array(candidates))), utility.shape)
        return np.lexsort((by_name, cost, -np.round(utility, 9)), axis=-1)[:, 0]

    def _selection(self, decision: Decision, algorithm: str | None, cost_weight: float | None) -> tuple[str, float]:
        """The selector and cost weight a decision chooses its model by, `algorithm` and `cost_weight`
        overriding its own when given."""
        algorithm = algorithm or decision.algorithm.type
        weight = self.config.decision_cost_weight(decision) if cost_weight is None else cost_weight
        return algorithm, 0.0 if algorithm in self.vote_algorithms else weight

    def route(self, domain_probs: np.ndarray, scores: dict[str, np.ndarray], algorithm: str | None = None,
              cost_weight: float | None = None, expected_output_tokens: np.ndarray | None = None) -> Route:
        """Route one query from its domain probabilities [14], each selector's scores [M] and, when
        known, each model's expected answer length for it [M].

        `algorithm` and `cost_weight` override every decision's own (for evaluation sweeps).
        """
        top = int(np.argmax(domain_probs))
        domain, domain_conf = DOMAINS[top], float(domain_probs[top])
        decision, confidence = self.match(domain_probs)
        if decision is None:
            return Route(self.config.default_model, "", domain, domain_conf, "default", 0.0)
        candidates = decision.candidates
        if len(candidates) == 1:
            return Route(candidates[0], decision.name, domain, domain_conf, "single", confidence)
        algorithm, weight = self._selection(decision, algorithm, cost_weight)
        model = self.choose(scores[algorithm], candidates, weight, self.query_cost(expected_output_tokens))
        return Route(model, decision.name, domain, domain_conf, algorithm, confidence)

    def selected_columns(self, domain_probs: np.ndarray, scores: dict[str, np.ndarray], algorithm: str | None = None,
                         cost_weights: Sequence[float | None] = (None,),
                         expected_output_tokens: np.ndarray | None = None) -> np.ndarray:
        """`route`'s selected model for N queries at each of W cost weights at once, as [W, N] columns
        of `model_names`: domain_probs [N, 14], scores [N, M] per algorithm, expected tokens [N, M].
        A decision is matched once per query, whatever the weights: what evaluation sweeps run on."""
        columns = np.full((len(cost_weights), len(domain_probs)), self._index[self.config.default_model])
        rows_of: dict[str, list[int]] = {}
        for i, p in enumerate(domain_probs):
            decision, _ = self.match(p)
            if decision is not None:
                rows_of.setdefault(decision.name, []).append(i)
        cost = np.broadcast_to(self.query_cost(expected_output_tokens), (len(domain_probs), len(self.model_names)))
        for decision in self._decisions:
            if decision.name not in rows_of:
                continue
            rows, candidates = np.array(rows_of[decision.name]), decision.candidates
            idx = np.array([self._index[m] for m in candidates])
            if len(candidates) == 1:
                columns[:, rows] = idx[0]
                continue
            for w, cost_weight in enumerate(cost_weights):
                selector, weight = self._selection(decision, algorithm, cost_weight)
                columns[w, rows] = idx[self._best_candidates(scores[selector][rows], candidates, weight, cost[rows])]
        return columns


def expected_cost_per_1k(config: RouterConfig, expected_output_tokens: dict[str, float]) -> dict[str, float]:
    """USD per 1,000 queries: catalog price per million output tokens x typical output tokens."""
    return {m.name: m.price_per_million_output_tokens * expected_output_tokens[m.name] / 1000.0
            for m in config.models}


@dataclass(frozen=True)
class DecisionStep:
    """What the decision model serves from its version directory: the router configuration, the
    selectors' metadata (catalog order of the score columns, expected answer lengths) and the engine."""

    config: RouterConfig
    models: list[str]
    expected_output_tokens: dict[str, float]
    engine: DecisionEngine

    @classmethod
    def load(cls, router_config: Path, selectors: Path) -> DecisionStep:
        config = load_config(router_config)
        meta = json.loads(Path(selectors).read_text())
        tokens = meta["expected_output_tokens"]
        engine = DecisionEngine(config, meta["models"], expected_cost_per_1k(config, tokens),
                                vote_algorithms=meta.get("imported", {}))  # the reference's, `model-selector import`
        return cls(config, meta["models"], tokens, engine)
