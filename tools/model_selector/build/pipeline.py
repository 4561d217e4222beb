"""`model-selector build`: export the backbone, embed the training data through it, train,
convert to ONNX and write the whole model repository with its manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from model_selector.build import onnx_graphs
from model_selector.build import repository as writer
from model_selector.core import layout
from model_selector.core.config import DOMAINS, RouterConfig, load_config
from model_selector.core.files import sha256_files
from model_selector.core.layout import BrokenRepository, check_built
from model_selector.data.loaders import (
    DEFAULT_DATA_DIR,
    DOMAIN_TOPICS,
    NATURAL_PROMPTS_DIR,
    NATURAL_PROMPTS_FILE,
    Benchmark,
    EvalSet,
    LabelledPrompts,
    data_files,
    load_domain_topics,
    load_labelled_prompts,
    load_mmlu_pro,
    load_natural_prompts,
    load_records,
    load_short_questions,
    split_train_test,
    typical_output_tokens,
)

if TYPE_CHECKING:
    from model_selector.build.export import Backbone
    from model_selector.build.train import DomainClassifier

log = logging.getLogger(__name__)

BUILD_FORMAT = 4
# The code whose changes change what a build writes: these subpackages of model_selector.
BUILD_CODE = ("build", "core", "data", "triton_models")
# Each domain topic phrase counts as this many training questions (checked on held-out and short questions).
TOPIC_WEIGHT = 20.0
# In the natural expert, MMLU-Pro's queries, its questions and the topic phrases each weigh this share of
# the natural prompts (class-balanced): more teaches it exam phrasing, less leaves thin domains thinner.
NATURAL_AUX_SHARE = 0.05
# In the gate, each natural prompt counts twice: there are fewer of them than exam questions.
GATE_NATURAL_WEIGHT = 2.0
# Added to the natural expert's computer-science log-odds. Chat traffic is mostly about code (71% of a
# sample of Chatbot Arena prompts) where the natural training prompts are 16%; the full prior
# correction, log(0.71 / 0.16) = 1.5, costs too much precision on other traffic. Cross-validated on the
# training prompts with the backbone domain-tuned inside each fold (3 folds), 0 / 0.5 / 0.75 give accuracy
# 0.848 / 0.849 / 0.847 and computer-science recall 0.955 / 0.967 / 0.973, precision 0.929 / 0.916 / 0.898.
CODE_PRIOR_SHIFT = 0.5
# Domain tuning learns from the natural training prompts and this many MMLU-Pro questions at this weight:
# enough exam phrasing to keep MMLU-Pro's domains, few enough that the prompts lead.
DOMAIN_TUNING_EXAM_QUESTIONS = 2000
DOMAIN_TUNING_EXAM_WEIGHT = 0.5
LIBRARIES = ("model-selector", "numpy", "onnx", "onnxruntime", "scikit-learn", "tokenizers", "torch", "transformers")


@dataclass(frozen=True)
class BuildOptions:
    embedding: str = "minilm"
    config: Path = Path("configs/router.yaml")
    repository: Path = Path("model_repository")
    data_dir: Path = DEFAULT_DATA_DIR
    natural_prompts_dir: Path = NATURAL_PROMPTS_DIR
    device: str = "gpu"
    embedding_instances: int = 1
    embedding_threads: int = 0
    cache_dir: Path | None = None
    records: Path | None = None  # the user's benchmark records for the selectors (default: MMLU-Pro)
    holdout: bool = False  # keep the held-out splits out of training, to measure on them
    domain_tuning: bool = True  # fine-tune the backbone on the training prompts' domains first
    force: bool = False


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _inputs_fingerprint(options: BuildOptions, backbone_source: Path) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": BUILD_FORMAT, "embedding": options.embedding, "device": options.device,
                              "holdout": options.holdout, "domain_tuning": options.domain_tuning,
                              "embedding_instances": options.embedding_instances,
                              "embedding_threads": options.embedding_threads,
                              "version": _versions()["model-selector"]}).encode())
    inputs = [Path(options.config), DOMAIN_TOPICS, *data_files(options.data_dir),
              Path(options.natural_prompts_dir) / NATURAL_PROMPTS_FILE]
    if options.records:
        inputs.append(Path(options.records))
    digest.update(sha256_files(*inputs).encode())
    for name in ("config.json", "tokenizer.json"):
        digest.update((backbone_source / name).read_bytes())
    package = Path(__file__).resolve().parents[1]
    for source in sorted(p for room in BUILD_CODE for p in (package / room).rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _save_onnx(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))


def _balanced(labels: np.ndarray, total: float) -> np.ndarray:
    """Sample weights that give every present class the same share of `total`."""
    per_class = 1.0 / np.maximum(np.bincount(labels, minlength=len(DOMAINS)), 1)
    weights = per_class[labels]
    return weights * total / weights.sum()


def train_classifier(embedder, train: Benchmark, queries: np.ndarray, questions: np.ndarray,
                     natural: LabelledPrompts, cache_dir: Path | None) -> DomainClassifier:
    """The exam expert learns from MMLU-Pro question-plus-options and question-only text and the
    domain topic phrases (weighted up); the natural expert from the natural prompts, with a little
    of the former (class-balanced) for domains the prompts cover thinly; the gate tells the
    exam questions (with options) from everything else."""
    from model_selector.build.train import LabelledRows, train_domain_classifier

    log.info("training the domain classifier on %d MMLU-Pro questions and %d natural prompts",
             len(train), len(natural))
    tokenizer = embedder.tokenizer
    topic_texts, topic_labels = load_domain_topics()
    labels, natural_labels = train.category_ids(), natural.category_ids()
    parts = {
        "queries": (tokenizer.token_counts(train.queries), queries, labels),
        "questions": (tokenizer.token_counts(train.questions), questions, labels),
        "topics": (tokenizer.token_counts(topic_texts),
                   embedder.embed(topic_texts, cache_dir, description="domain topics"), topic_labels),
        "natural": (tokenizer.token_counts(natural.queries),
                    embedder.embed(natural.queries, cache_dir, description="natural prompts"), natural_labels),
    }

    def rows(part: str, weights: np.ndarray, labels: np.ndarray | None = None) -> LabelledRows:
        counts, x, own_labels = parts[part]
        return LabelledRows(counts, x, own_labels if labels is None else labels, weights)

    exam = LabelledRows.stack([rows("queries", np.ones(len(labels))), rows("questions", np.ones(len(labels))),
                               rows("topics", np.full(len(topic_labels), TOPIC_WEIGHT))])
    aux = NATURAL_AUX_SHARE * len(natural)
    natural_rows = LabelledRows.stack([
        rows("natural", np.ones(len(natural))), rows("queries", _balanced(labels, aux)),
        rows("questions", _balanced(labels, aux)), rows("topics", np.full(len(topic_labels), aux / len(topic_labels)))])
    gate = LabelledRows.stack([
        rows("queries", np.ones(len(labels)), np.ones(len(labels), dtype=np.int64)),
        *[rows(part, np.full(len(parts[part][2]), weight), np.zeros(len(parts[part][2]), dtype=np.int64))
          for part, weight in (("questions", 1.0), ("topics", 1.0), ("natural", GATE_NATURAL_WEIGHT))]])
    shift = np.zeros(len(DOMAINS))
    shift[DOMAINS.index("computer science")] = CODE_PRIOR_SHIFT
    return train_domain_classifier(exam, natural_rows, gate, natural_prior_shift=shift)


def _domain_tuned(backbone: Backbone, fit: Benchmark, natural_fit: LabelledPrompts,
                  cache_dir: Path | None) -> Backbone:
    """The backbone tuned on the natural training prompts and a sample of MMLU-Pro question texts
    (at half weight), the same two sources the classifier learns from."""
    from model_selector.build.domain_tuning import tune_backbone

    exam = np.sort(np.random.default_rng(0).permutation(len(fit))[:DOMAIN_TUNING_EXAM_QUESTIONS])
    texts = list(natural_fit.queries) + [fit.questions[i] for i in exam]
    labels = np.concatenate([natural_fit.category_ids(), fit.category_ids()[exam]])
    weights = np.concatenate([np.ones(len(natural_fit)), np.full(len(exam), DOMAIN_TUNING_EXAM_WEIGHT)])
    return tune_backbone(backbone, texts, labels, weights, len(DOMAINS), cache_dir)


def _natural_validation_metrics(config: RouterConfig, classifier: DomainClassifier, embedder,
                                validation: LabelledPrompts, cache_dir: Path | None) -> dict[str, float]:
    """Domain accuracy, computer-science recall and the share matching no decision on the natural
    prompts held out from training."""
    from model_selector.core.decision_engine import DecisionEngine

    x = embedder.embed(validation.queries, cache_dir, description="natural validation prompts")
    probs = np.concatenate([classifier.predict(*embedder.tokenizer.encode(validation.queries[i:i + 256]),
                                               x[i:i + 256]) for i in range(0, len(validation), 256)])
    truth, predicted = validation.category_ids(), probs.argmax(axis=1)
    code = truth == DOMAINS.index("computer science")
    engine = DecisionEngine(config, config.model_names, {m: 0.0 for m in config.model_names})
    unrouted = np.mean([engine.match(p)[0] is None for p in probs])
    return {"domain_accuracy_natural_validation": round(float((predicted == truth).mean()), 4),
            "computer_science_recall_natural_validation": round(float((predicted[code] == truth[code]).mean()), 4),
            "unrouted_share_natural_validation": round(float(unrouted), 4)}


def _export_fp16(backbone, embedding_path: Path, tokenizer_path: Path, probe: list[str]) -> float:
    """Replace the served embedding graph with its fp16 export. Everything downstream was trained on
    the fp32 graph's vectors; returns the lowest cosine between the two on `probe` texts."""
    from model_selector.build.embed import OnnxEmbedder
    from model_selector.build.export import export_onnx

    fp32 = OnnxEmbedder(embedding_path, tokenizer_path, backbone.pad_id).embed_batch(probe)
    export_onnx(backbone, embedding_path, fp16=True)
    fp16 = OnnxEmbedder(embedding_path, tokenizer_path, backbone.pad_id).embed_batch(probe)
    agreement = float((fp32 * fp16).sum(axis=1).min())
    log.info("fp16 embedding graph: lowest cosine to the fp32 one on %d texts: %.5f", len(probe), agreement)
    if agreement < 0.99:
        raise RuntimeError(f"the fp16 export of {backbone.name} disagrees with fp32 (cosine {agreement:.4f}); "
                           "build with --device gpu instead")
    return round(agreement, 5)


def write_device_profile(repository: Path, backbone, shape: writer.RepositoryShape, probe: list[str]) -> dict[str, float]:
    """The part of a build that `--device` decides: the fp16 embedding graph where the profile serves
    one, and every model's config. Returns the fp16 graph's agreement with fp32 where it applies."""
    metrics = {}
    if shape.device in layout.FP16_DEVICES:
        metrics["fp16_embedding_min_cosine_to_fp32"] = _export_fp16(
            backbone, repository / layout.EMBEDDING / layout.VERSION / "model.onnx",
            repository / layout.TOKENIZER / layout.VERSION / "tokenizer.json", probe)
    writer.write_configs(repository, shape)
    writer.copy_python_models(repository)
    return metrics


def _up_to_date(repository: Path, fingerprint: str, force: bool) -> dict | None:
    """The manifest of a complete build of the same inputs, or None when there is work to do."""
    manifest_path = repository / layout.MANIFEST
    if not force and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("inputs_fingerprint") == fingerprint:
            try:
                check_built(repository)
                log.info("%s is up to date (same backbone, config, data and code); use --force to rebuild",
                         repository)
                return manifest
            except BrokenRepository as err:
                log.warning("rebuilding: %s", err)
    previous_selectors = repository / layout.DECISION / layout.VERSION / "selectors.json"
    if previous_selectors.is_file():
        imported = json.loads(previous_selectors.read_text()).get("imported", {})
        if imported:
            log.warning("rebuilding replaces the imported reference selectors (%s) with newly trained ones; run "
                        "`model-selector import` again to serve the reference's", ", ".join(sorted(imported)))
    return None


@dataclass
class HeldOut:
    """The held-out MMLU-Pro queries of a --holdout build, as the classifier sees them."""

    questions: Benchmark
    embeddings: np.ndarray
    domain_probs: np.ndarray


def _classifier_metrics(config: RouterConfig, classifier: DomainClassifier, embedder, test: Benchmark,
                        natural_validation: LabelledPrompts, options: BuildOptions) -> tuple[dict, HeldOut | None]:
    """Domain accuracy on the short questions (never trained on) and, for a --holdout build, on the
    held-out questions and the natural validation prompts."""
    short_texts, short_labels = load_short_questions()
    short_probs = classifier.predict(*embedder.tokenizer.encode(short_texts),
                                     embedder.embed(short_texts, options.cache_dir))
    metrics = {"domain_accuracy_short_questions": round(float((short_probs.argmax(axis=1) == short_labels).mean()), 4)}
    log.info("domain classifier: %.4f accuracy on %d short questions (never trained on)",
             metrics["domain_accuracy_short_questions"], len(short_texts))
    if not options.holdout:
        return metrics, None
    embeddings = embedder.embed(test.queries, options.cache_dir, description="held-out queries")
    heldout = HeldOut(test, embeddings, classifier.predict(*embedder.tokenizer.encode(test.queries), embeddings))
    metrics["domain_accuracy_heldout"] = round(
        float((heldout.domain_probs.argmax(axis=1) == test.category_ids()).mean()), 4)
    metrics.update(_natural_validation_metrics(config, classifier, embedder, natural_validation, options.cache_dir))
    log.info("domain classifier: %.4f accuracy on %d held-out MMLU-Pro queries, %.4f on %d natural validation "
             "prompts (computer science recall %.4f, %.1f%% match no decision)",
             metrics["domain_accuracy_heldout"], len(test), metrics["domain_accuracy_natural_validation"],
             len(natural_validation), metrics["computer_science_recall_natural_validation"],
             100 * metrics["unrouted_share_natural_validation"])
    return metrics, heldout


@dataclass
class SelectorData:
    """What the selectors learn from: one row per query with every model's result."""

    embeddings: np.ndarray  # [N, D]
    domain_probs: np.ndarray  # [N, 14]
    quality: np.ndarray  # [N, M]
    output_tokens: np.ndarray  # [N, M], unknown counts filled with the model's typical one
    expected_tokens: dict[str, float]  # model -> typical answer length


def _selector_data(records: EvalSet | None, fit: Benchmark, fit_queries: np.ndarray, classifier: DomainClassifier,
                   embedder, models: list[str], cache_dir: Path | None) -> SelectorData:
    """The complete MMLU-Pro training rows, or the user's records (`build --data`)."""
    from model_selector.build.train import with_typical_tokens

    if records is None:
        complete = fit.complete_rows()
        x, quality, tokens = fit_queries[complete], fit.performance[complete], fit.output_tokens[complete]
        texts = [fit.queries[i] for i in np.flatnonzero(complete)]
        expected = typical_output_tokens(fit.output_tokens, models)
    else:
        texts, quality, tokens = records.queries, records.performance, records.output_tokens
        x = embedder.embed(texts, cache_dir, description="your queries")
        expected = records.expected_output_tokens()
    return SelectorData(x, classifier.predict(*embedder.tokenizer.encode(texts), x), quality,
                        with_typical_tokens(tokens, np.array([expected[m] for m in models])), expected)


def _selector_heldout_quality(selectors: dict, heldout: HeldOut) -> dict[str, float]:
    """Each selector's held-out quality when it alone chooses, at no cost weight."""
    test, complete = heldout.questions, heldout.questions.complete_rows()
    metrics = {}
    for algorithm, selector in selectors.items():
        chosen = selector.predict(heldout.embeddings[complete], heldout.domain_probs[complete]).argmax(axis=1)
        picked = test.performance[complete][np.arange(len(chosen)), chosen]
        metrics[f"{algorithm}_heldout_quality_at_zero_cost_weight"] = round(float(picked.mean()), 4)
    return metrics


def _data_manifest(options: BuildOptions, natural_train: LabelledPrompts, natural_validation: LabelledPrompts,
                   selector_rows: int) -> dict:
    natural_file = Path(options.natural_prompts_dir) / NATURAL_PROMPTS_FILE
    return {"files": [p.name for p in data_files(options.data_dir)],
            "sha256": sha256_files(*data_files(options.data_dir)),
            "split": "held out: sha256('mmlu-pro:<question_id>') % 1000 < 200",
            "natural_prompts": {"file": NATURAL_PROMPTS_FILE, "sha256": sha256_files(natural_file),
                                "train": len(natural_train), "validation": len(natural_validation),
                                "split": "validation: sha256('natural-prompts:<query>') % 1000 < 250"},
            "selector_records": None if options.records is None else {
                "file": Path(options.records).name, "sha256": sha256_files(Path(options.records)),
                "queries": selector_rows}}


@dataclass(frozen=True)
class TrainingSplits:
    bench: Benchmark  # every shipped MMLU-Pro question
    test: Benchmark  # its held-out split
    fit: Benchmark  # what the classifier and the selectors learn from
    natural_fit: LabelledPrompts  # the natural prompts they learn from


def training_splits(options: BuildOptions, models: list[str]) -> TrainingSplits:
    """What a build learns from. The served repository learns from every shipped question once the
    choices are made; a --holdout build keeps the held-out splits out, to measure on them. With the
    user's records (`models` empty) the MMLU-Pro tables only teach the domain classifier."""
    bench = load_mmlu_pro(models, options.data_dir)
    train, test = split_train_test(bench)
    if options.holdout:
        return TrainingSplits(bench, test, train, load_natural_prompts(options.natural_prompts_dir)[0])
    return TrainingSplits(bench, test, bench,
                          load_labelled_prompts(Path(options.natural_prompts_dir) / NATURAL_PROMPTS_FILE))


def built_backbone(options: BuildOptions) -> Backbone:
    """The backbone that a build with these options exports: as published, or domain-tuned (from the
    cache where that build ran)."""
    from model_selector.build.export import resolve_backbone

    backbone = resolve_backbone(options.embedding)
    if not options.domain_tuning:
        return backbone
    models = [] if options.records else load_config(options.config).model_names
    splits = training_splits(options, models)
    return _domain_tuned(backbone, splits.fit, splits.natural_fit, options.cache_dir)


def build(options: BuildOptions) -> dict:
    """Build the repository; returns the manifest. Skips the work when nothing changed."""
    from model_selector.build.embed import OnnxEmbedder
    from model_selector.build.export import export_onnx, resolve_backbone, write_tokenizer
    from model_selector.build.train import train_selectors

    config: RouterConfig = load_config(options.config)
    # Read before minutes of export, so that a malformed line fails the build at once.
    records = None if options.records is None else load_records(options.records, config.model_names)
    natural_train, natural_validation = load_natural_prompts(options.natural_prompts_dir)
    repository = Path(options.repository)
    backbone = resolve_backbone(options.embedding)
    fingerprint = _inputs_fingerprint(options, backbone.source)
    if (manifest := _up_to_date(repository, fingerprint, options.force)) is not None:
        return manifest
    started = time.monotonic()
    models = config.model_names

    splits = training_splits(options, models if records is None else [])
    bench, test, fit, natural_fit = splits.bench, splits.test, splits.fit, splits.natural_fit
    log.info("data: %d MMLU-Pro questions, training on %d%s; %d natural prompts, training on %d", len(bench),
             len(fit), f" ({len(test)} held out)" if options.holdout else " (all: build --holdout to measure)",
             len(natural_train) + len(natural_validation), len(natural_fit))
    if options.domain_tuning:
        backbone = _domain_tuned(backbone, fit, natural_fit, options.cache_dir)

    embedding_path = repository / layout.EMBEDDING / layout.VERSION / "model.onnx"
    tokenizer_path = repository / layout.TOKENIZER / layout.VERSION / "tokenizer.json"
    dim = export_onnx(backbone, embedding_path)
    write_tokenizer(backbone, tokenizer_path)
    embedder = OnnxEmbedder(embedding_path, tokenizer_path, backbone.pad_id)
    fit_queries = embedder.embed(fit.queries, options.cache_dir, description="training queries")
    fit_questions = embedder.embed(fit.questions, options.cache_dir, description="training questions")

    classifier = train_classifier(embedder, fit, fit_queries, fit_questions, natural_fit, options.cache_dir)
    metrics, heldout = _classifier_metrics(config, classifier, embedder, test, natural_validation, options)
    data = _selector_data(records, fit, fit_queries, classifier, embedder, models, options.cache_dir)
    selectors = train_selectors(data.embeddings, data.domain_probs, data.quality, data.output_tokens,
                                config.model_selection, models)

    heads = onnx_graphs.combine_heads(classifier.to_onnx(), {a: s.to_onnx() for a, s in selectors.items()})
    _save_onnx(heads, repository / layout.HEADS / layout.VERSION / "model.onnx")
    metrics.update(write_device_profile(repository, backbone, writer.RepositoryShape(
        dim, len(models), backbone.pad_id, options.device, backbone.max_length, options.embedding_instances,
        options.embedding_threads), test.queries[:64]))

    decision_dir = repository / layout.DECISION / layout.VERSION
    shutil.copyfile(options.config, decision_dir / "router.yaml")
    (decision_dir / "selectors.json").write_text(json.dumps(
        {"models": models, "expected_output_tokens": data.expected_tokens}, indent=1))

    metrics.update({"n_train_selectors": len(data.embeddings), "n_heldout": len(test) if options.holdout else 0})
    if heldout is not None and records is None:
        metrics.update(_selector_heldout_quality(selectors, heldout))
    manifest = {
        "format": BUILD_FORMAT,
        "backbone": {"name": backbone.name, "pooling": backbone.pooling, "max_length": backbone.max_length,
                     "embedding_dim": dim, "pad_id": backbone.pad_id, "domain_tuned": options.domain_tuning},
        "models": models,
        "device": options.device,
        # Which questions the classifier and selectors learned from: "all" (the repository to serve)
        # or "holdout" (the held-out splits kept out, so that evaluate and the metrics measure on them).
        "training": {"split": "holdout" if options.holdout else "all",
                     "mmlu_pro_questions": len(fit), "natural_prompts": len(natural_fit)},
        "data": _data_manifest(options, natural_train, natural_validation, len(data.embeddings)),
        "selectors": config.model_selection.model_dump(),
        "metrics": metrics,
        "libraries": _versions(),
        "build_seconds": round(time.monotonic() - started, 1),
        "inputs_fingerprint": fingerprint,
    }
    (repository / layout.MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("built %s in %.0f s: %s", repository, manifest["build_seconds"], metrics)
    return manifest
