"""Config validation: every mistake is refused with one message naming the file, the decision and the fix."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import pytest
import yaml

from model_selector.core.config import ConfigError, Endpoint, check_config, load_config, parse_config

from .conftest import CONFIG


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "router.yaml")
    return str(info.value)


def test_shipped_config_is_valid():
    config = load_config(CONFIG)
    assert len(config.decisions) == 8
    assert len(config.models) == 10
    assert {d.algorithm.type for d in config.decisions} == {"knn", "kmeans", "svm"}


def test_misspelt_domain_names_the_closest_valid_one(raw):
    raw["decisions"][1]["rules"]["conditions"][0]["name"] = "computer_science"
    message = _error(raw)
    assert message.startswith("router.yaml: decision 'code_decision':")
    assert "unknown domain 'computer_science'" in message
    assert "did you mean 'computer science'?" in message


def test_model_ref_missing_from_catalog(raw):
    raw["decisions"][0]["modelRefs"] = [{"model": "gpt-5-ultra"}, {"model": "mathstral-7B"}]
    message = _error(raw)
    assert "decision 'math_decision'" in message and "'gpt-5-ultra' is not in the model catalog" in message


def test_duplicate_decision_name(raw):
    raw["decisions"].append(copy.deepcopy(raw["decisions"][0]))
    assert "decision 'math_decision': duplicate decision name" in _error(raw)


def test_unknown_algorithm(raw):
    raw["decisions"][2]["algorithm"] = {"type": "transformer"}
    message = _error(raw)
    assert "decision 'science_decision'" in message and "unknown algorithm 'transformer'" in message
    assert "knn, kmeans, svm, mlp" in message


def test_the_reference_mlp_algorithm_is_accepted(raw):
    """The reference's current e2e profile routes math and code with `type: mlp`."""
    raw["decisions"][0]["algorithm"] = {"type": "mlp"}
    raw["model_selection"]["mlp"] = {"hidden_sizes": [256, 128], "alpha": 0.01}
    config = parse_config(raw, "router.yaml")
    assert config.decisions[0].algorithm.type == "mlp"
    assert config.model_selection.mlp.hidden_sizes == (256, 128)
    raw["model_selection"]["mlp"] = {"hidden_sizes": [0]}
    assert "hidden_sizes" in _error(raw)


@pytest.mark.parametrize("rules, expected", [
    ({"operator": "XOR", "conditions": [{"type": "domain", "name": "math"}]}, "malformed decision"),
    ({"conditions": [{"type": "domain", "name": "math"}]}, "malformed decision"),
    ({"operator": "AND", "conditions": []}, "malformed decision"),
    ({"operator": "AND", "conditions": [{"type": "keyword", "name": "math"}]}, "malformed decision"),
    ({"operator": "NOT", "conditions": [{"type": "domain", "name": "math"}, {"type": "domain", "name": "law"}]},
     "a NOT rule takes exactly one condition"),
])
def test_malformed_rule(raw, rules, expected):
    raw["decisions"][0]["rules"] = rules
    message = _error(raw)
    assert "decision 'math_decision'" in message and expected in message


def test_default_model_must_be_in_catalog(raw):
    raw["default_model"] = "gpt-3"
    assert "default_model: 'gpt-3' is not in the model catalog" in _error(raw)


def test_per_decision_k_must_match_the_shared_knn(raw):
    raw["decisions"][0]["algorithm"] = {"type": "knn", "knn": {"k": 3}}
    assert "model_selection.knn" in _error(raw)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("decisions: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_gateway_endpoints_default_to_the_upstream_and_can_be_overridden(raw):
    raw["models"][0].update(base_url="https://api.example.com/v1/", upstream_model="gpt-4o", api_key_env="EXAMPLE_KEY")
    config = parse_config(raw)
    first, second = config.model_names[:2]
    assert config.endpoint(first) == Endpoint("https://api.example.com/v1", "gpt-4o", "EXAMPLE_KEY")
    assert config.endpoint(second) == Endpoint(config.gateway.upstream.base_url, second, None)


@pytest.mark.parametrize("field, value, expected", [
    ("base_url", "api.example.com/v1", r"models\.0\.base_url: .*not an http\(s\) URL; write it like http://"),
    ("api_key_env", "sk-live-123", r"models\.0\.api_key_env: .*not an environment variable name.*never the key"),
])
def test_gateway_endpoint_mistakes_are_refused(raw, field, value, expected):
    raw["models"][0][field] = value
    assert re.search(expected, _error(raw))


REFERENCE_DATA = CONFIG.parent.parent / "tests" / "data" / "reference"


def test_the_seed_layout_of_the_reference_is_read():
    config = load_config(REFERENCE_DATA / "seed_router.yaml")
    assert [d.name for d in config.decisions] == ["math_decision", "code_decision"]
    assert sorted(config.model_names) == ["codellama-7b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b"]
    assert config.default_model == "mistral-7b"
    assert config.model_selection.knn.k == 5 and config.model_selection.svm.gamma == 1.0


def test_the_v03_layout_of_the_reference_is_read_and_what_is_ignored_is_said():
    report = check_config(REFERENCE_DATA / "v03_router.yaml")
    assert report.layout == "vLLM Semantic Router v0.3" and report.problems == []
    config = report.config
    assert config.price("codellama-7b") == 0.2 and config.price("mistral-7b") == 0.25
    assert config.model_selection.kmeans.n_clusters == 8 and config.model_selection.knn.k == 5
    assert config.decisions[0].candidates == ["llama-3.2-3b", "mistral-7b"]
    notes = "\n".join(report.notes)
    for ignored in ("decision 'science_decision': plugins not supported",
                    "modelRefs[].use_reasoning not supported", "model 'codellama-7b': endpoints not supported",
                    "import --from .cache/ml-models"):
        assert ignored in notes


def test_the_reference_e2e_mlp_profile_is_read(tmp_path):
    """Its current e2e profile: `type: mlp` decisions and `ml.mlp: {device, pretrained_path}`."""
    data = yaml.safe_load((REFERENCE_DATA / "v03_router.yaml").read_text())
    data["routing"]["decisions"][1]["algorithm"] = {"type": "mlp"}
    data["global"]["router"]["model_selection"]["ml"]["mlp"] = {
        "device": "cpu", "pretrained_path": ".cache/ml-models/mlp_model.json"}
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(data))
    report = check_config(path)
    assert report.problems == []
    assert report.config.decisions[1].algorithm.type == "mlp"
    notes = "\n".join(report.notes)
    assert "mlp.device: the MLP runs inside router_heads" in notes
    assert "mlp.pretrained_path: import it with `model-selector import --from .cache/ml-models`" in notes


def test_config_check_lists_every_problem(tmp_path):
    data = yaml.safe_load((REFERENCE_DATA / "v03_router.yaml").read_text())
    data["routing"]["decisions"][0]["rules"]["conditions"][0]["name"] = "computer_science"
    data["routing"]["decisions"][1]["modelRefs"].append({"model": "gpt-5-ultra"})
    data["global"]["router"]["model_selection"]["ml"]["svm"] = {"kernel": "linear"}
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(data))
    report = check_config(path)
    assert len(report.problems) == 3 and report.config is None
    joined = "\n".join(report.problems)
    assert "did you mean 'computer science'?" in joined and "'gpt-5-ultra' is not in the model catalog" in joined
    assert "svm.kernel 'linear': our SVM selector is RBF only" in joined
    with pytest.raises(ConfigError, match="RBF only"):  # loading stops at the first
        load_config(path)

    result = subprocess.run([sys.executable, "-m", "model_selector.cli", "config", "check", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout.count("problem: ") == 3 and "3 problem(s)" in result.stdout
    good = subprocess.run([sys.executable, "-m", "model_selector.cli", "config", "check", str(CONFIG)],
                          capture_output=True, text=True)
    assert good.returncode == 0
    assert "- math_decision (priority 100): when math; knn over all 10 catalog models" in good.stdout


def test_config_default_prints_the_packaged_configuration_to_start_from(tmp_path):
    result = subprocess.run([sys.executable, "-m", "model_selector.cli", "config", "default"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0
    (tmp_path / "router.yaml").write_text(result.stdout)
    assert load_config(tmp_path / "router.yaml") == load_config(CONFIG)
