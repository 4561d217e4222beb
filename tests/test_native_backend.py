"""Triton's native onnxruntime backend: its build, and the production configs of every `--device`
profile loaded by a real tritonserver with only the instance kind rewritten."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from model_selector.build import repository as writer
from model_selector.build.pipeline import built_backbone, write_device_profile
from model_selector.core import layout
from model_selector.serve import backend as triton_backend
from model_selector.serve.backend import BackendError, build_backend, find_backend
from model_selector.serve.client import RouterClient
from model_selector.serve.server import LocalTritonServer, ServeError, find_triton

from .conftest import TEST_BUILD

ONNX_MODELS = (layout.EMBEDDING, layout.HEADS)
# A person would route these the same whatever the device profile.
ROUTES = [("How do I create a for loop in JavaScript?", "code_decision"),
          ("Calculate the derivative of sin(x) * cos(x)", "math_decision"),
          ("What must a plaintiff prove to win a negligence lawsuit?", "humanities_decision"),
          ("What are the early symptoms of type 2 diabetes and how is it treated?", "health_decision")]


def _served_config(url: str, name: str) -> dict:
    with grpcclient.InferenceServerClient(url) as client:
        return client.get_model_config(name, as_json=True)["config"]


def _as_built_on_cpu(config: mc.ModelConfig) -> mc.ModelConfig:
    """What `serve` may change in a production config: KIND_GPU instances become KIND_CPU."""
    cpu = mc.ModelConfig()
    cpu.CopyFrom(config)
    for group in cpu.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
    return cpu


def test_the_served_onnx_models_run_on_the_native_backend(server, built_repository):
    for name in ONNX_MODELS:
        served = _served_config(server.grpc_url, name)
        assert served["backend"] == "onnxruntime" and served["platform"] == "onnxruntime_onnx", name
        built = layout.read_config(built_repository / name / "config.pbtxt")
        assert [i["kind"] for i in served["instance_group"]] == ["KIND_CPU"] * len(built.instance_group)
        assert {k: v["string_value"] for k, v in served.get("parameters", {}).items()} == \
            {k: v.string_value for k, v in built.parameters.items()}


@pytest.fixture(scope="module")
def backbone(built_repository):
    return built_backbone(TEST_BUILD)


@pytest.mark.slow
@pytest.mark.parametrize("device", layout.DEVICES)
def test_every_device_profile_loads_on_the_native_backend_as_built(device, built_repository, backbone, tmp_path):
    """Each production profile loads with only the instance kind rewritten; warmups execute.

    On KIND_CPU instances the backend does not read `gpu_execution_accelerator`, so the TensorRT
    entry of gpu-tensorrt stays in the served config as written: nothing needs removing."""
    profile = tmp_path / device
    shutil.copytree(built_repository, profile)
    manifest = layout.read_manifest(built_repository)
    write_device_profile(profile, backbone, writer.RepositoryShape(
        manifest["backbone"]["embedding_dim"], len(manifest["models"]), manifest["backbone"]["pad_id"], device,
        manifest["backbone"]["max_length"]), [query for query, _ in ROUTES])
    built = {name: layout.read_config(profile / name / "config.pbtxt") for name in ONNX_MODELS}

    with LocalTritonServer.on_free_ports(profile, watchdog=False, log_verbose=1) as running:
        log = running.log_file.read_text(errors="replace")
        with RouterClient(running.grpc_url) as client:
            for name, config in built.items():
                served = json_format.ParseDict(_served_config(running.grpc_url, name), mc.ModelConfig(),
                                               ignore_unknown_fields=True)
                expected = _as_built_on_cpu(config)
                assert served.backend == "onnxruntime"
                assert [(g.kind, g.count) for g in served.instance_group] == \
                    [(g.kind, g.count) for g in expected.instance_group]
                for field in ("parameters", "model_warmup", "input", "output"):
                    assert getattr(served, field) == getattr(expected, field), (name, field)
                # Triton fills in defaults (pinned memory); what the build wrote must be served as written.
                assert served.optimization.execution_accelerators == expected.optimization.execution_accelerators
                assert served.dynamic_batching.max_queue_delay_microseconds == \
                    expected.dynamic_batching.max_queue_delay_microseconds
                if expected.dynamic_batching.preferred_batch_size:  # else the backend fills in max_batch_size
                    assert list(served.dynamic_batching.preferred_batch_size) == \
                        list(expected.dynamic_batching.preferred_batch_size)
                for warmup in config.model_warmup:
                    assert re.search(rf"model '{name}' instance .* is running warmup sample '{warmup.name}'", log), \
                        (name, warmup.name)
            routes = client.select([query for query, _ in ROUTES])
    assert [r.decision for r in routes] == [decision for _, decision in ROUTES]
    if device == "gpu-tensorrt":
        (trt,) = built[layout.EMBEDDING].optimization.execution_accelerators.gpu_execution_accelerator
        assert trt.name == "tensorrt"
    if device in layout.FP16_DEVICES:
        assert built[layout.EMBEDDING].model_warmup


def test_the_backend_build_is_cached_and_says_where_it_came_from():
    backend = find_backend()
    library = backend.directory / triton_backend.BACKEND_LIBRARY
    mtime = library.stat().st_mtime_ns
    assert build_backend().directory == backend.directory  # reused, not rebuilt
    assert library.stat().st_mtime_ns == mtime
    info = json.loads((backend.directory / triton_backend.BUILD_INFO).read_text())
    assert info["triton_release"] == "r24.10" and info["gpu"] is False
    assert info["sources"] == {s.repository: s.commit for s in triton_backend.SOURCES}
    assert info["origin"]["kind"] in ("local", "github")
    assert (backend.directory / "libonnxruntime.so.1").is_file()


def test_damaged_or_incomplete_sources_are_refused_by_name(tmp_path):
    for source in (*triton_backend.SOURCES, triton_backend.ORT_HEADER):
        (tmp_path / source.archive).write_bytes(b"not a tarball")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  {triton_backend.SOURCES[0].archive}\n")
    with pytest.raises(BackendError, match=rf"{triton_backend.SOURCES[0].archive}: checksum differs"):
        triton_backend._local_archives(tmp_path)
    (tmp_path / triton_backend.SOURCES[2].archive).unlink()
    with pytest.raises(BackendError, match=rf"{triton_backend.SOURCES[2].archive} missing; TRITON_BACKEND_SOURCES"):
        triton_backend._local_archives(tmp_path)


def test_build_backend_reports_bad_sources_without_a_traceback(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "model_selector.cli", "build-backend", "--force", "--sources",
                           str(tmp_path / "absent")], capture_output=True, text=True,
                          env={**os.environ, "MODEL_SELECTOR_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "onnxruntime_backend-r24.10.tar.gz" in done.stderr and "TRITON_BACKEND_SOURCES" in done.stderr


def test_a_missing_build_tool_gets_one_install_command(monkeypatch, tmp_path):
    real_which = shutil.which
    monkeypatch.setattr(triton_backend.shutil, "which", lambda tool, **kw: None if tool == "cmake" else
                        real_which(tool, **kw))
    monkeypatch.setitem(triton_backend.HEADER_PACKAGES, "rapidjson-dev", tmp_path / "absent" / "rapidjson.h")
    with pytest.raises(BackendError, match=r"needs cmake, rapidjson-dev: apt-get install -y cmake rapidjson-dev"):
        build_backend(force=True)


def test_serve_without_a_built_backend_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv("MODEL_SELECTOR_CACHE", str(tmp_path))
    with pytest.raises(ServeError, match=r"onnxruntime backend is not built .* run `model-selector build-backend`"):
        find_triton()
