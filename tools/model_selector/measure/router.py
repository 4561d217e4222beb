"""The served repository run in this process: its ONNX graphs with onnxruntime and its decision
engine. What evaluate, tune and the benchmark's baseline route with when no server is involved."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from model_selector.build.embed import OnnxEmbedder, session_options
from model_selector.core import layout
from model_selector.core.algorithms import ALGORITHMS, SELECTOR_ALGORITHMS
from model_selector.core.config import RouterConfig
from model_selector.core.contract import EXPECTED_TOKENS
from model_selector.core.decision_engine import DecisionEngine, DecisionStep, Route


def repository_embedder(repository: Path) -> OnnxEmbedder:
    """The embedding graph and tokenizer of a built repository, run in this process."""
    manifest = layout.read_manifest(repository)
    return OnnxEmbedder(repository / layout.EMBEDDING / layout.VERSION / "model.onnx",
                        repository / layout.TOKENIZER / layout.VERSION / "tokenizer.json", manifest["backbone"]["pad_id"])


@dataclass
class HeadOutputs:
    """router_heads' outputs for N queries: what the decision step routes each query by."""

    domain_probs: np.ndarray  # [N, 14]
    scores: dict[str, np.ndarray]  # algorithm -> [N, M] predicted quality
    expected_output_tokens: np.ndarray  # [N, M]

    def __len__(self) -> int:
        return len(self.domain_probs)

    def route(self, engine: DecisionEngine, i: int, algorithm: str | None = None,
              cost_weight: float | None = None) -> Route:
        return engine.route(self.domain_probs[i], {a: s[i] for a, s in self.scores.items()}, algorithm,
                            cost_weight, self.expected_output_tokens[i])

    def routes(self, engine: DecisionEngine, algorithm: str | None = None,
               cost_weight: float | None = None) -> list[Route]:
        return [self.route(engine, i, algorithm, cost_weight) for i in range(len(self))]

    def selected_models(self, engine: DecisionEngine, algorithm: str | None = None,
                        cost_weights: Sequence[float | None] = (None,)) -> np.ndarray:
        """[W, N] the model each query is routed to at each cost weight: `routes`' selected models, for
        whole sweeps."""
        columns = engine.selected_columns(self.domain_probs, self.scores, algorithm, cost_weights,
                                          self.expected_output_tokens)
        return np.array(engine.model_names, dtype=object)[columns]

    @classmethod
    def concatenate(cls, parts: list[HeadOutputs]) -> HeadOutputs:
        return cls(np.concatenate([p.domain_probs for p in parts]),
                   {a: np.concatenate([p.scores[a] for p in parts]) for a in parts[0].scores},
                   np.concatenate([p.expected_output_tokens for p in parts]))


class InProcessRouter:
    """The repository's ONNX graphs and decision engine, run in this process."""

    def __init__(self, repository: Path):
        self.embedder = repository_embedder(repository)
        # One thread, as served: the graph is tiny.
        self.heads_session = ort.InferenceSession(str(repository / layout.HEADS / layout.VERSION / "model.onnx"),
                                                  session_options(threads=1), providers=["CPUExecutionProvider"])
        decision_dir = repository / layout.DECISION / layout.VERSION
        step = DecisionStep.load(decision_dir / "router.yaml", decision_dir / "selectors.json")
        self.config: RouterConfig = step.config
        self.expected_tokens: dict[str, float] = step.expected_output_tokens
        self.engine: DecisionEngine = step.engine

    def heads(self, input_ids: np.ndarray, attention_mask: np.ndarray, embeddings: np.ndarray) -> HeadOutputs:
        """router_heads on one batch of token tensors and embeddings."""
        outputs = ["domain_probs", *(a.scores_output for a in ALGORITHMS.values()), EXPECTED_TOKENS]
        probs, *scores, tokens = self.heads_session.run(outputs, {
            "input_ids": input_ids, "attention_mask": attention_mask, "embedding": embeddings})
        return HeadOutputs(probs, dict(zip(SELECTOR_ALGORITHMS, scores)), tokens)

    def head_outputs(self, queries: list[str], batch_size: int = 32) -> HeadOutputs:
        """Batched, with the embedding cache: for evaluating many queries."""
        embeddings = self.embedder.embed(queries, description="evaluation queries", batch_size=batch_size)
        return HeadOutputs.concatenate([
            self.heads(*self.embedder.tokenizer.encode(queries[start:start + batch_size]),
                       embeddings[start:start + batch_size])
            for start in range(0, len(queries), batch_size)])

    def route_query(self, query: str) -> Route:
        """The whole pipeline for one query, no cache: what a user would run instead of the server."""
        input_ids, attention_mask = self.embedder.tokenizer.encode([query])
        embedding = self.embedder.session.run(["embedding"], {"input_ids": input_ids,
                                                              "attention_mask": attention_mask})[0]
        return self.heads(input_ids, attention_mask, embedding).route(self.engine, 0)
