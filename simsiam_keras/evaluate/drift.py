"""How far a quantised backbone's features drift from the float ones, on the run's kNN monitor split.

The export (simsiam_keras.export.litert) asks this after writing a quantised LiteRT model: the
cosine similarity of its features to the float features on the query images, and the weighted
kNN top-1 (the paper's monitor, Sec. 4) computed with each model's features.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from simsiam_keras.config import EVAL_RESIZE_RATIO, SimSiamConfig
from simsiam_keras.data.eval_splits import LabelledSplit
from simsiam_keras.data.sources import eval_data
from simsiam_keras.evaluate.knn import knn_accuracy
from simsiam_keras.export.litert import DriftCheck, FeatureFn, cosine_figures, drift_batch_size, run_dataset

# Images of each split (bank, query) the check reads, drawn with the run's seed: the LiteRT interpreter
# runs on the CPU.
DRIFT_IMAGES = 1000


def _subset(split: LabelledSplit, limit: int, seed: int) -> LabelledSplit:
    """At most `limit` images of an in-memory split, drawn with the run's seed (a file sorted by class stays mixed)."""
    if split.size <= limit:
        return split

    def arrays(size: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = split.arrays(size)
        keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
        return images[keep], labels[keep]

    return dataclasses.replace(split, size=limit, arrays=arrays)


def _features(fn: FeatureFn, batches) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for images, y in batches:
        features.append(fn(images.numpy()))
        labels.append(y.numpy())
    return np.concatenate(features), np.concatenate(labels)


def monitor_drift(settings: Mapping[str, Any], image_size: int, dataset: str | None = None,
                  limit: int = DRIFT_IMAGES) -> DriftCheck:
    """A drift check on `limit` images of each of the run's labelled splits (or `dataset`'s).

    Raises ValueError (one line, naming the dataset) when the data has no labelled splits.
    """
    name = run_dataset(settings, dataset)
    ratio = float(settings.get("eval_resize_ratio") or EVAL_RESIZE_RATIO)
    k = int(settings.get("knn_k") or SimSiamConfig.knn_k)
    temperature = float(settings.get("knn_temperature") or SimSiamConfig.knn_temperature)
    seed = int(settings.get("seed") or 0)
    data = eval_data(name, settings.get("data_dir"), seed).in_memory(image_size, ratio, limit)

    def split(which: LabelledSplit):
        return _subset(which, limit, seed).batches(image_size, ratio, batch_size=drift_batch_size(image_size))

    def check(reference: FeatureFn, candidate: FeatureFn) -> dict[str, Any]:
        figures: dict[str, Any] = {"dataset": name}
        top1 = {}
        for label, fn in (("float", reference), ("quantized", candidate)):
            bank, bank_labels = _features(fn, split(data.bank))
            query, query_labels = _features(fn, split(data.query))
            top1[label] = knn_accuracy(bank, bank_labels, query, query_labels, k, temperature)
            top1[f"{label}_query"] = query
        figures.update(cosine_figures(top1.pop("float_query"), top1.pop("quantized_query")))
        figures.update(knn_top1_float=top1["float"], knn_top1_quantized=top1["quantized"],
                       knn_top1_change=top1["quantized"] - top1["float"], bank_images=len(bank_labels),
                       query_images=len(query_labels), knn_k=k)
        return figures

    return check
