"""`model-selector benchmark-embedding`: the embedding graph timed alone with onnxruntime.

The GPU numbers in reports/gpu/ come from this command on a lent GPU machine; here it runs on
the CPU provider, and a GPU provider that this onnxruntime lacks is reported, not fatal.
"""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

from model_selector.measure.embedding_bench import QWEN3_EMBEDDING_0_6B_CONFIG


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_selector.cli", "benchmark-embedding", *args],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.integration  # exports and times a backbone in a subprocess
def test_times_every_shape_and_reports_missing_providers(tmp_path):
    out = tmp_path / "report.json"
    result = run_cli("--embedding", "minilm", "--fp32", "--providers", "cpu,cuda", "--batch-sizes", "1,4",
                     "--tokens", "16,48", "--instances", "1,2", "--seconds-per-point", "0.1",
                     "--work-dir", str(tmp_path / "work"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["backbone"] == "minilm" and report["precision"] == "fp32" and report["weights"] == "trained"
    cpu = report["providers"]["cpu"]
    assert cpu["available"]
    assert sorted((p["instances"], p["batch_size"], p["tokens"]) for p in cpu["points"]) == [
        (n, b, t) for n in (1, 2) for b in (1, 4) for t in (16, 48)]
    for point in cpu["points"]:
        assert point["iterations"] >= 10 * point["instances"] and 0 < point["p50_ms"] <= point["p99_ms"]
        # One instance: queries/s is the batch over the mean latency; two run side by side.
        one_at_a_time = point["batch_size"] / point["mean_ms"] * 1000
        assert one_at_a_time * 0.9 < point["queries_per_s"] < one_at_a_time * point["instances"] * 1.1
        assert point["finite_output"]
    cuda = report["providers"]["cuda"]
    assert cuda["available"] or "onnxruntime-gpu" in cuda["reason"]
    markdown = out.with_suffix(".md").read_text()
    assert "| 4 |" in markdown and "48 tokens" in markdown and "### 2 instances" in markdown
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.integration  # exports a backbone with PyTorch
def test_random_weights_from_a_config(tmp_path):
    """--random-weights needs only the architecture: a config.json, no weights, no tokenizer."""
    source = tmp_path / "tiny-qwen3"
    source.mkdir()
    tiny = dict(QWEN3_EMBEDDING_0_6B_CONFIG, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_window_layers=2)
    (source / "config.json").write_text(json.dumps(tiny))
    out = tmp_path / "report.json"
    result = run_cli("--embedding", str(source), "--random-weights", "--providers", "cpu", "--batch-sizes", "2",
                     "--tokens", "8", "--seconds-per-point", "0", "--work-dir", str(tmp_path / "work"),
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["backbone"] == "tiny-qwen3-random" and report["weights"] == "random"
    assert report["precision"] == "fp16"
    assert report["providers"]["cpu"]["points"][0]["finite_output"]


@pytest.mark.parametrize("args, message", [
    (["--providers", "cpu,cdua"], "unknown cdua; choose from cuda, tensorrt, cpu"),
    (["--batch-sizes", "0,8"], "every value must be at least 1"),
    (["--tokens", "32,lots"], "expected comma-separated integers"),
    (["--embedding", "no-such-dir", "--random-weights"], "give qwen3-0.6b or a directory holding a config.json"),
])
def test_bad_arguments_say_what_to_fix(tmp_path, args, message):
    result = run_cli(*args, "--work-dir", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.slow
def test_full_size_qwen3_exports_past_protobufs_2gb_limit(tmp_path):
    """Qwen3-Embedding-0.6B in fp32 is 2.4 GB: over protobuf's limit, so the weights go to a
    .data file beside the graph, and onnxruntime runs what was written."""
    work = tmp_path / "work"
    result = run_cli("--embedding", "qwen3-0.6b", "--random-weights", "--fp32", "--providers", "cpu",
                     "--batch-sizes", "1", "--tokens", "8", "--seconds-per-point", "0", "--work-dir", str(work),
                     "--out", str(tmp_path / "report.json"))
    assert result.returncode == 0, result.stderr
    assert (work / "model.onnx.data").stat().st_size > 2_000_000_000
    graph = onnx.load(str(work / "model.onnx"), load_external_data=False)
    assert graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 1024
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["providers"]["cpu"]["points"][0]["finite_output"]
