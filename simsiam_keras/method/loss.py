"""SimSiam's similarity D and its symmetrised, stop-gradient loss (Sec. 3, Eq. 1-4; Sec. 4.5-4.6)."""

from __future__ import annotations

import tensorflow as tf

SIMILARITIES = ("cosine", "cross_entropy")


def negative_cosine(p: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    """D(p, z) = -<p/||p||, z/||z||>, one value per example (Eq. 1)."""
    return -tf.reduce_sum(tf.math.l2_normalize(p, axis=-1) * tf.math.l2_normalize(z, axis=-1), axis=-1)


def cross_entropy_similarity(p: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    """D(p, z) = -softmax(z) . log softmax(p) along channels, one value per example (Sec. 4.5)."""
    return -tf.reduce_sum(tf.nn.softmax(z, axis=-1) * tf.nn.log_softmax(p, axis=-1), axis=-1)


def per_example_loss(
    p1: tf.Tensor,
    p2: tf.Tensor,
    z1: tf.Tensor,
    z2: tf.Tensor,
    stop_gradient: bool = True,
    similarity: str = "cosine",
    symmetric: bool = True,
) -> tf.Tensor:
    """L = D(p1, sg(z2))/2 + D(p2, sg(z1))/2 per example (Eq. 4); asymmetric: D(p1, sg(z2)) (Eq. 3).

    Predictions first, as in D(p, z): p1 regresses to z2, p2 to z1.

    Callers average over the *global* batch; under tf.distribute that means dividing the
    per-replica mean by the number of replicas in sync.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}: choose one of {SIMILARITIES}")
    d = negative_cosine if similarity == "cosine" else cross_entropy_similarity
    p1, p2, z1, z2 = (tf.cast(t, tf.float32) for t in (p1, p2, z1, z2))
    if stop_gradient:
        z1, z2 = tf.stop_gradient(z1), tf.stop_gradient(z2)
    if not symmetric:
        return d(p1, z2)
    return 0.5 * d(p1, z2) + 0.5 * d(p2, z1)


def z_std(z: tf.Tensor) -> tf.Tensor:
    """Collapse monitor (Sec. 4.1): per-channel std of z/||z|| over the batch, averaged over channels.

    About 1/sqrt(d) when the outputs are spread on the hypersphere, 0 when they collapse.
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))
