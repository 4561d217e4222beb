"""Text -> padded token tensors, shared by the `tokenizer` Triton model and in-process use.

Rows are padded to a common length rounded up to a bucket (a multiple of `bucket`
tokens), so that requests of similar length produce tensors of the same shape and the
embedding model's dynamic batcher can merge them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

DEFAULT_BUCKET = 16
# Text beyond this many characters per token of the backbone's limit cannot reach the model
# anyway; cutting it first bounds the tokenizer's work for a huge query (1 MB: microseconds).
MAX_CHARS_PER_TOKEN = 16


def token_counts(input_ids: np.ndarray, attention_mask: np.ndarray, vocab_size: int):
    """[rows, vocab] count of each token id among the real (unmasked) positions."""
    from scipy import sparse  # here, not at the top: the tokenizer python model must not need scipy

    rows, cols = np.nonzero(attention_mask)
    counts = sparse.coo_matrix((np.ones(len(rows), dtype=np.float64), (rows, input_ids[rows, cols])),
                               shape=(input_ids.shape[0], vocab_size))
    return counts.tocsr()  # duplicates summed


class TextTokenizer:
    def __init__(self, tokenizer_json: str | Path, pad_id: int, bucket: int = DEFAULT_BUCKET):
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.no_padding()
        truncation = self.tokenizer.truncation
        if not truncation:
            raise ValueError(f"{tokenizer_json}: truncation is not set; rebuild the repository")
        self.max_length = int(truncation["max_length"])
        self.max_chars = MAX_CHARS_PER_TOKEN * self.max_length
        self.pad_id = pad_id
        self.bucket = bucket

    def padded_length(self, longest: int) -> int:
        return min(max(self.bucket, -(-longest // self.bucket) * self.bucket), self.max_length)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """input_ids and attention_mask, both int64 [len(texts), padded length]."""
        encodings = self.tokenizer.encode_batch([t[: self.max_chars] for t in texts], add_special_tokens=True)
        length = self.padded_length(max((len(e.ids) for e in encodings), default=1))
        input_ids = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids = encoding.ids[:length]
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_counts(self, texts: list[str], chunk: int = 1024):
        """[len(texts), vocab] sparse count of each token id in each text, as served (truncated)."""
        from scipy import sparse

        parts = [token_counts(*self.encode(texts[i:i + chunk]), self.vocab_size) for i in range(0, len(texts), chunk)]
        return sparse.vstack(parts).tocsr() if parts else sparse.csr_matrix((0, self.vocab_size))

    def lengths(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch([t[: self.max_chars] for t in texts],
                                                                add_special_tokens=True)]
