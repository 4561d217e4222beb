"""Time the embedding graph alone: `model-selector benchmark-embedding`."""

from __future__ import annotations

import argparse

from model_selector.cli.options import command_line


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark-embedding",
                       help="time the embedding graph alone with onnxruntime (CUDA, TensorRT, CPU) over batch x tokens")
    from model_selector.measure.embedding_bench import add_arguments as embedding_bench_arguments

    embedding_bench_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.measure.embedding_bench import run_from_args

    return run_from_args(args, command_line())
