"""`model-selector tune`: settings on a validation split of the training questions, the algorithm
and the default cost weight by cross-validation over them; never on held-out questions."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from model_selector.core.config import load_config
from model_selector.data.loaders import is_test_question, load_mmlu_pro
from model_selector.measure.tune import (
    DOMAIN_THRESHOLDS,
    KEEP_MARGIN,
    Grid,
    choose_setting,
    cross_validate,
    cv_fold,
    grid_from,
    is_validation_question,
    prediction_skill,
    tune,
    write_tuning_report,
)

from .conftest import CONFIG


def test_grid_spec_parses_and_rejects_unknown_parts():
    assert grid_from("knn=10,20;prior=0,0.5") == Grid(knn_k=(10, 20), prior_weights=(0.0, 0.5))
    with pytest.raises(ValueError, match="unknown part 'knnn'"):
        grid_from("knnn=10")


def test_validation_questions_are_training_questions_only_by_their_own_rule():
    ids = load_mmlu_pro([]).question_ids
    validation = [q for q in ids if not is_test_question(int(q)) and is_validation_question(int(q))]
    assert 0.15 < len(validation) / len(ids) < 0.17  # 20% of the 80% training questions


def test_cross_validation_folds_are_fixed_by_question_id_and_balanced():
    ids = [int(q) for q in load_mmlu_pro([]).question_ids if not is_test_question(int(q))]
    sizes = np.bincount([cv_fold(q, 5) for q in ids], minlength=5)
    assert sizes.min() > 0.18 * len(ids) and sizes.max() < 0.22 * len(ids)
    assert [cv_fold(q, 5) for q in ids[:50]] == [cv_fold(q, 5) for q in ids[:50]]


def test_cross_validation_needs_two_folds(tmp_path):
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validate(load_config(CONFIG), tmp_path, folds=1)


@pytest.mark.slow
def test_tune_picks_the_best_setting_router_and_a_cost_weight_within_budget(built_repository, tmp_path):
    # The mechanics, not the shipped settings: SVMs on 1,000 queries keep this to about 4 minutes.
    raw = yaml.safe_load(CONFIG.read_text())
    raw["model_selection"]["svm"]["max_train"] = 1000
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(raw))
    report = tune(config, built_repository, budget=0.3, grid=grid_from("knn=10,50;kmeans=8;svm=1;mlp=0.1;prior=0,0.75"),
                  folds=2)
    for algorithm, rows in report["sweeps"].items():
        assert report["best"][algorithm]["budget_score"] == max(r["budget_score"] for r in rows)
        assert report["chosen"][algorithm] in rows
        assert report["chosen"][algorithm]["budget_score"] >= report["best"][algorithm]["budget_score"] - KEEP_MARGIN
    # Every training question routed once, by selectors trained without it.
    cv = report["cross_validation"]
    assert cv["questions"] == report["split"]["fit"] + report["split"]["validation"]
    routers = report["routers"]["routers"]
    assert set(routers) == {"configured", "knn", "kmeans", "svm", "mlp"}
    recommended = report["routers"]["recommended"]
    best = max(r["budget_score"] for r in routers.values())
    assert routers[recommended]["budget_score"] == best or (
        recommended == "configured" and best - routers["configured"]["budget_score"] <= KEEP_MARGIN)
    # A lower domain threshold sends fewer queries to the default model unrouted.
    thresholds = report["domain_threshold"]
    assert [r["domain_threshold"] for r in thresholds["rows"]] == list(DOMAIN_THRESHOLDS)
    unmatched = [r["unmatched"] for r in thresholds["rows"]]
    assert unmatched == sorted(unmatched, reverse=True) and unmatched[-1] < unmatched[0]
    assert thresholds["chosen"] == max(thresholds["rows"], key=lambda r: r["budget_score"])["domain_threshold"]
    chosen = report["cost_weight"]
    assert chosen["algorithm"] == routers[recommended]["algorithm"]
    assert chosen["routed"]["cost_per_1k"] <= 0.3 * cv["best_single"]["cost_per_1k"]
    assert chosen["routed"]["quality"] == max(
        c["quality"] for c in chosen["curve"] if c["cost_per_1k"] <= 0.3 * cv["best_single"]["cost_per_1k"])
    # The honest operating point: each fold routed at the weight chosen on the other folds.
    fitted = report["cross_fitted"]
    assert len(fitted["cost_weights"]) == 2 and all(w >= 0 for w in fitted["cost_weights"])
    assert sum(fitted["routed"]["distribution"].values()) == cv["questions"]
    low, high = fitted["intervals"]["quality_ratio"]
    assert low <= fitted["quality_ratio"] <= high and 0.8 < fitted["quality_ratio"] < 1.1
    assert 0 < report["true_domain_ceiling"]["budget_score"] <= 1.1
    # What the router re-implements and improves on: plain KMeans, soft top-3 clusters, no domain prior.
    references = report["routers"]["references"]
    assert set(references) == {"domain prior", "plain kmeans"}
    assert routers["configured"]["budget_score"] > references["plain kmeans"]["budget_score"]
    skill = report["prediction_skill"]
    assert skill["best_single_model"] == "gpt-4o-2024-05-13"
    assert set(skill["skill"]) == {"domain prior", "plain kmeans", "knn", "kmeans", "svm", "mlp"}
    # On MMLU-Pro the domain says something about who answers right, held out or not.
    assert all(0 < row["best_single"] < 1 and 0 < row["mean"] < 1 for row in skill["skill"].values())
    write_tuning_report(report, tmp_path / "out", "model-selector tune")
    written = (tmp_path / "out" / "report.md").read_text()
    assert "## How much the selectors know about each query" in written and "## An honest estimate" in written
    assert (tmp_path / "out" / "cross_validation.png").stat().st_size > 10_000


def test_prediction_skill_is_one_for_the_answers_and_zero_for_each_models_mean():
    performance = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    skill = prediction_skill(performance, ["a", "b"], {
        "answers": performance, "means": np.tile(performance.mean(axis=0), (4, 1)),
        "inverted": 1.0 - performance})["skill"]
    assert skill["answers"] == {"best_single": 1.0, "mean": 1.0}
    assert skill["means"] == {"best_single": 0.0, "mean": 0.0}
    assert skill["inverted"]["mean"] < 0


def test_a_setting_replaces_the_configured_one_only_by_more_than_the_noise_margin():
    rows = [{"k": 10, "budget_score": 0.940}, {"k": 100, "budget_score": 0.938}, {"k": 20, "budget_score": 0.930}]
    assert choose_setting(rows, rows[0], {"k": 100}) == rows[1]  # 0.002 better: noise, keep k = 100
    assert choose_setting(rows, rows[0], {"k": 20}) == rows[0]  # 0.010 better: take it
    assert choose_setting(rows, rows[0], {"k": 7}) == rows[0]  # the configured k was not swept
