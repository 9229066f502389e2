"""Weighted kNN classification of frozen features (Wu et al. 2018), the paper's progress monitor.

Features come from a Keras backbone or any `load.FeatureExtractor` (SavedModel, ONNX), from
in-memory uint8 arrays or streamed from a `tf.data.Dataset` of image batches, one batch at a
time, so the images never need to fit in memory (only the features do).
"""

from __future__ import annotations

from typing import Callable, Iterator, Union

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.augment.crop import eval_view
from simsiam_keras.config import EVAL_RESIZE_RATIO, SimSiamConfig
from simsiam_keras.data.autotuner import without_autotuner
from simsiam_keras.saved_run import FeatureExtractor

FeatureModel = Union[keras.Model, FeatureExtractor]
KNN_K, KNN_TEMPERATURE = SimSiamConfig.knn_k, SimSiamConfig.knn_temperature


def _extractor(model: FeatureModel) -> FeatureExtractor:
    return FeatureExtractor.from_keras(model) if isinstance(model, keras.Model) else model


def _feature_batches(model: FeatureModel, batches: tf.data.Dataset) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(features, labels or None) per batch of a dataset of images or (images, labels)."""
    extract: Callable[[np.ndarray], np.ndarray] = _extractor(model)
    for batch in batches:
        images, labels = batch if isinstance(batch, tuple) else (batch, None)
        yield extract(images), (None if labels is None else np.asarray(labels))


def extract_features(
    model: FeatureModel, images: np.ndarray | tf.data.Dataset, batch_size: int = 256,
    resize_ratio: float = EVAL_RESIZE_RATIO,
) -> np.ndarray:
    """Pooled features in inference mode (BN uses its moving statistics).

    `images` are uint8 NHWC arrays, seen through the evaluation view at the model's image size
    (`augment.crop.eval_view` with `resize_ratio`), or a dataset of float32 [0, 255] image
    batches taken as they are (labels, if the batches carry them, are ignored).
    """
    if isinstance(images, np.ndarray):
        size = _extractor(model).image_size
        images = without_autotuner(tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(
            lambda x: eval_view(x, size, resize_ratio), num_parallel_calls=tf.data.AUTOTUNE))
    chunks = [features for features, _ in _feature_batches(model, images)]
    return np.concatenate(chunks) if chunks else np.zeros((0, _extractor(model).feature_dim), np.float32)


def extract_labelled_features(model: FeatureModel, batches: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a dataset of (images, labels) batches, in one pass over it."""
    features, labels = [], []
    for f, y in _feature_batches(model, batches):
        if y is None:
            raise ValueError("extract_labelled_features needs (images, labels) batches")
        features.append(f)
        labels.append(y)
    if not features:
        raise ValueError("the dataset gave no images (every file failed to decode?)")
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def knn_predict(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk: int = 1024,
) -> np.ndarray:
    """Class scores of each query: votes exp(sim/T) from its k most cosine-similar bank entries."""
    bank_t = tf.math.l2_normalize(tf.constant(bank, tf.float32), axis=1)
    labels_t = tf.constant(bank_labels, tf.int32)
    k = min(k, len(bank))
    scores = []
    for start in range(0, len(queries), chunk):
        q = tf.math.l2_normalize(tf.constant(queries[start : start + chunk], tf.float32), axis=1)
        sim, idx = tf.math.top_k(tf.matmul(q, bank_t, transpose_b=True), k=k)
        votes = tf.one_hot(tf.gather(labels_t, idx), num_classes) * tf.exp(sim / temperature)[..., None]
        scores.append(tf.reduce_sum(votes, axis=1).numpy())
    return np.concatenate(scores)


def knn_accuracy(
    bank: np.ndarray,
    bank_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier."""
    num_classes = int(max(bank_labels.max(), query_labels.max()) + 1)
    scores = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return float(np.mean(np.argmax(scores, axis=1) == query_labels))


def knn_top1_of_model(
    model: FeatureModel,
    bank: tf.data.Dataset,
    query: tf.data.Dataset,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> dict[str, float | int]:
    """kNN top-1 of a model on streamed (images, labels) batches of a bank and a query split
    (`knn_eval.knn_eval` runs it on a saved run, end to end).

    Returns accuracy and the numbers of bank and query images actually read (undecodable
    files are dropped upstream).
    """
    model = _extractor(model)
    bank_features, bank_labels = extract_labelled_features(model, bank)
    query_features, query_labels = extract_labelled_features(model, query)
    accuracy = knn_accuracy(bank_features, bank_labels, query_features, query_labels, k, temperature)
    return {"top1": accuracy, "bank_images": len(bank_labels), "query_images": len(query_labels)}
