"""Every `config.pbtxt` of the model repository, written as ModelConfig protobufs, and the python
models' code (package data: `model_selector/triton_models/`) copied beside them. The layout itself
is `model_selector.core.layout`."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from model_selector.core.algorithms import ALGORITHMS
from model_selector.core.contract import (
    ENSEMBLE,
    ENSEMBLE_OUTPUTS,
    EXPECTED_TOKENS,
    STRING_OUTPUTS,
)
from model_selector.core.layout import DECISION, EMBEDDING, FP16_DEVICES, HEADS, PYTHON_MODELS, TOKENIZER, VERSION

MAX_BATCH_SIZE = 64
SELECTOR_MAX_BATCH_SIZE = 256
EMBEDDING_QUEUE_DELAY_US = 200
# Requests the tokenizer (the ensemble's entry) and the decision step may hold waiting;
# beyond it Triton refuses at once with UNAVAILABLE, so an overload burst is shed instead
# of queueing without bound. The models fed ragged token tensors (text_embedding,
# router_heads) get no queue policy: in Triton 2.51 a policy queue there stalls batches of
# unequal shapes in 0.5 s steps (soak p99 0.64 s -> 2.4-4.3 s, docs/robustness.md).
MAX_QUEUE_SIZE = 256
TRITON_MODELS = resources.files("model_selector") / "triton_models"


TRT_ENGINE_CACHE = "/tmp/model-selector-trt-cache"


@dataclass(frozen=True)
class RepositoryShape:
    embedding_dim: int
    num_models: int
    pad_id: int
    device: str = "gpu"  # one of DEVICES
    max_length: int = 512  # the backbone's token limit: the TensorRT shape profile's longest sequence
    embedding_instances: int = 1  # text_embedding instances (on one GPU, or CPU processes)
    embedding_threads: int = 0  # onnxruntime intra-op threads per embedding instance; 0: its default


def _tensor(container, name: str, dtype: int, dims: list[int]) -> None:
    container.add(name=name, data_type=dtype, dims=dims)


def _batching(config: mc.ModelConfig, delay_us: int = 0, bounded: bool = False) -> None:
    """Dynamic batching. Under load requests queue while a model is busy and batch anyway;
    a queue delay only makes a lone request wait, so only the embedding has one, and a short one."""
    config.dynamic_batching.max_queue_delay_microseconds = delay_us
    if bounded:
        config.dynamic_batching.default_queue_policy.max_queue_size = MAX_QUEUE_SIZE


def _onnx_config(name: str, shape: RepositoryShape, max_batch: int, threads: int = 0,
                 instances: int = 1) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, backend="onnxruntime", max_batch_size=max_batch)
    kind = mc.ModelInstanceGroup.KIND_CPU if shape.device == "cpu" else mc.ModelInstanceGroup.KIND_GPU
    config.instance_group.add(kind=kind, count=instances)
    if threads:
        config.parameters["intra_op_thread_count"].string_value = str(threads)
    return config


def _gpu_embedding_profile(config: mc.ModelConfig, shape: RepositoryShape) -> None:
    """Preferred batch sizes, warmup at the smallest and the largest shape, and for TensorRT the
    fp16 engine with one dynamic profile over batch and sequence length, cached on disk."""
    config.dynamic_batching.preferred_batch_size.extend([8, 16, 32, MAX_BATCH_SIZE])
    for batch, length in ((1, 16), (MAX_BATCH_SIZE, 128)):
        warmup = config.model_warmup.add(name=f"batch{batch}_len{length}", batch_size=batch)
        for name in ("input_ids", "attention_mask"):
            warmup.inputs[name].data_type = mc.TYPE_INT64
            warmup.inputs[name].dims.append(length)
            warmup.inputs[name].zero_data = True
    if shape.device == "gpu-tensorrt":
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")

        def profile(batch: int, length: int) -> str:
            return f"input_ids:{batch}x{length},attention_mask:{batch}x{length}"

        accelerator.parameters.update({
            "precision_mode": "FP16",
            "max_workspace_size_bytes": str(4 << 30),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": TRT_ENGINE_CACHE,
            "trt_profile_min_shapes": profile(1, 1),
            "trt_profile_opt_shapes": profile(32, 64),
            "trt_profile_max_shapes": profile(MAX_BATCH_SIZE, shape.max_length),
        })


def model_configs(shape: RepositoryShape) -> dict[str, mc.ModelConfig]:
    configs: dict[str, mc.ModelConfig] = {}

    tok = mc.ModelConfig(name=TOKENIZER, backend="python", max_batch_size=MAX_BATCH_SIZE)
    _tensor(tok.input, "query", mc.TYPE_STRING, [1])
    _tensor(tok.output, "input_ids", mc.TYPE_INT64, [-1])
    _tensor(tok.output, "attention_mask", mc.TYPE_INT64, [-1])
    tok.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    _batching(tok, bounded=True)
    tok.parameters["tokenizer_file"].string_value = "tokenizer.json"
    tok.parameters["pad_id"].string_value = str(shape.pad_id)
    tok.parameters["bucket"].string_value = "16"
    configs[TOKENIZER] = tok

    emb = _onnx_config(EMBEDDING, shape, MAX_BATCH_SIZE, shape.embedding_threads, shape.embedding_instances)
    _tensor(emb.input, "input_ids", mc.TYPE_INT64, [-1])
    _tensor(emb.input, "attention_mask", mc.TYPE_INT64, [-1])
    _tensor(emb.output, "embedding", mc.TYPE_FP32, [shape.embedding_dim])
    _batching(emb, EMBEDDING_QUEUE_DELAY_US)
    if shape.device in FP16_DEVICES:
        _gpu_embedding_profile(emb, shape)
    configs[EMBEDDING] = emb

    # Tiny graph: a thread pool costs more than it saves and competes with the embedding.
    heads = _onnx_config(HEADS, shape, SELECTOR_MAX_BATCH_SIZE, threads=1)
    _tensor(heads.input, "input_ids", mc.TYPE_INT64, [-1])
    _tensor(heads.input, "attention_mask", mc.TYPE_INT64, [-1])
    _tensor(heads.input, "embedding", mc.TYPE_FP32, [shape.embedding_dim])
    _tensor(heads.output, "domain_probs", mc.TYPE_FP32, [14])
    for name in (*(a.scores_output for a in ALGORITHMS.values()), EXPECTED_TOKENS):
        _tensor(heads.output, name, mc.TYPE_FP32, [shape.num_models])
    _batching(heads)
    configs[HEADS] = heads

    dec = mc.ModelConfig(name=DECISION, backend="python", max_batch_size=MAX_BATCH_SIZE)
    _tensor(dec.input, "domain_probs", mc.TYPE_FP32, [14])
    for name in (*(a.scores_output for a in ALGORITHMS.values()), EXPECTED_TOKENS):
        _tensor(dec.input, name, mc.TYPE_FP32, [shape.num_models])
    for name in ENSEMBLE_OUTPUTS:
        _tensor(dec.output, name, mc.TYPE_STRING if name in STRING_OUTPUTS else mc.TYPE_FP32, [1])
    dec.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    _batching(dec, bounded=True)
    dec.parameters["router_config"].string_value = "router.yaml"
    dec.parameters["selectors"].string_value = "selectors.json"
    configs[DECISION] = dec

    ens = mc.ModelConfig(name=ENSEMBLE, platform="ensemble", max_batch_size=MAX_BATCH_SIZE)
    _tensor(ens.input, "query", mc.TYPE_STRING, [1])
    for name in ENSEMBLE_OUTPUTS:
        _tensor(ens.output, name, mc.TYPE_STRING if name in STRING_OUTPUTS else mc.TYPE_FP32, [1])
    steps = ens.ensemble_scheduling.step

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> None:
        s = steps.add(model_name=model, model_version=-1)
        s.input_map.update(inputs)
        s.output_map.update(outputs)

    step(TOKENIZER, {"query": "query"}, {"input_ids": "_input_ids", "attention_mask": "_attention_mask"})
    step(EMBEDDING, {"input_ids": "_input_ids", "attention_mask": "_attention_mask"}, {"embedding": "_embedding"})
    scores = {name: f"_{name}" for name in (*(a.scores_output for a in ALGORITHMS.values()), EXPECTED_TOKENS)}
    step(HEADS, {"input_ids": "_input_ids", "attention_mask": "_attention_mask", "embedding": "_embedding"},
         {"domain_probs": "_domain_probs", **scores})
    step(DECISION, {"domain_probs": "_domain_probs", **scores}, {name: name for name in ENSEMBLE_OUTPUTS})
    configs[ENSEMBLE] = ens
    return configs


def write_configs(repository: Path, shape: RepositoryShape) -> None:
    for name, config in model_configs(shape).items():
        (repository / name / VERSION).mkdir(parents=True, exist_ok=True)
        (repository / name / "config.pbtxt").write_text(text_format.MessageToString(config))


def copy_python_models(repository: Path, names: tuple[str, ...] = PYTHON_MODELS) -> None:
    """Put the python models' code into `repository`."""
    for name in names:
        target = repository / name / VERSION / "model.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((TRITON_MODELS / name / "model.py").read_bytes())
