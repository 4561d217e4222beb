"""Write the model repository: `model-selector build`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_selector.cli.options import config_argument, config_path, positive_int
from model_selector.core.layout import DEVICES


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("build", help="export the backbone, train the selectors, write the model repository")
    parser.add_argument("--embedding", default="minilm",
                        help="backbone: minilm (offline default), qwen3-0.6b (Hugging Face hub) or a model directory")
    config_argument(parser)
    parser.add_argument("--data", type=Path, default=None,
                        help="your benchmark records (JSONL, one line per query x model) to train the selectors on; "
                             "default: the shipped MMLU-Pro tables (the domain classifier always uses those)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository to write")
    parser.add_argument("--device", choices=DEVICES, default="gpu",
                        help="production profile of the ONNX models: gpu (CUDA, fp32), gpu-fp16 (CUDA, fp16 "
                             "embedding), gpu-tensorrt (TensorRT fp16, shape profiles, engine cache) or cpu; "
                             "local serving always runs on CPU")
    parser.add_argument("--embedding-instances", type=positive_int, default=1,
                        help="text_embedding instances; more than one trades single-query latency for "
                             "throughput under load (docs/performance.md)")
    parser.add_argument("--embedding-threads", type=positive_int, default=0,
                        help="onnxruntime threads per text_embedding instance (default: onnxruntime's choice)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache of embeddings and domain-tuned weights (default ~/.cache/model-selector)")
    parser.add_argument("--holdout", action="store_true",
                        help="keep the held-out MMLU-Pro questions and natural validation prompts out of training, "
                             "to measure on them (`evaluate`); the default trains on everything, to serve")
    parser.add_argument("--domain-tuning", action=argparse.BooleanOptionalAction, default=True,
                        help="fine-tune the backbone on the training prompts' domains before training on its "
                             "embeddings (default; about 4 minutes on 2 CPU cores for MiniLM, then cached). "
                             "--no-domain-tuning keeps the backbone as published, as `import` needs")
    parser.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model_selector.build.pipeline import BuildOptions, build

    manifest = build(BuildOptions(embedding=args.embedding, config=config_path(args), repository=args.repository,
                                  device=args.device, embedding_instances=args.embedding_instances,
                                  embedding_threads=args.embedding_threads, cache_dir=args.cache_dir,
                                  records=args.data, holdout=args.holdout, domain_tuning=args.domain_tuning,
                                  force=args.force))
    print(json.dumps({"repository": str(args.repository), "backbone": manifest["backbone"]["name"],
                      "metrics": manifest["metrics"]}, indent=1))
    return 0
