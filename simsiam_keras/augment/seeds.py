"""Per-image randomness for the augmentations: stateless seeds, split and consumed in graph mode.

Every random parameter of a view comes from stateless random ops driven by a ``seed`` tensor of
shape [2] (int32 or int64), so each image and each view gets its own draws and a run is
reproducible from its seeds alone (RECIPE: "every random parameter must be drawn per image").
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """``num`` independent [2] seeds derived from ``seed``."""
    # stateless_split's output depends on the seed dtype; int64 makes [a, b] mean one thing.
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)
    return [seeds[i] for i in range(num)]


def random_apply(
    fn: Callable[[tf.Tensor], tf.Tensor], prob: float | tf.Tensor, image: tf.Tensor, seed: tf.Tensor
) -> tf.Tensor:
    """``fn(image)`` with probability ``prob``, else ``image`` (only the taken branch runs)."""
    if isinstance(prob, (int, float)):
        if prob <= 0:
            return image
        if prob >= 1:
            return fn(image)
    apply = tf.random.stateless_uniform([], seed) < prob
    return tf.cond(apply, lambda: fn(image), lambda: image)

