"""The `initialize` arguments of a Triton python model, read with types and clear errors.

Triton hands a python model its config as JSON with every `parameters` entry as
`{"string_value": ...}`; files named there live in the model's version directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class ParameterError(ValueError):
    """A python model's config lacks a parameter it needs, or has one of the wrong kind."""


@dataclass(frozen=True)
class ModelParameters:
    model: str
    version_dir: Path
    values: dict[str, str]

    @classmethod
    def from_args(cls, args: dict) -> ModelParameters:
        config = json.loads(args["model_config"])
        values = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        return cls(config.get("name", args.get("model_name", "?")),
                   Path(args["model_repository"]) / args["model_version"], values)

    def text(self, key: str) -> str:
        if key not in self.values:
            raise ParameterError(f"{self.model}: config.pbtxt has no parameter {key!r}; rebuild the repository "
                                 "with `model-selector build`")
        return self.values[key]

    def integer(self, key: str) -> int:
        value = self.text(key)
        try:
            return int(value)
        except ValueError:
            raise ParameterError(f"{self.model}: parameter {key!r} is {value!r}, expected a whole number") from None

    def file(self, key: str) -> Path:
        """A file named by the parameter, in the model's version directory."""
        return self.version_dir / self.text(key)
