"""Domain tuning: fine-tune the embedding backbone on labelled prompts before anything is trained on it.

A sentence-similarity model places "a for loop in JavaScript" near other how-to questions as
much as near code. A few epochs of classifying the training prompts' domains (through a linear
head on the pooled, normalised embedding, the way the served graph pools it) pull each domain
together; the head is then discarded and the classifier and selectors are trained on the tuned
backbone's embeddings as usual. The tuned weights are cached by a digest of everything that
shapes them, so a rebuild with the same inputs skips the minutes of training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from model_selector.build.export import Backbone
from model_selector.core.files import default_cache_dir, sha256_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainTuning:
    epochs: int = 2
    learning_rate: float = 5e-5
    batch_size: int = 32
    max_length: int = 128  # tokens per training text: most prompts fit, and a long one says early what it is about
    logit_scale: float = 20.0  # the head sees a unit vector; this gives its logits a usable range
    seed: int = 0


def _digest(backbone: Backbone, texts: list[str], labels: np.ndarray, weights: np.ndarray,
            settings: DomainTuning, classes: int) -> str:
    digest = hashlib.sha256()
    sources = sorted(p for p in backbone.source.iterdir() if p.is_file())
    digest.update(json.dumps([p.name for p in sources]).encode())
    digest.update(sha256_files(*sources).encode())
    digest.update(json.dumps({"settings": asdict(settings), "classes": classes, "pooling": backbone.pooling}).encode())
    digest.update(json.dumps(texts).encode())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    digest.update(np.asarray(weights, dtype=np.float64).tobytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _train(backbone: Backbone, texts: list[str], labels: np.ndarray, weights: np.ndarray, settings: DomainTuning,
           classes: int, out_dir: Path) -> None:
    import torch
    from tokenizers import Tokenizer
    from tqdm import tqdm

    from model_selector.build.export import PooledEncoder

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    # Minutes for MiniLM on a CPU; Qwen3-Embedding-0.6B wants a GPU (hours on CPU cores).
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = Tokenizer.from_file(str(backbone.source / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=settings.max_length)
    encoder = PooledEncoder(backbone).train().to(device)
    head = torch.nn.Linear(encoder.model.config.hidden_size, classes).to(device)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=settings.learning_rate)
    encoded = [e.ids for e in tokenizer.encode_batch(texts)]
    # Batches of similar length waste little on padding; their order is shuffled each epoch.
    by_length = np.argsort([len(ids) for ids in encoded], kind="stable")
    batches = [by_length[i:i + settings.batch_size] for i in range(0, len(by_length), settings.batch_size)]
    target = torch.tensor(labels, dtype=torch.long, device=device)
    weight = torch.tensor(weights, dtype=torch.float32, device=device)
    for epoch in range(settings.epochs):
        for batch in tqdm([batches[i] for i in rng.permutation(len(batches))],
                          desc=f"domain tuning, epoch {epoch + 1}/{settings.epochs}", unit="batch"):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), backbone.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
            logits = head(encoder(ids.to(device), mask.to(device)) * settings.logit_scale)
            loss = (torch.nn.functional.cross_entropy(logits, target[batch], reduction="none") * weight[batch]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    encoder.model.cpu().save_pretrained(str(out_dir))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (backbone.source / name).is_file():
            shutil.copyfile(backbone.source / name, out_dir / name)


def tune_backbone(backbone: Backbone, texts: list[str], labels: np.ndarray, weights: np.ndarray, classes: int,
                  cache_dir: Path | None = None, settings: DomainTuning = DomainTuning()) -> Backbone:
    """The backbone fine-tuned to tell the `classes` domains of `texts` apart (labels [N], sample weights
    [N]); its weights live in the cache, under a digest of the inputs, and are reused when present."""
    if not len(texts) == len(labels) == len(weights):
        raise ValueError(f"domain tuning needs one label and one weight per text: {len(texts)} texts, "
                         f"{len(labels)} labels, {len(weights)} weights")
    digest = _digest(backbone, texts, labels, weights, settings, classes)
    target = Path(cache_dir or default_cache_dir()) / "domain-tuned" / f"{backbone.name}-{digest}"
    if not (target / "config.json").is_file():
        log.info("domain tuning %s on %d labelled texts (%d epochs; --no-domain-tuning skips it); cached in %s",
                 backbone.name, len(texts), settings.epochs, target)
        work = target.with_name(target.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _train(backbone, texts, labels, weights, settings, classes, work)
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    else:
        log.info("domain-tuned %s from the cache: %s", backbone.name, target)
    return Backbone(backbone.name, target, backbone.pooling, backbone.max_length, backbone.pad_id, backbone.eos_token)
