"""`model-selector tune`: choose the selector settings and the default cost weight on a
validation split cut from the training questions (never the held-out ones).

The fit / validation split is fixed by question id, like the held-out split:
`sha256("mmlu-pro-validation:<question_id>") % 1000 < 200` among the training questions.
Settings are compared by their *budget score*: the best validation quality each reaches
(over the cost-weight sweep) within 20%, 30%, 40% and 50% of the best single model's cost,
averaged. A setting replaces the configured one only when it scores more than
`KEEP_MARGIN` above it: closer than that is within the noise of 1,297 validation questions.
The default cost weight is the one at which the configured router reaches the highest
validation quality within `--budget` (default 30%) of that cost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .build import train_classifier
from .config import DOMAINS, KmeansSettings, KnnSettings, RouterConfig, SvmSettings, load_config
from .data import DEFAULT_DATA_DIR, Benchmark, load_mmlu_pro, split_train_test
from .decision_engine import DecisionEngine, expected_cost_per_1k
from .evaluate import COST_WEIGHTS, HeadOutputs, cost_curve, cost_matrix, repository_embedder, summarize
from .train import (Selector, domain_quality_table, fit_model_svms, svm_selector_from,
                    train_kmeans, train_knn, train_selectors, with_typical_tokens)

log = logging.getLogger(__name__)

BUDGETS = (0.2, 0.3, 0.4, 0.5)
FINE_COST_WEIGHTS = [0.0] + [round(float(w), 6) for w in np.geomspace(1e-4, 100.0, 121)]
VALIDATION_FRACTION = 0.2
KEEP_MARGIN = 0.005


@dataclass(frozen=True)
class Grid:
    knn_k: tuple[int, ...] = (10, 20, 50, 100)
    kmeans_clusters: tuple[int, ...] = (8, 16, 32, 64)
    svm_gamma: tuple[float, ...] = (0.5, 1.0, 2.0)
    prior_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


def is_validation_question(question_id: int) -> bool:
    digest = hashlib.sha256(f"mmlu-pro-validation:{question_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < VALIDATION_FRACTION * 1000


def best_within(curve: list[dict], budget: float) -> float:
    """The highest quality on the curve at no more than `budget` cost (0 when none is that cheap)."""
    return max((c["quality"] for c in curve if c["cost_per_1k"] <= budget), default=0.0)


@dataclass
class Validation:
    """Everything a candidate setting is scored on."""

    config: RouterConfig
    x_fit: np.ndarray
    probs_fit: np.ndarray
    quality_fit: np.ndarray
    tokens_fit: np.ndarray  # [N_fit, M] output tokens
    fit_categories: np.ndarray
    x_val: np.ndarray
    probs_val: np.ndarray
    tokens_val: np.ndarray  # [N_val, M] expected output tokens, from the configured KNN
    val: Benchmark
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


def prepare(config_path: Path, repository: Path, data_dir: Path = DEFAULT_DATA_DIR,
            cache_dir: Path | None = None) -> Validation:
    """Split the training questions, embed them through the built repository, train the classifier on the fit part."""
    config = load_config(config_path)
    models = config.model_names
    train, _ = split_train_test(load_mmlu_pro(models, data_dir))
    train = train.subset(train.complete_rows())
    validation = np.array([is_validation_question(int(q)) for q in train.question_ids])
    fit, val = train.subset(~validation), train.subset(validation)
    log.info("tuning on %d fit and %d validation questions (held-out questions untouched)", len(fit), len(val))
    embedder = repository_embedder(repository)
    tokenizer = embedder.tokenizer
    x_fit = embedder.embed(fit.queries, cache_dir, description="fit queries")
    x_val = embedder.embed(val.queries, cache_dir, description="validation queries")
    classifier = train_classifier(embedder, fit, x_fit, embedder.embed(fit.questions, cache_dir), cache_dir)
    probs_fit = classifier.predict(*tokenizer.encode(fit.queries), x_fit)
    probs_val = classifier.predict(*tokenizer.encode(val.queries), x_val)
    expected_tokens = {m: float(np.nanmean(fit.output_tokens[:, j])) for j, m in enumerate(models)}
    tokens_fit = with_typical_tokens(fit.output_tokens, np.array([expected_tokens[m] for m in models]))
    knn = train_knn(x_fit, fit.performance, tokens_fit, config.model_selection.knn,
                    domain_quality_table(probs_fit, fit.performance))
    cost = cost_matrix(config, expected_tokens, models, val.output_tokens)
    engine = DecisionEngine(config, models, expected_cost_per_1k(config, expected_tokens))
    single_quality, single_cost = val.performance.mean(axis=0), cost.mean(axis=0)
    best = int(np.argmax(single_quality))
    return Validation(config, x_fit, probs_fit, fit.performance, tokens_fit, fit.category_ids(), x_val, probs_val,
                      knn.expected_output_tokens(x_val), val, cost, engine,
                      float(single_quality[best]), float(single_cost[best]))


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
    results: dict[str, list[dict]] = {"knn": [], "kmeans": [], "svm": []}
    for k in tqdm(grid.knn_k, desc="knn settings", unit="k"):
        selector = train_knn(v.x_fit, v.quality_fit, v.tokens_fit, KnnSettings(k=k), table)
        results["knn"] += _score_prior_weights(v, "knn", selector, {"k": k}, grid.prior_weights)
    for n in tqdm(grid.kmeans_clusters, desc="kmeans settings", unit="size"):
        settings = KmeansSettings(n_clusters=n, top_k=current.kmeans.top_k, temperature=current.kmeans.temperature)
        selector = train_kmeans(v.x_fit, v.quality_fit, settings, table)
        results["kmeans"] += _score_prior_weights(v, "kmeans", selector, {"n_clusters": n}, grid.prior_weights)
    for gamma in tqdm(grid.svm_gamma, desc="svm settings", unit="gamma"):
        settings = SvmSettings(C=current.svm.C, gamma=gamma, max_train=current.svm.max_train)
        fitted = fit_model_svms(v.x_fit, v.quality_fit, settings, v.val.model_names)
        selector = svm_selector_from(fitted, settings, v.x_fit.shape[1], table)
        results["svm"] += _score_prior_weights(v, "svm", selector, {"gamma": gamma}, grid.prior_weights)
    return results


def configured_row(config: RouterConfig, algorithm: str) -> dict:
    """The sweep row keys of the configuration's current setting for `algorithm`."""
    settings = config.model_selection
    if algorithm == "knn":
        return {"k": settings.knn.k, "domain_prior_weight": settings.knn.domain_prior_weight}
    if algorithm == "kmeans":
        return {"n_clusters": settings.kmeans.n_clusters, "domain_prior_weight": settings.kmeans.domain_prior_weight}
    return {"gamma": settings.svm.gamma, "domain_prior_weight": settings.svm.domain_prior_weight}


def choose_setting(rows: list[dict], best: dict, configured: dict) -> dict:
    """The best row, unless the configured setting's row is within KEEP_MARGIN of it."""
    current = next((r for r in rows if all(r.get(key) == value for key, value in configured.items())), None)
    if current is not None and best["budget_score"] - current["budget_score"] <= KEEP_MARGIN:
        return current
    return best


def choose_cost_weight(v: Validation, budget: float) -> dict:
    """The configured router (as `config` sets it up) on validation: the cost weight with the highest
    quality within `budget` x the best single model's cost."""
    selectors = train_selectors(v.x_fit, v.probs_fit, v.quality_fit, v.tokens_fit, v.config.model_selection,
                                v.val.model_names)
    scores = {a: s.predict(v.x_val, v.probs_val) for a, s in selectors.items()}
    curve = v.curve(scores, None, FINE_COST_WEIGHTS)
    affordable = [c for c in curve if c["cost_per_1k"] <= budget * v.best_cost]
    affordable = affordable or [min(curve, key=lambda c: c["cost_per_1k"])]
    chosen = max(affordable, key=lambda c: (c["quality"], -c["cost_per_1k"]))
    heads = v.heads(scores)
    choices = [heads.route(v.engine, i, None, chosen["cost_weight"]).selected_model for i in range(len(heads))]
    return {"budget": budget, "cost_weight": chosen["cost_weight"], "curve": curve,
            "validation": summarize(choices, v.val.model_names, v.val.performance, v.cost)}


def true_domain_ceiling(v: Validation) -> dict:
    """A router told each validation query's true category, choosing by that category's mean
    quality per model on the fit split: how far domain knowledge alone goes."""
    table = domain_quality_table(np.eye(len(DOMAINS))[v.fit_categories], v.quality_fit, shrinkage=0.0)
    scores = np.eye(len(DOMAINS))[v.val.category_ids()] @ table
    curve = v.curve({"knn": scores}, "knn", FINE_COST_WEIGHTS)
    return {"budget_score": round(v.budget_score(curve), 4),
            "quality_within": {f"{b:.2f}": round(best_within(curve, b * v.best_cost) / v.best_quality, 4)
                               for b in (0.25, 0.3, 0.35, 0.4, 0.5)}}


def tune(config_path: Path, repository: Path, budget: float = 0.3, grid: Grid = Grid(),
         cache_dir: Path | None = None) -> dict:
    v = prepare(config_path, repository, cache_dir=cache_dir)
    results = sweep(v, grid)
    best = {a: max(rows, key=lambda r: r["budget_score"]) for a, rows in results.items()}
    chosen = {a: choose_setting(rows, best[a], configured_row(v.config, a)) for a, rows in results.items()}
    return {
        "split": {"fit": len(v.x_fit), "validation": len(v.x_val),
                  "rule": "training questions with sha256('mmlu-pro-validation:<id>') % 1000 < 200"},
        "best_single": {"quality": round(v.best_quality, 4), "cost_per_1k": round(v.best_cost, 4)},
        "budgets": list(BUDGETS),
        "sweeps": results,
        "best": best,
        "keep_margin": KEEP_MARGIN,
        "chosen": chosen,
        "cost_weight": choose_cost_weight(v, budget),
        "true_domain_ceiling": true_domain_ceiling(v),
    }


def write_tuning_report(report: dict, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({**report, "command": command}, indent=1))
    lines = ["# model-selector tuning (validation split)", "", f"`{command}`", "",
             f"Fit on {report['split']['fit']} training questions, scored on {report['split']['validation']} "
             f"validation questions ({report['split']['rule']}); the held-out questions are not used.", "",
             "Budget score: the best validation quality within "
             + ", ".join(f"{b:.0%}" for b in report["budgets"])
             + " of the best single model's cost, averaged, as a fraction of its quality. "
             f"**Bold**: the setting to configure, which is the configured one unless another scores more than "
             f"{report['keep_margin']} above it.", ""]
    for algorithm, rows in report["sweeps"].items():
        keys = [k for k in rows[0] if k != "budget_score"]
        lines += [f"## {algorithm}", "", "| " + " | ".join(keys) + " | budget score |",
                  "|" + "---|" * (len(keys) + 1)]
        for row in rows:
            mark = "**" if row == report["chosen"][algorithm] else ""
            lines.append("| " + " | ".join(f"{mark}{row[k]}{mark}" for k in keys) + f" | {mark}{row['budget_score']}{mark} |")
        lines.append("")
    cw = report["cost_weight"]
    lines += ["## Default cost weight", "",
              f"Configured router on validation: cost weight **{cw['cost_weight']}** gives quality "
              f"{cw['validation']['quality']:.4f} at {cw['validation']['cost_per_1k']:.4f} USD per 1,000 queries "
              f"(best single model: {report['best_single']['quality']:.4f} at {report['best_single']['cost_per_1k']:.4f}; "
              f"budget {cw['budget']:.0%} of its cost).", ""]
    ceiling = report["true_domain_ceiling"]
    lines += ["## What domain knowledge alone reaches", "",
              "A router told each validation query's *true* category, choosing by that category's mean quality "
              f"per model: budget score {ceiling['budget_score']}; best quality / best single's quality within "
              + ", ".join(f"{float(b):.0%}: {q}" for b, q in ceiling["quality_within"].items())
              + " of its cost.", ""]
    (out / "report.md").write_text("\n".join(lines))


def grid_from(spec: str | None) -> Grid:
    """`knn=10,20;kmeans=8;svm=1;prior=0,0.5` -> a Grid; unspecified parts keep their defaults."""
    if not spec:
        return Grid()
    fields = {"knn": ("knn_k", int), "kmeans": ("kmeans_clusters", int), "svm": ("svm_gamma", float),
              "prior": ("prior_weights", float)}
    values = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, _, raw = part.partition("=")
        if key not in fields:
            raise ValueError(f"--grid: unknown part {key!r}; use {', '.join(fields)} (e.g. 'knn=10,20;svm=1')")
        name, kind = fields[key]
        values[name] = tuple(kind(x) for x in raw.split(","))
    return Grid(**values)

