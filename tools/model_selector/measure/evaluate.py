"""`model-selector evaluate`: routing quality and cost on held-out data, against the best
single model and the per-query oracle.

Quality = mean `performance` of the chosen model; cost = the chosen model's output
tokens x its catalog price, in USD per 1,000 queries.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from model_selector.core.algorithms import SELECTOR_ALGORITHMS
from model_selector.core.config import DOMAINS, RouterConfig
from model_selector.core.decision_engine import DecisionEngine, Route
from model_selector.data.loaders import DEFAULT_DATA_DIR, EvalSet, domain_ids, load_mmlu_pro, split_train_test
from model_selector.measure import plain_kmeans, reports
from model_selector.measure.reports import figure
from model_selector.measure.router import HeadOutputs, InProcessRouter

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# From "quality only" to "the cheapest candidate": the prices span five orders of magnitude.
COST_WEIGHTS = [0.0] + [round(float(w), 6) for w in np.geomspace(1e-4, 100.0, 37)]
# Twenty steps a decade, for curves people read: with one step a decade of the coarse sweep
# above, the cost of a routed set can jump from a third to a half of the best model's.
FINE_COST_WEIGHTS = [0.0] + [round(float(w), 6) for w in np.geomspace(1e-4, 100.0, 121)]
BOOTSTRAP_SAMPLES = 1000


def load_heldout(catalog: list[str], data_dir: Path = DEFAULT_DATA_DIR, split: str = "heldout") -> EvalSet:
    """The shipped MMLU-Pro questions that `build --holdout` holds out (or, `split="train"`, the ones it
    trains on), with every catalog model's result."""
    train, test = split_train_test(load_mmlu_pro(catalog, data_dir))
    part = test if split == "heldout" else train
    part = part.subset(part.complete_rows())
    return EvalSet(part.queries, part.categories, catalog, part.performance, part.output_tokens)


def summarize(choices: list[str], model_names: list[str], performance: np.ndarray, cost: np.ndarray) -> dict:
    """Mean quality and cost of routing each row to its chosen model, and how often each was chosen."""
    index = [model_names.index(m) for m in choices]
    rows = np.arange(len(choices))
    return {
        "quality": round(float(performance[rows, index].mean()), 4),
        "cost_per_1k": round(float(cost[rows, index].mean()), 4),
        "distribution": {m: choices.count(m) for m in sorted(set(choices), key=choices.index)},
    }


def ratio_intervals(performance: np.ndarray, cost: np.ndarray, choices: list[str], model_names: list[str],
                    best: str, rng: np.random.Generator, chunk: int = 100) -> dict[str, list[float]]:
    """95% paired-bootstrap intervals of quality / best and cost / best: how far the same router and the
    best single model could move, relative to each other, on another sample of this many queries."""
    rows = np.arange(len(choices))
    chosen = [model_names.index(m) for m in choices]
    best_j = model_names.index(best)
    per_query = np.stack([performance[rows, chosen], cost[rows, chosen], performance[:, best_j], cost[:, best_j]])
    means = np.concatenate([
        per_query[:, rng.integers(0, len(rows), (min(chunk, BOOTSTRAP_SAMPLES - start), len(rows)))].mean(axis=2)
        for start in range(0, BOOTSTRAP_SAMPLES, chunk)], axis=1)
    intervals = {}
    for name, (numerator, denominator) in (("quality_ratio", (0, 2)), ("cost_ratio", (1, 3))):
        defined = means[denominator] > 0  # a resample where the best single model scores or costs nothing has no ratio
        if not defined.any():
            intervals[name] = None
            continue
        low, high = np.percentile(means[numerator, defined] / means[denominator, defined], [2.5, 97.5])
        intervals[name] = [round(float(low), 4), round(float(high), 4)]
    return intervals


def route_models(engine: DecisionEngine, heads: HeadOutputs, algorithm: str | None = None,
                 cost_weight: float | None = None) -> list[str]:
    return heads.selected_models(engine, algorithm, [cost_weight])[0].tolist()


def cost_curve(engine: DecisionEngine, heads: HeadOutputs, model_names: list[str], performance: np.ndarray,
               cost: np.ndarray, algorithm: str | None = None, weights: list[float] = FINE_COST_WEIGHTS
               ) -> list[dict]:
    """Quality and cost over a sweep of the cost weight (applied to every decision)."""
    # Engine columns to `model_names` columns; a column outside the catalog is never selected.
    to_data_column = np.array([model_names.index(m) if m in model_names else -1 for m in engine.model_names])
    rows = np.arange(len(heads))
    curve = []
    selected = engine.selected_columns(heads.domain_probs, heads.scores, algorithm, weights,
                                       heads.expected_output_tokens)
    for weight, columns in zip(weights, selected):
        chosen = to_data_column[columns]
        curve.append({"cost_weight": weight, "quality": round(float(performance[rows, chosen].mean()), 4),
                      "cost_per_1k": round(float(cost[rows, chosen].mean()), 4)})
    return curve


def cost_matrix(config: RouterConfig, expected_tokens: dict[str, float], model_names: list[str],
                output_tokens: np.ndarray) -> np.ndarray:
    """[N, M] USD per 1,000 queries: output tokens (the model's typical count where unknown) x price."""
    prices = np.array([config.price(m) for m in model_names])
    expected = np.array([expected_tokens[m] for m in model_names])
    tokens = np.where(np.isnan(output_tokens), expected[None, :], output_tokens)
    return tokens * prices[None, :] / 1000.0


UNROUTED = "(no decision: default_model)"


def served_routes(url: str, queries: list[str], batch_size: int = 32) -> list[Route]:
    from model_selector.serve.client import RouterClient

    routes: list[Route] = []
    with RouterClient(url) as client:
        for start in tqdm(range(0, len(queries), batch_size), desc="served routing", unit="batch"):
            routes += client.select(queries[start:start + batch_size])
    return routes


def domain_report(engine: DecisionEngine, categories: list[str], routes: list[Route]) -> dict:
    """How well the routes' domains match the labelled `categories`: accuracy, per-domain precision and
    recall, the confusion matrix (rows: true domain, columns: predicted), the share of prompts that
    matched no decision and the decisions each true domain landed in."""
    n = len(DOMAINS)
    truth, predicted = domain_ids(categories), domain_ids([r.domain for r in routes])
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    per_domain = {}
    for i, domain in enumerate(DOMAINS):
        support, hits, claimed = int(confusion[i].sum()), int(confusion[i, i]), int(confusion[:, i].sum())
        per_domain[domain] = {"support": support,
                              "precision": round(hits / claimed, 4) if claimed else None,
                              "recall": round(hits / support, 4) if support else None}
    # The decision a prompt of each domain should reach: the one a certain classifier would match.
    expected = {d: (engine.match(np.eye(n)[i])[0] or None) for i, d in enumerate(DOMAINS)}
    decisions: dict[str, dict[str, int]] = {}
    for category, route in zip(categories, routes):
        landed = decisions.setdefault(category, {})
        name = route.decision or UNROUTED
        landed[name] = landed.get(name, 0) + 1
    in_expected = [expected[c] is not None and r.decision == expected[c].name for c, r in zip(categories, routes)]
    return {
        "n_prompts": len(categories),
        "accuracy": round(float((truth == predicted).mean()), 4),
        "decision_accuracy": round(float(np.mean(in_expected)), 4),
        "unrouted_share": round(float(np.mean([not r.decision for r in routes])), 4),
        "per_domain": per_domain,
        "domains": list(DOMAINS),
        "confusion": confusion.tolist(),
        "expected_decision": {d: e.name if e else UNROUTED for d, e in expected.items()},
        "decisions": {d: dict(sorted(decisions[d].items(), key=lambda kv: -kv[1])) for d in DOMAINS if d in decisions},
    }


def evaluate_domains(repository: Path, categories: list[str], queries: list[str], url: str | None = None) -> dict:
    """The domain report of a labelled prompt set, routed in-process or by the served ensemble at `url`."""
    router = InProcessRouter(repository)
    routes = router.head_outputs(queries).routes(router.engine) if url is None else served_routes(url, queries)
    return {"n_queries": len(queries), "routed_by": "served ensemble" if url else "in-process graphs",
            "domains": domain_report(router.engine, categories, routes)}


def evaluate(repository: Path, data: EvalSet, url: str | None = None, seed: int = 0,
             reference_training: EvalSet | None = None) -> dict:
    """`reference_training`: the queries the repository was trained on, to train the plain KMeans
    reference router on (`plain_kmeans.py`) and score it beside ours."""
    router = InProcessRouter(repository)
    cost = cost_matrix(router.config, router.expected_tokens, data.model_names, data.output_tokens)
    n = len(data.queries)
    names, perf = data.model_names, data.performance

    heads = router.head_outputs(data.queries)
    report: dict = {"n_queries": n, "models": data.model_names, "cost_unit": "USD per 1,000 queries"}
    in_process_routes = heads.routes(router.engine)
    routes = in_process_routes if url is None else served_routes(url, data.queries)
    if data.categories is not None:
        report["domains"] = domain_report(router.engine, data.categories, routes)
        report["domain_accuracy"] = report["domains"]["accuracy"]

    single = {m: {"quality": round(float(data.performance[:, j].mean()), 4),
                  "cost_per_1k": round(float(cost[:, j].mean()), 4)} for j, m in enumerate(data.model_names)}
    best = max(data.model_names, key=lambda m: (single[m]["quality"], -single[m]["cost_per_1k"]))
    # Oracle: a model that got the query right, the cheapest such.
    oracle_idx = np.lexsort((cost.T, -data.performance.T), axis=0)[0]
    rng = np.random.default_rng(seed)
    random_choice = [data.model_names[j] for j in rng.integers(0, len(data.model_names), n)]
    report["baselines"] = {
        "random": summarize(random_choice, names, perf, cost),
        "oracle": summarize([names[j] for j in oracle_idx], names, perf, cost),
        "best_single": {"model": best, **single[best]},
        "single": single,
    }

    routers: dict = {}
    configured_choices = [r.selected_model for r in routes]
    if url is not None:
        report["served_agreement"] = round(sum(
            a == b.selected_model for a, b in zip(configured_choices, in_process_routes)) / n, 4)
    for name, algorithm in tqdm([("configured", None), *[(a, a) for a in SELECTOR_ALGORITHMS]],
                                desc="cost-weight sweeps", unit="router"):
        choices = configured_choices if name == "configured" else route_models(router.engine, heads, algorithm)
        routers[name] = {**summarize(choices, names, perf, cost),
                         "interval_95": ratio_intervals(perf, cost, choices, names, best, rng),
                         "curve": cost_curve(router.engine, heads, names, perf, cost, algorithm)}
    report["routers"] = routers
    if reference_training is not None:
        train_cost = cost_matrix(router.config, router.expected_tokens, names, reference_training.output_tokens)
        plain, picked = plain_kmeans.reference(
            router.embedder.embed(reference_training.queries, description="reference training queries"),
            reference_training.performance, train_cost,
            router.embedder.embed(data.queries, description="evaluation queries"), perf, cost)
        plain["interval_95"] = ratio_intervals(perf, cost, [names[j] for j in picked], names, best, rng)
        report["references"] = {"plain kmeans": plain}
    return report


def _dominated(curve: list[dict], point: dict) -> bool:
    return any(c["quality"] >= point["quality"] and c["cost_per_1k"] <= point["cost_per_1k"] for c in curve)


def _with_interval(ratio: float, interval: list[float] | None) -> str:
    return f"{ratio:.3f}" if interval is None else f"{ratio:.3f} ({interval[0]:.3f}-{interval[1]:.3f})"


def _fraction(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def domain_lines(domains: dict) -> list[str]:
    """The domain report as markdown: headline figures, per-domain table, where each domain's prompts landed."""
    lines = [f"Domain accuracy {domains['accuracy']:.4f} on {domains['n_prompts']} prompts; "
             f"{domains['decision_accuracy']:.4f} reach the decision of their true domain; "
             f"{domains['unrouted_share']:.2%} match no decision (routed to default_model).", "",
             "| true domain | prompts | precision | recall | expected decision | decisions reached |",
             "|---|---|---|---|---|---|"]
    for domain, row in domains["per_domain"].items():
        if not row["support"] and row["precision"] is None:
            continue
        landed = ", ".join(f"{d} {c}" for d, c in domains["decisions"].get(domain, {}).items())
        lines.append(f"| {domain} | {row['support']} | {_fraction(row['precision'])} | {_fraction(row['recall'])} | "
                     f"{domains['expected_decision'][domain]} | {landed} |")
    confusion = np.array(domains["confusion"])
    off = [(int(confusion[i, j]), domains["domains"][i], domains["domains"][j])
           for i in range(len(confusion)) for j in range(len(confusion)) if i != j and confusion[i, j]]
    if off:
        lines += ["", "Largest confusions (true -> predicted): " + ", ".join(
            f"{t} -> {p} {c}" for c, t, p in sorted(off, reverse=True)[:8]) + "."]
    return lines + ["", "![domain confusion matrix](domain_confusion.png)", ""]


def plot_confusion(domains: dict, title: str) -> Figure:
    """Row-normalised confusion matrix with the counts written in."""
    confusion = np.array(domains["confusion"], dtype=float)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = figure(9, 8)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = domains["domains"]
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), [f"{d} ({int(confusion[i].sum())})" for i, d in enumerate(names)], fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            if confusion[i, j]:
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted domain")
    ax.set_ylabel("true domain (prompts)")
    ax.set_title(title, fontsize=10)
    return fig


def write_report(report: dict, out: Path, command: str) -> None:
    """report.json, report.md and the plots (quality against cost, the domain confusion) into `out`."""
    report = {**report, "command": command}
    lines, figures = ["# model-selector evaluation", "", f"`{command}`", ""], {}
    if "routers" in report:
        lines += _routing_lines(report)
        figures["quality_vs_cost.png"] = plot(report)
    if "domains" in report:
        lines += ["## Domains", "", *domain_lines(report["domains"])]
        figures["domain_confusion.png"] = plot_confusion(
            report["domains"], f"Domain confusion on {report['domains']['n_prompts']} prompts "
                               f"(accuracy {report['domains']['accuracy']:.3f}; shade = share of the row)")
    reports.write_report(out / "report.json", report, "\n".join(lines), figures)


def _routing_lines(report: dict) -> list[str]:
    best = report["baselines"]["best_single"]
    lines = [
        f"{report['n_queries']} queries. Cost in {report['cost_unit']}. Ratios are against the best single "
        f"model, {best['model']}. In brackets: 95% paired-bootstrap intervals ({BOOTSTRAP_SAMPLES} resamples of the "
        "queries), how far a router's ratios could move on another sample of this size.", "",
    ]
    if "served_agreement" in report:
        lines += [f"Served ensemble agrees with the in-process graphs on {report['served_agreement']:.2%} "
                  "of choices.", ""]
    lines += ["| router | quality | cost | quality / best | cost / best | singles dominated by its curve |",
              "|---|---|---|---|---|---|"]

    def row(name: str, entry: dict, curve: list[dict] | None) -> str:
        dominated = "" if curve is None else str(sum(
            _dominated(curve, s) for m, s in report["baselines"]["single"].items()))
        intervals = entry.get("interval_95", {})
        quality_ratio = _with_interval(entry["quality"] / best["quality"], intervals.get("quality_ratio"))
        cost_ratio = _with_interval(entry["cost_per_1k"] / best["cost_per_1k"], intervals.get("cost_ratio"))
        return (f"| {name} | {entry['quality']:.4f} | {entry['cost_per_1k']:.4f} | {quality_ratio} | {cost_ratio} | "
                f"{dominated} |")

    for name, entry in report["routers"].items():
        lines.append(row(f"**{name}**" if name == "configured" else name, entry, entry["curve"]))
    for name, entry in report.get("references", {}).items():
        lines.append(row(f"reference: {name} (cost weight {entry['cost_weight']}, cross-fitted)", entry,
                         entry["curve"]))
    for name in ("oracle", "random"):
        lines.append(row(name, report["baselines"][name], None))
    for model, entry in report["baselines"]["single"].items():
        lines.append(row(model, entry, None))
    lines += ["", "![quality vs cost](quality_vs_cost.png)", ""]
    return lines


def _label_singles(ax, singles: dict[str, dict], fontsize: float = 7) -> None:
    """Name each single model right of its point, or below it where the name would run over
    another model's point (cheap models crowd together on the log axis)."""
    ax.autoscale_view()
    points = {m: ax.transData.transform((e["cost_per_1k"], e["quality"])) for m, e in singles.items()}
    pixels = fontsize * ax.figure.dpi / 72
    for model, (x, y) in points.items():
        width = 0.6 * pixels * len(model)
        crowded = any(x < ox <= x + width and abs(oy - y) < pixels for other, (ox, oy) in points.items()
                      if other != model)
        ax.annotate(model, (singles[model]["cost_per_1k"], singles[model]["quality"]), fontsize=fontsize,
                    textcoords="offset points", xytext=(0, -10) if crowded else (4, -3),
                    ha="center" if crowded else "left")


def plot(report: dict) -> Figure:
    fig, ax = figure(9, 6)
    singles = report["baselines"]["single"]
    for entry in singles.values():
        ax.scatter(entry["cost_per_1k"], entry["quality"], color="grey", zorder=3)
    oracle = report["baselines"]["oracle"]
    ax.scatter(oracle["cost_per_1k"], oracle["quality"], marker="*", s=150, color="gold", edgecolor="black",
               label="oracle", zorder=4)
    references = {f"reference: {name}": entry for name, entry in report.get("references", {}).items()}
    for name, entry in {**report["routers"], **references}.items():
        curve = sorted(entry["curve"], key=lambda c: c["cost_per_1k"])
        line, = ax.plot([c["cost_per_1k"] for c in curve], [c["quality"] for c in curve], marker=".",
                        label=f"{name} (cost-weight sweep)", linewidth=2.5 if name == "configured" else 1.2,
                        linestyle="--" if name in references else "-")
        ax.scatter(entry["cost_per_1k"], entry["quality"], color=line.get_color(), s=90, edgecolor="black", zorder=5)
        intervals = entry.get("interval_95", {})
        if intervals.get("quality_ratio") is not None and intervals.get("cost_ratio") is not None:
            (q_low, q_high), (c_low, c_high) = intervals["quality_ratio"], intervals["cost_ratio"]
            best = report["baselines"]["best_single"]
            x, y = entry["cost_per_1k"], entry["quality"]
            xerr = np.maximum([[x - c_low * best["cost_per_1k"]], [c_high * best["cost_per_1k"] - x]], 0.0)
            yerr = np.maximum([[y - q_low * best["quality"]], [q_high * best["quality"] - y]], 0.0)
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, color=line.get_color(), capsize=3, zorder=4)
    ax.set_xscale("log")
    _label_singles(ax, singles)
    ax.set_xlabel(f"cost ({report['cost_unit']}, log scale)")
    ax.set_ylabel("quality (mean correctness of the chosen model)")
    ax.set_title(f"Routing on {report['n_queries']} held-out queries: big dots = as configured, bars = 95% intervals")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig
