"""`model-selector benchmark-embedding`: the embedding graph alone under onnxruntime, over a grid
of batch sizes and token counts, on each execution provider asked for (CUDA, TensorRT, CPU).

It sizes the hardware for a backbone. With `--random-weights` the backbone's architecture is
built from its published configuration with random weights: the same shapes and the same cost
as the trained weights, without the download.

It needs only torch, transformers, onnx, onnxruntime(-gpu) and numpy, so it also runs as
`python -m model_selector.embedding_bench` on a bare GPU machine without the serving stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model_selector.measure.machine import machine
from model_selector.measure.reports import figure, write_report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# config.json of Qwen/Qwen3-Embedding-0.6B as published on the Hugging Face hub.
QWEN3_EMBEDDING_0_6B_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151669,
}

PROVIDERS = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass
class EmbeddingBenchOptions:
    embedding: str = "qwen3-0.6b"
    random_weights: bool = False
    fp16: bool = True
    providers: tuple[str, ...] = ("cuda", "tensorrt")
    batch_sizes: tuple[int, ...] = (1, 8, 32, 128)
    token_counts: tuple[int, ...] = (32, 64, 128)
    seconds_per_point: float = 2.0
    instances: tuple[int, ...] = (1,)  # sessions run side by side, like Triton model instances
    work_dir: Path = Path("build/embedding-bench")
    command: str = ""


def prepare_backbone(options: EmbeddingBenchOptions):
    """The backbone to export: the real one, or its architecture with random weights."""
    from model_selector.build.export import backbone_from_config, resolve_backbone

    if not options.random_weights:
        return resolve_backbone(options.embedding)
    import torch
    from transformers import AutoConfig, AutoModel

    if options.embedding == "qwen3-0.6b":
        config = QWEN3_EMBEDDING_0_6B_CONFIG
    else:
        config_path = Path(options.embedding) / "config.json"
        if not config_path.is_file():
            raise ValueError(f"--embedding {options.embedding!r} with --random-weights: give qwen3-0.6b or a "
                             "directory holding a config.json")
        config = json.loads(config_path.read_text())
    name = f"{Path(options.embedding).name}-random"
    directory = options.work_dir / name
    backbone = backbone_from_config(name, directory, config)
    if not (directory / "config.json").is_file():
        log.info("building %s with random weights from its published configuration", backbone.name)
        settings = {key: value for key, value in config.items() if key != "model_type"}
        torch.manual_seed(0)
        model = AutoModel.from_config(AutoConfig.for_model(config["model_type"], **settings))
        model.to(torch.float16 if options.fp16 else torch.float32).save_pretrained(directory)
    return backbone


def _session(model_path: Path, provider: str, options: EmbeddingBenchOptions):
    """(session, None) on the asked provider, or (None, why not)."""
    import onnxruntime as ort

    wanted = PROVIDERS[provider]
    if wanted not in ort.get_available_providers():
        return None, (f"onnxruntime {ort.__version__} here has no {wanted} "
                      f"(has {', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
    provider_options: dict[str, object] = {}
    if provider == "tensorrt":
        # One dynamic profile over the whole grid, fp16 kernels and a cache for built engines,
        # as the gpu-tensorrt repository profile configures Triton.
        largest = f"{max(options.batch_sizes)}x{max(options.token_counts)}"
        provider_options = {
            "trt_fp16_enable": options.fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(options.work_dir / "trt-cache"),
            "trt_profile_min_shapes": "input_ids:1x1,attention_mask:1x1",
            "trt_profile_opt_shapes": "input_ids:32x64,attention_mask:32x64",
            "trt_profile_max_shapes": f"input_ids:{largest},attention_mask:{largest}",
        }
    fallback = [] if provider == "cpu" else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(model_path), providers=[(wanted, provider_options), *fallback])
    except Exception as err:  # onnxruntime raises its own error types for a provider that fails to start
        return None, f"{wanted} could not create a session: {err}"
    if session.get_providers()[0] != wanted:
        return None, (f"{wanted} is built into onnxruntime {ort.__version__} but could not start here "
                      f"(its libraries are missing; see onnxruntime's warnings above)")
    return session, None


def time_point(sessions: list, batch_size: int, tokens: int, seconds: float, vocab_size: int,
               rng: np.random.Generator) -> dict:
    """Latency of one (batch, tokens) shape, random token ids and no padding, after a warm-up.
    Each session runs in its own thread, as Triton runs model instances; queries/s counts them all."""
    from concurrent.futures import ThreadPoolExecutor

    feeds = {
        "input_ids": rng.integers(1000, vocab_size, size=(batch_size, tokens), dtype=np.int64),
        "attention_mask": np.ones((batch_size, tokens), dtype=np.int64),
    }
    for session in sessions:
        for _ in range(3):
            embedding = session.run(None, feeds)[0]

    def loop(session) -> list[float]:
        latencies: list[float] = []
        started = time.perf_counter()
        while len(latencies) < 10 or (time.perf_counter() - started < seconds and len(latencies) < 2000):
            tick = time.perf_counter()
            session.run(None, feeds)  # onnxruntime releases the GIL while it runs
            latencies.append(time.perf_counter() - tick)
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(len(sessions)) as pool:
        per_session = list(pool.map(loop, sessions))
    elapsed = time.perf_counter() - started
    ms = np.concatenate(per_session) * 1000
    return {
        "batch_size": batch_size,
        "tokens": tokens,
        "iterations": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "queries_per_s": round(len(ms) * batch_size / elapsed, 1),
        "finite_output": bool(np.isfinite(embedding).all()),
    }


def run_embedding_benchmark(options: EmbeddingBenchOptions) -> dict:
    import onnxruntime as ort
    from tqdm import tqdm

    from model_selector.build.export import export_onnx

    unknown = sorted(set(options.providers) - set(PROVIDERS))
    if unknown:
        raise ValueError(f"--providers: unknown {', '.join(unknown)}; choose from {', '.join(PROVIDERS)}")
    options.work_dir.mkdir(parents=True, exist_ok=True)
    backbone = prepare_backbone(options)
    model_path = options.work_dir / ("model-fp16.onnx" if options.fp16 else "model.onnx")
    started = time.perf_counter()
    export_onnx(backbone, model_path, fp16=options.fp16)
    export_s = time.perf_counter() - started

    vocab_size = json.loads((backbone.source / "config.json").read_text())["vocab_size"]
    rng = np.random.default_rng(0)
    results: dict[str, dict] = {}
    for provider in options.providers:
        started = time.perf_counter()
        session, missing = _session(model_path, provider, options)
        if session is None:
            log.warning("%s: skipped: %s", provider, missing)
            results[provider] = {"available": False, "reason": missing}
            continue
        session_s = time.perf_counter() - started
        sessions = [session] + [_session(model_path, provider, options)[0] for _ in range(max(options.instances) - 1)]
        grid = [(n, b, t) for n in options.instances for t in options.token_counts for b in options.batch_sizes]
        points = [{"instances": n, **time_point(sessions[:n], b, t, options.seconds_per_point, vocab_size, rng)}
                  for n, b, t in tqdm(grid, desc=f"{provider} instances x batch x tokens", unit="shape")]
        results[provider] = {"available": True, "session_s": round(session_s, 1), "points": points}
        del session, sessions
    if not any(r["available"] for r in results.values()):
        raise ValueError("none of the asked providers could run here: "
                         + "; ".join(f"{p}: {r['reason']}" for p, r in results.items()))
    return {
        "command": options.command,
        "machine": machine(),
        "onnxruntime": ort.__version__,
        "backbone": backbone.name,
        "weights": "random" if options.random_weights else "trained",
        "precision": "fp16" if options.fp16 else "fp32",
        "export_s": round(export_s, 1),
        "providers": results,
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Embedding benchmark: {report['backbone']} ({report['precision']}, {report['weights']} weights)",
        "",
        f"GPU: {m['gpu'] or 'none'}. CPU: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB. "
        f"onnxruntime {report['onnxruntime']}.",
        f"Command: `{report['command']}`" if report["command"] else "",
        "",
        "Each cell: queries/s (p50 latency in ms) for one `session.run` of that batch, "
        "every query that many tokens long. With several instances, that many sessions run "
        "side by side and queries/s counts them all.",
    ]
    for provider, result in report["providers"].items():
        lines += ["", f"## {provider}", ""]
        if not result["available"]:
            lines.append(f"Not measured: {result['reason']}.")
            continue
        lines.append(f"Session created in {result['session_s']} s.")
        tokens = sorted({p["tokens"] for p in result["points"]})
        batches = sorted({p["batch_size"] for p in result["points"]})
        instance_counts = sorted({p.get("instances", 1) for p in result["points"]})
        cell = {(p.get("instances", 1), p["batch_size"], p["tokens"]): p for p in result["points"]}
        for n in instance_counts:
            if len(instance_counts) > 1:
                lines += ["", f"### {n} instance{'s' if n > 1 else ''}"]
            lines += ["", "| batch | " + " | ".join(f"{t} tokens" for t in tokens) + " |",
                      "|---|" + "---|" * len(tokens)]
            for b in batches:
                lines.append(f"| {b} | " + " | ".join(
                    f"{cell[n, b, t]['queries_per_s']:,.0f} ({cell[n, b, t]['p50_ms']:.2f} ms)" for t in tokens) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict) -> Figure:
    fig, ax = figure(7, 4.5)
    for provider, result in report["providers"].items():
        if not result["available"]:
            continue
        series = sorted({(p.get("instances", 1), p["tokens"]) for p in result["points"]})
        for n, tokens in series:
            points = sorted((p for p in result["points"] if (p.get("instances", 1), p["tokens"]) == (n, tokens)),
                            key=lambda p: p["batch_size"])
            label = f"{provider}, {tokens} tokens" + (f", {n} instances" if n > 1 else "")
            ax.plot([p["batch_size"] for p in points], [p["queries_per_s"] for p in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size (queries per run)")
    ax.set_ylabel("queries/s")
    ax.set_title(f"{report['backbone']} {report['precision']} on {report['machine']['gpu'] or report['machine']['cpu']}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_embedding_report(report: dict, out: Path) -> None:
    """`out` (JSON), with the markdown table and the throughput plot beside it."""
    write_report(out, report, markdown(report), {out.with_suffix(".png").name: plot(report)})


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,8,32") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 1")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedding", default="qwen3-0.6b",
                        help="backbone: minilm, qwen3-0.6b or a model directory (default qwen3-0.6b)")
    parser.add_argument("--random-weights", action="store_true",
                        help="build the backbone's architecture with random weights (same cost, no download)")
    parser.add_argument("--fp32", action="store_true", help="export in fp32 instead of fp16")
    parser.add_argument("--providers", default="cuda,tensorrt",
                        help=f"execution providers to time, comma-separated, of {', '.join(PROVIDERS)}; "
                             "those missing here are reported and skipped")
    parser.add_argument("--batch-sizes", type=_int_list, default=(1, 8, 32, 128))
    parser.add_argument("--tokens", type=_int_list, default=(32, 64, 128), help="tokens per query")
    parser.add_argument("--seconds-per-point", type=float, default=2.0)
    parser.add_argument("--instances", type=_int_list, default=(1,),
                        help="sessions run side by side, as Triton model instances; several counts "
                             "(e.g. 1,2) are each timed over the whole grid")
    parser.add_argument("--work-dir", type=Path, default=Path("build/embedding-bench"),
                        help="where the weights, the ONNX graph and the TensorRT engine cache go")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here (.md and .png beside it)")


def run_from_args(args: argparse.Namespace, command: str) -> int:
    options = EmbeddingBenchOptions(
        embedding=args.embedding, random_weights=args.random_weights, fp16=not args.fp32,
        providers=tuple(p.strip() for p in args.providers.split(",") if p.strip()),
        batch_sizes=args.batch_sizes, token_counts=args.tokens, seconds_per_point=args.seconds_per_point,
        instances=args.instances,
        work_dir=args.work_dir, command=command,
    )
    report = run_embedding_benchmark(options)
    if args.out:
        write_embedding_report(report, args.out)
        log.info("wrote %s (and .md, .png)", args.out)
    print(markdown(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_selector.embedding_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_from_args(args, " ".join(["python -m model_selector.embedding_bench", *sys.argv[1:]]))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
