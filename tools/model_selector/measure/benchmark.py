"""`model-selector benchmark`: load on the served ensemble over gRPC, where the time goes, and
the baselines a user would write instead, measured in the same run on the same queries.

Closed loop (default): `concurrency` clients, each sending its next request as soon as the
previous one is answered. Open loop (`--rate`): requests start on a Poisson schedule
whatever the server does, so queueing shows up in the latencies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tritonclient.utils import InferenceServerException

from model_selector.core import layout
from model_selector.core.contract import ENSEMBLE, ENSEMBLE_OUTPUTS, EXPECTED_TOKENS
from model_selector.data.loaders import DEFAULT_DATA_DIR, load_mmlu_pro, load_short_questions, split_train_test
from model_selector.measure.machine import machine
from model_selector.measure.reports import write_report
from model_selector.serve.client import RouterUnavailable, unavailable

log = logging.getLogger(__name__)

COMPOSING_MODELS = (layout.TOKENIZER, layout.EMBEDDING, layout.HEADS, layout.DECISION)
SHORT_QUESTION_CHARS = 200


@dataclass
class BenchmarkOptions:
    url: str
    repository: Path = Path("model_repository")
    concurrency: tuple[int, ...] = (1, 8, 32)
    requests: int = 500
    rate: float | None = None  # requests/s for the open loop; None = closed loop
    warmup: int = 50
    query_set: str = "mixed"  # short | long | mixed
    server_pid: int | None = None  # for the memory figure, when this process started the server
    baseline_requests: int = 300
    reference_knn_requests: int = 20
    seed: int = 0
    command: str = ""


def query_sets(data_dir: Path = DEFAULT_DATA_DIR) -> dict[str, list[str]]:
    """Real query texts: short natural questions (hand-written ones and short MMLU-Pro question
    texts) and long MMLU-style queries with their options, from the held-out questions."""
    _, test = split_train_test(load_mmlu_pro([], data_dir))
    handwritten, _ = load_short_questions()
    short = handwritten + [q for q in test.questions if len(q) <= SHORT_QUESTION_CHARS]
    long = [q for q in test.queries if len(q) > SHORT_QUESTION_CHARS]
    mixed = [q for pair in zip(short, long) for q in pair]
    return {"short": short, "long": long, "mixed": mixed}


def perf_analyzer_data(queries: list[str]) -> dict:
    """`perf_analyzer --input-data` JSON: one batch-1 request per query."""
    return {"data": [{"query": {"content": [q], "shape": [1]}} for q in queries]}


def _latency_summary(latencies_s: list[float]) -> dict:
    if not latencies_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    ms = np.array(latencies_s) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "max_ms": round(float(ms.max()), 3),
            "mean_ms": round(float(ms.mean()), 3)}


class LoadGenerator:
    """Batch-1 requests to the ensemble from one asyncio gRPC client."""

    def __init__(self, url: str, queries: list[str]):
        import tritonclient.grpc.aio as grpcaio

        self._aio = grpcaio
        self.url = url
        self.client = grpcaio.InferenceServerClient(url)
        self.queries = queries
        self.outputs = [grpcaio.InferRequestedOutput(name) for name in ENSEMBLE_OUTPUTS]
        self.errors: list[str] = []
        self.answered = 0
        self._initial: dict[str, dict] = {}

    async def ensure_ready(self) -> None:
        """Fail with the fix before any timing when the server or the ensemble is not there."""
        try:
            ready = await self.client.is_model_ready(ENSEMBLE)
        except InferenceServerException as err:
            raise unavailable(self.url, err) from None
        if not ready:
            raise RouterUnavailable(f"Triton at {self.url} is up but the {ENSEMBLE} ensemble is not ready; check "
                                    "the server log, or wait for `model-selector serve` to say it is ready")
        self._initial = await self.statistics()

    async def one(self, index: int) -> float | None:
        data = np.array([[self.queries[index % len(self.queries)].encode("utf-8")]], dtype=np.object_)
        tensor = self._aio.InferInput("query", [1, 1], "BYTES")
        tensor.set_data_from_numpy(data)
        started = time.perf_counter()
        try:
            await self.client.infer(ENSEMBLE, [tensor], outputs=self.outputs)
        except Exception as err:  # counted and reported, the run goes on
            self.errors.append(str(err)[:200])
            return None
        self.answered += 1
        return time.perf_counter() - started

    async def closed_loop(self, concurrency: int, requests: int, offset: int) -> tuple[list[float], float]:
        next_index = iter(range(offset, offset + requests))
        latencies: list[float] = []
        progress = tqdm(total=requests, desc=f"concurrency {concurrency}", unit="req", leave=False)

        async def worker() -> None:
            for index in next_index:
                latency = await self.one(index)
                if latency is not None:
                    latencies.append(latency)
                progress.update()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        progress.close()
        return latencies, time.perf_counter() - started

    async def open_loop(self, rate: float, requests: int, offset: int, seed: int) -> tuple[list[float], float]:
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, requests)
        starts = np.cumsum(gaps) - gaps[0]
        begin = time.perf_counter()

        async def scheduled(i: int) -> float | None:
            await asyncio.sleep(max(0.0, begin + starts[i] - time.perf_counter()))
            return await self.one(offset + i)

        results = await asyncio.gather(*(scheduled(i) for i in range(requests)))
        return [r for r in results if r is not None], time.perf_counter() - begin

    async def statistics(self) -> dict[str, dict]:
        stats = await self.client.get_inference_statistics(as_json=True)
        return {s["name"]: s for s in stats.get("model_stats", [])}

    async def settled_statistics(self, timeout_s: float = 2.0) -> dict[str, dict]:
        """Per-model statistics once every composing model has counted the requests answered so far.
        Triton counts a composing model's request as it releases it, which can come just after the
        ensemble's response reached us: read at once, a level can miss its last request."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = await self.statistics()
            counted = min((_count(stats[m], "success") - _count(self._initial.get(m, {}), "success")
                           for m in COMPOSING_MODELS if m in stats), default=self.answered)
            if counted >= self.answered or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.client.close()


def _ns(stats: dict, key: str) -> int:
    return int(stats.get("inference_stats", {}).get(key, {}).get("ns", 0))


def _count(stats: dict, key: str) -> int:
    return int(stats.get("inference_stats", {}).get(key, {}).get("count", 0))


def model_breakdown(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per composing model over one level: requests, executions (so the real batch size), and
    the mean queue and compute time per request."""
    breakdown = {}
    for name in COMPOSING_MODELS:
        if name not in after:
            continue
        a, b = after[name], before.get(name, {})
        requests = _count(a, "success") - _count(b, "success")
        executions = int(a.get("execution_count", 0)) - int(b.get("execution_count", 0))
        inferences = int(a.get("inference_count", 0)) - int(b.get("inference_count", 0))
        compute = sum(_ns(a, k) - _ns(b, k) for k in ("compute_input", "compute_infer", "compute_output"))
        breakdown[name] = {
            "requests": requests,
            "executions": executions,
            "avg_batch_size": round(inferences / executions, 2) if executions else None,
            "queue_ms": round((_ns(a, "queue") - _ns(b, "queue")) / requests / 1e6, 3) if requests else None,
            "compute_ms": round(compute / requests / 1e6, 3) if requests else None,
        }
    return breakdown


def _process_tree(pid: int) -> list[int]:
    """A process and all its descendants (tritonserver and its python stubs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def process_tree_rss_mb(pid: int) -> float | None:
    """Resident memory of a process tree."""
    total_kb = 0
    for member in _process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return round(total_kb / 1024, 1) if total_kb else None


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process tree has used so far."""
    ticks = 0
    for member in _process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def inprocess_baseline(repository: Path, queries: list[str], requests: int) -> dict:
    """The same ONNX graphs and decision engine called in this process, one query at a time."""
    from model_selector.measure.router import InProcessRouter

    router = InProcessRouter(repository)
    for query in queries[:10]:
        router.route_query(query)
    latencies = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in tqdm(range(requests), desc="in-process baseline", unit="req", leave=False):
        t = time.perf_counter()
        router.route_query(queries[i % len(queries)])
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    return {"requests": requests, "throughput_rps": round(requests / elapsed, 2),
            "cpu_ms_per_request": round((time.process_time() - cpu_started) / requests * 1e3, 3),
            **_latency_summary(latencies)}


def knn_baselines(repository: Path, cache_dir: Path | None = None, queries: int = 20) -> dict:
    """Our KNN step (the KNN part of router_heads, at batch 1) beside the reference's: a scikit-learn
    BallTree built over every stored (query, model) record on each request, k = 5, vote per model."""
    import onnx
    import onnx.utils
    import onnxruntime as ort
    from sklearn.neighbors import BallTree

    from model_selector.core.config import DOMAINS, load_config
    from model_selector.measure.router import repository_embedder

    config = load_config(repository / layout.DECISION / layout.VERSION / "router.yaml")
    train, test = split_train_test(load_mmlu_pro(config.model_names))
    train = train.subset(train.complete_rows())
    embedder = repository_embedder(repository)
    x_train = embedder.embed(train.queries, cache_dir, description="reference records")
    x_test = embedder.embed(test.queries[:queries], cache_dir, description="knn queries")
    onehot = np.eye(len(DOMAINS), dtype=np.float32)
    n_models = len(config.model_names)
    # The reference stores one record per (query, model): embedding ⊕ one-hot of the category.
    records = np.repeat(np.hstack([x_train, onehot[train.category_ids()]]), n_models, axis=0)
    record_model = np.tile(np.arange(n_models), len(x_train))
    record_quality = train.performance.reshape(-1)

    heads = onnx.load(str(repository / layout.HEADS / "1" / "model.onnx"))
    # The KNN step: its quality scores and the expected answer lengths from the same neighbours.
    knn = onnx.utils.Extractor(heads).extract_model(["embedding", "domain_probs"], ["knn_scores", EXPECTED_TOKENS])
    session = ort.InferenceSession(knn.SerializeToString(), providers=["CPUExecutionProvider"])
    probs = np.full((1, len(DOMAINS)), 1.0 / len(DOMAINS), dtype=np.float32)
    for _ in range(20):
        session.run(None, {"embedding": x_test[:1], "domain_probs": probs})
    runs = 2000
    started = time.perf_counter()
    for i in range(runs):
        session.run(None, {"embedding": x_test[i % len(x_test)][None], "domain_probs": probs})
    ours_ms = (time.perf_counter() - started) / runs * 1000

    started = time.perf_counter()
    for i in tqdm(range(queries), desc="reference KNN", unit="req", leave=False):
        tree = BallTree(records)  # rebuilt per request, as the reference does
        feature = np.hstack([x_test[i], onehot[test.category_ids()[i]]])[None]
        _, neighbours = tree.query(feature, k=5)
        votes = np.zeros(n_models)
        np.add.at(votes, record_model[neighbours[0]], 0.9 * record_quality[neighbours[0]])
        int(np.argmax(votes))
    reference_ms = (time.perf_counter() - started) / queries * 1000
    return {"knn_ms": round(ours_ms, 4), "reference_knn_ms": round(reference_ms, 2),
            "knn_training_queries": len(x_train), "reference_records": len(records)}


async def _run_levels(options: BenchmarkOptions, queries: list[str]) -> tuple[list[dict], dict[str, dict]]:
    generator = LoadGenerator(options.url, queries)
    try:
        await generator.ensure_ready()
        for i in range(options.warmup):
            await generator.one(i)
        levels, models = [], {}
        offset = options.warmup
        for concurrency in options.concurrency:
            before = await generator.settled_statistics()
            errors_before = len(generator.errors)
            server_cpu = process_tree_cpu_s(options.server_pid) if options.server_pid else None
            client_cpu = time.process_time()
            if options.rate:
                latencies, elapsed = await generator.open_loop(options.rate, options.requests, offset, options.seed)
            else:
                latencies, elapsed = await generator.closed_loop(concurrency, options.requests, offset)
            client_cpu = time.process_time() - client_cpu
            if server_cpu is not None:
                server_cpu = process_tree_cpu_s(options.server_pid) - server_cpu
            after = await generator.settled_statistics()
            offset += options.requests
            level = {"concurrency": concurrency if not options.rate else None, "rate_rps": options.rate,
                     "requests": options.requests, "errors": len(generator.errors) - errors_before,
                     "throughput_rps": round(len(latencies) / elapsed, 2), **_latency_summary(latencies),
                     # CPU per request: the server's (all its processes and threads) and the load generator's.
                     "server_cpu_ms_per_request": None if server_cpu is None else
                     round(server_cpu / options.requests * 1e3, 3),
                     "client_cpu_ms_per_request": round(client_cpu / options.requests * 1e3, 3),
                     "models": model_breakdown(before, after)}
            levels.append(level)
            models[str(concurrency)] = level["models"]
            log.info("concurrency %s: %.1f req/s, p50 %.2f ms, p99 %.2f ms, %d errors", concurrency,
                     level["throughput_rps"], level["p50_ms"] or 0, level["p99_ms"] or 0, level["errors"])
            if options.rate:
                break
        if generator.errors:
            log.warning("%d failed requests; first: %s", len(generator.errors), generator.errors[0])
        return levels, models
    finally:
        await generator.close()


def run_benchmark(options: BenchmarkOptions, cache_dir: Path | None = None) -> dict:
    queries = query_sets()[options.query_set]
    rng = np.random.default_rng(options.seed)
    queries = [queries[i] for i in rng.permutation(len(queries))]
    manifest = layout.read_manifest(options.repository)
    levels, per_level_models = asyncio.run(_run_levels(options, queries))
    memory = process_tree_rss_mb(options.server_pid) if options.server_pid else None
    inprocess = inprocess_baseline(options.repository, queries, options.baseline_requests)
    knn = knn_baselines(options.repository, cache_dir, options.reference_knn_requests)
    busiest = levels[-1]
    report = {
        "command": options.command,
        "machine": machine(),
        "backbone": manifest["backbone"],
        "query_set": {"name": options.query_set, "size": len(queries),
                      "mean_chars": round(float(np.mean([len(q) for q in queries])), 1)},
        "mode": "open loop" if options.rate else "closed loop",
        "levels": [{k: v for k, v in level.items() if k != "models"} for level in levels],
        "models": busiest["models"],
        "models_per_level": per_level_models,
        "baselines": {"inprocess": inprocess, **knn},
        "server_rss_mb": memory,
        "onnxruntime_backend": _backend_info() if options.server_pid else None,
    }
    report["ratios"] = _ratios(report)
    return report


def _backend_info() -> dict | None:
    from model_selector.serve.backend import BackendError, find_backend

    try:
        info = find_backend().info
    except BackendError:
        return None
    return {**info, "origin": info["origin"]["kind"]}  # not this machine's paths


def _ratios(report: dict) -> dict:
    levels = {level["concurrency"]: level for level in report["levels"]}
    inprocess = report["baselines"]["inprocess"]
    ratios = {"reference_knn_over_ours": round(report["baselines"]["reference_knn_ms"] /
                                               report["baselines"]["knn_ms"], 1)}
    if 1 in levels and levels[1]["p50_ms"]:
        ratios["p50_c1_over_inprocess_p50"] = round(levels[1]["p50_ms"] / inprocess["p50_ms"], 3)
    top = max((c for c in levels if c is not None), default=None)
    if top is not None:
        ratios[f"throughput_c{top}_over_inprocess"] = round(levels[top]["throughput_rps"] / inprocess["throughput_rps"], 3)
        if levels[top].get("server_cpu_ms_per_request"):
            ratios[f"server_cpu_per_request_c{top}_over_inprocess"] = round(
                levels[top]["server_cpu_ms_per_request"] / inprocess["cpu_ms_per_request"], 3)
    return ratios


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# model-selector benchmark", "",
        f"`{report['command']}`", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['platform']}. "
        f"Backbone: {report['backbone']['name']}. Queries: {report['query_set']['name']} set "
        f"({report['query_set']['size']} texts, mean {report['query_set']['mean_chars']} characters), "
        f"{report['mode']}, batch-1 gRPC requests."
        + (f" Server: tritonserver 2.51 with Triton's {b['triton_release']} onnxruntime backend built against "
           f"onnxruntime {b['onnxruntime']}." if (b := report.get("onnxruntime_backend")) else ""), "",
        "| concurrency | requests | errors | throughput (req/s) | p50 ms | p95 ms | p99 ms | max ms "
        "| server CPU ms/req | load generator CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in report["levels"]:
        label = level["concurrency"] if level["concurrency"] is not None else f"rate {level['rate_rps']}/s"
        lines.append(f"| {label} | {level['requests']} | {level['errors']} | {level['throughput_rps']} | "
                     f"{level['p50_ms']} | {level['p95_ms']} | {level['p99_ms']} | {level['max_ms']} | "
                     f"{level.get('server_cpu_ms_per_request') or 'not measured'} | "
                     f"{level.get('client_cpu_ms_per_request')} |")
    inprocess = report["baselines"]["inprocess"]
    lines += ["", "Baselines, same queries, same run:", "",
              "| | throughput (req/s) | p50 ms | CPU ms/req |", "|---|---|---|---|",
              f"| in-process ONNX pipeline, one query at a time | {inprocess['throughput_rps']} | {inprocess['p50_ms']} "
              f"| {inprocess.get('cpu_ms_per_request')} |",
              "", "| KNN step, batch 1 | ms per query |", "|---|---|",
              f"| ours (int8 MatMul + TopK over {report['baselines']['knn_training_queries']} unique queries) | "
              f"{report['baselines']['knn_ms']} |",
              f"| reference (BallTree over {report['baselines']['reference_records']} records, rebuilt per request) | "
              f"{report['baselines']['reference_knn_ms']} |", "",
              "Ratios: " + ", ".join(f"{k} = {v}" for k, v in report["ratios"].items()), "",
              f"Server memory (tritonserver + python stubs, RSS): "
              f"{report['server_rss_mb'] if report['server_rss_mb'] is not None else 'not measured (server not started by this run)'} MB", "",
              "Where the time goes at the highest load (per request, from Triton's statistics):", "",
              "| model | requests | executions | avg batch | queue ms | compute ms |", "|---|---|---|---|---|---|"]
    for name, entry in report["models"].items():
        lines.append(f"| {name} | {entry['requests']} | {entry['executions']} | {entry['avg_batch_size']} | "
                     f"{entry['queue_ms']} | {entry['compute_ms']} |")
    return "\n".join(lines) + "\n"


def write_benchmark_report(report: dict, out: Path) -> None:
    """`out` (JSON) with its markdown beside it."""
    write_report(out, report, markdown(report))
