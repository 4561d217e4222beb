"""The model repository's layout: the model names, the manifest `build` writes, reading a
`config.pbtxt`, and the check that a repository is completely built.

```
model_selector/     ensemble: query -> the six outputs
tokenizer/          python: query -> input_ids, attention_mask (padded to a bucket)
text_embedding/     onnxruntime: input_ids, attention_mask -> embedding (pooled, L2-normalised)
router_heads/       onnxruntime: input_ids, attention_mask, embedding -> domain_probs [14], one
                    score column per catalog model for every selector algorithm (predicted
                    quality) and expected_output_tokens [M]: the domain classifier and every
                    selector in one graph
decision/           python: domain_probs + scores + expected_output_tokens -> selected_model,
                    decision, ... (router.yaml)
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc

TOKENIZER = "tokenizer"
MANIFEST = "manifest.json"
EMBEDDING = "text_embedding"
HEADS = "router_heads"
DECISION = "decision"
ONNX_MODELS = (EMBEDDING, HEADS)
PYTHON_MODELS = (TOKENIZER, DECISION)
VERSION = "1"

# Production profiles of the ONNX models (local serving always runs them on CPU):
#   cpu           KIND_CPU
#   gpu           KIND_GPU, CUDA execution provider, fp32 embedding
#   gpu-fp16      KIND_GPU, CUDA execution provider, fp16 embedding, warmup, preferred batch sizes
#   gpu-tensorrt  KIND_GPU, TensorRT execution provider in fp16 with shape profiles and an
#                 engine cache (CUDA for what TensorRT cannot run), fp16 embedding, warmup
DEVICES = ("cpu", "gpu", "gpu-fp16", "gpu-tensorrt")
FP16_DEVICES = ("gpu-fp16", "gpu-tensorrt")


class BrokenRepository(ValueError):
    """A repository with a missing or unreadable build output."""


class NotBuilt(ValueError):
    """A path where `model-selector build` wrote no model repository."""


def read_manifest(repository: Path) -> dict:
    """What `build` recorded about the repository: backbone, models, data, metrics."""
    path = repository / MANIFEST
    if not path.is_file():
        raise NotBuilt(f"{repository}: not a built model repository (no {MANIFEST}); run `model-selector build` "
                       "first or pass --repository with the path of one")
    return json.loads(path.read_text())


def read_config(path: Path) -> mc.ModelConfig:
    return read_config_text(path.read_text())


def read_config_text(text: str) -> mc.ModelConfig:
    # Imported here: the Triton python models import core, and their image has no tritonclient.
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _problem_with(path: Path, kind: str) -> str | None:
    """What is wrong with one build output, or None."""
    if not path.is_file():
        return f"{path} is missing"
    try:
        if kind == "onnx":
            import onnx

            onnx.load(str(path), load_external_data=False)
        elif kind == "tokenizer_file":
            from tokenizers import Tokenizer

            Tokenizer.from_file(str(path))
        elif kind == "router_config":
            from model_selector.core.config import load_config

            load_config(path)
        elif kind == "selectors":
            json.loads(path.read_text())
    except Exception as err:  # each loader raises its own kind of error
        return f"{path} is unreadable ({str(err).splitlines()[0][:200] if str(err) else type(err).__name__})"
    return None


def check_built(repository: Path) -> None:
    """Refuse a repository with a missing or corrupt build output, naming the file and the fix."""
    if not repository.is_dir():
        raise BrokenRepository(f"{repository}: no such model repository; run `model-selector build` first")
    outputs: list[tuple[Path, str]] = []
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = read_config(config_path)
        version_dir = config_path.parent / VERSION
        if config.backend == "onnxruntime":
            outputs.append((version_dir / "model.onnx", "onnx"))
        elif config.backend == "python":
            outputs.append((version_dir / "model.py", "python"))
        outputs += [(version_dir / p.string_value, key) for key, p in config.parameters.items()
                    if key in ("tokenizer_file", "router_config", "selectors")]
    problems = [problem for path, kind in outputs if (problem := _problem_with(path, kind))]
    if problems:
        raise BrokenRepository(f"broken build output: {'; '.join(problems)}. Run `model-selector build --force` "
                               "to rebuild the repository (or fix the file named)")
