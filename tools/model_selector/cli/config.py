"""Router configurations: `model-selector config check FILE` and `config default`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check a router configuration (ours or vLLM Semantic Router's)")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="print what each decision will do and every problem found")
    check.add_argument("file", type=Path)
    check.set_defaults(func=run)
    default = config_sub.add_parser("default", help="print the packaged default configuration, to start your own")
    default.set_defaults(func=print_default)


def _render_rule(node) -> str:
    from model_selector.core.config import DomainCondition

    if isinstance(node, DomainCondition):
        return node.name
    parts = [_render_rule(child) if isinstance(child, DomainCondition) else f"({_render_rule(child)})"
             for child in node.conditions]
    if node.operator == "NOT":
        return f"NOT {parts[0]}"
    return f" {node.operator} ".join(parts) if len(parts) > 1 else parts[0]


def _domain_conditions(node):
    from model_selector.core.config import DomainCondition

    if isinstance(node, DomainCondition):
        yield node
    else:
        for child in node.conditions:
            yield from _domain_conditions(child)


def run(args: argparse.Namespace) -> int:
    from model_selector.core.config import DOMAINS, check_config

    report = check_config(args.file)
    print(f"{args.file}: {report.layout} layout")
    config = report.config
    if config is not None:
        print(f"catalog: {len(config.models)} models; default_model: {config.default_model}; domain threshold "
              f"{config.domain_threshold}; cost weight {config.cost_weight}")
        covered: set[str] = set()
        for decision in sorted(config.decisions, key=lambda d: (-d.priority, d.name)):
            algorithm = decision.algorithm.type if len(decision.candidates) > 1 else "single"
            candidates = (f"all {len(config.models)} catalog models"
                          if sorted(decision.candidates) == sorted(config.model_names) else ", ".join(decision.candidates))
            print(f"- {decision.name} (priority {decision.priority}): when {_render_rule(decision.rules)}; "
                  f"{algorithm} over {candidates}; cost weight "
                  f"{config.decision_cost_weight(decision)}")
            covered.update(c.name for c in _domain_conditions(decision.rules))
        uncovered = [d for d in DOMAINS if d not in covered]
        if uncovered:
            print(f"domains no decision names (they go to {config.default_model}): {', '.join(uncovered)}")
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"problem: {problem}")
    print(f"{len(report.problems)} problem(s)")
    return 1 if report.problems else 0


def print_default(_args: argparse.Namespace) -> int:
    from model_selector.core.config import PACKAGED_CONFIG

    print(PACKAGED_CONFIG.read_text(), end="")
    return 0
