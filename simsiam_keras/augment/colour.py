"""Colour jitter and random grayscale with torchvision's semantics (Appendix A), one image at a time.

Images are float in [0, 1]; each op blends with a degenerate image and clips, as torchvision does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from simsiam_keras.augment.seeds import random_apply, split_seed

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision/PIL


def _mix_channels(image: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    # Per-pixel 3x3 colour matrix as one matmul: several times faster on CPU than a
    # reduction over (or a broadcast along) the 3-wide channel axis.
    mixed = tf.matmul(tf.reshape(image, [-1, 3]), tf.cast(matrix, image.dtype))
    return tf.reshape(mixed, tf.shape(image))


# Every output channel is the luma.
_GRAY_MATRIX = np.repeat(np.array(_GRAY_WEIGHTS, np.float32)[:, np.newaxis], 3, axis=1)


def to_grayscale(image: tf.Tensor) -> tf.Tensor:
    """ITU-R 601-2 luma repeated over 3 channels (``Grayscale(num_output_channels=3)``)."""
    return _mix_channels(image, _GRAY_MATRIX)


def random_grayscale(image: tf.Tensor, prob: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """``to_grayscale`` with probability ``prob``."""
    return random_apply(to_grayscale, prob, image, seed)


def adjust_brightness(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Multiply by ``factor`` and clip to [0, 1]."""
    return tf.clip_by_value(image * factor, 0.0, 1.0)


def adjust_contrast(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Blend with the (scalar) mean of the grayscale image and clip to [0, 1]."""
    channel_means = tf.reduce_mean(tf.reshape(image, [-1, 3]), axis=0)
    gray_mean = tf.reduce_sum(channel_means * tf.constant(_GRAY_WEIGHTS, image.dtype))
    return tf.clip_by_value(factor * image + (1.0 - factor) * gray_mean, 0.0, 1.0)


def adjust_saturation(image: tf.Tensor, factor: tf.Tensor | float) -> tf.Tensor:
    """Blend with the grayscale image and clip to [0, 1]."""
    factor = tf.cast(factor, tf.float32)
    matrix = _GRAY_MATRIX + factor * (np.eye(3, dtype=np.float32) - _GRAY_MATRIX)
    return tf.clip_by_value(_mix_channels(image, matrix), 0.0, 1.0)


def adjust_hue(image: tf.Tensor, delta: tf.Tensor | float) -> tf.Tensor:
    """Rotate the hue by ``delta`` turns (in [-0.5, 0.5])."""
    return tf.image.adjust_hue(image, delta)


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
    low = tf.constant([max(0.0, 1.0 - brightness), max(0.0, 1.0 - contrast), max(0.0, 1.0 - saturation), -hue])
    high = tf.constant([1.0 + brightness, 1.0 + contrast, 1.0 + saturation, hue])
    factors = low + (high - low) * tf.random.stateless_uniform([4], factor_seed)
    return order, factors


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
    active = (brightness > 0, contrast > 0, saturation > 0, hue > 0)
    return apply_color_jitter(image, order, factors, active)

