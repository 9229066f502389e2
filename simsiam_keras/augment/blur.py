"""SimSiam's Gaussian blur (Appendix A, after SimCLR): separable, sigma drawn per image."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from simsiam_keras.augment.seeds import random_apply, split_seed


def blur_kernel_size(image_size: int, fraction: float) -> int:
    """Odd kernel side about ``fraction`` x ``image_size`` (23 at 224 for 0.1), at least 3."""
    size = int(round(fraction * image_size))
    if size % 2 == 0:
        size += 1
    return max(size, 3)


def gaussian_kernel(sigma: tf.Tensor | float, kernel_size: int) -> tf.Tensor:
    """Normalised 1-D Gaussian of odd length ``kernel_size``: [kernel_size], or [N, kernel_size] for [N] sigmas."""
    radius = kernel_size // 2
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.cast(sigma, tf.float32)[..., tf.newaxis]
    kernel = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
    return kernel / tf.reduce_sum(kernel, axis=-1, keepdims=True)


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor | float, kernel_size: int) -> tf.Tensor:
    """Separable Gaussian blur of an HxWxC image with reflect padding.

    Reflect padding needs ``kernel_size // 2`` < H and < W.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    radius = kernel_size // 2
    channels = image.shape[-1] if image.shape[-1] is not None else 3
    kernel = tf.cast(gaussian_kernel(sigma, kernel_size), image.dtype)
    kernel = tf.tile(kernel[:, tf.newaxis, tf.newaxis], [1, channels, 1])  # [k, C, 1]
    padded = tf.pad(image[tf.newaxis], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    out = tf.nn.depthwise_conv2d(padded, kernel[:, tf.newaxis], [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, kernel[tf.newaxis], [1, 1, 1, 1], "VALID")
    return out[0]


def random_gaussian_blur(
    image: tf.Tensor,
    prob: float,
    sigma_range: Sequence[float],
    kernel_size: int,
    seed: tf.Tensor,
) -> tf.Tensor:
    """With probability ``prob``, blur with sigma ~ U(sigma_range) (SimSiam's GaussianBlur)."""
    apply_seed, sigma_seed = split_seed(seed, 2)

    def blur(x: tf.Tensor) -> tf.Tensor:
        sigma = tf.random.stateless_uniform(
            [], sigma_seed, minval=sigma_range[0], maxval=sigma_range[1]
        )
        return gaussian_blur(x, sigma, kernel_size)

    return random_apply(blur, prob, image, apply_seed)

