"""Checksums and the per-user cache directory, shared by the build, the data and the backend build."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$MODEL_SELECTOR_CACHE, else $XDG_CACHE_HOME/model-selector, else ~/.cache/model-selector."""
    base = os.environ.get("MODEL_SELECTOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "model-selector"
    )
    return Path(base)


def sha256_files(*paths: Path) -> str:
    """The sha256 hex digest of the files' contents, in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def stable_bucket(key: str, buckets: int) -> int:
    """A bucket in [0, buckets) from a hash of `key`: the same on every machine and run, unlike hash()."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big") % buckets
