"""The model repository: every ONNX model's config.pbtxt matches its model.onnx, configs parse, the ensemble is wired."""

from __future__ import annotations

import json

import onnx
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from model_selector.build import repository as writer
from model_selector.core import layout
from model_selector.core.contract import ENSEMBLE
from model_selector.core.layout import read_config

ONNX_TYPES = {onnx.TensorProto.FLOAT: mc.TYPE_FP32, onnx.TensorProto.INT64: mc.TYPE_INT64}


def _dims(value_info) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", layout.ONNX_MODELS)
def test_onnx_config_matches_model(built_repository, name):
    config = read_config(built_repository / name / "config.pbtxt")
    model = onnx.load(str(built_repository / name / "1" / "model.onnx"), load_external_data=False)
    assert config.backend == "onnxruntime" and config.max_batch_size > 0
    assert config.HasField("dynamic_batching")
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    for declared, actual in ((config.input, model.graph.input), (config.output, model.graph.output)):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, info in zip(declared, actual):
            assert tensor.data_type == ONNX_TYPES[info.type.tensor_type.elem_type], tensor.name
            assert list(tensor.dims) == _dims(info)[1:], tensor.name  # batch dimension is implicit


def test_every_config_parses_and_python_models_are_present(built_repository):
    names = sorted(p.parent.name for p in built_repository.glob("*/config.pbtxt"))
    assert names == sorted([ENSEMBLE, *layout.PYTHON_MODELS, *layout.ONNX_MODELS])
    for name in names:
        config = read_config(built_repository / name / "config.pbtxt")
        assert config.name == name and config.max_batch_size > 0
    for name in layout.PYTHON_MODELS:
        assert (built_repository / name / "1" / "model.py").is_file()


def test_ensemble_contract_and_wiring(built_repository):
    ensemble = read_config(built_repository / ENSEMBLE / "config.pbtxt")
    assert ensemble.platform == "ensemble"
    assert [(t.name, t.data_type, list(t.dims)) for t in ensemble.input] == [("query", mc.TYPE_STRING, [1])]
    assert [(t.name, t.data_type, list(t.dims)) for t in ensemble.output] == [
        ("selected_model", mc.TYPE_STRING, [1]), ("decision", mc.TYPE_STRING, [1]),
        ("domain", mc.TYPE_STRING, [1]), ("domain_confidence", mc.TYPE_FP32, [1]),
        ("algorithm", mc.TYPE_STRING, [1]), ("confidence", mc.TYPE_FP32, [1])]
    available = {"query"}
    for step in ensemble.ensemble_scheduling.step:
        model = read_config(built_repository / step.model_name / "config.pbtxt")
        assert set(step.input_map) == {t.name for t in model.input}, step.model_name
        assert set(step.input_map.values()) <= available, step.model_name
        assert set(step.output_map) <= {t.name for t in model.output}, step.model_name
        assert model.max_batch_size >= ensemble.max_batch_size
        available |= set(step.output_map.values())
    assert {t.name for t in ensemble.output} <= available


def test_manifest_records_the_build(built_repository):
    manifest = json.loads((built_repository / "manifest.json").read_text())
    assert manifest["backbone"]["name"] == "minilm" and manifest["backbone"]["embedding_dim"] == 384
    assert len(manifest["models"]) == 10 and len(manifest["data"]["sha256"]) == 64
    assert {"onnxruntime", "scikit-learn", "numpy"} <= set(manifest["libraries"])
    assert manifest["training"] == {"split": "holdout", "mmlu_pro_questions": 9578 - manifest["metrics"]["n_heldout"],
                                    "natural_prompts": manifest["data"]["natural_prompts"]["train"]}
    assert manifest["metrics"]["domain_accuracy_heldout"] >= 0.84  # MMLU-Pro held out: exam questions are not lost
    # Natural prompts held out from training (data/natural_prompts, 25% by hash of the text).
    assert manifest["metrics"]["domain_accuracy_natural_validation"] >= 0.82
    assert manifest["metrics"]["computer_science_recall_natural_validation"] >= 0.9
    assert manifest["metrics"]["unrouted_share_natural_validation"] <= 0.05
    assert manifest["data"]["natural_prompts"]["train"] + manifest["data"]["natural_prompts"]["validation"] == 4114
    assert manifest["metrics"]["domain_accuracy_short_questions"] >= 0.75  # data/short_questions, never trained on


def test_python_models_import_only_what_the_serving_image_installs():
    """docker/requirements.txt has numpy, tokenizers, pyyaml and pydantic: nothing heavier may be imported."""
    import subprocess
    import sys

    code = ("import sys, pkgutil, importlib, model_selector.core as core; "
            "[importlib.import_module(f'model_selector.core.{m.name}') for m in pkgutil.iter_modules(core.__path__)]; heavy = {'tritonclient', 'sklearn', 'torch', 'onnx', 'onnxruntime', "
            "'transformers'} & set(sys.modules); print(sorted(heavy)); sys.exit(bool(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_embedding_instances_and_threads_reach_the_config_and_the_local_server(tmp_path):
    shape = writer.RepositoryShape(384, 10, 0, "cpu", embedding_instances=2, embedding_threads=1)
    writer.write_configs(tmp_path / "repository", shape)
    writer.copy_python_models(tmp_path / "repository")
    embedding = read_config(tmp_path / "repository" / layout.EMBEDDING / "config.pbtxt")
    assert embedding.instance_group[0].count == 2
    assert embedding.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert embedding.parameters["intra_op_thread_count"].string_value == "1"

    from model_selector.serve.server import materialise

    local = read_config(materialise(tmp_path / "repository", tmp_path / "runtime") / layout.EMBEDDING / "config.pbtxt")
    assert local == embedding  # a CPU profile is served exactly as built

    default = writer.model_configs(writer.RepositoryShape(384, 10, 0))[layout.EMBEDDING]
    assert default.instance_group[0].count == 1 and "intra_op_thread_count" not in default.parameters


@pytest.mark.slow
def test_the_repository_to_serve_trains_on_every_shipped_question(built_repository, tmp_path):
    """`model-selector build` without --holdout: every MMLU-Pro question and natural prompt teaches the
    classifier and selectors, the manifest says so, `evaluate` refuses to score it on its own training
    data, and it routes the demo's queries where a person would."""
    import subprocess
    import sys

    from model_selector.build.pipeline import BuildOptions, build
    from model_selector.cli.demo import DEMO_QUERIES
    from model_selector.data.loaders import DEFAULT_DATA_DIR, NATURAL_PROMPTS_DIR
    from model_selector.serve.client import RouterClient
    from model_selector.serve.server import LocalTritonServer

    from .conftest import CONFIG

    repository = tmp_path / "model_repository"
    manifest = build(BuildOptions(config=CONFIG, repository=repository))
    holdout = json.loads((built_repository / "manifest.json").read_text())
    assert manifest["training"] == {"split": "all", "mmlu_pro_questions": 9578, "natural_prompts": 4114}
    assert manifest["metrics"]["n_train_selectors"] > holdout["metrics"]["n_train_selectors"] + 1000
    assert manifest["metrics"]["n_heldout"] == 0 and "domain_accuracy_heldout" not in manifest["metrics"]
    assert manifest["metrics"]["domain_accuracy_short_questions"] >= 0.75  # never trained on, in either build

    for data in (DEFAULT_DATA_DIR, NATURAL_PROMPTS_DIR):
        done = subprocess.run([sys.executable, "-m", "model_selector.cli", "evaluate", "--repository", str(repository),
                               "--data", str(data), "--out", str(tmp_path / "report")], capture_output=True, text=True)
        assert done.returncode == 2 and "trained on every shipped question" in done.stderr
        assert "build --holdout" in done.stderr

    with LocalTritonServer.on_free_ports(repository, watchdog=False) as server, RouterClient(server.grpc_url) as client:
        decisions = [r.decision for r in client.select(DEMO_QUERIES)]
    assert decisions == ["math_decision", "code_decision", "humanities_decision", "health_decision",
                         "business_decision", "humanities_decision"]
