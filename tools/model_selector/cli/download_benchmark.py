"""Fetch the reference's benchmark records: `model-selector download-benchmark`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download-benchmark", help="fetch vLLM Semantic Router's published benchmark records")
    p.add_argument("--repo-id", default="abdallah1008/ml-selection-benchmark-data", help="Hugging Face dataset")
    p.add_argument("--file", default="validation_benchmark_with_gt.jsonl")
    p.add_argument("--out", type=Path, default=Path("data/reference"), help="directory to write the file to")
    p.add_argument("--cache-dir", type=Path, default=None, help="Hugging Face cache (default: its own)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.data.loaders import download_benchmark

    path = download_benchmark(args.out, args.repo_id, args.file, args.cache_dir)
    print(f"wrote {path}; use it with `model-selector evaluate --data {path}` or `build --data {path}`")
    return 0
