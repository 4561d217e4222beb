"""Decision semantics: rule trees, priorities, candidate masking, the cost trade-off and fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from model_selector.core.config import DOMAINS, RuleNode, parse_config
from model_selector.core.decision_engine import DecisionEngine, evaluate_rule

MODELS = ["big", "small", "coder"]
COST = {"big": 10.0, "small": 0.1, "coder": 0.2}


def _config(decisions, **extra):
    return parse_config({
        "models": [{"name": m, "price_per_million_output_tokens": 1.0} for m in MODELS],
        "default_model": "small",
        "decisions": decisions,
        **extra,
    })


def _decision(name, rules, algorithm="knn", models=MODELS, priority=0, **extra):
    return {"name": name, "priority": priority, "rules": rules, "algorithm": {"type": algorithm},
            "modelRefs": [{"model": m} for m in models], **extra}


def _domain(name):
    return {"type": "domain", "name": name}


def probs(**values) -> np.ndarray:
    p = np.zeros(len(DOMAINS), dtype=np.float32)
    for name, value in values.items():
        p[DOMAINS.index(name.replace("_", " "))] = value
    return p


SCORES = {"knn": np.array([0.9, 0.5, 0.7]), "kmeans": np.array([0.2, 0.8, 0.4]), "svm": np.array([0.1, 0.2, 0.9])}


def test_and_or_not_semantics():
    p = {d: 0.0 for d in DOMAINS} | {"math": 0.7, "physics": 0.6, "law": 0.1}
    both = RuleNode.model_validate({"operator": "AND", "conditions": [_domain("math"), _domain("physics")]})
    assert evaluate_rule(both, p, 0.5) == (True, pytest.approx(0.65))
    either = RuleNode.model_validate({"operator": "OR", "conditions": [_domain("law"), _domain("math")]})
    assert evaluate_rule(either, p, 0.5) == (True, pytest.approx(0.7))
    neither = RuleNode.model_validate({"operator": "NOT", "conditions": [_domain("law")]})
    assert evaluate_rule(neither, p, 0.5) == (True, pytest.approx(0.9))
    nested = RuleNode.model_validate({"operator": "AND", "conditions": [
        _domain("math"), {"operator": "NOT", "conditions": [_domain("physics")]}]})
    assert evaluate_rule(nested, p, 0.5)[0] is False


def test_highest_priority_then_confidence_then_name():
    config = _config([
        _decision("low", {"operator": "AND", "conditions": [_domain("math")]}, priority=1),
        _decision("high_b", {"operator": "AND", "conditions": [_domain("physics")]}, priority=5),
        _decision("high_a", {"operator": "OR", "conditions": [_domain("math"), _domain("physics")]}, priority=5),
    ])
    engine = DecisionEngine(config, MODELS, COST)
    # high_a and high_b share the priority; high_a is more confident (math 0.8 > physics 0.6).
    assert engine.route(probs(math=0.8, physics=0.6), SCORES).decision == "high_a"
    # Equal priority and confidence: the name decides.
    assert engine.route(probs(physics=0.6), SCORES).decision == "high_a"
    assert engine.route(probs(math=0.9), SCORES).decision == "high_a"


def test_no_match_routes_to_default_model():
    config = _config([_decision("math", {"operator": "AND", "conditions": [_domain("math")]})])
    route = DecisionEngine(config, MODELS, COST).route(probs(math=0.4, law=0.3), SCORES)
    assert (route.selected_model, route.decision, route.algorithm, route.confidence) == ("small", "", "default", 0.0)
    assert route.domain == "math" and route.domain_confidence == pytest.approx(0.4)


def test_threshold_is_configurable():
    config = _config([_decision("math", {"operator": "AND", "conditions": [_domain("math")]})], domain_threshold=0.3)
    assert DecisionEngine(config, MODELS, COST).route(probs(math=0.4), SCORES).decision == "math"


def test_single_candidate_is_reported_as_single():
    config = _config([_decision("code", {"operator": "AND", "conditions": [{"type": "domain", "name": "computer science"}]},
                                models=["coder"])])
    route = DecisionEngine(config, MODELS, COST).route(probs(computer_science=0.9), SCORES)
    assert (route.selected_model, route.algorithm) == ("coder", "single")


@pytest.mark.parametrize("algorithm, expected", [("knn", "big"), ("kmeans", "small"), ("svm", "coder")])
def test_each_algorithm_uses_its_own_scores(algorithm, expected):
    config = _config([_decision("d", {"operator": "AND", "conditions": [_domain("math")]}, algorithm=algorithm)])
    route = DecisionEngine(config, MODELS, COST).route(probs(math=0.9), SCORES)
    assert (route.selected_model, route.algorithm, route.decision) == (expected, algorithm, "d")


def test_best_allowed_candidate_wins_never_the_first_listed():
    # knn prefers "big", which this decision does not allow: the best *allowed* one wins.
    config = _config([_decision("d", {"operator": "AND", "conditions": [_domain("math")]},
                                models=["small", "coder"])])
    assert DecisionEngine(config, MODELS, COST).route(probs(math=0.9), SCORES).selected_model == "coder"


def test_cost_weight_trades_quality_for_cost_and_ties_go_to_the_cheaper():
    rules = {"operator": "AND", "conditions": [_domain("math")]}
    cheap = _config([_decision("d", rules, cost_weight=0.1)])
    # big: 0.9 - 1.0 ; small: 0.5 - 0.01 ; coder: 0.7 - 0.02 -> coder
    assert DecisionEngine(cheap, MODELS, COST).route(probs(math=0.9), SCORES).selected_model == "coder"
    tied = {"knn": np.array([0.5, 0.5, 0.5]), "kmeans": SCORES["kmeans"], "svm": SCORES["svm"]}
    assert DecisionEngine(_config([_decision("d", rules)]), MODELS, COST).route(
        probs(math=0.9), tied).selected_model == "small"


def test_expected_answer_lengths_price_each_query():
    """A model that answers this query briefly costs less on it than its typical length says."""
    rules = {"operator": "AND", "conditions": [_domain("math")]}
    engine = DecisionEngine(_config([_decision("d", rules, cost_weight=0.1)]), MODELS, COST)
    # All three at price 1 per million tokens: 1,000 tokens cost 1 USD per 1,000 queries.
    brief_big = np.array([100.0, 1000.0, 1000.0])  # big 0.9 - 0.01, small 0.5 - 0.1, coder 0.7 - 0.1
    assert engine.route(probs(math=0.9), SCORES, expected_output_tokens=brief_big).selected_model == "big"
    assert engine.route(probs(math=0.9), SCORES).selected_model == "coder"  # typical costs: big is 10
    np.testing.assert_allclose(engine.query_cost(brief_big), [0.1, 1.0, 1.0])


def test_engine_refuses_selectors_missing_a_catalog_model():
    with pytest.raises(ValueError, match="rebuild the repository"):
        DecisionEngine(_config([]), ["big", "small"], COST)


def test_imported_vote_algorithms_ignore_the_cost_weight():
    rules = {"operator": "AND", "conditions": [_domain("math")]}
    cheap = _config([_decision("d", rules, cost_weight=0.1)])
    # As qualities the cost weight makes "coder" win; as the reference's votes "big" does.
    assert DecisionEngine(cheap, MODELS, COST, vote_algorithms={"knn"}).route(
        probs(math=0.9), SCORES).selected_model == "big"


@pytest.mark.parametrize("with_expected_tokens", [True, False])
def test_whole_sweeps_select_what_routing_each_query_selects(with_expected_tokens):
    """Evaluation and tune sweep the cost weight over every query at once; each selection must be
    the one `route` makes for that query alone, ties (to the cheaper, then by name) included."""
    math, law = _domain("math"), _domain("law")
    engine = DecisionEngine(_config([
        _decision("math", {"operator": "AND", "conditions": [math]}, "svm", priority=2, cost_weight=0.05),
        _decision("math_or_law", {"operator": "OR", "conditions": [math, law]}, "kmeans", priority=2),
        _decision("physics_not_law", {"operator": "AND", "conditions": [
            _domain("physics"), {"operator": "NOT", "conditions": [law]}]}, "knn", models=["coder", "big"], priority=1),
        _decision("law_only", {"operator": "AND", "conditions": [law]}, models=["big"], priority=3),
    ], domain_threshold=0.2), MODELS, COST, vote_algorithms={"kmeans"})
    rng = np.random.default_rng(7)
    n = 400
    domain_probs = rng.dirichlet(np.full(len(DOMAINS), 0.3), n).astype(np.float32)
    assert 0.1 < np.mean([engine.match(p)[0] is None for p in domain_probs]) < 0.9  # some go to default_model
    # Scores on a coarse grid and two answer lengths, so that utilities tie often.
    scores = {a: (rng.integers(0, 4, (n, len(MODELS))) / 4).astype(np.float32) for a in ("knn", "kmeans", "svm")}
    tokens = rng.choice([100.0, 1000.0], (n, len(MODELS))).astype(np.float32) if with_expected_tokens else None
    weights = [None, 0.0, 0.01, 0.1, 0.25, 1.0, 100.0]
    for algorithm in (None, "knn", "kmeans", "svm"):
        columns = engine.selected_columns(domain_probs, scores, algorithm, weights, tokens)
        for w, weight in enumerate(weights):
            expected = [engine.route(domain_probs[i], {a: s[i] for a, s in scores.items()}, algorithm, weight,
                                     None if tokens is None else tokens[i]).selected_model for i in range(n)]
            assert [MODELS[j] for j in columns[w]] == expected, (algorithm, weight)
