"""Build Triton's native onnxruntime backend: `model-selector build-backend`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-backend", help="build Triton's native onnxruntime backend for local serving (once, "
                                             "cached)")
    p.add_argument("--sources", type=Path, default=None,
                   help="directory of the r24.10 source tarballs (default: $TRITON_BACKEND_SOURCES, else download "
                        "the pinned commits from GitHub)")
    p.add_argument("--force", action="store_true", help="rebuild even when a build is cached")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.serve.backend import build_backend, sources_from_environment

    backend = build_backend(args.sources or sources_from_environment(), force=args.force)
    print(json.dumps({"backend": str(backend.directory), **backend.info}, indent=1))
    return 0
