"""Each ONNX graph against the scikit-learn / numpy model it came from, on real held-out embeddings."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from model_selector.build.embed import OnnxEmbedder
from model_selector.build.onnx_graphs import int8_similarity, quantize_keys
from model_selector.build.train import (
    DomainPrior,
    LabelledRows,
    domain_quality_table,
    fit_model_svms,
    svm_selector_from,
    tfidf,
    train_domain_classifier,
    train_kmeans,
    train_knn,
    train_mlp,
    with_typical_tokens,
)
from model_selector.core.config import DOMAINS, KmeansSettings, KnnSettings, MlpSettings, SvmSettings, load_config
from model_selector.core.contract import EXPECTED_TOKENS
from model_selector.core.tokenization import token_counts
from model_selector.data.loaders import load_mmlu_pro, load_natural_prompts, split_train_test

from .conftest import CONFIG


@pytest.fixture(scope="module")
def data(built_repository):
    models = load_config(CONFIG).model_names
    train, test = split_train_test(load_mmlu_pro(models))
    train, test = train.subset(train.complete_rows()), test.subset(test.complete_rows())
    train, test = train.subset(np.arange(1500)), test.subset(np.arange(400))
    embedder = OnnxEmbedder(built_repository / "text_embedding/1/model.onnx",
                            built_repository / "tokenizer/1/tokenizer.json", pad_id=0)
    # The build embedded these already: they come from the embedding cache.
    return embedder, embedder.embed(train.queries), train, embedder.embed(test.queries), test


@pytest.fixture(scope="module")
def classifier(data):
    """Both experts and the gate, on small parts of the training data."""
    embedder, x, train, _, _ = data
    natural, _ = load_natural_prompts()
    natural = natural.subset(np.arange(600))
    exam = LabelledRows(embedder.tokenizer.token_counts(train.queries), x, train.category_ids(), np.ones(len(x)))
    prompts = LabelledRows(embedder.tokenizer.token_counts(natural.queries), embedder.embed(natural.queries),
                           natural.category_ids(), np.ones(len(natural)))
    gate = LabelledRows.stack([LabelledRows(exam.counts, exam.embeddings, np.ones(len(x), dtype=np.int64), exam.weights),
                               LabelledRows(prompts.counts, prompts.embeddings, np.zeros(len(natural), dtype=np.int64),
                                            prompts.weights)])
    shift = np.zeros(len(DOMAINS))
    shift[DOMAINS.index("computer science")] = 0.5
    return train_domain_classifier(exam, prompts, gate, natural_prior_shift=shift)


@pytest.fixture(scope="module")
def prior(data, classifier):
    embedder, x, train, _, _ = data
    probs = classifier.predict(*embedder.tokenizer.encode(train.queries), x)
    return domain_quality_table(probs, train.performance)


@pytest.fixture(scope="module")
def test_probs(data):
    rng = np.random.default_rng(0)
    return rng.dirichlet(np.ones(len(DOMAINS)), size=len(data[3])).astype(np.float32)


def run_onnx(model, **inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def test_knn_onnx_matches_numpy(data, prior, test_probs):
    _, x, train, x_test, _ = data
    knn = train_knn(x, train.performance, train.output_tokens, KnnSettings(k=10, domain_prior_weight=0.5), prior)
    expected = knn.predict(x_test, test_probs)
    got = run_onnx(knn.to_onnx(), embedding=x_test, domain_probs=test_probs)
    assert got.shape == (len(x_test), len(train.model_names))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_knn_int8_similarities_stay_close_to_fp32_and_find_the_same_neighbours(data):
    _, x, _, x_test, _ = data
    exact = x_test @ x.T
    approx = int8_similarity(x_test, *quantize_keys(x))
    assert np.abs(approx - exact).max() < 0.005
    k = 100
    overlap = [len(np.intersect1d(a, e)) / k for a, e in zip(np.argsort(-approx, axis=1)[:, :k],
                                                             np.argsort(-exact, axis=1)[:, :k])]
    assert np.mean(overlap) > 0.95


def test_knn_row_does_not_depend_on_its_batch(data, prior, test_probs):
    """Each row is quantized with its own scale: a query routes the same alone or batched with odd rows."""
    _, x, train, x_test, _ = data
    knn = train_knn(x, train.performance, train.output_tokens, KnnSettings(k=10), prior)
    session = ort.InferenceSession(knn.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    alone = session.run(None, {"embedding": x_test[:1], "domain_probs": test_probs[:1]})[0]
    odd = np.stack([x_test[0], 50 * x_test[1], np.zeros_like(x_test[0])])
    batched = session.run(None, {"embedding": odd, "domain_probs": test_probs[[0, 1, 2]]})[0]
    # Equal up to float summation order; a scale shared by the batch would move it by about 1e-3.
    np.testing.assert_allclose(batched[0], alone[0], rtol=0, atol=1e-6)


def test_knn_predicts_neighbour_quality_and_the_prior_pulls_it():
    keys = np.eye(4, dtype=np.float32)
    quality = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    tokens = np.full((4, 2), 100.0, dtype=np.float32)
    table = np.zeros((len(DOMAINS), 2), dtype=np.float32)
    table[0] = [0.0, 1.0]
    probs = np.zeros((2, len(DOMAINS)), dtype=np.float32)
    probs[:, 0] = 1.0
    alone = train_knn(keys, quality, tokens, KnnSettings(k=1, domain_prior_weight=0.0), table)
    np.testing.assert_allclose(run_onnx(alone.to_onnx(), embedding=keys[[1, 2]], domain_probs=probs), [[0, 1], [1, 1]])
    blended = train_knn(keys, quality, tokens, KnnSettings(k=1, domain_prior_weight=0.25), table)
    np.testing.assert_allclose(run_onnx(blended.to_onnx(), embedding=keys[[0]], domain_probs=probs[:1]),
                               [[0.75, 0.25]])


def test_knn_expects_its_neighbours_answer_lengths(data, prior, test_probs):
    """The KNN graph's second output: each model's output tokens averaged over the same neighbours."""
    _, x, train, x_test, test = data
    knn = train_knn(x, train.performance, train.output_tokens, KnnSettings(k=20), prior)
    session = ort.InferenceSession(knn.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    _, tokens = session.run(["scores", EXPECTED_TOKENS], {"embedding": x_test, "domain_probs": test_probs})
    np.testing.assert_allclose(tokens, knn.expected_output_tokens(x_test), rtol=1e-5)
    # Better than one typical length per model: closer to what each model really wrote on held-out queries.
    typical = np.abs(train.output_tokens.mean(axis=0) - test.output_tokens).mean()
    assert np.abs(tokens - test.output_tokens).mean() < 0.95 * typical


def test_knn_tokens_need_every_count_and_gaps_take_the_typical_one():
    tokens = np.array([[10.0, np.nan], [30.0, 40.0]])
    keys, quality, table = np.eye(2, dtype=np.float32), np.ones((2, 2)), np.zeros((len(DOMAINS), 2))
    with pytest.raises(ValueError, match="with_typical_tokens"):
        train_knn(keys, quality, tokens, KnnSettings(k=1), table)
    filled = with_typical_tokens(tokens, np.array([20.0, 50.0]))
    np.testing.assert_array_equal(filled, [[10, 50], [30, 40]])
    knn = train_knn(keys, quality, filled, KnnSettings(k=1), table)
    np.testing.assert_allclose(knn.expected_output_tokens(keys[[0]]), [[10, 50]])


def test_kmeans_onnx_matches_numpy(data, prior, test_probs):
    _, x, train, x_test, _ = data
    kmeans = train_kmeans(x, train.performance, KmeansSettings(n_clusters=8), prior)
    expected = kmeans.predict(x_test, test_probs)
    got = run_onnx(kmeans.to_onnx(), embedding=x_test, domain_probs=test_probs)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_svm_onnx_matches_scikit_learn_probabilities(data, prior, test_probs):
    _, x, train, x_test, _ = data
    settings = SvmSettings(max_train=600, domain_prior_weight=0.0)
    fitted = fit_model_svms(x, train.performance, settings, train.model_names)
    svm = svm_selector_from(fitted, settings, x.shape[1], prior)
    expected = np.stack([f.predict_proba(x_test)[:, 1] for f in fitted], axis=1)
    got = run_onnx(svm.to_onnx(), embedding=x_test, domain_probs=test_probs)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    blended = svm_selector_from(fitted, settings.model_copy(update={"domain_prior_weight": 0.6}), x.shape[1], prior)
    np.testing.assert_allclose(run_onnx(blended.to_onnx(), embedding=x_test, domain_probs=test_probs),
                               DomainPrior(prior, 0.6).blend(expected, test_probs), atol=1e-4)


def test_svm_fit_does_not_depend_on_how_many_fits_run_at_once(monkeypatch):
    """The per-model SVCs train as threads: a build gives the same selector on any number of cores,
    and a model whose answers never vary keeps its column (a constant) in model order."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    quality = np.stack([x[:, 0] > 0, x[:, 1] > 0.2, np.ones(240), x[:, 2] + x[:, 3] > 0], axis=1).astype(float)
    settings, names = SvmSettings(domain_prior_weight=0.0), ["a", "b", "always right", "d"]
    selectors = []
    for cores in (1, 4):
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        fitted = fit_model_svms(x, quality, settings, names)
        assert fitted[2] == 1.0 and all(not isinstance(f, float) for f in fitted[:2] + fitted[3:])
        selectors.append(svm_selector_from(fitted, settings, x.shape[1], np.zeros((len(DOMAINS), 4))))
    one, four = selectors
    for field in ("vectors", "dual_coef", "intercept", "prob_a", "prob_b"):
        np.testing.assert_array_equal(getattr(one, field), getattr(four, field), err_msg=field)


@pytest.mark.parametrize("hidden", [(32,), (48, 16)], ids=["one hidden layer", "two hidden layers"])
def test_mlp_onnx_matches_scikit_learn_per_model_probabilities(data, prior, test_probs, hidden):
    """The MLP predicts each model's chance of a right answer (multi-label), not one class, so
    masking to a decision's models and the cost trade-off work as for the other selectors."""
    from sklearn.neural_network import MLPClassifier

    _, x, train, x_test, _ = data
    settings = MlpSettings(hidden_sizes=hidden, max_iter=20, domain_prior_weight=0.0)
    mlp = train_mlp(x, train.performance, settings, prior)
    twin = MLPClassifier(hidden_layer_sizes=hidden, alpha=settings.alpha, max_iter=20, random_state=settings.seed)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        twin.fit(x, (train.performance >= 0.5).astype(int))
    expected = twin.predict_proba(x_test)
    assert expected.shape == (len(x_test), len(train.model_names))
    np.testing.assert_allclose(mlp.own(x_test), expected, atol=1e-5)
    got = run_onnx(mlp.to_onnx(), embedding=x_test, domain_probs=test_probs)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    blended = train_mlp(x, train.performance, settings.model_copy(update={"domain_prior_weight": 0.6}), prior)
    np.testing.assert_allclose(run_onnx(blended.to_onnx(), embedding=x_test, domain_probs=test_probs),
                               DomainPrior(prior, 0.6).blend(expected, test_probs), atol=1e-5)


def test_domain_classifier_onnx_matches_numpy(data, classifier):
    embedder, _, _, x_test, test = data
    input_ids, attention_mask = embedder.tokenizer.encode(test.queries)
    expected = classifier.predict(input_ids, attention_mask, x_test)
    got = run_onnx(classifier.to_onnx(), input_ids=input_ids, attention_mask=attention_mask, embedding=x_test)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert (got.argmax(axis=1) == test.category_ids()).mean() > 0.7


def test_domain_classifier_gate_picks_the_expert_by_phrasing(data, classifier):
    """Exam questions with options go to the exam expert, chat prompts to the natural expert."""
    embedder, _, _, x_test, test = data
    _, validation = load_natural_prompts()
    prompts = validation.queries[:100]
    for texts, x, exam_style in ((test.queries[:100], x_test[:100], True), (prompts, embedder.embed(prompts), False)):
        ids, mask = embedder.tokenizer.encode(texts)
        lexical = tfidf(token_counts(ids, mask, len(classifier.idf)), classifier.idf) @ classifier.token_weights
        gate = 1 / (1 + np.exp(-(lexical + x @ classifier.embedding_weights + classifier.bias)[:, -1]))
        assert ((gate > 0.5) == exam_style).mean() > 0.9


def test_domain_classifier_ignores_padding_and_counts_repeated_tokens(data, classifier):
    """Same text, different padding: same probabilities; the graph's per-position counts equal scipy's."""
    embedder, _, _, x_test, test = data
    session = ort.InferenceSession(classifier.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    ids, mask = embedder.tokenizer.encode(["the the the law law contract"])
    padded_ids = np.concatenate([ids, np.zeros((1, 32), dtype=np.int64)], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((1, 32), dtype=np.int64)], axis=1)
    short = session.run(None, {"input_ids": ids, "attention_mask": mask, "embedding": x_test[:1]})[0]
    long = session.run(None, {"input_ids": padded_ids, "attention_mask": padded_mask, "embedding": x_test[:1]})[0]
    np.testing.assert_allclose(short, long, atol=1e-6)
    np.testing.assert_allclose(short, classifier.predict(ids, mask, x_test[:1]), atol=1e-5)


def test_domain_quality_table_weights_queries_by_domain_probability():
    probs = np.zeros((3, len(DOMAINS)))
    probs[0, 0] = probs[1, 0] = 1.0
    probs[2, 1] = 1.0
    quality = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    overall = quality.mean(axis=0)
    table = domain_quality_table(probs, quality, shrinkage=5.0)
    np.testing.assert_allclose(table[0], (2 * quality[0] + 5 * overall) / 7, rtol=1e-6)
    np.testing.assert_allclose(table[1], (quality[2] + 5 * overall) / 6, rtol=1e-6)
    np.testing.assert_allclose(table[2:], np.tile(overall, (len(DOMAINS) - 2, 1)), rtol=1e-6)  # no data: the mean


def test_combined_heads_equal_their_parts(data, classifier, prior):
    """router_heads is the classifier and the selectors in one graph: same outputs as each alone."""
    from model_selector.build.onnx_graphs import combine_heads

    embedder, x, train, x_test, test = data
    selectors = {"knn": train_knn(x, train.performance, train.output_tokens, KnnSettings(k=10), prior),
                 "kmeans": train_kmeans(x, train.performance, KmeansSettings(n_clusters=8), prior)}
    heads = combine_heads(classifier.to_onnx(), {a: s.to_onnx() for a, s in selectors.items()})
    input_ids, attention_mask = embedder.tokenizer.encode(test.queries[:50])
    session = ort.InferenceSession(heads.SerializeToString(), providers=["CPUExecutionProvider"])
    probs, knn, kmeans, tokens = session.run(["domain_probs", "knn_scores", "kmeans_scores", EXPECTED_TOKENS], {
        "input_ids": input_ids, "attention_mask": attention_mask, "embedding": x_test[:50]})
    np.testing.assert_allclose(probs, classifier.predict(input_ids, attention_mask, x_test[:50]), atol=1e-5)
    np.testing.assert_allclose(knn, selectors["knn"].predict(x_test[:50], probs), atol=1e-5)
    np.testing.assert_allclose(kmeans, selectors["kmeans"].predict(x_test[:50], probs), atol=1e-5)
    np.testing.assert_allclose(tokens, selectors["knn"].expected_output_tokens(x_test[:50]), rtol=1e-5)
