"""The shipped data: MMLU-Pro routing tables and their held-out split, natural prompts and their
validation split."""

from __future__ import annotations

import csv
import difflib
import gzip
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from model_selector.core.config import DOMAINS
from model_selector.core.files import stable_bucket

# Package data beside this module; a wheel installs it unpacked, so these are plain paths.
SHIPPED_DATA = Path(str(resources.files("model_selector.data")))
DEFAULT_DATA_DIR = SHIPPED_DATA / "mmlu_pro"
DOMAIN_TOPICS = SHIPPED_DATA / "domain_topics" / "topics.yaml"
SHORT_QUESTIONS = SHIPPED_DATA / "short_questions" / "questions.jsonl"
NATURAL_PROMPTS_DIR = SHIPPED_DATA / "natural_prompts"
NATURAL_PROMPTS_FILE = "natural_prompts.jsonl.gz"
# Names for the shipped sets wherever a data path is asked for (`evaluate --data natural-prompts`).
SHIPPED_SETS = {"mmlu-pro": DEFAULT_DATA_DIR, "natural-prompts": NATURAL_PROMPTS_DIR}
log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4.0
NOMINAL_OUTPUT_TOKENS = 500.0
TEST_FRACTION = 0.2
NATURAL_VALIDATION_FRACTION = 0.25


def data_path(text: str) -> Path:
    """A shipped set by name (see SHIPPED_SETS), else a path."""
    return SHIPPED_SETS.get(text, Path(text))


def domain_ids(categories: list[str]) -> np.ndarray:
    """The index in DOMAINS of each category name."""
    index = {d: i for i, d in enumerate(DOMAINS)}
    return np.array([index[c] for c in categories], dtype=np.int64)


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
        return domain_ids(self.categories)


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


def data_files(data_dir: Path = DEFAULT_DATA_DIR) -> list[Path]:
    return [data_dir / "questions.jsonl.gz", data_dir / "correctness.csv.gz", data_dir / "output_chars.csv.gz"]


def load_mmlu_pro(models: list[str], data_dir: Path = DEFAULT_DATA_DIR) -> Benchmark:
    missing = [p.name for p in data_files(data_dir) if not p.is_file()]
    if missing:
        raise DataError(f"{data_dir}: no {', '.join(missing)}; a directory given as data must hold the MMLU-Pro "
                        "tables, like the project's data/mmlu_pro/")
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


@dataclass
class EvalSet:
    queries: list[str]
    categories: list[str] | None  # None when the data has none
    model_names: list[str]
    performance: np.ndarray  # [N, M]
    output_tokens: np.ndarray  # [N, M], nan where unknown

    def subset(self, rows: np.ndarray) -> EvalSet:
        rows = np.asarray(rows)
        return EvalSet([self.queries[i] for i in rows],
                       None if self.categories is None else [self.categories[i] for i in rows],
                       self.model_names, self.performance[rows], self.output_tokens[rows])

    def expected_output_tokens(self) -> dict[str, float]:
        return typical_output_tokens(self.output_tokens, self.model_names)


def typical_output_tokens(output_tokens: np.ndarray, model_names: list[str]) -> dict[str, float]:
    """Each model's mean answer length over the known counts of `output_tokens` [N, M]; models without
    any get the others' mean (their cost then follows the catalog price alone)."""
    known = ~np.isnan(output_tokens)
    fallback = float(output_tokens[known].mean()) if known.any() else NOMINAL_OUTPUT_TOKENS
    missing = [m for j, m in enumerate(model_names) if not known[:, j].any()]
    if missing:
        log.warning("no output_tokens for %s: assuming %.0f tokens per answer for their cost",
                    ", ".join(missing), fallback)
    return {m: float(output_tokens[known[:, j], j].mean()) if known[:, j].any() else fallback
            for j, m in enumerate(model_names)}


def _mean_known(values: np.ndarray) -> float:
    known = values[~np.isnan(values)]
    return float(known.mean()) if len(known) else math.nan


def load_records(path: Path, catalog: list[str]) -> EvalSet:
    """The reference's record format: one JSON line per query x model.

    Fields read: `query`, `model_name`, `performance` in [0, 1], optional `category`
    (unknown ones count as "other", as in the reference), `output_tokens` and
    `response_time` (seconds). Other fields of the reference's published benchmark
    (`ground_truth`, `task_name`, `metric`, `embedding_id`, `response`) are accepted and
    not used. Several records of one query and model (repeated runs) count with their mean."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file; expected benchmark records, one JSON line per query x model "
                        "(query, model_name, performance)")
    by_query: dict[str, dict] = {}
    unknown_models: set[str] = set()
    for where, record in json_lines(path, "a JSON object with query, model_name and performance"):
        for key in ("query", "model_name"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise DataError(f"{where}: `{key}` must be a non-empty string")
        perf = record.get("performance")
        if not isinstance(perf, (int, float)) or isinstance(perf, bool) or not 0.0 <= perf <= 1.0:
            raise DataError(f"{where}: `performance` must be a number in [0, 1], got {perf!r}")
        for key in ("output_tokens", "response_time"):  # response_time: seconds, as the reference writes it
            value = record.get(key)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
                raise DataError(f"{where}: `{key}` must be a non-negative number, got {value!r}")
        tokens = record.get("output_tokens")
        category = record.get("category")
        if category is not None and category not in DOMAINS:
            category = "other"  # the reference's rule for unknown categories
        if record["model_name"] not in catalog:
            unknown_models.add(record["model_name"])
            continue
        entry = by_query.setdefault(record["query"], {"category": category, "results": {}})
        entry["results"].setdefault(record["model_name"], []).append(
            (float(perf), math.nan if tokens is None else float(tokens)))
    if unknown_models:
        log.warning("%s: ignoring records of models not in the catalog: %s", path, ", ".join(sorted(unknown_models)))
    if not by_query:
        raise DataError(f"{path}: no records for any catalog model ({', '.join(catalog)})")
    incomplete = [(q, [m for m in catalog if m not in e["results"]]) for q, e in by_query.items()
                  if len(e["results"]) < len(catalog)]
    if incomplete:
        query, missing = incomplete[0]
        raise DataError(f"{path}: {len(incomplete)} queries lack results for some catalog models, e.g. "
                        f"{query[:60]!r} has none for {', '.join(missing)}; add those records or remove the "
                        "models from the catalog")
    repeated = sum(len(runs) > 1 for e in by_query.values() for runs in e["results"].values())
    if repeated:
        log.info("%s: %d query x model pairs have more than one record; each counts with its mean performance "
                 "and output tokens", path, repeated)
    queries = list(by_query)
    results = [[np.array(by_query[q]["results"][m], dtype=np.float64) for m in catalog] for q in queries]
    perf = np.array([[runs[:, 0].mean() for runs in row] for row in results], dtype=np.float32)
    tokens = np.array([[_mean_known(runs[:, 1]) for runs in row] for row in results], dtype=np.float32)
    categories = [by_query[q]["category"] for q in queries]
    return EvalSet(queries, categories if all(c is not None for c in categories) else None, catalog, perf, tokens)



@dataclass
class LabelledPrompts:
    """Prompts with their domain: what the domain classifier learns from real traffic, and is judged on."""

    queries: list[str]
    categories: list[str]  # one of DOMAINS
    sources: list[str]  # the dataset each came from ("" when the file does not say)

    def __len__(self) -> int:
        return len(self.queries)

    def subset(self, rows: np.ndarray) -> LabelledPrompts:
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        return LabelledPrompts([self.queries[i] for i in rows], [self.categories[i] for i in rows],
                               [self.sources[i] for i in rows])

    def category_ids(self) -> np.ndarray:
        return domain_ids(self.categories)


def json_lines(path: Path, expected: str) -> Iterator[tuple[str, dict]]:
    """("file:line", object) for each non-empty line of a JSONL file, gzip-compressed when it ends in .gz;
    a line that is not a JSON object stops the read with what is wrong and where."""
    path = Path(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected {expected}")
            yield where, record


def load_labelled_prompts(path: Path) -> LabelledPrompts:
    """A JSONL (optionally gzip-compressed) of prompts with their domain.

    Each line has `query` and `category` (or `domain`, as in `data/natural_prompts/`), one of
    the 14 domains, and optionally `source`. The reference's benchmark records (one line per
    query x model) are read too: each query counts once, with its first category."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected a JSONL of prompts with their domain "
                        '(one {"query": ..., "category": ...} per line)')
    seen: set[str] = set()
    queries, categories, sources = [], [], []
    for where, record in json_lines(path, 'a JSON object like {"query": ..., "category": ...}'):
        query = record.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DataError(f"{where}: `query` must be a non-empty string")
        category = record.get("category", record.get("domain"))
        if category is None:
            raise DataError(f"{where}: no `category` (or `domain`): each prompt needs its domain, one of "
                            f"{', '.join(DOMAINS)}")
        if category not in DOMAINS:
            close = difflib.get_close_matches(str(category), DOMAINS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the domains are {', '.join(DOMAINS)}"
            raise DataError(f"{where}: unknown category {category!r}{hint}")
        if query in seen:
            continue
        seen.add(query)
        queries.append(query)
        categories.append(category)
        sources.append(str(record.get("source", "")))
    if not queries:
        raise DataError(f"{path}: no prompts in the file")
    return LabelledPrompts(queries, categories, sources)


def holds_benchmark_records(path: Path) -> bool:
    """Whether a JSONL file holds benchmark records (query x model results) rather than labelled prompts:
    its first record names a `model_name`."""
    try:
        for _, record in json_lines(path, "a JSON object"):
            return "model_name" in record
    except DataError:
        return False  # the prompt loader names the line and the problem
    return False


def is_natural_validation(query: str) -> bool:
    """The fixed validation split of the natural prompts: 25% by a hash of the text."""
    return stable_bucket(f"natural-prompts:{query}", 1000) < NATURAL_VALIDATION_FRACTION * 1000


def load_natural_prompts(data_dir: Path = NATURAL_PROMPTS_DIR) -> tuple[LabelledPrompts, LabelledPrompts]:
    """The shipped natural prompts (`data/natural_prompts/`), split into training and validation."""
    path = Path(data_dir) / NATURAL_PROMPTS_FILE
    if not path.is_file():
        raise DataError(f"{data_dir}: no {NATURAL_PROMPTS_FILE}; a natural-prompts directory holds it, like the "
                        "project's data/natural_prompts/")
    prompts = load_labelled_prompts(path)
    validation = np.array([is_natural_validation(q) for q in prompts.queries])
    return prompts.subset(~validation), prompts.subset(validation)


def load_domain_topics(path: Path = DOMAIN_TOPICS) -> tuple[list[str], np.ndarray]:
    """The topic phrases of `data/domain_topics/topics.yaml` and their domain ids."""
    import yaml

    topics = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(topics, dict) or set(topics) != set(DOMAINS):
        raise DataError(f"{path}: expected one list of phrases for each of the 14 domains: {', '.join(DOMAINS)}")
    texts = [phrase for domain in DOMAINS for phrase in topics[domain]]
    labels = np.array([i for i, domain in enumerate(DOMAINS) for _ in topics[domain]], dtype=np.int64)
    return texts, labels


def load_short_questions(path: Path = SHORT_QUESTIONS) -> tuple[list[str], np.ndarray]:
    """Hand-written short questions with their domain: an evaluation set, never trained on."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["query"] for r in records], np.array([DOMAINS.index(r["category"]) for r in records], dtype=np.int64)


def is_test_question(question_id: int) -> bool:
    """The fixed held-out split: 20% of questions by a hash of their id."""
    return stable_bucket(f"mmlu-pro:{question_id}", 1000) < TEST_FRACTION * 1000


def split_train_test(bench: Benchmark) -> tuple[Benchmark, Benchmark]:
    test = np.array([is_test_question(int(q)) for q in bench.question_ids])
    return bench.subset(~test), bench.subset(test)


BENCHMARK_HUB_REPO = "abdallah1008/ml-selection-benchmark-data"
BENCHMARK_FILE = "validation_benchmark_with_gt.jsonl"


def download_benchmark(out_dir: Path, repo_id: str = BENCHMARK_HUB_REPO, filename: str = BENCHMARK_FILE,
                       cache_dir: Path | None = None) -> Path:
    """The reference's published benchmark (a Hugging Face dataset), copied to `out_dir`."""
    import shutil

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        cached = hf_hub_download(repo_id, filename, repo_type="dataset",
                                 cache_dir=str(cache_dir) if cache_dir else None)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise DataError(f"could not download {filename} from the Hugging Face dataset {repo_id} "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); fetch it elsewhere and pass "
                        "the file to `evaluate --data` or `build --data`") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / filename
    shutil.copyfile(cached, target)
    return target
