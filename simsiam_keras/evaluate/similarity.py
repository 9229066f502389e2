"""Cosine neighbours of features: nearest images for a few queries, and near-duplicate pairs.

Both read the features in chunks of rows (an `.npy` memory map works), so only a chunk x all
similarity block is ever in memory; the pair search is exact (every pair is compared once).
"""

from __future__ import annotations

import csv
import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf

# Rows of queries compared against every row at a time.
CHUNK = 1024


def _normalized(rows: np.ndarray) -> tf.Tensor:
    return tf.math.l2_normalize(tf.constant(np.asarray(rows, np.float32)), axis=1)


def nearest(features: np.ndarray, queries: Sequence[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine similarities) of each query's k nearest other rows, most similar first."""
    q = _normalized(features[np.asarray(queries)])
    best_sim = np.full((len(queries), 0), -np.inf, np.float32)
    best_idx = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(features), CHUNK * 8):
        block = _normalized(features[start:start + CHUNK * 8])
        sim = tf.matmul(q, block, transpose_b=True).numpy()
        idx = np.arange(start, start + len(sim[0]))[None].repeat(len(queries), 0)
        sim[idx == np.asarray(queries)[:, None]] = -np.inf  # an image is not its own neighbour
        best_sim, best_idx = np.concatenate([best_sim, sim], 1), np.concatenate([best_idx, idx], 1)
        order = np.argsort(-best_sim, axis=1, kind="stable")[:, :k]
        best_sim, best_idx = np.take_along_axis(best_sim, order, 1), np.take_along_axis(best_idx, order, 1)
    return best_idx, best_sim


@dataclasses.dataclass
class DuplicatePairs:
    first: np.ndarray
    second: np.ndarray
    similarity: np.ndarray
    # Pairs above the threshold, of which the `max_pairs` most similar are kept.
    found: int = 0

    def __len__(self) -> int:
        return len(self.similarity)


def _most_similar(first: np.ndarray, second: np.ndarray, sims: np.ndarray, keep: int) -> tuple[np.ndarray, ...]:
    order = np.argsort(-sims, kind="stable")[:keep]
    return first[order], second[order], sims[order]


def duplicate_pairs(features: np.ndarray, threshold: float, max_pairs: int = 100_000) -> DuplicatePairs:
    """Pairs (i < j) whose cosine similarity is at least `threshold`: the `max_pairs` most similar, most
    similar first (memory stays bounded when a weak encoder puts millions of pairs above it), and their count."""
    first, second, sims = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    found = 0
    count = len(features)
    for start in range(0, count, CHUNK):
        q = _normalized(features[start:start + CHUNK])
        for other in range(start, count, CHUNK * 8):
            block = _normalized(features[other:other + CHUNK * 8])
            sim = tf.matmul(q, block, transpose_b=True).numpy()
            rows, cols = np.nonzero(sim >= threshold)
            i, j = rows + start, cols + other
            keep = i < j
            found += int(np.count_nonzero(keep))
            first = np.concatenate([first, i[keep]])
            second = np.concatenate([second, j[keep]])
            sims = np.concatenate([sims, sim[rows[keep], cols[keep]]])
            if len(sims) > 2 * max_pairs:
                first, second, sims = _most_similar(first, second, sims, max_pairs)
    return DuplicatePairs(*_most_similar(first, second, sims, max_pairs), found=found)


def write_duplicates(path: str, pairs: DuplicatePairs, ids: np.ndarray, labels: np.ndarray | None,
                     class_names: list[str] | None) -> None:
    """duplicates.csv: similarity, both images' ids (and labels when known), near-duplicates first."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["similarity", "image_a", "image_b"] + (["label_a", "label_b"] if labels is not None else []))
        for a, b, s in zip(pairs.first, pairs.second, pairs.similarity):
            row = [f"{s:.6f}", ids[a], ids[b]]
            if labels is not None:
                row += [_name(labels[a], class_names), _name(labels[b], class_names)]
            writer.writerow(row)


def _name(label: int, class_names: list[str] | None) -> str:
    if label < 0:
        return ""
    return class_names[label] if class_names else str(label)


def plot_neighbours(path: str, query_images: np.ndarray, neighbour_images: np.ndarray, similarity: np.ndarray,
                    query_labels: Sequence[str] | None = None, neighbour_labels: Sequence[Sequence[str]] | None = None) -> None:
    """neighbours.png: a row per query, the query then its neighbours with their cosine similarity (and labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, k = similarity.shape
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.4 * (k + 1), 1.55 * rows), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(query_images[r].astype(np.uint8))
        axes[r, 0].set_title("query" + (f"\n{query_labels[r]}" if query_labels else ""), fontsize=7)
        for c in range(k):
            axes[r, c + 1].imshow(neighbour_images[r, c].astype(np.uint8))
            label = f"\n{neighbour_labels[r][c]}" if neighbour_labels else ""
            axes[r, c + 1].set_title(f"{similarity[r, c]:.3f}{label}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
