"""The shipped MMLU-Pro routing tables (`data/mmlu_pro/`) and the held-out split."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DOMAINS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = PROJECT_ROOT / "data" / "mmlu_pro"
CHARS_PER_TOKEN = 4.0
TEST_FRACTION = 0.2


class DataError(ValueError):
    """A data file that cannot be used, with what is wrong and where."""


@dataclass
class Benchmark:
    """Per-question results: one row per question, one column per model."""

    question_ids: np.ndarray  # [N] int
    queries: list[str]  # question, then one "A. option" line per option
    questions: list[str]  # question text alone
    categories: list[str]  # one of DOMAINS
    model_names: list[str]
    performance: np.ndarray  # [N, M] float32 in [0, 1], nan = no result
    output_tokens: np.ndarray  # [N, M] float32, nan = no result

    def __len__(self) -> int:
        return len(self.question_ids)

    def subset(self, rows: np.ndarray) -> Benchmark:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return Benchmark(
            self.question_ids[rows],
            [self.queries[i] for i in rows],
            [self.questions[i] for i in rows],
            [self.categories[i] for i in rows],
            list(self.model_names),
            self.performance[rows],
            self.output_tokens[rows],
        )

    def complete_rows(self) -> np.ndarray:
        """Rows where every model has a result."""
        return ~np.isnan(self.performance).any(axis=1)

    def category_ids(self) -> np.ndarray:
        index = {d: i for i, d in enumerate(DOMAINS)}
        return np.array([index[c] for c in self.categories], dtype=np.int64)


def _read_table(path: Path, models: list[str]) -> tuple[list[int], np.ndarray]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        missing = [m for m in models if m not in header]
        if missing:
            raise DataError(f"{path}: no column for model(s) {missing}; available: {', '.join(header[2:])}")
        cols = [header.index(m) for m in models]
        ids, rows = [], []
        for line_no, row in enumerate(reader, start=2):
            try:
                ids.append(int(row[0]))
                rows.append([float(row[c]) if row[c] != "" else np.nan for c in cols])
            except (ValueError, IndexError) as err:
                raise DataError(f"{path}:{line_no}: malformed row ({err})") from None
    return ids, np.asarray(rows, dtype=np.float32)


def file_checksum(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def data_files(data_dir: Path = DEFAULT_DATA_DIR) -> list[Path]:
    return [data_dir / "questions.jsonl.gz", data_dir / "correctness.csv.gz", data_dir / "output_chars.csv.gz"]


def load_mmlu_pro(models: list[str], data_dir: Path = DEFAULT_DATA_DIR) -> Benchmark:
    questions_path, correctness_path, chars_path = data_files(data_dir)
    ids, queries, texts, categories = [], [], [], []
    with gzip.open(questions_path, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            try:
                record = json.loads(line)
                ids.append(int(record["question_id"]))
                queries.append(record["query"])
                texts.append(record["question"])
                categories.append(record["category"])
            except (json.JSONDecodeError, KeyError, ValueError) as err:
                raise DataError(f"{questions_path}:{line_no}: malformed record ({err!r})") from None
            if categories[-1] not in DOMAINS:
                raise DataError(f"{questions_path}:{line_no}: unknown category {categories[-1]!r}")
    perf_ids, performance = _read_table(correctness_path, models)
    chars_ids, chars = _read_table(chars_path, models)
    if perf_ids != ids or chars_ids != ids:
        raise DataError(f"{data_dir}: questions.jsonl, correctness.csv and output_chars.csv list different questions")
    return Benchmark(np.array(ids), queries, texts, categories, list(models), performance, chars / CHARS_PER_TOKEN)


def is_test_question(question_id: int) -> bool:
    """The fixed held-out split: 20% of questions by a hash of their id."""
    digest = hashlib.sha256(f"mmlu-pro:{question_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < TEST_FRACTION * 1000


def split_train_test(bench: Benchmark) -> tuple[Benchmark, Benchmark]:
    test = np.array([is_test_question(int(q)) for q in bench.question_ids])
    return bench.subset(~test), bench.subset(test)
