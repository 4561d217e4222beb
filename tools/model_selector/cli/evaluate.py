"""Routing and domain quality on held-out or labelled data: `model-selector evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from model_selector.cli.options import command_line
from model_selector.data.loaders import DEFAULT_DATA_DIR, data_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="routing quality and cost on held-out data, with baselines and a plot; "
                                        "domain quality on labelled prompts")
    p.add_argument("--data", type=data_path, default=DEFAULT_DATA_DIR,
                   help="benchmark records (JSONL, one line per query x model), the MMLU-Pro tables' directory "
                        "(its held-out split; the default, or `mmlu-pro` for the shipped one), a JSONL of prompts "
                        "with their domain (query, category: domain report only) or the natural prompts' directory "
                        "(its validation split; `natural-prompts` for the shipped one)")
    p.add_argument("--url", default=None, help="route through the served ensemble at this gRPC address")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--out", type=Path, default=Path("reports/evaluation"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.core import layout
    from model_selector.core.config import load_config
    from model_selector.data import loaders
    from model_selector.measure.evaluate import evaluate, evaluate_domains, load_heldout, write_report

    manifest = layout.read_manifest(args.repository)
    catalog = load_config(args.repository / layout.DECISION / layout.VERSION / "router.yaml").model_names
    command = command_line()
    if args.data.is_dir() and manifest.get("training", {}).get("split") != "holdout":
        # A shipped split held out from a --holdout build is training data of the served repository.
        raise ValueError(f"{args.repository} was trained on every shipped question and prompt (built without "
                         f"--holdout), so the held-out split of {args.data} is its training data. Measure on a "
                         "repository that kept it out: model-selector build --holdout --repository "
                         f"build/holdout_repository, then evaluate --repository build/holdout_repository")
    prompts = None
    if args.data.is_dir() and (args.data / loaders.NATURAL_PROMPTS_FILE).is_file():
        _, prompts = loaders.load_natural_prompts(args.data)
    elif args.data.is_file() and not loaders.holds_benchmark_records(args.data):
        prompts = loaders.load_labelled_prompts(args.data)
    if prompts is not None:
        report = evaluate_domains(args.repository, prompts.categories, prompts.queries, args.url)
        write_report(report, args.out, command)
        domains = report["domains"]
        print(f"{domains['n_prompts']} prompts: domain accuracy {domains['accuracy']:.4f}, "
              f"{domains['decision_accuracy']:.4f} in their domain's decision, {domains['unrouted_share']:.2%} "
              f"matched no decision. Report: {args.out / 'report.md'}")
        return 0
    if args.data.is_dir():  # the held-out split, and the plain KMeans reference trained as the repository was
        report = evaluate(args.repository, load_heldout(catalog, args.data), args.url,
                          reference_training=load_heldout(catalog, args.data, split="train"))
    else:
        report = evaluate(args.repository, loaders.load_records(args.data, catalog), args.url)
    write_report(report, args.out, command)
    best = report["baselines"]["best_single"]
    configured = report["routers"]["configured"]
    print(f"{report['n_queries']} queries: configured router quality {configured['quality']:.4f} at "
          f"{configured['cost_per_1k']:.4f} USD/1k queries; best single ({best['model']}) "
          f"{best['quality']:.4f} at {best['cost_per_1k']:.4f}; oracle {report['baselines']['oracle']['quality']:.4f}."
          f" Report: {args.out / 'report.md'}")
    return 0
