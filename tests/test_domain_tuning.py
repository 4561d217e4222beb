"""Domain tuning of the backbone: it pulls each domain's prompts together, and it is cached."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from model_selector.build.domain_tuning import DomainTuning, tune_backbone
from model_selector.build.export import PooledEncoder, resolve_backbone
from model_selector.core.config import DOMAINS
from model_selector.data.loaders import load_natural_prompts

pytestmark = pytest.mark.integration

SETTINGS = DomainTuning(epochs=2, learning_rate=1e-4, batch_size=16)


def _prompts(domains: tuple[str, ...], per_domain: int) -> tuple[list[str], np.ndarray]:
    train, _ = load_natural_prompts()
    texts, labels = [], []
    for domain in domains:
        picked = [q for q, c in zip(train.queries, train.categories) if c == domain][:per_domain]
        texts += picked
        labels += [DOMAINS.index(domain)] * len(picked)
    return texts, np.array(labels)


def _separation(backbone, texts: list[str], labels: np.ndarray) -> float:
    """Mean cosine within a domain minus mean cosine across domains."""
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(backbone.source / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=128)
    tokenizer.enable_padding(pad_id=backbone.pad_id)
    encoded = tokenizer.encode_batch(texts)
    with torch.no_grad():
        x = PooledEncoder(backbone)(torch.tensor([e.ids for e in encoded]),
                                    torch.tensor([e.attention_mask for e in encoded])).numpy()
    similarity = x @ x.T
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    return float(similarity[same].mean() - similarity[labels[:, None] != labels[None, :]].mean())


def test_domain_tuning_separates_the_domains_and_is_cached(tmp_path, caplog):
    texts, labels = _prompts(("computer science", "health", "law"), 24)
    weights = np.ones(len(texts))
    original = resolve_backbone("minilm")

    tuned = tune_backbone(original, texts, labels, weights, len(DOMAINS), tmp_path, SETTINGS)
    assert (tuned.source / "config.json").is_file() and (tuned.source / "tokenizer.json").is_file()
    assert (tuned.pooling, tuned.max_length, tuned.pad_id) == (original.pooling, original.max_length, original.pad_id)
    assert _separation(tuned, texts, labels) > _separation(original, texts, labels) + 0.05

    with caplog.at_level(logging.INFO, logger="model_selector.build.domain_tuning"):
        again = tune_backbone(original, texts, labels, weights, len(DOMAINS), tmp_path, SETTINGS)
    assert again.source == tuned.source and "from the cache" in caplog.text
    relabelled = tune_backbone(original, texts, labels[::-1].copy(), weights, len(DOMAINS), tmp_path,
                               DomainTuning(epochs=0))
    assert relabelled.source != tuned.source


def test_domain_tuning_refuses_labels_that_do_not_match_the_texts(tmp_path):
    with pytest.raises(ValueError, match="one label and one weight per text: 2 texts, 1 labels, 2 weights"):
        tune_backbone(resolve_backbone("minilm"), ["a", "b"], np.array([0]), np.ones(2), len(DOMAINS), tmp_path)
