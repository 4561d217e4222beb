"""Each ONNX graph against the scikit-learn / numpy model it came from, on real held-out embeddings."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from model_selector.config import KmeansSettings, KnnSettings, SvmSettings, load_config
from model_selector.data import load_mmlu_pro, split_train_test
from model_selector.embed import OnnxEmbedder
from model_selector.train import (fit_model_svms, svm_selector_from, train_domain_classifier, train_kmeans,
                                  train_knn)

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
    return (embedder.embed(train.queries), train, embedder.embed(test.queries), test)


def run_onnx(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"embedding": x})[0]


def test_knn_onnx_matches_numpy(data):
    x, train, x_test, _ = data
    knn = train_knn(x, train.performance, KnnSettings(k=10))
    expected, got = knn.predict(x_test), run_onnx(knn.to_onnx(), x_test)
    assert got.shape == (len(x_test), len(train.model_names))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_knn_predicts_neighbour_quality():
    keys = np.eye(4, dtype=np.float32)
    quality = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    knn = train_knn(keys, quality, KnnSettings(k=1))
    np.testing.assert_allclose(run_onnx(knn.to_onnx(), keys[[1, 2]]), [[0, 1], [1, 1]])


def test_kmeans_onnx_matches_numpy(data):
    x, train, x_test, _ = data
    kmeans = train_kmeans(x, train.performance, KmeansSettings(n_clusters=8))
    expected, got = kmeans.predict(x_test), run_onnx(kmeans.to_onnx(), x_test)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_svm_onnx_matches_scikit_learn_probabilities(data):
    x, train, x_test, _ = data
    settings = SvmSettings(max_train=600)
    fitted = fit_model_svms(x, train.performance, settings, train.model_names)
    svm = svm_selector_from(fitted, settings.gamma, x.shape[1])
    expected = np.stack([f.predict_proba(x_test)[:, 1] for f in fitted], axis=1)
    got = run_onnx(svm.to_onnx(), x_test)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_domain_classifier_onnx_matches_numpy(data):
    x, train, x_test, test = data
    classifier = train_domain_classifier(x, train.category_ids())
    expected, got = classifier.predict(x_test), run_onnx(classifier.to_onnx(), x_test)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert (got.argmax(axis=1) == test.category_ids()).mean() > 0.6
