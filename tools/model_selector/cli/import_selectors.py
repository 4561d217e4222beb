"""Import the reference's pretrained selectors: `model-selector import`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import vLLM Semantic Router's pretrained KNN/KMeans/SVM selectors")
    p.add_argument("--from", dest="source", type=Path, default=None,
                   help="directory with knn_model.json, kmeans_model.json and/or svm_model.json")
    p.add_argument("--from-hub", default=None, metavar="REPO_ID",
                   help="download them from this Hugging Face repo (e.g. abdallah1008/semantic-router-ml-models)")
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="a repository built with --embedding qwen3-0.6b")
    p.add_argument("--cache-dir", type=Path, default=None, help="Hugging Face cache (default: its own)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.compat.reference_selectors import HUB_REPO, download_artifacts, import_artifacts

    if (args.source is None) == (args.from_hub is None):
        raise ValueError("say where the reference's selectors are: --from DIR or --from-hub REPO_ID "
                         f"(the seed's is {HUB_REPO})")
    source = args.source or download_artifacts(args.from_hub, args.cache_dir)
    imported = import_artifacts(source, args.repository)
    for algorithm, origin in imported.items():
        print(f"{algorithm}: imported {origin['file']} (sha256 {origin['sha256'][:12]}) into {args.repository}")
    print("A running server picks them up with `model-selector reload --selectors`.")
    return 0
