"""The Triton python models (`model_selector/triton_models/*/model.py`) run against a stand-in for
`triton_python_backend_utils`, with the configs `build` writes and real tokenizer and router files.
The same models run inside a real tritonserver in the integration tier (test_serving, test_hardening)."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format

from model_selector.build import repository as writer
from model_selector.build.export import resolve_backbone
from model_selector.core import layout
from model_selector.core.algorithms import ALGORITHMS
from model_selector.core.config import DOMAINS, PACKAGED_CONFIG, load_config
from model_selector.core.contract import ENSEMBLE_OUTPUTS, EXPECTED_TOKENS, STRING_OUTPUTS
from model_selector.core.decision_engine import DecisionStep
from model_selector.core.parameters import ParameterError

PACKAGE = Path(writer.__file__).resolve().parents[1]


class TritonError:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message: str, code: str = INTERNAL):
        self._message, self.code = message, code

    def message(self) -> str:
        return self._message


class Tensor:
    def __init__(self, name: str, array: np.ndarray):
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None):
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors or []}
        self.error = error


class Metric:
    def __init__(self, labels: dict[str, str]):
        self.labels, self.value = labels, 0

    def increment(self, value: float) -> None:
        self.value += value


class MetricFamily:
    COUNTER = "COUNTER"

    def __init__(self, name: str, description: str, kind: str):
        self.name, self.metrics = name, []

    def Metric(self, labels: dict[str, str]) -> Metric:  # noqa: N802 - Triton's spelling
        self.metrics.append(Metric(labels))
        return self.metrics[-1]


def get_input_tensor_by_name(request: dict[str, np.ndarray], name: str) -> Tensor | None:
    """As Triton's: None when the request lacks the input."""
    return Tensor(name, request[name]) if name in request else None


@pytest.fixture
def pb_utils(monkeypatch) -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    for item in (TritonError, Tensor, InferenceResponse, MetricFamily, get_input_tensor_by_name):
        setattr(module, item.__name__, item)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def model_module(name: str) -> types.ModuleType:
    """A python model's model.py, imported as the python backend does: from its file."""
    spec = importlib.util.spec_from_file_location(f"triton_model_{name}", PACKAGE / "triton_models" / name / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_model(name: str, repository: Path):
    """The model's class, initialised as Triton does: config as JSON, the repository and the version."""
    module = model_module(name)
    config = json_format.MessageToDict(
        writer.model_configs(writer.RepositoryShape(384, len(load_config(PACKAGED_CONFIG).model_names), 0))[name],
        preserving_proto_field_name=True)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(repository / name),
                      "model_version": layout.VERSION, "model_name": name})
    return model


@pytest.fixture
def repository(tmp_path) -> Path:
    """The files the two python models read, as `build` lays them out (no ONNX: they do not read it)."""
    config = load_config(PACKAGED_CONFIG)
    tokenizer_dir = tmp_path / layout.TOKENIZER / layout.VERSION
    tokenizer_dir.mkdir(parents=True)
    (tokenizer_dir / "tokenizer.json").write_bytes((resolve_backbone("minilm").source / "tokenizer.json").read_bytes())
    decision_dir = tmp_path / layout.DECISION / layout.VERSION
    decision_dir.mkdir(parents=True)
    (decision_dir / "router.yaml").write_bytes(PACKAGED_CONFIG.read_bytes())
    (decision_dir / "selectors.json").write_text(json.dumps({
        "models": config.model_names, "expected_output_tokens": {m: 400.0 for m in config.model_names}}))
    return tmp_path


def test_tokenizer_pads_each_request_to_its_bucket_and_isolates_a_bad_one(pb_utils, repository):
    model = load_model(layout.TOKENIZER, repository)
    short = {"query": np.array([[b"What is 2+2?"]], dtype=np.object_)}
    two = {"query": np.array([["Explain TCP slow start in detail, please.".encode()], [b"\xff\xfe hi"]],
                             dtype=np.object_)}
    broken = {"text": np.array([[b"no query input"]], dtype=np.object_)}
    responses = model.execute([short, broken, two])
    assert len(responses) == 3
    ids, mask = responses[0].outputs["input_ids"], responses[0].outputs["attention_mask"]
    assert ids.shape == mask.shape == (1, 16) and ids.dtype == np.int64 and mask[0].sum() < 16
    assert responses[1].error is not None and responses[1].error.code == TritonError.INVALID_ARG
    assert responses[1].error.message().startswith("tokenizer:")
    ids, mask = responses[2].outputs["input_ids"], responses[2].outputs["attention_mask"]
    assert ids.shape[0] == 2 and ids.shape[1] % 16 == 0 and mask[1].sum() > 2  # invalid UTF-8 is still routed


def _scores(rng: np.random.Generator, rows: int, models: int) -> dict[str, np.ndarray]:
    request = {"domain_probs": np.full((rows, len(DOMAINS)), 0.01, dtype=np.float32),
               EXPECTED_TOKENS: rng.uniform(100, 900, (rows, models)).astype(np.float32)}
    for algorithm in ALGORITHMS.values():
        request[algorithm.scores_output] = rng.uniform(0, 1, (rows, models)).astype(np.float32)
    return request


def test_decision_routes_every_row_as_the_engine_does_and_counts_routes(pb_utils, repository):
    model = load_model(layout.DECISION, repository)
    step = DecisionStep.load(repository / layout.DECISION / layout.VERSION / "router.yaml",
                             repository / layout.DECISION / layout.VERSION / "selectors.json")
    rng = np.random.default_rng(0)
    request = _scores(rng, 3, len(step.models))
    request["domain_probs"][0, DOMAINS.index("math")] = 0.95
    request["domain_probs"][1, DOMAINS.index("computer science")] = 0.9
    # row 2: no domain is confident
    broken = {k: v for k, v in _scores(rng, 1, len(step.models)).items() if k != EXPECTED_TOKENS}
    ok, bad = model.execute([request, broken])
    assert bad.error is not None and bad.error.message().startswith("decision:")
    assert set(ok.outputs) == set(ENSEMBLE_OUTPUTS)
    for i in range(3):
        expected = step.engine.route(request["domain_probs"][i],
                                     {a.name: request[a.scores_output][i] for a in ALGORITHMS.values()},
                                     expected_output_tokens=request[EXPECTED_TOKENS][i])
        for name in ENSEMBLE_OUTPUTS:
            value = ok.outputs[name][i, 0]
            assert ok.outputs[name].shape == (3, 1)
            if name in STRING_OUTPUTS:
                assert value.decode() == getattr(expected, name)
            else:
                assert value == pytest.approx(getattr(expected, name), rel=1e-6)
    assert ok.outputs["decision"][0, 0] == b"math_decision"
    assert ok.outputs["decision"][2, 0] == b""  # no decision: the default model
    assert ok.outputs["selected_model"][2, 0].decode() == step.config.default_model
    counted = {(m.labels["decision"], m.labels["model"]): m.value for m in model.routes.metrics}
    assert sum(counted.values()) == 3 and counted[("none", step.config.default_model)] == 1


def test_a_config_without_a_needed_parameter_names_it(pb_utils, repository):
    module = model_module(layout.DECISION)
    config = {"name": "decision", "parameters": {"router_config": {"string_value": "router.yaml"}}}
    with pytest.raises(ParameterError, match="decision: config.pbtxt has no parameter 'selectors'"):
        module.TritonPythonModel().initialize({"model_config": json.dumps(config), "model_version": "1",
                                               "model_repository": str(repository / layout.DECISION)})
