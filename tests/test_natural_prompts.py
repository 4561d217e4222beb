"""The labelled-prompt loader (natural prompts, `evaluate --data` prompt sets) and its errors."""

from __future__ import annotations

import gzip
import json

import pytest

from model_selector.core.config import DOMAINS
from model_selector.data.loaders import (
    NATURAL_PROMPTS_DIR,
    DataError,
    holds_benchmark_records,
    is_natural_validation,
    load_labelled_prompts,
    load_natural_prompts,
)


def _write(tmp_path, lines: list, name: str = "prompts.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


GOOD = {"query": "How do I reverse a list in Python?", "category": "computer science"}


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", r"prompts.jsonl:2: not valid JSON \(Expecting property name"),
    ('["a list"]', r"prompts.jsonl:2: expected a JSON object like"),
    ({"category": "law"}, r"prompts.jsonl:2: `query` must be a non-empty string"),
    ({"query": "   ", "category": "law"}, r"prompts.jsonl:2: `query` must be a non-empty string"),
    ({"query": "What is a tort?"}, r"prompts.jsonl:2: no `category` \(or `domain`\).*one of biology, business"),
    ({"query": "Sort a list", "category": "computer_science"},
     r"prompts.jsonl:2: unknown category 'computer_science'; did you mean 'computer science'\?"),
    ({"query": "Tell me a joke", "category": "comedy"}, r"prompts.jsonl:2: unknown category 'comedy'; the domains are"),
])
def test_malformed_lines_name_file_line_and_problem(tmp_path, bad_line, message):
    path = _write(tmp_path, [GOOD, bad_line])
    with pytest.raises(DataError, match=message):
        load_labelled_prompts(path)


def test_missing_or_empty_files_say_what_is_expected(tmp_path):
    with pytest.raises(DataError, match=r"nope.jsonl: no such file; expected a JSONL of prompts with their domain"):
        load_labelled_prompts(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"empty.jsonl: no prompts in the file"):
        load_labelled_prompts(_write(tmp_path, [""], "empty.jsonl"))
    with pytest.raises(DataError, match=r"no natural_prompts.jsonl.gz; a natural-prompts directory holds it"):
        load_natural_prompts(tmp_path)


def test_gzip_domain_key_sources_and_duplicates(tmp_path):
    path = tmp_path / "prompts.jsonl.gz"
    lines = [{"query": "What is GDP?", "domain": "economics", "source": "mine"},
             {"query": "What is GDP?", "category": "economics"},
             {"query": "Write a haiku", "category": "other"}]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(line) for line in lines) + "\n")
    prompts = load_labelled_prompts(path)
    assert prompts.queries == ["What is GDP?", "Write a haiku"]
    assert prompts.categories == ["economics", "other"] and prompts.sources == ["mine", ""]
    assert prompts.category_ids().tolist() == [DOMAINS.index("economics"), DOMAINS.index("other")]


def test_reference_records_are_told_apart_from_prompt_sets(tmp_path):
    records = _write(tmp_path, [{"query": "q", "category": "math", "model_name": "m", "performance": 1.0}], "r.jsonl")
    assert holds_benchmark_records(records)
    assert not holds_benchmark_records(_write(tmp_path, [GOOD]))
    # Records read as prompts: each query once, with its category.
    assert load_labelled_prompts(records).queries == ["q"]


def test_shipped_natural_prompts_split_into_fixed_disjoint_parts():
    train, validation = load_natural_prompts()
    assert len(train) + len(validation) == 4114
    assert 0.22 < len(validation) / 4114 < 0.28
    assert not set(train.queries) & set(validation.queries)
    assert all(is_natural_validation(q) for q in validation.queries)
    assert not any(is_natural_validation(q) for q in train.queries)
    assert set(validation.categories) == set(DOMAINS)  # every domain is measured, philosophy too
    assert (NATURAL_PROMPTS_DIR / "SOURCES.md").is_file()  # provenance and licences ship with the data


def test_a_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"query": "caf\xe9", "category": "other"}\n')
    with pytest.raises(DataError, match=r"prompts.jsonl:2: not UTF-8 text \(invalid continuation byte at byte 14\)"):
        load_labelled_prompts(path)


def test_evaluate_names_the_shipped_sets_so_a_wheel_user_needs_no_path():
    from model_selector.cli.main import build_parser
    from model_selector.data.loaders import DEFAULT_DATA_DIR, NATURAL_PROMPTS_DIR

    parse = build_parser().parse_args
    assert parse(["evaluate", "--data", "natural-prompts"]).data == NATURAL_PROMPTS_DIR
    assert parse(["evaluate", "--data", "mmlu-pro"]).data == parse(["evaluate"]).data == DEFAULT_DATA_DIR
    assert parse(["evaluate", "--data", "mine.jsonl"]).data.name == "mine.jsonl"
    assert (NATURAL_PROMPTS_DIR / "natural_prompts.jsonl.gz").is_file() and (DEFAULT_DATA_DIR / "models.json").is_file()
