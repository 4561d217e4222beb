"""Choose selector settings, algorithm and cost weight: `model-selector tune`."""

from __future__ import annotations

import argparse
from pathlib import Path

from model_selector.cli.options import command_line, config_argument, config_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="choose selector settings on a validation split, the algorithm and the default "
                                    "cost weight by cross-validation")
    config_argument(p)
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="a built repository: its embedding model and tokenizer are used")
    p.add_argument("--budget", type=float, default=0.33,
                   help="cost budget for the default cost weight, as a fraction of the best single model's cost")
    p.add_argument("--grid", default=None, help="settings to try, e.g. 'knn=10,20;kmeans=8,16;svm=1;mlp=0.1;prior=0,0.5'")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for the algorithm and cost weight")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("reports/tuning"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.measure.tune import grid_from, tune, write_tuning_report

    report = tune(config_path(args), args.repository, args.budget, grid_from(args.grid), args.cache_dir, args.folds)
    write_tuning_report(report, args.out, command_line())
    best = report["best"]
    print("best on validation: " + "; ".join(
        f"{a}: " + ", ".join(f"{k}={v}" for k, v in row.items()) for a, row in best.items()))
    comparison = report["routers"]
    print("cross-validated budget scores: " + "; ".join(
        f"{name}: {row['budget_score']}" for name, row in comparison["routers"].items())
        + f"; recommended: {comparison['recommended']}")
    cw = report["cost_weight"]
    print(f"domain threshold: {report['domain_threshold']['chosen']}; "
          f"default cost weight for a {cw['budget']:.0%} budget: {cw['cost_weight']} (cross-validated quality "
          f"{cw['routed']['quality']:.4f} at {cw['routed']['cost_per_1k']:.4f} USD/1k). "
          f"Report: {args.out / 'report.md'}")
    return 0
