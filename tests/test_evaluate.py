"""`model-selector evaluate`: record parsing with clear errors, and a report that compares against baselines."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from model_selector.core.config import load_config
from model_selector.data.loaders import DataError, load_records
from model_selector.measure.evaluate import FINE_COST_WEIGHTS, load_heldout

from .conftest import CONFIG

CATALOG = ["big", "small"]


def _write(tmp_path, lines: list) -> str:
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def _record(query="What is 2+2?", model="big", performance=1.0, **extra):
    return {"query": query, "model_name": model, "performance": performance, **extra}


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", r"records.jsonl:2: not valid JSON"),
    (_record(performance=1.5), r"records.jsonl:2: `performance` must be a number in \[0, 1\], got 1.5"),
    ({"query": "q", "performance": 1.0}, r"records.jsonl:2: `model_name` must be a non-empty string"),
    (_record(output_tokens=-3), r"records.jsonl:2: `output_tokens` must be a non-negative number"),
    (_record(response_time="fast"), r"records.jsonl:2: `response_time` must be a non-negative number, got 'fast'"),
])
def test_malformed_lines_name_file_line_and_problem(tmp_path, bad_line, message):
    path = _write(tmp_path, [_record(), bad_line])
    with pytest.raises(DataError, match=message):
        load_records(path, CATALOG)


def test_the_reference_benchmark_format_as_published_is_read(tmp_path):
    published = {"ground_truth": "B", "task_name": "mmlu_pro", "metric": "em_mc", "embedding_id": 17,
                 "response": "The answer is (B)"}
    path = _write(tmp_path, [_record(category="math", response_time=0.523, **published),
                             _record(model="small", performance=0.0, category="math", response_time=1.2, **published)])
    data = load_records(path, CATALOG)
    assert data.queries == ["What is 2+2?"] and data.performance.tolist() == [[1.0, 0.0]]


@pytest.mark.integration  # waits out the hub client's retries
def test_download_benchmark_without_the_hub_says_what_to_do(tmp_path, monkeypatch):
    from model_selector.data.loaders import download_benchmark

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="could not download validation_benchmark_with_gt.jsonl .* pass the file"):
        download_benchmark(tmp_path / "out", cache_dir=tmp_path / "cache")


def test_queries_without_results_for_a_catalog_model_are_refused(tmp_path):
    path = _write(tmp_path, [_record(), _record(model="small"), _record(query="only big")])
    with pytest.raises(DataError, match="1 queries lack results.*'only big' has none for small"):
        load_records(path, CATALOG)


def test_missing_data_says_what_data_is_expected(tmp_path):
    with pytest.raises(DataError, match="no-such.jsonl: no such file; expected benchmark records"):
        load_records(tmp_path / "no-such.jsonl", CATALOG)
    with pytest.raises(DataError, match="no questions.jsonl.gz, correctness.csv.gz, output_chars.csv.gz; .* MMLU-Pro"):
        load_heldout(CATALOG, tmp_path)


def test_repeated_runs_of_a_query_and_model_count_with_their_mean(tmp_path):
    path = _write(tmp_path, [_record(performance=1.0, output_tokens=100), _record(model="small"),
                             _record(performance=0.0, output_tokens=300), _record(performance=0.5)])
    data = load_records(path, CATALOG)
    assert data.queries == ["What is 2+2?"]
    assert data.performance[0, 0] == pytest.approx(0.5) and data.output_tokens[0, 0] == pytest.approx(200)
    assert np.isnan(data.output_tokens[0, 1])


def test_evaluate_refuses_a_path_that_is_not_a_built_repository(tmp_path):
    result = subprocess.run([sys.executable, "-m", "model_selector.cli", "evaluate", "--repository", str(tmp_path),
                             "--out", str(tmp_path / "report")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "not a built model repository (no manifest.json); run `model-selector build` first" in result.stderr
    assert not (tmp_path / "report").exists()


def test_records_are_grouped_per_query(tmp_path):
    path = _write(tmp_path, [
        _record(category="math", output_tokens=10), _record(model="small", performance=0.0, category="math"),
        _record(query="q2", category="astrology"), _record(query="q2", model="small"),
        _record(query="q2", model="not-in-catalog"),
    ])
    data = load_records(path, CATALOG)
    assert data.queries == ["What is 2+2?", "q2"] and data.categories == ["math", "other"]
    assert data.performance.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert data.output_tokens[0, 0] == 10


def test_evaluate_through_the_served_ensemble(server, tmp_path):
    catalog = load_config(CONFIG).model_names
    heldout = load_heldout(catalog)
    records = [
        {"query": q, "category": c, "model_name": m, "performance": float(heldout.performance[i, j]),
         "output_tokens": float(heldout.output_tokens[i, j])}
        for i, (q, c) in enumerate(zip(heldout.queries[:48], heldout.categories[:48]))
        for j, m in enumerate(catalog)
    ]
    path = _write(tmp_path, records)
    out = tmp_path / "report"
    subprocess.run([sys.executable, "-m", "model_selector.cli", "evaluate", "--data", str(path), "--url",
                    server.grpc_url, "--repository", str(server.repository), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    report = json.loads((out / "report.json").read_text())
    assert report["n_queries"] == 48 and 0 <= report["domain_accuracy"] <= 1
    assert report["domains"]["n_prompts"] == 48 and report["domains"]["accuracy"] == report["domain_accuracy"]
    assert (out / "domain_confusion.png").stat().st_size > 10_000
    # The served ensemble and the in-process graphs choose alike.
    assert report["served_agreement"] == 1.0
    baselines = report["baselines"]
    assert set(baselines["single"]) == set(catalog)
    assert baselines["best_single"]["quality"] == max(s["quality"] for s in baselines["single"].values())
    assert baselines["oracle"]["quality"] >= baselines["best_single"]["quality"]
    for name in ("configured", "knn", "kmeans", "svm", "mlp"):
        router = report["routers"][name]
        assert set(router) == {"quality", "cost_per_1k", "distribution", "interval_95", "curve"}
        assert sum(router["distribution"].values()) == 48
        assert [p["cost_weight"] for p in router["curve"]] == FINE_COST_WEIGHTS
        best = baselines["best_single"]
        for ratio, key in (("quality_ratio", "quality"), ("cost_ratio", "cost_per_1k")):
            low, high = router["interval_95"][ratio]
            assert low <= round(router[key] / best[key], 4) <= high
    assert (out / "quality_vs_cost.png").stat().st_size > 10_000
    assert "| **configured** |" in (out / "report.md").read_text()


def test_evaluate_reports_domain_quality_on_a_labelled_prompt_set(server, tmp_path):
    """A plain JSONL of query + category: the domain report alone, from the served ensemble."""
    from model_selector.core.config import DOMAINS
    from model_selector.data.loaders import load_natural_prompts

    _, validation = load_natural_prompts()
    path = _write(tmp_path, [{"query": q, "category": c}
                             for q, c in zip(validation.queries[:60], validation.categories[:60])])
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "model_selector.cli", "evaluate", "--data", str(path), "--url",
                             server.grpc_url, "--repository", str(server.repository), "--out", str(out)],
                            check=True, capture_output=True, text=True)
    assert "60 prompts: domain accuracy" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert "routers" not in report and report["routed_by"] == "served ensemble"
    domains = report["domains"]
    assert set(domains) == {"n_prompts", "accuracy", "decision_accuracy", "unrouted_share", "per_domain", "domains",
                            "confusion", "expected_decision", "decisions"}
    confusion = np.array(domains["confusion"])
    assert confusion.shape == (14, 14) and confusion.sum() == 60
    assert domains["accuracy"] == pytest.approx(np.trace(confusion) / 60, abs=1e-4)
    assert set(domains["per_domain"]) == set(DOMAINS)
    for domain, row in domains["per_domain"].items():
        assert row["support"] == confusion[DOMAINS.index(domain)].sum()
        assert row["recall"] is None or 0 <= row["recall"] <= 1
    assert sum(sum(d.values()) for d in domains["decisions"].values()) == 60
    assert domains["expected_decision"]["computer science"] == "code_decision"
    assert (out / "domain_confusion.png").stat().st_size > 10_000
    assert "| computer science |" in (out / "report.md").read_text()


def test_evaluate_names_a_bad_prompt_line(tmp_path, built_repository):
    path = _write(tmp_path, [{"query": "Sort a list", "category": "computer_science"}])
    result = subprocess.run([sys.executable, "-m", "model_selector.cli", "evaluate", "--data", str(path),
                             "--repository", str(built_repository), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "records.jsonl:1: unknown category 'computer_science'; did you mean 'computer science'?" in result.stderr


def test_the_plain_kmeans_reference_routes_each_cluster_to_its_best_model_within_the_budget():
    """Synthetic: two groups of queries, each with one model right on it; a cheap and an expensive model."""
    from model_selector.measure import plain_kmeans

    rng = np.random.default_rng(0)
    centres = np.eye(8)[:2]
    x = np.concatenate([centres[0] + 0.05 * rng.normal(size=(300, 8)), centres[1] + 0.05 * rng.normal(size=(300, 8))])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    group = np.repeat([0, 1], 300)
    # Model 0: right everywhere, expensive. Model 1: right on group 0 only, cheap. Model 2: never right, free.
    quality = np.stack([np.ones(600), (group == 0).astype(float), np.zeros(600)], axis=1)
    cost = np.tile([10.0, 1.0, 0.0], (600, 1))
    weight = plain_kmeans.cross_fitted_cost_weight(x, quality, cost, budget=0.6)
    router = plain_kmeans.fit(x, quality, cost)
    picked = plain_kmeans.choose(*router.estimates(x), weight)
    assert (picked[group == 0] == 1).all() and (picked[group == 1] == 0).all()  # quality 1.0 at 0.55 of the cost
    summary, test_picked = plain_kmeans.reference(x, quality, cost, x, quality, cost, budget=0.6)
    assert summary["quality"] == 1.0 and summary["cost_per_1k"] == 5.5 and (test_picked == picked).all()
    assert len(summary["curve"]) == len(plain_kmeans.COST_WEIGHTS)


def test_evaluate_scores_the_plain_kmeans_reference_beside_the_routers(built_repository, tmp_path):
    from model_selector.measure.evaluate import evaluate, write_report

    catalog = load_config(CONFIG).model_names
    heldout, train = load_heldout(catalog), load_heldout(catalog, split="train")
    report = evaluate(built_repository, heldout.subset(np.arange(300)),
                      reference_training=train.subset(np.arange(1500)))
    plain = report["references"]["plain kmeans"]
    assert plain["settings"] == {"clusters": 32, "top_k": 3, "temperature": 9.0, "folds": 5, "budget": 0.33}
    assert 0 < plain["quality"] <= 1 and plain["cost_per_1k"] > 0 and plain["interval_95"]["quality_ratio"]
    write_report(report, tmp_path, "test")
    assert "| reference: plain kmeans (cost weight" in (tmp_path / "report.md").read_text()
