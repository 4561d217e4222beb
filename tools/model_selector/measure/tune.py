"""`model-selector tune`: choose the selector settings, the decisions' algorithm and the
default cost weight on the training questions (never the held-out ones).

Two stages:
1. **Settings** (k, clusters, gamma, prior weight) on one fit / validation split, fixed by
   question id like the held-out split: `sha256("mmlu-pro-validation:<question_id>") % 1000
   < 200` among the training questions. A grid costs one fit per setting, so one split.
2. **Algorithm and cost weight** by k-fold cross-validation over all training questions
   (`sha256("mmlu-pro-cv:<question_id>") % folds`): every question is routed once, by a
   classifier and selectors trained without its fold, and the pooled routes give one
   quality / cost curve per router over 5x the questions of the validation split. Differences
   of 0.005 are noise on 1,297 validation questions, and they decide these two choices.

Routers and settings are compared by their *budget score*: the best quality each reaches
(over the cost-weight sweep) within 20%, 30%, 40% and 50% of the best single model's cost,
averaged. A setting or algorithm replaces the configured one only when it scores more than
`KEEP_MARGIN` above it. The default cost weight is the one at which the recommended router
reaches the highest cross-validated quality within `--budget` (default 33%) of that cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from model_selector.build.embed import OnnxEmbedder
from model_selector.build.pipeline import train_classifier
from model_selector.build.train import (
    Selector,
    domain_quality_table,
    fit_model_svms,
    svm_selector_from,
    train_kmeans,
    train_knn,
    train_mlp,
    train_selectors,
    with_typical_tokens,
)
from model_selector.core.algorithms import ALGORITHMS, KMEANS, KNN, MLP, SELECTOR_ALGORITHMS, SVM
from model_selector.core.config import (
    DOMAINS,
    KmeansSettings,
    KnnSettings,
    MlpSettings,
    RouterConfig,
    SvmSettings,
    load_config,
)
from model_selector.core.decision_engine import DecisionEngine, expected_cost_per_1k
from model_selector.core.files import stable_bucket
from model_selector.data.loaders import (
    DEFAULT_DATA_DIR,
    Benchmark,
    load_mmlu_pro,
    load_natural_prompts,
    split_train_test,
    typical_output_tokens,
)
from model_selector.measure import plain_kmeans as plain
from model_selector.measure.evaluate import (
    COST_WEIGHTS,
    FINE_COST_WEIGHTS,
    cost_curve,
    cost_matrix,
    ratio_intervals,
    route_models,
    summarize,
)
from model_selector.measure.reports import figure, write_report
from model_selector.measure.router import HeadOutputs, repository_embedder

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

BUDGETS = (0.2, 0.3, 0.4, 0.5)
VALIDATION_FRACTION = 0.2
KEEP_MARGIN = 0.005
# Below about 0.2 every condition of a 14-way classifier starts to match and priority alone decides.
DOMAIN_THRESHOLDS = (0.5, 0.4, 0.3)
# The chosen cost weight is refined between it and its lower neighbour of the sweep in this many steps.
REFINE_STEPS = 11
REFERENCE_LABELS = {
    "domain prior": "reference: the domain prior alone",
    "plain kmeans": "reference: plain KMeans (32 clusters, soft top-3, no domain prior)",
}
REFERENCES = tuple(REFERENCE_LABELS)
CV_FOLDS = 5
# The default cost weight aims at 33% of the best single model's cost so that unseen queries stay
# within 35%: at one cost weight the cost ratio moves by about 0.03 between samples of 1,300 to
# 1,900 questions (the folds here, the held-out split).
DEFAULT_BUDGET = 0.33


@dataclass(frozen=True)
class Grid:
    knn_k: tuple[int, ...] = (10, 20, 50, 100)
    kmeans_clusters: tuple[int, ...] = (8, 16, 32, 64)
    svm_gamma: tuple[float, ...] = (0.5, 1.0, 2.0)
    mlp_alpha: tuple[float, ...] = (0.01, 0.1, 1.0)
    prior_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def is_validation_question(question_id: int) -> bool:
    return stable_bucket(f"mmlu-pro-validation:{question_id}", 1000) < VALIDATION_FRACTION * 1000


def cv_fold(question_id: int, folds: int) -> int:
    return stable_bucket(f"mmlu-pro-cv:{question_id}", folds)


def best_within(curve: list[dict], budget: float) -> float:
    """The highest quality on the curve at no more than `budget` cost (0 when none is that cheap)."""
    return max((c["quality"] for c in curve if c["cost_per_1k"] <= budget), default=0.0)


@dataclass
class Scoring:
    """Routed queries with their results: what a router's quality / cost curve is computed on."""

    config: RouterConfig
    val: Benchmark
    probs_val: np.ndarray
    tokens_val: np.ndarray  # [N_val, M] expected output tokens, from the configured KNN
    cost: np.ndarray  # [N_val, M]
    engine: DecisionEngine
    best_quality: float
    best_cost: float

    def heads(self, scores: dict[str, np.ndarray]) -> HeadOutputs:
        return HeadOutputs(self.probs_val, scores, self.tokens_val)

    def curve(self, scores: dict[str, np.ndarray], algorithm: str | None,
              weights: list[float] = COST_WEIGHTS) -> list[dict]:
        return cost_curve(self.engine, self.heads(scores), self.val.model_names, self.val.performance,
                          self.cost, algorithm, weights)

    def budget_score(self, curve: list[dict]) -> float:
        return float(np.mean([best_within(curve, b * self.best_cost) for b in BUDGETS])) / self.best_quality

    def summary(self, curve: list[dict]) -> dict:
        return {"budget_score": round(self.budget_score(curve), 4), "quality_within": self.quality_within(curve),
                "curve": curve}

    def quality_within(self, curve: list[dict]) -> dict[str, float]:
        return {f"{b:.2f}": round(best_within(curve, b * self.best_cost) / self.best_quality, 4)
                for b in (0.25, 0.3, 0.35, 0.4, 0.5)}


def _scoring(config: RouterConfig, val: Benchmark, probs_val: np.ndarray, tokens_val: np.ndarray,
             expected_tokens: dict[str, float]) -> Scoring:
    models = config.model_names
    cost = cost_matrix(config, expected_tokens, models, val.output_tokens)
    engine = DecisionEngine(config, models, expected_cost_per_1k(config, expected_tokens))
    _, best_quality, best_cost = _best_single(val.performance, cost)
    return Scoring(config, val, probs_val, tokens_val, cost, engine, best_quality, best_cost)


def _best_single(performance: np.ndarray, cost: np.ndarray) -> tuple[int, float, float]:
    """The single model of highest mean quality: its column, mean quality and mean cost."""
    best = int(np.argmax(performance.mean(axis=0)))
    return best, float(performance[:, best].mean()), float(cost[:, best].mean())


@dataclass
class Validation(Scoring):
    """A fit / validation split: the fit part trains, the validation part is routed and scored."""

    x_fit: np.ndarray
    probs_fit: np.ndarray
    quality_fit: np.ndarray
    tokens_fit: np.ndarray  # [N_fit, M] output tokens
    fit_categories: np.ndarray
    x_val: np.ndarray


def training_questions(config: RouterConfig, data_dir: Path = DEFAULT_DATA_DIR) -> Benchmark:
    """The shipped training questions with every catalog model's result."""
    train, _ = split_train_test(load_mmlu_pro(config.model_names, data_dir))
    return train.subset(train.complete_rows())


def split_validation(config: RouterConfig, embedder: OnnxEmbedder, fit: Benchmark, val: Benchmark,
                     cache_dir: Path | None = None) -> Validation:
    """Embed both parts through the built repository and train the classifier on the fit part."""
    models = config.model_names
    tokenizer = embedder.tokenizer
    x_fit = embedder.embed(fit.queries, cache_dir, description="fit queries")
    x_val = embedder.embed(val.queries, cache_dir, description="validation queries")
    natural_train, _ = load_natural_prompts()
    classifier = train_classifier(embedder, fit, x_fit, embedder.embed(fit.questions, cache_dir), natural_train,
                                  cache_dir)
    probs_fit = classifier.predict(*tokenizer.encode(fit.queries), x_fit)
    probs_val = classifier.predict(*tokenizer.encode(val.queries), x_val)
    expected_tokens = typical_output_tokens(fit.output_tokens, models)
    tokens_fit = with_typical_tokens(fit.output_tokens, np.array([expected_tokens[m] for m in models]))
    knn = train_knn(x_fit, fit.performance, tokens_fit, config.model_selection.knn,
                    domain_quality_table(probs_fit, fit.performance))
    scoring = _scoring(config, val, probs_val, knn.expected_output_tokens(x_val), expected_tokens)
    return Validation(**vars(scoring), x_fit=x_fit, probs_fit=probs_fit, quality_fit=fit.performance,
                      tokens_fit=tokens_fit, fit_categories=fit.category_ids(), x_val=x_val)


def prepare(config_path: Path, repository: Path, data_dir: Path = DEFAULT_DATA_DIR,
            cache_dir: Path | None = None) -> Validation:
    """The fixed fit / validation split of the training questions, ready to score settings on."""
    config = load_config(config_path)
    train = training_questions(config, data_dir)
    validation = np.array([is_validation_question(int(q)) for q in train.question_ids])
    log.info("tuning on %d fit and %d validation questions (held-out questions untouched)",
             int((~validation).sum()), int(validation.sum()))
    return split_validation(config, repository_embedder(repository), train.subset(~validation),
                            train.subset(validation), cache_dir)


def configured_scores(v: Validation) -> dict[str, np.ndarray]:
    """Every selector with the configured settings, trained on the fit part, on the validation part."""
    selectors = train_selectors(v.x_fit, v.probs_fit, v.quality_fit, v.tokens_fit, v.config.model_selection,
                                v.val.model_names)
    return {a: s.predict(v.x_val, v.probs_val) for a, s in selectors.items()}


def cross_validate(config: RouterConfig, repository: Path, folds: int = CV_FOLDS,
                   data_dir: Path = DEFAULT_DATA_DIR, cache_dir: Path | None = None
                   ) -> tuple[Scoring, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every training question routed by a classifier and selectors (configured settings) trained
    on the other folds: the pooled scoring, every algorithm's scores and, to compare them with,
    the scores of two references, in the scoring's order. The references: the domain prior
    alone (what the selectors blend with) and a plain KMeans router (soft top-3 of 32 clusters, no prior)."""
    if folds < 2:
        raise ValueError(f"--folds {folds}: cross-validation needs at least 2 folds (default {CV_FOLDS})")
    train = training_questions(config, data_dir)
    fold = np.array([cv_fold(int(q), folds) for q in train.question_ids])
    embedder = repository_embedder(repository)
    order, probs, tokens = [], [], []
    scores, references = {a: [] for a in SELECTOR_ALGORITHMS}, {r: [] for r in REFERENCES}
    # The plain Avengers-Pro-style router of `plain_kmeans.py`, as the selectors are routed here.
    plain_kmeans = KmeansSettings(n_clusters=plain.N_CLUSTERS, top_k=plain.TOP_K, temperature=plain.TEMPERATURE,
                                  domain_prior_weight=0.0)
    for f in tqdm(range(folds), desc="cross-validation folds", unit="fold"):
        v = split_validation(config, embedder, train.subset(fold != f), train.subset(fold == f), cache_dir)
        order.append(np.flatnonzero(fold == f))
        probs.append(v.probs_val)
        tokens.append(v.tokens_val)
        table = domain_quality_table(v.probs_fit, v.quality_fit)
        references["domain prior"].append(v.probs_val @ table)
        references["plain kmeans"].append(
            train_kmeans(v.x_fit, v.quality_fit, plain_kmeans, table).predict(v.x_val, v.probs_val))
        for a, s in configured_scores(v).items():
            scores[a].append(s)
    models = config.model_names
    expected_tokens = typical_output_tokens(train.output_tokens, models)
    scoring = _scoring(config, train.subset(np.concatenate(order)), np.concatenate(probs),
                       np.concatenate(tokens), expected_tokens)
    return (scoring, {a: np.concatenate(s) for a, s in scores.items()},
            {r: np.concatenate(s) for r, s in references.items()})


def prediction_skill(performance: np.ndarray, model_names: list[str], predictions: dict[str, np.ndarray]) -> dict:
    """Brier skill of each predictor's per-model correctness: 1 - its mean squared error over that of
    each model's mean quality, for the best single model and averaged over the models. What a
    router can gain beyond sending whole domains to one model rests on this."""
    best = int(np.argmax(performance.mean(axis=0)))
    reference = ((performance - performance.mean(axis=0)) ** 2).mean(axis=0)
    skill = {}
    for name, predicted in predictions.items():
        per_model = 1.0 - ((predicted - performance) ** 2).mean(axis=0) / np.maximum(reference, 1e-12)
        skill[name] = {"best_single": round(float(per_model[best]), 4), "mean": round(float(per_model.mean()), 4)}
    return {"best_single_model": model_names[best], "skill": skill}


def _score_prior_weights(v: Validation, algorithm: str, selector: Selector, settings: dict,
                         weights: tuple[float, ...]) -> list[dict]:
    rows = []
    own = selector.own(v.x_val)
    prior = v.probs_val @ selector.prior.table
    for weight in weights:
        scores = {algorithm: (1 - weight) * own + weight * prior}
        rows.append({**settings, "domain_prior_weight": weight,
                     "budget_score": round(v.budget_score(v.curve(scores, algorithm)), 4)})
    return rows


def sweep(v: Validation, grid: Grid) -> dict[str, list[dict]]:
    """Budget score of every setting in the grid, per algorithm."""
    table = domain_quality_table(v.probs_fit, v.quality_fit)
    current = v.config.model_selection
    results: dict[str, list[dict]] = {a: [] for a in SELECTOR_ALGORITHMS}
    for k in tqdm(grid.knn_k, desc="knn settings", unit="k"):
        selector = train_knn(v.x_fit, v.quality_fit, v.tokens_fit, KnnSettings(k=k), table)
        results[KNN.name] += _score_prior_weights(v, KNN.name, selector, {"k": k}, grid.prior_weights)
    for n in tqdm(grid.kmeans_clusters, desc="kmeans settings", unit="size"):
        settings = KmeansSettings(n_clusters=n, top_k=current.kmeans.top_k, temperature=current.kmeans.temperature)
        selector = train_kmeans(v.x_fit, v.quality_fit, settings, table)
        results[KMEANS.name] += _score_prior_weights(v, KMEANS.name, selector, {"n_clusters": n}, grid.prior_weights)
    for gamma in tqdm(grid.svm_gamma, desc="svm settings", unit="gamma"):
        settings = SvmSettings(C=current.svm.C, gamma=gamma, max_train=current.svm.max_train)
        fitted = fit_model_svms(v.x_fit, v.quality_fit, settings, v.val.model_names)
        selector = svm_selector_from(fitted, settings, v.x_fit.shape[1], table)
        results[SVM.name] += _score_prior_weights(v, SVM.name, selector, {"gamma": gamma}, grid.prior_weights)
    for alpha in tqdm(grid.mlp_alpha, desc="mlp settings", unit="alpha"):
        settings = MlpSettings(hidden_sizes=current.mlp.hidden_sizes, alpha=alpha, max_iter=current.mlp.max_iter)
        selector = train_mlp(v.x_fit, v.quality_fit, settings, table)
        results[MLP.name] += _score_prior_weights(v, MLP.name, selector, {"alpha": alpha}, grid.prior_weights)
    return results


def configured_row(config: RouterConfig, algorithm: str) -> dict:
    """The sweep row keys of the configuration's current setting for `algorithm`."""
    tuned = ALGORITHMS[algorithm].tuned_setting
    settings = getattr(config.model_selection, algorithm)
    return {tuned: getattr(settings, tuned), "domain_prior_weight": settings.domain_prior_weight}


def choose_setting(rows: list[dict], best: dict, configured: dict) -> dict:
    """The best row, unless the configured setting's row is within KEEP_MARGIN of it."""
    current = next((r for r in rows if all(r.get(key) == value for key, value in configured.items())), None)
    if current is not None and best["budget_score"] - current["budget_score"] <= KEEP_MARGIN:
        return current
    return best


def compare_routers(scoring: Scoring, scores: dict[str, np.ndarray], references: dict[str, np.ndarray]) -> dict:
    """The configured router and each algorithm forced for every decision, scored on the same routes;
    `recommended`: the best, unless the configured router is within KEEP_MARGIN of it. `references`
    are routed alike (their scores in the knn slot, knn forced) to show what the routers add."""
    routers = {name: {"algorithm": algorithm, **scoring.summary(scoring.curve(scores, algorithm, FINE_COST_WEIGHTS))}
               for name, algorithm in (("configured", None), *((a, a) for a in SELECTOR_ALGORITHMS))}
    best = max(routers, key=lambda r: routers[r]["budget_score"])
    margin = routers[best]["budget_score"] - routers["configured"]["budget_score"]
    return {"routers": routers, "recommended": "configured" if margin <= KEEP_MARGIN else best,
            "references": {name: {"algorithm": None, **scoring.summary(scoring.curve({KNN.name: s}, KNN.name,
                                                                                      FINE_COST_WEIGHTS))}
                           for name, s in references.items()}}


def with_domain_threshold(scoring: Scoring, threshold: float) -> Scoring:
    config = scoring.config.model_copy(update={"domain_threshold": threshold})
    expected_cost = dict(zip(scoring.engine.model_names, scoring.engine.cost))
    return replace(scoring, config=config, engine=DecisionEngine(config, scoring.engine.model_names, expected_cost))


def compare_domain_thresholds(scoring: Scoring, scores: dict[str, np.ndarray], algorithm: str | None,
                              curve: list[dict], thresholds: tuple[float, ...] = DOMAIN_THRESHOLDS) -> dict:
    """The router's cross-validated curve at each domain threshold (`curve`: at the configured one,
    not swept again). A query whose domain matches no decision goes to `default_model` whatever its
    quality or cost; a lower threshold lets more of them be routed. The highest budget score wins:
    the thresholds change the routes of a few percent of the same queries, a paired comparison far
    less noisy than one between routers."""
    rows = []
    for threshold in thresholds:
        routed = with_domain_threshold(scoring, threshold)
        swept = curve if threshold == scoring.config.domain_threshold else routed.curve(
            scores, algorithm, FINE_COST_WEIGHTS)
        unmatched = np.mean([routed.engine.match(p)[0] is None for p in routed.probs_val])
        rows.append({"domain_threshold": threshold, "unmatched": round(float(unmatched), 4),
                     **routed.summary(swept)})
    chosen = max(rows, key=lambda r: (r["budget_score"], r["domain_threshold"]))
    return {"rows": rows, "chosen": chosen["domain_threshold"]}


def choose_cost_weight(scoring: Scoring, scores: dict[str, np.ndarray], algorithm: str | None,
                       curve: list[dict], budget: float) -> dict:
    """The cost weight at which the router (configured decisions, or `algorithm` for every decision),
    whose cost-weight `curve` this is, reaches the highest quality within `budget` x the best single
    model's cost, refined between the sweep's best affordable weight and the next lower one."""
    weight, curve = _refined_cost_weight(scoring, scores, algorithm, curve, budget)
    choices = route_models(scoring.engine, scoring.heads(scores), algorithm, weight)
    return {"budget": budget, "algorithm": algorithm, "cost_weight": weight, "curve": curve,
            "routed": summarize(choices, scoring.val.model_names, scoring.val.performance, scoring.cost)}


def _refined_cost_weight(scoring: Scoring, scores: dict[str, np.ndarray], algorithm: str | None,
                         curve: list[dict], budget: float) -> tuple[float, list[dict]]:
    """`choose_cost_weight`'s weight, and the curve with the refined points added."""
    def best_affordable(points: list[dict]) -> dict:
        affordable = [c for c in points if c["cost_per_1k"] <= budget * scoring.best_cost]
        return max(affordable or [min(points, key=lambda c: c["cost_per_1k"])],
                   key=lambda c: (c["quality"], -c["cost_per_1k"]))

    chosen = best_affordable(curve)
    lower = max((c["cost_weight"] for c in curve if c["cost_weight"] < chosen["cost_weight"]), default=0.0)
    if lower > 0:
        finer = [round(float(w), 6) for w in np.geomspace(lower, chosen["cost_weight"], REFINE_STEPS)[1:-1]]
        curve = sorted(curve + scoring.curve(scores, algorithm, finer), key=lambda c: c["cost_weight"])
        chosen = best_affordable(curve)
    return chosen["cost_weight"], curve


def _rows_of(scoring: Scoring, rows: np.ndarray) -> Scoring:
    """The same routes restricted to `rows`, with that part's own best single model."""
    val, cost = scoring.val.subset(rows), scoring.cost[rows]
    _, best_quality, best_cost = _best_single(val.performance, cost)
    return replace(scoring, val=val, probs_val=scoring.probs_val[rows], tokens_val=scoring.tokens_val[rows],
                   cost=cost, best_quality=best_quality, best_cost=best_cost)


def cross_fitted_cost_weight(scoring: Scoring, scores: dict[str, np.ndarray], algorithm: str | None,
                             budget: float, folds: int) -> dict:
    """The operating point estimated without choosing it on the routes it is scored on: each fold's
    queries are routed at the cost weight that `choose_cost_weight` picks on the other folds' routes.
    Choosing the weight on the pooled routes and scoring it there is optimistic by the selection alone."""
    fold = np.array([cv_fold(int(q), folds) for q in scoring.val.question_ids])
    routed_models = np.empty(len(scoring.val), dtype=object)
    weights = []
    for f in range(folds):
        others = np.flatnonzero(fold != f)
        part = _rows_of(scoring, others)
        part_scores = {a: s[others] for a, s in scores.items()}
        weight, _ = _refined_cost_weight(part, part_scores, algorithm,
                                         part.curve(part_scores, algorithm, FINE_COST_WEIGHTS), budget)
        weights.append(weight)
        held = np.flatnonzero(fold == f)
        held_heads = _rows_of(scoring, held).heads({a: s[held] for a, s in scores.items()})
        routed_models[held] = route_models(scoring.engine, held_heads, algorithm, weight)
    choices = routed_models.tolist()
    routed = summarize(choices, scoring.val.model_names, scoring.val.performance, scoring.cost)
    best = scoring.val.model_names[_best_single(scoring.val.performance, scoring.cost)[0]]
    intervals = ratio_intervals(scoring.val.performance, scoring.cost, choices, scoring.val.model_names, best,
                                np.random.default_rng(0))
    return {"cost_weights": weights, "routed": routed, "quality_ratio": round(routed["quality"] / scoring.best_quality, 4),
            "cost_ratio": round(routed["cost_per_1k"] / scoring.best_cost, 4), "intervals": intervals}


def true_domain_ceiling(v: Validation) -> dict:
    """A router told each validation query's true category, choosing by that category's mean
    quality per model on the fit split: how far domain knowledge alone goes."""
    table = domain_quality_table(np.eye(len(DOMAINS))[v.fit_categories], v.quality_fit, shrinkage=0.0)
    scores = np.eye(len(DOMAINS))[v.val.category_ids()] @ table
    curve = v.curve({KNN.name: scores}, KNN.name, FINE_COST_WEIGHTS)
    return {"budget_score": round(v.budget_score(curve), 4), "quality_within": v.quality_within(curve)}


def tune(config_path: Path, repository: Path, budget: float = DEFAULT_BUDGET, grid: Grid = Grid(),
         cache_dir: Path | None = None, folds: int = CV_FOLDS) -> dict:
    v = prepare(config_path, repository, cache_dir=cache_dir)
    results = sweep(v, grid)
    best = {a: max(rows, key=lambda r: r["budget_score"]) for a, rows in results.items()}
    chosen = {a: choose_setting(rows, best[a], configured_row(v.config, a)) for a, rows in results.items()}
    scoring, scores, references = cross_validate(v.config, repository, folds, cache_dir=cache_dir)
    comparison = compare_routers(scoring, scores, references)
    recommended = comparison["routers"][comparison["recommended"]]
    thresholds = compare_domain_thresholds(scoring, scores, recommended["algorithm"], recommended["curve"])
    chosen_threshold = next(r for r in thresholds["rows"] if r["domain_threshold"] == thresholds["chosen"])
    return {
        "split": {"fit": len(v.x_fit), "validation": len(v.x_val),
                  "rule": "training questions with sha256('mmlu-pro-validation:<id>') % 1000 < 200"},
        "cross_validation": {"folds": folds, "questions": len(scoring.val),
                             "rule": f"training questions, fold sha256('mmlu-pro-cv:<id>') % {folds}",
                             "best_single": {"quality": round(scoring.best_quality, 4),
                                             "cost_per_1k": round(scoring.best_cost, 4)}},
        "best_single": {"quality": round(v.best_quality, 4), "cost_per_1k": round(v.best_cost, 4)},
        "budgets": list(BUDGETS),
        "sweeps": results,
        "best": best,
        "keep_margin": KEEP_MARGIN,
        "chosen": chosen,
        "routers": comparison,
        "domain_threshold": thresholds,
        "cost_weight": choose_cost_weight(with_domain_threshold(scoring, thresholds["chosen"]), scores,
                                          recommended["algorithm"], chosen_threshold["curve"], budget),
        "cross_fitted": cross_fitted_cost_weight(with_domain_threshold(scoring, thresholds["chosen"]), scores,
                                                 recommended["algorithm"], budget, folds),
        "true_domain_ceiling": true_domain_ceiling(v),
        "prediction_skill": prediction_skill(scoring.val.performance, scoring.val.model_names,
                                             {**references, **scores}),
    }


def write_tuning_report(report: dict, out: Path, command: str) -> None:
    lines = ["# model-selector tuning", "", f"`{command}`", "",
             f"Fit on {report['split']['fit']} training questions, scored on {report['split']['validation']} "
             f"validation questions ({report['split']['rule']}); the held-out questions are not used.", "",
             "Budget score: the best validation quality within "
             + ", ".join(f"{b:.0%}" for b in report["budgets"])
             + " of the best single model's cost, averaged, as a fraction of its quality. "
             f"**Bold**: the setting to configure, which is the configured one unless another scores more than "
             f"{report['keep_margin']} above it.", "", "# Settings (validation split)", ""]
    for algorithm, rows in report["sweeps"].items():
        keys = [k for k in rows[0] if k != "budget_score"]
        lines += [f"## {algorithm}", "", "| " + " | ".join(keys) + " | budget score |",
                  "|" + "---|" * (len(keys) + 1)]
        for row in rows:
            mark = "**" if row == report["chosen"][algorithm] else ""
            lines.append("| " + " | ".join(f"{mark}{row[k]}{mark}" for k in keys) + f" | {mark}{row['budget_score']}{mark} |")
        lines.append("")
    cv = report["cross_validation"]
    comparison = report["routers"]
    budgets = list(next(iter(comparison["routers"].values()))["quality_within"])
    within_columns = " | ".join(f"within {float(b):.0%}" for b in budgets)

    def score_cells(row: dict) -> str:
        return f"{row['budget_score']} | " + " | ".join(str(q) for q in row["quality_within"].values())

    lines += ["## Which algorithm, cross-validated", "",
              (f"All {cv['questions']} training questions in {cv['folds']} folds ({cv['rule']}), each routed by a "
               "classifier and selectors (the settings above) trained on the other folds. Best quality within a "
               "fraction of the best single model's cost, as a fraction of its quality:"), "",
              f"| router | budget score | {within_columns} |",
              "|---|---|" + "---|" * len(budgets)]
    for name, row in comparison["routers"].items():
        mark = "**" if name == comparison["recommended"] else ""
        label = "configured decisions" if row["algorithm"] is None else f"{name} for every decision"
        lines.append(f"| {mark}{label}{mark} | {score_cells(row)} |")
    for name, row in comparison["references"].items():
        lines.append(f"| *{REFERENCE_LABELS[name]}* | {score_cells(row)} |")
    cw = report["cost_weight"]
    router = "the configured decisions" if cw["algorithm"] is None else f"{cw['algorithm']} for every decision"
    best = cv["best_single"]
    lines += ["", (f"**Bold**: the router to configure; the configured decisions unless another scores more "
                   f"than {report['keep_margin']} above them. *Italics*: references, routed alike, never "
                   "configured."), "", "![cross-validated curves](cross_validation.png)",
              "", "## Domain threshold", "",
              ("A query whose domain probabilities match no decision goes to the default model, whatever its "
               f"quality or cost. {router.capitalize()}, cross-validated, at each `domain_threshold` (**bold**: "
               "the highest budget score, to configure):"), "",
              f"| domain threshold | queries matching no decision | budget score | {within_columns} |",
              "|---|---|---|" + "---|" * len(budgets)]
    for row in report["domain_threshold"]["rows"]:
        mark = "**" if row["domain_threshold"] == report["domain_threshold"]["chosen"] else ""
        lines.append(f"| {mark}{row['domain_threshold']}{mark} | {row['unmatched']:.1%} | {score_cells(row)} |")
    lines += ["", "## Default cost weight", "",
              (f"{router.capitalize()}, cross-validated, at domain threshold {report['domain_threshold']['chosen']}: "
               f"cost weight **{cw['cost_weight']}** gives quality "
               f"{cw['routed']['quality']:.4f} at {cw['routed']['cost_per_1k']:.4f} USD per 1,000 queries "
               f"(best single model: {best['quality']:.4f} at {best['cost_per_1k']:.4f}; "
               f"budget {cw['budget']:.0%} of its cost)."), ""]
    fitted = report["cross_fitted"]
    pooled_quality, pooled_cost = cw["routed"]["quality"] / best["quality"], cw["routed"]["cost_per_1k"] / best["cost_per_1k"]
    lines += ["## An honest estimate", "",
              ("The cost weight above is chosen on the pooled routes and scored on them, which counts the choice "
               f"as skill: {pooled_quality:.4f}x the best single model's quality at {pooled_cost:.4f}x its cost. "
               "Cross-fitted, each fold's questions are routed at the weight chosen on the other folds' routes "
               f"({', '.join(str(w) for w in fitted['cost_weights'])}): **{fitted['quality_ratio']:.4f}x** "
               f"({fitted['intervals']['quality_ratio'][0]}-{fitted['intervals']['quality_ratio'][1]}, 95% paired "
               f"bootstrap) at **{fitted['cost_ratio']:.4f}x** ({fitted['intervals']['cost_ratio'][0]}-"
               f"{fitted['intervals']['cost_ratio'][1]}). This is the estimate to compare with a held-out "
               "evaluation (`model-selector build --holdout`, then `model-selector evaluate`). The settings swept "
               "above, and any chosen by hand from earlier reports, were still chosen on these questions."), ""]
    ceiling = report["true_domain_ceiling"]
    lines += ["## What domain knowledge alone reaches", "",
              "A router told each validation query's *true* category, choosing by that category's mean quality "
              f"per model: budget score {ceiling['budget_score']}; best quality / best single's quality within "
              + ", ".join(f"{float(b):.0%}: {q}" for b, q in ceiling["quality_within"].items())
              + " of its cost.", ""]
    skill = report["prediction_skill"]
    lines += ["## How much the selectors know about each query", "",
              ("Brier skill of the predicted correctness, cross-validated (1 - mean squared error / that of each "
               "model's mean quality; 0 = no better than the model's average, 1 = knows every answer). The domain "
               "prior is the query's domain probabilities times each domain's mean quality per model; each selector "
               "blends it with its own estimate."), "",
              f"| predictor | skill for {skill['best_single_model']} | mean skill over the models |", "|---|---|---|"]
    lines += [f"| {name} | {row['best_single']} | {row['mean']} |" for name, row in skill["skill"].items()]
    lines.append("")
    write_report(out / "report.json", {**report, "command": command}, "\n".join(lines),
                 {"cross_validation.png": plot_cross_validation(report)})


def plot_cross_validation(report: dict) -> Figure:
    best = report["cross_validation"]["best_single"]
    fig, ax = figure(8, 5)
    lines = [(name, row, {"marker": "."}) for name, row in report["routers"]["routers"].items()]
    lines += [(REFERENCE_LABELS[name], row, {"linestyle": "--", "linewidth": 1})
              for name, row in report["routers"]["references"].items()]
    for label, row, style in lines:
        curve = sorted(row["curve"], key=lambda c: c["cost_per_1k"])
        ax.plot([c["cost_per_1k"] / best["cost_per_1k"] for c in curve],
                [c["quality"] / best["quality"] for c in curve], label=label, **style)
    routed = report["cost_weight"]["routed"]
    ax.scatter(routed["cost_per_1k"] / best["cost_per_1k"], routed["quality"] / best["quality"], s=120,
               color="gold", edgecolor="black", zorder=5,
               label=(f"default: domain threshold {report['domain_threshold']['chosen']}, "
                      f"cost weight {report['cost_weight']['cost_weight']}"))
    ax.axvline(report["cost_weight"]["budget"], color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1.05)
    ax.set_ylim(0.85, 1.02)
    ax.set_xlabel("cost / best single model's cost")
    ax.set_ylabel("quality / best single model's quality")
    ax.set_title(f"Cross-validated routing, {report['cross_validation']['questions']} training questions")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def grid_from(spec: str | None) -> Grid:
    """`knn=10,20;kmeans=8;svm=1;mlp=0.1;prior=0,0.5` -> a Grid; unspecified parts keep their defaults."""
    if not spec:
        return Grid()
    fields = {**{a.name: (a.grid_field, a.setting_type) for a in ALGORITHMS.values()}, "prior": ("prior_weights", float)}
    values = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, _, raw = part.partition("=")
        if key not in fields:
            raise ValueError(f"--grid: unknown part {key!r}; use {', '.join(fields)} (e.g. 'knn=10,20;svm=1')")
        name, kind = fields[key]
        values[name] = tuple(kind(x) for x in raw.split(","))
    return Grid(**values)

