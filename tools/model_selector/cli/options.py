"""Arguments more than one subcommand takes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_selector.core.config import default_config_path


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return int(text)


def config_argument(parser: argparse.ArgumentParser, help: str = "router configuration") -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help=f"{help} (default: configs/router.yaml when the current directory has one, else the "
                             "packaged default)")


def config_path(args: argparse.Namespace) -> Path:
    return args.config or default_config_path()


def command_line() -> str:
    """How this run was invoked, for reports."""
    return "model-selector " + " ".join(sys.argv[1:])
