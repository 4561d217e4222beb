"""The `model-selector` command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from .data import DEFAULT_DATA_DIR

log = logging.getLogger("model_selector")

DEMO_QUERIES = [
    "Calculate the derivative of sin(x) * cos(x)",
    "How do I create a for loop in JavaScript?",
    "What must a plaintiff prove to win a negligence lawsuit?",
    "What are the early symptoms of type 2 diabetes and how is it treated?",
    "Explain how a rise in interest rates affects bond prices.",
    "What were the main causes of World War I?",
]


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return int(text)


def _build_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedding", default="minilm",
                        help="backbone: minilm (offline default), qwen3-0.6b (Hugging Face hub) or a model directory")
    parser.add_argument("--config", type=Path, default=Path("configs/router.yaml"), help="router configuration")
    parser.add_argument("--data", type=Path, default=None,
                        help="your benchmark records (JSONL, one line per query x model) to train the selectors on; "
                             "default: the shipped MMLU-Pro tables (the domain classifier always uses those)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="model repository to write")
    parser.add_argument("--device", choices=["cpu", "gpu", "gpu-fp16", "gpu-tensorrt"], default="gpu",
                        help="production profile of the ONNX models: gpu (CUDA, fp32), gpu-fp16 (CUDA, fp16 "
                             "embedding), gpu-tensorrt (TensorRT fp16, shape profiles, engine cache) or cpu; "
                             "local serving always runs on CPU")
    parser.add_argument("--embedding-instances", type=_positive_int, default=1,
                        help="text_embedding instances; more than one trades single-query latency for "
                             "throughput under load (docs/performance.md)")
    parser.add_argument("--embedding-threads", type=_positive_int, default=0,
                        help="onnxruntime threads per text_embedding instance (default: onnxruntime's choice)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default ~/.cache/model-selector)")
    parser.add_argument("--holdout", action="store_true",
                        help="keep the held-out MMLU-Pro questions and natural validation prompts out of training, "
                             "to measure on them (`evaluate`); the default trains on everything, to serve")
    parser.add_argument("--force", action="store_true", help="rebuild even when nothing changed")


def _serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--no-watchdog", action="store_true",
                        help="do not reload models whose python stub died (see `model-selector watchdog`)")


def cmd_build(args: argparse.Namespace) -> int:
    from .build import BuildOptions, build

    manifest = build(BuildOptions(embedding=args.embedding, config=args.config, repository=args.repository,
                                  device=args.device, embedding_instances=args.embedding_instances,
                                  embedding_threads=args.embedding_threads, cache_dir=args.cache_dir,
                                  records=args.data, holdout=args.holdout, force=args.force))
    print(json.dumps({"repository": str(args.repository), "backbone": manifest["backbone"]["name"],
                      "metrics": manifest["metrics"]}, indent=1))
    return 0


def cmd_build_backend(args: argparse.Namespace) -> int:
    from .triton_backend import build_backend, sources_from_environment

    backend = build_backend(args.sources or sources_from_environment(), force=args.force)
    print(json.dumps({"backend": str(backend.directory), **backend.info}, indent=1))
    return 0


def _server(args: argparse.Namespace):
    from .serve import LocalTritonServer

    return LocalTritonServer(args.repository, args.host, args.grpc_port, args.http_port, args.metrics_port,
                             watchdog=not getattr(args, "no_watchdog", False))


def cmd_serve(args: argparse.Namespace) -> int:
    server = _server(args)

    def stop(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.start()
        print(f"model-selector serving {args.repository}: gRPC {args.host}:{args.grpc_port}, "
              f"HTTP {args.host}:{args.http_port}, metrics http://{args.host}:{args.metrics_port}/metrics "
              f"(log: {server.log_file}). Ctrl-C stops.", flush=True)
        server.process.wait()
        log.error("tritonserver exited with code %s; see %s", server.process.returncode, server.log_file)
        return 1
    except KeyboardInterrupt:
        log.info("stopping")
        return 0
    finally:
        server.stop()


def _print_headers(query: str, headers: dict[str, str]) -> None:
    print(f"query: {query}")
    for key, value in headers.items():
        if key.startswith("x-vsr-"):
            print(f"  {key}: {value}")


def cmd_reload(args: argparse.Namespace) -> int:
    from .lifecycle import reload_config, reload_selectors

    if args.config is None and not args.selectors:
        raise ValueError("nothing to reload: pass --config NEW_ROUTER_YAML and/or --selectors")
    headers = {}
    for header in args.header:
        name, sep, value = header.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"bad --header {header!r}: expected NAME=VALUE, e.g. model-control-key=$KEY")
        headers[name.strip().lower()] = value
    reloaded = []
    if args.selectors:
        reloaded += reload_selectors(args.url, args.repository, headers or None)
    if args.config is not None:
        reloaded.append(reload_config(args.url, args.config, args.repository, headers or None))
    for item in reloaded:
        print(f"{item.model}: now serving version {item.version}")
    return 0


def cmd_watchdog(args: argparse.Namespace) -> int:
    from .lifecycle import StubWatchdog

    watchdog = StubWatchdog(args.url, args.interval).start()
    print(f"watching {args.url} every {args.interval} s; Ctrl-C stops.", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        watchdog.stop()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .reference_selectors import HUB_REPO, download_artifacts, import_artifacts

    if (args.source is None) == (args.from_hub is None):
        raise ValueError("say where the reference's selectors are: --from DIR or --from-hub REPO_ID "
                         f"(the seed's is {HUB_REPO})")
    source = args.source or download_artifacts(args.from_hub, args.cache_dir)
    imported = import_artifacts(source, args.repository)
    for algorithm, origin in imported.items():
        print(f"{algorithm}: imported {origin['file']} (sha256 {origin['sha256'][:12]}) into {args.repository}")
    print("A running server picks them up with `model-selector reload --selectors`.")
    return 0


def _render_rule(node) -> str:
    from .config import DomainCondition

    if isinstance(node, DomainCondition):
        return node.name
    parts = [_render_rule(child) if isinstance(child, DomainCondition) else f"({_render_rule(child)})"
             for child in node.conditions]
    if node.operator == "NOT":
        return f"NOT {parts[0]}"
    return f" {node.operator} ".join(parts) if len(parts) > 1 else parts[0]


def cmd_config_check(args: argparse.Namespace) -> int:
    from .config import DOMAINS, check_config

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


def _domain_conditions(node):
    from .config import DomainCondition

    if isinstance(node, DomainCondition):
        yield node
    else:
        for child in node.conditions:
            yield from _domain_conditions(child)


def cmd_download_benchmark(args: argparse.Namespace) -> int:
    from .data import download_benchmark

    path = download_benchmark(args.out, args.repo_id, args.file, args.cache_dir)
    print(f"wrote {path}; use it with `model-selector evaluate --data {path}` or `build --data {path}`")
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from .client import route

    headers = route(args.query, args.url)
    if args.json:
        print(json.dumps(headers, indent=1))
    else:
        for key, value in headers.items():
            print(f"{key}: {value}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import repository as repo
    from .config import load_config
    from .data import (NATURAL_PROMPTS_FILE, holds_benchmark_records, load_labelled_prompts, load_natural_prompts,
                       load_records)
    from .evaluate import evaluate, evaluate_domains, load_heldout, write_report

    manifest = repo.read_manifest(args.repository)
    catalog = load_config(args.repository / repo.DECISION / repo.VERSION / "router.yaml").model_names
    command = "model-selector " + " ".join(sys.argv[1:])
    if args.data.is_dir() and manifest.get("training", {}).get("split") != "holdout":
        # A shipped split held out from a --holdout build is training data of the served repository.
        raise ValueError(f"{args.repository} was trained on every shipped question and prompt (built without "
                         f"--holdout), so the held-out split of {args.data} is its training data. Measure on a "
                         "repository that kept it out: model-selector build --holdout --repository "
                         f"build/holdout_repository, then evaluate --repository build/holdout_repository")
    prompts = None
    if args.data.is_dir() and (args.data / NATURAL_PROMPTS_FILE).is_file():
        _, prompts = load_natural_prompts(args.data)
    elif args.data.is_file() and not holds_benchmark_records(args.data):
        prompts = load_labelled_prompts(args.data)
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
        report = evaluate(args.repository, load_records(args.data, catalog), args.url)
    write_report(report, args.out, command)
    best = report["baselines"]["best_single"]
    configured = report["routers"]["configured"]
    print(f"{report['n_queries']} queries: configured router quality {configured['quality']:.4f} at "
          f"{configured['cost_per_1k']:.4f} USD/1k queries; best single ({best['model']}) "
          f"{best['quality']:.4f} at {best['cost_per_1k']:.4f}; oracle {report['baselines']['oracle']['quality']:.4f}."
          f" Report: {args.out / 'report.md'}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import grid_from, tune, write_tuning_report

    report = tune(args.config, args.repository, args.budget, grid_from(args.grid), args.cache_dir, args.folds)
    write_tuning_report(report, args.out, "model-selector " + " ".join(sys.argv[1:]))
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


def cmd_benchmark(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .bench import BenchmarkOptions, markdown, perf_analyzer_data, query_sets, run_benchmark, write_benchmark_report

    if args.export_perf_analyzer_data:
        args.export_perf_analyzer_data.write_text(json.dumps(perf_analyzer_data(query_sets()[args.queries])))
        print(f"wrote {args.export_perf_analyzer_data}")
        if args.url is None and args.out is None:
            return 0
    options = BenchmarkOptions(
        url=args.url or "", repository=args.repository,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")), requests=args.requests, rate=args.rate,
        warmup=args.warmup, query_set=args.queries, baseline_requests=args.baseline_requests,
        reference_knn_requests=args.reference_knn_requests, command="model-selector " + " ".join(sys.argv[1:]))
    if args.url:
        report = run_benchmark(options, args.cache_dir)
    else:
        from .serve import LocalTritonServer

        with LocalTritonServer.on_free_ports(args.repository) as server:
            report = run_benchmark(replace(options, url=server.grpc_url, server_pid=server.process.pid),
                                   args.cache_dir)
    if args.out:
        write_benchmark_report(report, args.out)
    print(markdown(report))
    return 0


def cmd_benchmark_embedding(args: argparse.Namespace) -> int:
    from .embedding_bench import run_from_args

    return run_from_args(args, "model-selector " + " ".join(sys.argv[1:]))


def cmd_gateway(args: argparse.Namespace) -> int:
    import uvicorn

    from .client import parse_targets
    from .config import load_config
    from .gateway import create_gateway_app

    parse_targets(args.url)
    config = load_config(args.config)
    if args.fallback_to_default_model:
        config = config.model_copy(update={"gateway": config.gateway.model_copy(
            update={"fallback_to_default_model": True})})
    app = create_gateway_app(config, args.url, str(args.config))
    print(f"model-selector gateway: http://{args.host}:{args.port}/v1 (routing through Triton at {args.url}; "
          f"metrics http://{args.host}:{args.port}/metrics). Ctrl-C stops.", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_mock_llm(args: argparse.Namespace) -> int:
    import uvicorn

    from .mock_llm import create_mock_app

    print(f"mock LLM: http://{args.host}:{args.port}/v1 answers as any model. Ctrl-C stops.", flush=True)
    uvicorn.run(create_mock_app(args.api_key), host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import httpx

    from .build import BuildOptions, build
    from .client import RouterClient, routing_headers
    from .config import load_config
    from .gateway import create_gateway_app, serve_in_thread
    from .mock_llm import create_mock_app
    from .serve import free_ports

    build(BuildOptions(config=args.config, repository=args.repository))
    config = load_config(args.config)
    mock_port, gateway_port = free_ports(2)
    # Every model answered by the local mock LLM, so the demo needs no API keys.
    offline = config.model_copy(update={
        "models": [m.model_copy(update={"base_url": None}) for m in config.models],
        "gateway": config.gateway.model_copy(update={"upstream": config.gateway.upstream.model_copy(
            update={"base_url": f"http://127.0.0.1:{mock_port}/v1", "api_key_env": None})})})
    with _server(args) as server, RouterClient(server.grpc_url) as client:
        for query, selection in zip(DEMO_QUERIES, client.select(DEMO_QUERIES)):
            _print_headers(query, routing_headers(selection))
        with serve_in_thread(create_mock_app(), "127.0.0.1", mock_port), \
                serve_in_thread(create_gateway_app(offline, server.grpc_url), "127.0.0.1", gateway_port) as url:
            request = {"model": "auto", "messages": [{"role": "user", "content": DEMO_QUERIES[0]}]}
            print(f"\nPOST {url}/v1/chat/completions {json.dumps(request)}")
            response = httpx.post(f"{url}/v1/chat/completions", json=request, timeout=60)
            print(f"  status: {response.status_code}")
            for key, value in response.headers.items():
                if key.startswith("x-vsr-"):
                    print(f"  {key}: {value}")
            print(f"  answer: {response.json()['choices'][0]['message']['content']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-selector", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="export the backbone, train the selectors, write the model repository")
    _build_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("build-backend", help="build Triton's native onnxruntime backend for local serving (once, "
                                             "cached)")
    p.add_argument("--sources", type=Path, default=None,
                   help="directory of the r24.10 source tarballs (default: $TRITON_BACKEND_SOURCES, else download "
                        "the pinned commits from GitHub)")
    p.add_argument("--force", action="store_true", help="rebuild even when a build is cached")
    p.set_defaults(func=cmd_build_backend)

    p = sub.add_parser("serve", help="serve the repository with a local tritonserver (CPU)")
    _serve_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("reload", help="serve a new router.yaml or rebuilt selectors on a running server, no downtime")
    p.add_argument("--url", default="localhost:8001", help="Triton gRPC address")
    p.add_argument("--config", type=Path, default=None, help="the router.yaml to serve (validated first)")
    p.add_argument("--selectors", action="store_true",
                   help="serve the repository's rebuilt router_heads graph and selector metadata")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                   help="a gRPC header sent with every call, for a server that restricts model control: "
                        "tritonserver --grpc-restricted-protocol=model-repository:KEY=VALUE expects "
                        "triton-grpc-protocol-KEY=VALUE; repeatable")
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("watchdog", help="reload any model whose python stub died (for servers not started by `serve`)")
    p.add_argument("--url", default="localhost:8001", help="Triton gRPC address")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between probes")
    p.set_defaults(func=cmd_watchdog)

    p = sub.add_parser("import", help="import vLLM Semantic Router's pretrained KNN/KMeans/SVM selectors")
    p.add_argument("--from", dest="source", type=Path, default=None,
                   help="directory with knn_model.json, kmeans_model.json and/or svm_model.json")
    p.add_argument("--from-hub", default=None, metavar="REPO_ID",
                   help="download them from this Hugging Face repo (e.g. abdallah1008/semantic-router-ml-models)")
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="a repository built with --embedding qwen3-0.6b")
    p.add_argument("--cache-dir", type=Path, default=None, help="Hugging Face cache (default: its own)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("config", help="check a router configuration (ours or vLLM Semantic Router's)")
    config_sub = p.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="print what each decision will do and every problem found")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)

    p = sub.add_parser("download-benchmark", help="fetch vLLM Semantic Router's published benchmark records")
    p.add_argument("--repo-id", default="abdallah1008/ml-selection-benchmark-data", help="Hugging Face dataset")
    p.add_argument("--file", default="validation_benchmark_with_gt.jsonl")
    p.add_argument("--out", type=Path, default=Path("data/reference"), help="directory to write the file to")
    p.add_argument("--cache-dir", type=Path, default=None, help="Hugging Face cache (default: its own)")
    p.set_defaults(func=cmd_download_benchmark)

    p = sub.add_parser("route", help="route one query; prints the x-vsr-* headers")
    p.add_argument("query")
    p.add_argument("--url", default="localhost:8001", help="Triton gRPC address")
    p.add_argument("--json", action="store_true", help="print the headers as JSON")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("evaluate", help="routing quality and cost on held-out data, with baselines and a plot; "
                                        "domain quality on labelled prompts")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR,
                   help="benchmark records (JSONL, one line per query x model), the MMLU-Pro tables' directory "
                        "(its held-out split; the default), a JSONL of prompts with their domain (query, category: "
                        "domain report only) or the natural prompts' directory (its validation split)")
    p.add_argument("--url", default=None, help="route through the served ensemble at this gRPC address")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--out", type=Path, default=Path("reports/evaluation"))
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tune", help="choose selector settings on a validation split, the algorithm and the default "
                                    "cost weight by cross-validation")
    p.add_argument("--config", type=Path, default=Path("configs/router.yaml"))
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="a built repository: its embedding model and tokenizer are used")
    p.add_argument("--budget", type=float, default=0.33,
                   help="cost budget for the default cost weight, as a fraction of the best single model's cost")
    p.add_argument("--grid", default=None, help="settings to try, e.g. 'knn=10,20;kmeans=8,16;svm=1;mlp=0.1;prior=0,0.5'")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for the algorithm and cost weight")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("reports/tuning"))
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("benchmark", help="load the served ensemble over gRPC; latency, throughput, baselines")
    p.add_argument("--url", default=None,
                   help="Triton gRPC address; default: start a local server on --repository for the run")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--concurrency", default="1,8,32", help="closed-loop concurrency levels, comma-separated")
    p.add_argument("--requests", type=int, default=500, help="requests per level")
    p.add_argument("--rate", type=float, default=None, help="open loop: Poisson arrivals at this many requests/s")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--queries", choices=["short", "long", "mixed"], default="mixed",
                   help="short natural questions, long MMLU-style queries with options, or both alternating")
    p.add_argument("--baseline-requests", type=int, default=300, help="queries for the in-process baseline")
    p.add_argument("--reference-knn-requests", type=int, default=20,
                   help="queries for the reference-style KNN (about 2 s each on 2 cores)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here (and a .md beside it)")
    p.add_argument("--export-perf-analyzer-data", type=Path, default=None,
                   help="write the query set as perf_analyzer --input-data JSON")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("benchmark-embedding",
                       help="time the embedding graph alone with onnxruntime (CUDA, TensorRT, CPU) over batch x tokens")
    from .embedding_bench import add_arguments as embedding_bench_arguments

    embedding_bench_arguments(p)
    p.set_defaults(func=cmd_benchmark_embedding)

    p = sub.add_parser("gateway", help="OpenAI-compatible HTTP gateway: route chat requests to the chosen LLM")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--url", default="localhost:8001",
                   help="Triton gRPC address(es) of the model_selector ensemble: host:port, several separated by "
                        "commas, or dns:///name:port for every record of a name (a headless Service); a routing "
                        "call that fails because a replica went away is retried on another")
    p.add_argument("--config", type=Path, default=Path("configs/router.yaml"),
                   help="router configuration: the model catalog and each model's endpoint")
    p.add_argument("--fallback-to-default-model", action="store_true",
                   help="when Triton cannot route, send requests to default_model instead of answering 503")
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("mock-llm", help="a local OpenAI-compatible mock LLM for the demo and tests")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--api-key", default=None, help="require this bearer token")
    p.set_defaults(func=cmd_mock_llm)

    p = sub.add_parser("demo", help="build if needed, serve, route example queries and one chat request, stop")
    p.add_argument("--config", type=Path, default=Path("configs/router.yaml"))
    _serve_args(p)
    p.set_defaults(func=cmd_demo)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    from .client import RouterUnavailable
    from .config import ConfigError
    from .data import DataError
    from .lifecycle import ReloadError
    from .reference_selectors import ArtifactError
    from .serve import ServeError
    from .triton_backend import BackendError

    try:
        return args.func(args)
    except (ConfigError, DataError, ServeError, ReloadError, ArtifactError, RouterUnavailable, BackendError,
            ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
