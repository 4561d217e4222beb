"""The runtime copy of a model repository that `serve` hands to tritonserver.

The ONNX models keep their production config; on a backend build without GPU support their
instances become KIND_CPU. The python backend stub embeds an isolated interpreter that
ignores PYTHONPATH, so each python model starts with a short header that puts this
environment's site-packages on `sys.path`. The repository itself is left untouched.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from model_selector.core.layout import VERSION, read_config

SITE_PACKAGES_ENV = "MODEL_SELECTOR_SITE_PACKAGES"
SYS_PATH_HEADER = f'''# Added by `model-selector serve`: the backend stub's embedded Python ignores PYTHONPATH.
import os as _os, site as _site, sys as _sys
_before = list(_sys.path)
for _dir in _os.environ.get("{SITE_PACKAGES_ENV}", "").split(_os.pathsep):
    if _dir:
        _site.addsitedir(_dir)
_sys.path[:] = [_p for _p in _sys.path if _p not in _before] + _before
del _os, _site, _sys, _before
'''


def _link_files(source: Path, target: Path, skip: set[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name not in skip and item.name != "__pycache__":
            (target / item.name).symlink_to(item.resolve())


def materialise(repository: Path, runtime: Path, gpu: bool = False) -> Path:
    """Write the local runtime copy of `repository` under `runtime`; returns the models directory.

    ONNX models keep their production config, on a backend without GPU support with KIND_CPU
    instances; python models get the site-packages header."""
    models = runtime / "models"
    for model_dir in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        config = read_config(model_dir / "config.pbtxt")
        target = models / model_dir.name
        (target / VERSION).mkdir(parents=True)
        skip = set()
        if config.backend == "onnxruntime" and not gpu:
            for group in config.instance_group:
                if group.kind == mc.ModelInstanceGroup.KIND_GPU:
                    group.kind = mc.ModelInstanceGroup.KIND_CPU
                    group.ClearField("gpus")
        elif config.backend == "python":
            (target / VERSION / "model.py").write_text(SYS_PATH_HEADER + (model_dir / VERSION / "model.py").read_text())
            skip.add("model.py")
        _link_files(model_dir / VERSION, target / VERSION, skip=skip)
        (target / "config.pbtxt").write_text(text_format.MessageToString(config))
    return models
