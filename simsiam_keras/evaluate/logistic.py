"""Multinomial logistic regression on frozen features, fitted full-batch by L-BFGS: the small-set probe.

The paper's LARS probe needs ImageNet-scale step counts (see `config.LARS_MIN_STEPS_PER_EPOCH`);
on a few thousand images it barely moves the head. This fits the same linear head to convergence
instead, with the protocol of Kornblith et al. (2019) that SimCLR's and CLIP's linear probes use on
small sets: minimise mean cross-entropy + l2/2 ||W||^2 (bias unpenalised) with L-BFGS (Nocedal & Wright,
Algorithm 7.4/7.5: two-loop recursion, memory 10, backtracking Armijo line search), the penalty
chosen on a held-out slice of the training split, then refitted on all of it.

The objective runs in TensorFlow (float32 matmuls, on a GPU when there is one); the L-BFGS state
is float64 numpy. Features are standardised for the fit (a well-conditioned problem whose penalty
weighs every feature alike, as scikit-learn's StandardScaler + LogisticRegression does); the
returned head applies to the features as given, the standardisation folded into it exactly.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

LBFGS_MEMORY = 10
ARMIJO = 1e-4
# Stop when the largest gradient entry is below this (scikit-learn's `tol` for lbfgs is 1e-4)...
GRADIENT_TOLERANCE = 1e-5
# ...or when an iteration lowers the loss by less than this fraction of it (about float32's resolution).
LOSS_TOLERANCE = 1e-7

Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclasses.dataclass
class LogisticFit:
    """A fitted head: logits = features @ kernel + bias."""

    kernel: np.ndarray  # (feature_dim, num_classes)
    bias: np.ndarray  # (num_classes,)
    l2: float
    loss: float
    iterations: int
    converged: bool

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.kernel.astype(np.float32) + self.bias.astype(np.float32)


def minimize_lbfgs(objective: Objective, start: np.ndarray, max_iterations: int) -> tuple[np.ndarray, float, int, bool]:
    """Minimises a smooth convex `objective` (x -> (value, gradient)) from `start`.

    Returns (x, value, iterations, converged). A line search that cannot lower the value any
    more (the float32 objective's resolution) ends the run as converged.
    """
    x = start.astype(np.float64)
    value, gradient = objective(x)
    pairs: collections.deque[tuple[np.ndarray, np.ndarray, float]] = collections.deque(maxlen=LBFGS_MEMORY)
    for iteration in range(max_iterations):
        if np.max(np.abs(gradient)) <= GRADIENT_TOLERANCE:
            return x, value, iteration, True
        direction = -_two_loop(gradient, pairs)
        slope = float(gradient @ direction)
        if slope >= 0:  # not a descent direction (numerical trouble): restart from steepest descent
            pairs.clear()
            direction, slope = -gradient, -float(gradient @ gradient)
        step = 1.0 if pairs else min(1.0, 1.0 / np.sum(np.abs(gradient)))
        while True:
            candidate = x + step * direction
            new_value, new_gradient = objective(candidate)
            if new_value <= value + ARMIJO * step * slope:
                break
            step *= 0.5
            if step < 1e-12:
                return x, value, iteration, True
        s, y = candidate - x, new_gradient - gradient
        sy = float(s @ y)
        if sy > 1e-12 * float(y @ y):  # always true for a strongly convex objective, up to rounding
            pairs.append((s, y, 1.0 / sy))
        decrease = value - new_value
        x, value, gradient = candidate, new_value, new_gradient
        if decrease <= LOSS_TOLERANCE * max(abs(value), 1.0):
            return x, value, iteration + 1, True
    return x, value, max_iterations, False


def _two_loop(gradient: np.ndarray, pairs: Sequence[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """H @ gradient for the L-BFGS inverse-Hessian estimate H of the stored (s, y) pairs."""
    q = gradient.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * float(s @ q)
        q -= alpha * y
        alphas.append(alpha)
    if pairs:
        s, y, _ = pairs[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
        q += (alpha - rho * float(y @ q)) * s
    return q


def _objective(features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float) -> Objective:
    """x = [kernel.ravel(), bias] -> (mean cross-entropy + l2/2 ||kernel||^2, its gradient), float64."""
    dim = features.shape[1]
    x_t = tf.constant(features, tf.float32)
    y_t = tf.constant(labels, tf.int32)
    count = float(len(labels))

    @tf.function(reduce_retracing=True)
    def terms(kernel, bias):
        logits = tf.matmul(x_t, kernel) + bias
        log_probs = tf.nn.log_softmax(logits)
        picked = tf.gather(log_probs, y_t, axis=1, batch_dims=1)
        loss = -tf.reduce_sum(tf.cast(picked, tf.float64)) / count
        residual = (tf.exp(log_probs) - tf.one_hot(y_t, num_classes, dtype=tf.float32)) / count
        return loss, tf.matmul(x_t, residual, transpose_a=True), tf.reduce_sum(residual, axis=0)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        kernel = x[: dim * num_classes].reshape(dim, num_classes)
        loss, grad_kernel, grad_bias = terms(tf.constant(kernel, tf.float32), tf.constant(x[dim * num_classes:], tf.float32))
        value = float(loss) + 0.5 * l2 * float(np.sum(kernel**2))
        gradient = np.concatenate([(grad_kernel.numpy().astype(np.float64) + l2 * kernel).ravel(),
                                   grad_bias.numpy().astype(np.float64)])
        return value, gradient

    return objective


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float, max_iterations: int = 500,
    start: LogisticFit | None = None,
) -> LogisticFit:
    """The L2-regularised multinomial logistic regression of `labels` on standardised `features`, from `start` or zeros.

    Each feature is centred and scaled to unit variance for the fit (the penalty is on the weights
    of standardised features); both are folded back into the returned kernel and bias exactly.
    """
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    scale = np.where(std > 1e-6 * max(std.max(), 1e-30), std, 1.0)  # constant (dead) features stay as they are
    standardised = ((features - mean) / scale).astype(np.float32)
    dim = features.shape[1]
    if start is None:
        x0 = np.zeros(dim * num_classes + num_classes)
    else:  # the start's head, expressed on standardised features
        x0 = np.concatenate([(start.kernel * scale[:, None]).ravel(), start.bias + mean @ start.kernel])
    x, value, iterations, converged = minimize_lbfgs(
        _objective(standardised, labels, num_classes, l2), x0, max_iterations)
    kernel = x[: dim * num_classes].reshape(dim, num_classes) / scale[:, None]
    bias = x[dim * num_classes:] - mean @ kernel
    return LogisticFit(kernel, bias, l2, value, iterations, converged)


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices: `fraction` of every class held out (at least one image of a class with two)."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) > 1:
            held.append(members[: max(1, round(fraction * len(members)))])
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), held), held


def fit_probe(
    features: np.ndarray, labels: np.ndarray, num_classes: int, l2_grid: Sequence[float], holdout_fraction: float,
    max_iterations: int, seed: int = 0,
) -> tuple[LogisticFit, dict[str, float]]:
    """Chooses the penalty on a held-out slice, then refits on every image: (fit, held-out top-1 per penalty).

    The grid is walked from the strongest penalty down, each fit starting from the previous one
    (the regularisation path), so the weakly regularised fits start near their optimum. Ties go
    to the stronger penalty. A grid of one penalty is fitted directly, as is the grid's middle penalty
    when no class has two images to hold one out.
    """
    grid = sorted(set(float(v) for v in l2_grid), reverse=True)
    scores: dict[str, float] = {}
    fit_rows, held_rows = holdout_split(labels, holdout_fraction, seed)
    best, start = grid[len(grid) // 2], None
    if len(grid) > 1 and len(held_rows):
        best_score = -1.0
        for l2 in grid:
            start = fit_logistic(features[fit_rows], labels[fit_rows], num_classes, l2, max_iterations, start)
            score = float(np.mean(np.argmax(start.logits(features[held_rows]), axis=1) == labels[held_rows]))
            scores[f"{l2:g}"] = score
            if score > best_score:
                best, best_score, best_start = l2, score, start
        start = best_start
    return fit_logistic(features, labels, num_classes, best, max_iterations, start), scores
