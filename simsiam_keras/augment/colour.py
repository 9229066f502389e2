"""Colour jitter and random grayscale with torchvision's semantics (Appendix A), one image at a time.

Images are float in [0, 1]; each op blends with a degenerate image and clips, as torchvision does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from simsiam_keras.augment.seeds import random_apply, split_seed

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision/PIL


def mix_channels(image: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """Every pixel (a row of 3 channels) times a 3x3 colour matrix.

    A [3, 3] matrix for an HxWx3 image (or a batch), or [N, 3, 3] matrices for an N-image batch,
    one per image. One matmul: several times faster on CPU than a reduction over (or a broadcast
    along) the 3-wide channel axis.
    """
    matrix = tf.cast(matrix, image.dtype)
    rows = tf.concat([tf.shape(matrix)[:-2], [-1, 3]], 0)
    return tf.reshape(tf.matmul(tf.reshape(image, rows), matrix), tf.shape(image))


# Every output channel is the luma.
GRAY_MATRIX = np.repeat(np.array(GRAY_WEIGHTS, np.float32)[:, np.newaxis], 3, axis=1)


def to_grayscale(image: tf.Tensor) -> tf.Tensor:
    """ITU-R 601-2 luma repeated over 3 channels (``Grayscale(num_output_channels=3)``)."""
    return mix_channels(image, GRAY_MATRIX)


def random_grayscale(image: tf.Tensor, prob: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """``to_grayscale`` with probability ``prob``."""
    return random_apply(to_grayscale, prob, image, seed)


def adjust_brightness(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Multiply by ``factor`` and clip to [0, 1]."""
    return tf.clip_by_value(image * factor, 0.0, 1.0)


def adjust_contrast(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Blend with the (scalar) mean of the grayscale image and clip to [0, 1]."""
    return tf.clip_by_value(factor * image + (1.0 - factor) * gray_mean(image), 0.0, 1.0)


def gray_mean(image: tf.Tensor) -> tf.Tensor:
    """Mean luma of an HxWx3 image (a scalar), or of each image of a batch ([N])."""
    channel_means = tf.reduce_mean(image, axis=[-3, -2])
    return tf.reduce_sum(channel_means * tf.constant(GRAY_WEIGHTS, image.dtype), axis=-1)


def adjust_saturation(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Blend with the grayscale image and clip to [0, 1]."""
    return tf.clip_by_value(mix_channels(image, saturation_matrix(factor)), 0.0, 1.0)


def saturation_matrix(factor: tf.Tensor | float) -> tf.Tensor:
    """The colour matrix of `adjust_saturation` ([3, 3]), or one per factor of a [N] batch ([N, 3, 3])."""
    factor = tf.cast(factor, tf.float32)[..., tf.newaxis, tf.newaxis]
    return GRAY_MATRIX + factor * (np.eye(3, dtype=np.float32) - GRAY_MATRIX)


def adjust_hue(image: tf.Tensor, delta: tf.Tensor | float) -> tf.Tensor:
    """Rotate the hue by ``delta`` turns (in [-0.5, 0.5])."""
    return tf.image.adjust_hue(image, delta)


# The ops' indices in a jitter's `order` and `factors`.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


def sample_color_jitter_params(
    brightness: float, contrast: float, saturation: float, hue: float, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """torchvision ``ColorJitter.get_params``: (order, factors).

    ``order`` is a random permutation of the 4 op indices (brightness, contrast,
    saturation, hue); ``factors[i]`` is op i's factor, from [max(0, 1 - s), 1 + s] (hue:
    a shift from [-hue, hue]).
    """
    order_seed, factor_seed = split_seed(seed, 2)
    order = tf.argsort(tf.random.stateless_uniform([4], order_seed))
    low, high = jitter_ranges(brightness, contrast, saturation, hue)
    factors = low + (high - low) * tf.random.stateless_uniform([4], factor_seed)
    return order, factors


def jitter_ranges(brightness: float, contrast: float, saturation: float, hue: float) -> tuple[tf.Tensor, tf.Tensor]:
    """torchvision's ranges of the four factors (brightness, contrast, saturation, hue): (low, high), each [4]."""
    low = tf.constant([max(0.0, 1.0 - brightness), max(0.0, 1.0 - contrast), max(0.0, 1.0 - saturation), -hue])
    high = tf.constant([1.0 + brightness, 1.0 + contrast, 1.0 + saturation, hue])
    return low, high


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _jitter_branch(op: Callable, image: tf.Tensor, factor: tf.Tensor) -> Callable[[], tf.Tensor]:
    return lambda: op(image, factor)


def _identity_branch(image: tf.Tensor) -> Callable[[], tf.Tensor]:
    return lambda: image


def apply_color_jitter(
    image: tf.Tensor, order: tf.Tensor, factors: tf.Tensor, active: Sequence[bool] = (True,) * 4
) -> tf.Tensor:
    """Apply the four jitter ops in ``order`` with ``factors``; inactive ops are skipped."""
    if not any(active):
        return image
    factor_list = tf.unstack(factors, num=4)
    for position in range(4):
        branches = [
            _jitter_branch(op, image, factor) if active[i] else _identity_branch(image)
            for i, (op, factor) in enumerate(zip(_JITTER_OPS, factor_list))
        ]
        image = tf.switch_case(order[position], branches)
    return image


def color_jitter(
    image: tf.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    seed: tf.Tensor,
) -> tf.Tensor:
    """torchvision ``ColorJitter`` on a float image in [0, 1]; ops in random order per image."""
    order, factors = sample_color_jitter_params(brightness, contrast, saturation, hue, seed)
    return apply_color_jitter(image, order, factors, active_ops(brightness, contrast, saturation, hue))


def active_ops(brightness: float, contrast: float, saturation: float, hue: float) -> tuple[bool, bool, bool, bool]:
    """Which of the four ops a jitter of these strengths changes anything with (a strength of 0 skips its op)."""
    return (brightness > 0, contrast > 0, saturation > 0, hue > 0)

