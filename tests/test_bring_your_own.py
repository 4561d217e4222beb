"""`build --data FILE --config CONFIG`: selectors trained on a user's own records for their own catalog."""

from __future__ import annotations

import json

import pytest

from model_selector.build.pipeline import BuildOptions, build
from model_selector.core.config import load_config
from model_selector.data.loaders import DataError, load_records
from model_selector.measure.evaluate import evaluate
from model_selector.serve.client import RouterClient
from model_selector.serve.server import LocalTritonServer
from tests.paths import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "examples" / "bring-your-own"


@pytest.fixture(scope="module")
def user_repository(tmp_path_factory, built_repository):
    repository = tmp_path_factory.mktemp("byo") / "model_repository"
    build(BuildOptions(config=EXAMPLE / "router.yaml", repository=repository, records=EXAMPLE / "records.jsonl",
                       holdout=True))
    return repository


def test_a_malformed_record_fails_the_build_before_any_export(tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text((EXAMPLE / "records.jsonl").read_text() + '{"query": "q", "model_name": "gpt-4o"}\n')
    repository = tmp_path / "model_repository"
    with pytest.raises(DataError, match=r"records.jsonl:\d+: `performance` must be a number"):
        build(BuildOptions(config=EXAMPLE / "router.yaml", repository=repository, records=records))
    assert not repository.exists()


def test_the_repository_routes_within_the_users_catalog(user_repository):
    catalog = load_config(EXAMPLE / "router.yaml").model_names
    manifest = json.loads((user_repository / "manifest.json").read_text())
    assert manifest["models"] == catalog
    assert manifest["data"]["selector_records"]["queries"] == 84
    # The classifier still learns the domains from MMLU-Pro.
    assert manifest["metrics"]["domain_accuracy_heldout"] >= 0.83
    selectors = json.loads((user_repository / "decision/1/selectors.json").read_text())
    assert selectors["models"] == catalog and selectors["expected_output_tokens"]["gpt-4o"] > 100

    report = evaluate(user_repository, load_records(EXAMPLE / "records.jsonl", catalog))
    assert report["n_queries"] == 84
    assert set(report["routers"]["configured"]["distribution"]) <= set(catalog)
    # On its own training queries the router should do at least as well as the cheapest model.
    assert report["routers"]["configured"]["quality"] >= report["baselines"]["single"]["llama-3.1-8b"]["quality"]


def test_the_served_user_repository_answers(user_repository):
    with LocalTritonServer.on_free_ports(user_repository) as server, \
            RouterClient(server.grpc_url) as client:
        routes = client.select(["Find the derivative of x^3 + 2x", "Who wrote the Federalist Papers?"])
    assert routes[0].decision == "stem_decision" and routes[0].selected_model in {"gpt-4o", "gemini-flash",
                                                                                   "llama-3.1-8b"}
    assert routes[1].decision == "everything_else" and routes[1].selected_model in {"gemini-flash", "llama-3.1-8b"}
