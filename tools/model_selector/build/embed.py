"""Embed texts through the very ONNX graph that serves, with an on-disk cache.

The cache is keyed by the SHA-256 of the exported `model.onnx` (and its tokenizer), so a
different backbone or export never reuses stale vectors, and by the SHA-256 of each text.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from model_selector.core.files import default_cache_dir, sha256_files
from model_selector.core.tokenization import TextTokenizer

log = logging.getLogger(__name__)


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


class EmbeddingCache:
    """Append-only shards of (text key, vector) for one backbone fingerprint."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._vectors: dict[bytes, np.ndarray] = {}
        for shard in sorted(directory.glob("shard-*.npz")):
            with np.load(shard) as data:
                for key, vector in zip(data["keys"], data["vectors"]):
                    self._vectors[key.tobytes()] = vector

    def get(self, key: bytes) -> np.ndarray | None:
        return self._vectors.get(key)

    def add(self, keys: list[bytes], vectors: np.ndarray) -> None:
        if not keys:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        index = len(list(self.directory.glob("shard-*.npz")))
        tmp = self.directory / f".shard-{index:05d}.{os.getpid()}.npz"
        np.savez(tmp, keys=np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16),
                 vectors=vectors.astype(np.float32))
        tmp.rename(self.directory / f"shard-{index:05d}.npz")
        for key, vector in zip(keys, vectors):
            self._vectors[key] = vector


def session_options(threads: int = 0) -> ort.SessionOptions:
    """Several sessions take turns on the same cores: idle thread pools sleep instead of spinning."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxEmbedder:
    """Tokenize and embed in-process with the repository's tokenizer.json and model.onnx."""

    def __init__(self, model_path: Path, tokenizer_path: Path, pad_id: int, threads: int | None = None):
        self.session = ort.InferenceSession(str(model_path), session_options(threads or 0),
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = TextTokenizer(tokenizer_path, pad_id)
        self.key = sha256_files(model_path, tokenizer_path)[:16]

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        input_ids, attention_mask = self.tokenizer.encode(texts)
        return self.session.run(["embedding"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def embed(self, texts: list[str], cache_dir: Path | None = None, batch_size: int = 32,
              description: str = "embedding") -> np.ndarray:
        cache = EmbeddingCache((cache_dir or default_cache_dir()) / "embeddings" / self.key)
        keys = [text_key(t) for t in texts]
        todo = sorted({k: i for i, k in enumerate(keys) if cache.get(k) is None}.values())
        if todo:
            log.info("%s: %d of %d texts not cached, embedding them", description, len(todo), len(texts))
            # Similar lengths together: less padding per batch.
            lengths = self.tokenizer.lengths([texts[i] for i in todo])
            todo = [todo[j] for j in np.argsort(lengths, kind="stable")]
            flush_every = 2048
            pending_keys: list[bytes] = []
            pending: list[np.ndarray] = []
            for start in tqdm(range(0, len(todo), batch_size), desc=description, unit="batch"):
                rows = todo[start : start + batch_size]
                pending.append(self.embed_batch([texts[i] for i in rows]))
                pending_keys.extend(keys[i] for i in rows)
                if len(pending_keys) >= flush_every:
                    cache.add(pending_keys, np.concatenate(pending))
                    pending_keys, pending = [], []
            cache.add(pending_keys, np.concatenate(pending) if pending else np.zeros((0, 0)))
        return np.stack([cache.get(k) for k in keys]).astype(np.float32)
