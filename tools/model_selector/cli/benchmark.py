"""Load the served ensemble and report latency and throughput: `model-selector benchmark`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model_selector.cli.options import command_line


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from model_selector.measure import benchmark

    if args.export_perf_analyzer_data:
        queries = benchmark.query_sets()[args.queries]
        args.export_perf_analyzer_data.write_text(json.dumps(benchmark.perf_analyzer_data(queries)))
        print(f"wrote {args.export_perf_analyzer_data}")
        if args.url is None and args.out is None:
            return 0
    options = benchmark.BenchmarkOptions(
        url=args.url or "", repository=args.repository,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")), requests=args.requests, rate=args.rate,
        warmup=args.warmup, query_set=args.queries, baseline_requests=args.baseline_requests,
        reference_knn_requests=args.reference_knn_requests, command=command_line())
    if args.url:
        report = benchmark.run_benchmark(options, args.cache_dir)
    else:
        from model_selector.serve.server import LocalTritonServer

        with LocalTritonServer.on_free_ports(args.repository) as server:
            report = benchmark.run_benchmark(replace(options, url=server.grpc_url, server_pid=server.process.pid),
                                   args.cache_dir)
    if args.out:
        benchmark.write_benchmark_report(report, args.out)
    print(benchmark.markdown(report))
    return 0
