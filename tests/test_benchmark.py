"""`model-selector benchmark` against the live server: every figure scripts rely on is there and plausible."""

from __future__ import annotations

import json
import subprocess
import sys

from model_selector.measure.benchmark import perf_analyzer_data, query_sets


def test_query_sets_are_real_short_and_long_texts():
    sets = query_sets()
    assert len(sets["short"]) > 100 and max(len(q) for q in sets["short"]) <= 200
    assert len(sets["long"]) > 100 and min(len(q) for q in sets["long"]) > 200
    data = perf_analyzer_data(sets["short"][:3])
    assert data["data"][0] == {"query": {"content": [sets["short"][0]], "shape": [1]}}


def test_benchmark_without_a_server_says_how_to_start_one(built_repository, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "model_selector.cli", "benchmark", "--url", "127.0.0.1:9", "--requests", "1",
         "--repository", str(built_repository), "--out", str(tmp_path / "bench.json")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Triton at 127.0.0.1:9 is not reachable" in result.stderr and "model-selector serve" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "bench.json").exists()


def test_benchmark_reports_levels_models_and_baselines(server, tmp_path):
    out = tmp_path / "bench.json"
    perf = tmp_path / "perf.json"
    result = subprocess.run(
        [sys.executable, "-m", "model_selector.cli", "benchmark", "--url", server.grpc_url,
         "--repository", str(server.repository), "--concurrency", "1,4",
         "--requests", "40", "--warmup", "5", "--queries", "short", "--baseline-requests", "30",
         "--reference-knn-requests", "2", "--out", str(out),
         "--export-perf-analyzer-data", str(perf)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [level["concurrency"] for level in report["levels"]] == [1, 4]
    for level in report["levels"]:
        assert level["requests"] == 40 and level["errors"] == 0 and level["throughput_rps"] > 0
        assert 0 < level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
    assert set(report["models"]) >= {"tokenizer", "text_embedding", "decision"}
    embedding = report["models"]["text_embedding"]
    assert embedding["requests"] == 40 and embedding["avg_batch_size"] >= 1 and embedding["compute_ms"] > 0
    baselines = report["baselines"]
    assert baselines["inprocess"]["throughput_rps"] > 0 and baselines["inprocess"]["p50_ms"] > 0
    # The reference rebuilds a tree over every record per request: far slower than one matrix product.
    assert baselines["reference_knn_ms"] > 20 * baselines["knn_ms"]
    assert report["machine"]["cores"] >= 1 and report["backbone"]["name"] == "minilm"
    assert report["command"].startswith("model-selector benchmark")
    assert out.with_suffix(".md").read_text().startswith("# model-selector benchmark")
    assert len(json.loads(perf.read_text())["data"]) == len(query_sets()["short"])


def test_open_loop_sends_on_schedule_whatever_the_server_does(server, tmp_path):
    out = tmp_path / "open.json"
    result = subprocess.run(
        [sys.executable, "-m", "model_selector.cli", "benchmark", "--url", server.grpc_url,
         "--repository", str(server.repository), "--rate", "40",
         "--requests", "60", "--warmup", "2", "--queries", "short", "--baseline-requests", "5",
         "--reference-knn-requests", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "open loop"
    (level,) = report["levels"]
    assert level["rate_rps"] == 40 and level["requests"] == 60 and level["errors"] == 0
    # 60 requests on a 40/s Poisson schedule take about 1.5 s, however fast the server answers.
    assert 10 < level["throughput_rps"] < 100
