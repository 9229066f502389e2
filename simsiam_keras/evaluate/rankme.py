"""RankMe (Garrido et al., ICML 2023): the effective rank of a set of features, a label-free quality number.

exp(entropy of the singular values normalised to sum 1): d for features spread evenly over d
directions, 1 for features on a line (a collapsed encoder). It tracks downstream accuracy across
runs of one method, so runs can be compared without labels. The singular values are the square
roots of the eigenvalues of F^T F, accumulated chunk by chunk: memory is d x d, whatever the count.
"""

from __future__ import annotations

import numpy as np

# Added to each normalised singular value before the log, as in the paper.
EPSILON = 1e-7


class GramAccumulator:
    """F^T F of features given in chunks (float64)."""

    def __init__(self, dim: int):
        self.gram = np.zeros((dim, dim), np.float64)
        self.count = 0

    def add(self, features: np.ndarray) -> None:
        chunk = np.asarray(features, np.float64)
        self.gram += chunk.T @ chunk
        self.count += len(chunk)

    def singular_values(self) -> np.ndarray:
        return np.sqrt(np.clip(np.linalg.eigvalsh(self.gram), 0.0, None))[::-1]


def rankme_of_singular_values(singular_values: np.ndarray) -> float:
    """exp(-sum p log p) with p = sigma / sum(sigma) + epsilon."""
    total = float(np.sum(singular_values))
    if total <= 0:
        return 1.0
    p = singular_values / total + EPSILON
    return float(np.exp(-np.sum(p * np.log(p))))


def rankme(features: np.ndarray) -> float:
    """The effective rank of a (count, dim) feature matrix."""
    return rankme_of_singular_values(np.linalg.svd(np.asarray(features, np.float64), compute_uv=False))
