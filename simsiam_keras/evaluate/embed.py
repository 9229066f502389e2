"""Features of every image of a dataset, and a look at them: the library function behind `simsiam-embed`.

Images of the chosen splits pass through the evaluation view and the frozen backbone (a run, a
`.keras` file, an export, or an ONNX file run by ONNX Runtime) one batch at a time; the features
go to an `.npy` memory map, then into OUTPUT/features.npz (features, labels, ids, split), which
numpy writes in 16 MB pieces: memory stays bounded by the batch, whatever the image count. From
them: the TensorBoard projector's files (`projector.py`), neighbours.png and duplicates.csv
(`similarity.py`), RankMe (`rankme.py`), the kNN top-1 when labels exist, and optionally map.png
(t-SNE, scikit-learn).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from simsiam_keras.config import DUPLICATE_THRESHOLD, EVAL_RESIZE_RATIO, PROJECTOR_POINTS
from simsiam_keras.data.decode import decode_eval_view
from simsiam_keras.data.eval_splits import EvalData, ImageSplits, LabelledSplit
from simsiam_keras.data.labelled import subset
from simsiam_keras.data.sources import image_splits
from simsiam_keras.evaluate.knn import KNN_K, KNN_TEMPERATURE, knn_accuracy
from simsiam_keras.evaluate.projector import write_projector
from simsiam_keras.evaluate.rankme import GramAccumulator, rankme_of_singular_values
from simsiam_keras.evaluate.results import append_result
from simsiam_keras.evaluate.similarity import duplicate_pairs, nearest, plot_neighbours, write_duplicates
from simsiam_keras.saved_run import (
    FeatureExtractor,
    check_backbone_model,
    load_backbone,
    load_feature_extractor,
    locate_model,
    run_dir_of,
    run_settings,
)

FEATURES_FILE = "features.npz"
SUMMARY_FILE = "embed.json"
SPLITS = ("train", "test", "all")
# The kNN top-1 reads at most this many bank features into memory.
KNN_MAX_BANK = 200_000
# t-SNE is quadratic-ish: map.png shows at most this many points.
MAP_POINTS = 5_000


@dataclasses.dataclass
class EmbedResult:
    count: int
    feature_dim: int
    rankme: float
    knn_top1: float | None
    duplicates: int
    output_dir: str
    seconds: float
    peak_memory_mb: float
    summary: dict[str, Any]


def load_extractor(checkpoint: str) -> FeatureExtractor:
    """A FeatureExtractor for a run, `.keras` file, export folder or ONNX file, checked to be a backbone."""
    found = locate_model(checkpoint)
    if found.kind == "onnx":
        return load_feature_extractor(checkpoint)
    model = load_backbone(checkpoint)
    check_backbone_model(model, checkpoint)
    return FeatureExtractor.from_keras(model, found.kind)


def _indexed_batches(split: LabelledSplit, size: int, ratio: float, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(uint8 evaluation views, labels, indices in the split) batches; undecodable files are skipped with their index."""
    if split.arrays is not None:
        ds = split.batches(size, ratio, batch)
        start = 0
        for images, labels in ds:
            count = len(labels)
            yield images.numpy(), labels.numpy(), np.arange(start, start + count)
            start += count
        return

    def load(index, element):
        data, label = element
        image, ok = decode_eval_view(data, size, ratio)
        return tf.cast(image, tf.float32), tf.cast(label, tf.int64), index, ok

    ds = split.encoded(None).enumerate().map(load, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.filter(lambda x, y, i, ok: ok).map(lambda x, y, i, ok: (x, y, i)).batch(batch).prefetch(tf.data.AUTOTUNE)
    for images, labels, indices in ds:
        yield images.numpy(), labels.numpy(), indices.numpy()


def _ids(split: LabelledSplit, indices: np.ndarray) -> list[str]:
    if split.files:
        return [split.files[i] for i in indices]
    return [f"{split.name}/{i}" for i in indices]


def _images_of(split: LabelledSplit, indices: np.ndarray, size: int, ratio: float) -> np.ndarray:
    """The evaluation views of the images at `indices` of `split` (in that order)."""
    order = np.argsort(indices)
    picked = subset(split, np.asarray(indices)[order])
    views = np.concatenate([x.numpy() for x, _ in picked.batches(size, ratio)])
    out = np.empty_like(views)
    out[order] = views
    return out


def check_output(output_dir: str) -> None:
    if os.path.exists(output_dir):
        raise FileExistsError(f"output {output_dir} exists: choose another folder, or delete it")


def embed(
    checkpoint: str,
    dataset: str | EvalData | ImageSplits = "synthetic",
    output_dir: str = "embeddings",
    data_dir: str | None = None,
    split: str = "all",
    batch_size: int = 256,
    projector_points: int = PROJECTOR_POINTS,
    duplicate_threshold: float = DUPLICATE_THRESHOLD,
    neighbour_queries: int = 8,
    neighbours: int = 8,
    tsne_map: bool = False,
    seed: int = 0,
    resize_ratio: float | None = None,
    verbose: bool = False,
) -> EmbedResult:
    """Embeds `split` ("train", "test" or "all") of `dataset` with the backbone at `checkpoint` into `output_dir`.

    Labels are used where known (a flat `folder:` or an `.npz` with only `x_train` has none). Writes
    features.npz, the projector files, neighbours.png, duplicates.csv, embed.json and, with
    `tsne_map`, map.png; appends RankMe (and the kNN top-1, with train and test) to the run's
    results.json. Everything is checked before anything is written.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 < duplicate_threshold <= 1:
        raise ValueError(f"duplicate_threshold must be in (0, 1], got {duplicate_threshold}")
    if projector_points < 0 or batch_size < 1:
        raise ValueError("projector_points must be >= 0 and batch_size >= 1")
    check_output(output_dir)
    if tsne_map:
        _tsne()  # one line now if scikit-learn is missing, not after the features
    start = time.time()
    extractor = load_extractor(checkpoint)
    data = dataset if isinstance(dataset, ImageSplits) else (
        ImageSplits.of(dataset) if isinstance(dataset, EvalData) else image_splits(dataset, data_dir, seed))
    splits = _chosen(data, split)
    ratio = resize_ratio or run_settings(checkpoint).get("eval_resize_ratio", EVAL_RESIZE_RATIO)
    size = extractor.image_size
    total = sum(s.size for s in splits)

    os.makedirs(output_dir)
    scratch = tempfile.mkdtemp(prefix="embed-", dir=output_dir)
    features = np.lib.format.open_memmap(os.path.join(scratch, "features.npy"), "w+", np.float32,
                                         (total, extractor.feature_dim))
    labels = np.full(total, -1, np.int64)
    which = np.zeros(total, np.int8)
    index = np.zeros(total, np.int64)
    gram = GramAccumulator(extractor.feature_dim)
    count = 0
    progress = tf.keras.utils.Progbar(total, unit_name="image") if verbose else None
    for s, part in enumerate(splits):
        for images, y, idx in _indexed_batches(part, size, ratio, batch_size):
            f = extractor(images)
            features[count:count + len(f)] = f
            labels[count:count + len(f)], which[count:count + len(f)], index[count:count + len(f)] = y, s, idx
            gram.add(f)
            count += len(f)
            if progress:
                progress.update(count)
    features.flush()
    ids = np.array([i for s, part in enumerate(splits) for i in _ids(part, index[:count][which[:count] == s])])
    split_names = np.array([p.name for p in splits])[which[:count]]
    np.savez(os.path.join(output_dir, FEATURES_FILE), features=features[:count], labels=labels[:count], ids=ids,
             split=split_names, class_names=np.array(data.class_names))
    feats = features[:count]
    effective_rank = rankme_of_singular_values(gram.singular_values())

    rng = np.random.default_rng(seed)
    names = data.class_names
    known = bool((labels[:count] >= 0).any())
    label_names = [names[y] if y >= 0 else "" for y in labels[:count]]
    shown = np.sort(rng.choice(count, min(projector_points, count), replace=False)) if projector_points else []
    if len(shown):
        images = _gather_images(splits, which[shown], index[shown], size, ratio)
        shown_labels = [label_names[i] for i in shown] if known else None
        write_projector(output_dir, feats[shown], images, shown_labels, ids[shown])

    queries = np.sort(rng.choice(count, min(neighbour_queries, count), replace=False))
    k = min(neighbours, count - 1)
    if len(queries) and k > 0:
        near, sims = nearest(feats, queries, k)
        flat = np.concatenate([queries, near.ravel()])
        pictures = _gather_images(splits, which[flat], index[flat], size, ratio)
        plot_neighbours(os.path.join(output_dir, "neighbours.png"), pictures[:len(queries)],
                        pictures[len(queries):].reshape(len(queries), k, *pictures.shape[1:]), sims,
                        [label_names[q] for q in queries] if known else None,
                        [[label_names[j] for j in row] for row in near] if known else None)

    pairs = duplicate_pairs(feats, duplicate_threshold)
    write_duplicates(os.path.join(output_dir, "duplicates.csv"), pairs, ids, labels[:count] if known else None, names)

    knn_top1 = None
    if len(splits) == 2 and (labels[:count] >= 0).all():  # kNN: train labels vote for the test images'
        bank_rows, query_rows = np.flatnonzero(which[:count] == 0), np.flatnonzero(which[:count] == 1)
        if len(bank_rows) > KNN_MAX_BANK:
            bank_rows = np.sort(rng.choice(bank_rows, KNN_MAX_BANK, replace=False))
        if len(bank_rows) and len(query_rows):
            knn_top1 = knn_accuracy(np.asarray(feats[bank_rows]), labels[bank_rows], np.asarray(feats[query_rows]),
                                    labels[query_rows], KNN_K, KNN_TEMPERATURE)
    if tsne_map:
        plot_map(os.path.join(output_dir, "map.png"), feats, labels[:count], names, rng)
    del features, feats
    shutil.rmtree(scratch)

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {
        "checkpoint": str(checkpoint), "dataset": data.name, "splits": [p.name for p in splits],
        "images": int(count), "skipped": int(total - count), "feature_dim": int(extractor.feature_dim),
        "model_kind": extractor.kind, "eval_resize_ratio": ratio, "rankme": effective_rank,
        "knn_top1": knn_top1, "knn_k": KNN_K, "knn_temperature": KNN_TEMPERATURE,
        "duplicate_threshold": duplicate_threshold, "duplicates": pairs.found, "duplicates_listed": len(pairs),
        "projector_points": int(len(shown)), "seconds": time.time() - start, "peak_memory_mb": peak,
    }
    with open(os.path.join(output_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    run_dir = str(run_dir_of(checkpoint))
    if os.path.isdir(run_dir):
        split_name = "+".join(summary["splits"])
        append_result(run_dir, dataset=data.name, split=split_name, metric="rankme", value=effective_rank,
                      protocol="embed", images=int(count), output_dir=output_dir)
        if knn_top1 is not None:
            append_result(run_dir, dataset=data.name, split=splits[1].name, metric="knn_top1", value=knn_top1,
                          protocol="embed", output_dir=output_dir)
    return EmbedResult(int(count), int(extractor.feature_dim), effective_rank, knn_top1, pairs.found, output_dir,
                       summary["seconds"], peak, summary)


def _chosen(data: ImageSplits, split: str) -> list[LabelledSplit]:
    """The splits `split` names: train, the test split, or all (train first)."""
    found = list(data.splits.values())
    if split == "all":
        return found
    if split == "train":
        return found[:1]
    if len(found) < 2:
        raise ValueError(f"dataset {data.name} has no test split: embed --split train or all")
    return found[1:]


def _gather_images(splits: list[LabelledSplit], which: np.ndarray, index: np.ndarray, size: int, ratio: float) -> np.ndarray:
    """The evaluation views of rows given by (split number, index in that split), in the given order."""
    out = np.zeros((len(index), size, size, 3), np.uint8)
    for s, part in enumerate(splits):
        rows = np.flatnonzero(which == s)
        if len(rows):
            unique, inverse = np.unique(index[rows], return_inverse=True)
            out[rows] = np.clip(_images_of(part, unique, size, ratio), 0, 255).astype(np.uint8)[inverse]
    return out


def _tsne():
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ValueError("map: t-SNE needs scikit-learn: pip install 'simsiam-keras[map]' (or scikit-learn)") from None
    return TSNE


def plot_map(path: str, features: np.ndarray, labels: np.ndarray, class_names: list[str], rng: np.random.Generator) -> None:
    """map.png: a 2-D t-SNE of up to MAP_POINTS rows, coloured by label when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.sort(rng.choice(len(features), min(MAP_POINTS, len(features)), replace=False))
    points = _tsne()(n_components=2, init="pca", random_state=0,
                     perplexity=min(30.0, max(2.0, (len(rows) - 1) / 3))).fit_transform(np.asarray(features[rows]))
    fig, ax = plt.subplots(figsize=(7, 6))
    known = labels[rows] >= 0
    if known.any():
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels[rows], cmap="tab10" if len(class_names) <= 10 else "tab20", s=6)
        if len(class_names) <= 20:
            handles = [plt.Line2D([], [], marker="o", ls="", color=scatter.cmap(scatter.norm(c))) for c in range(len(class_names))]
            ax.legend(handles, class_names, fontsize=7, markerscale=0.8, loc="best")
    else:
        ax.scatter(points[:, 0], points[:, 1], s=6)
    ax.set_title(f"t-SNE of {len(rows):,} features")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
