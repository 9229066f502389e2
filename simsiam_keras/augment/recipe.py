"""SimSiam's per-image augmentations (Appendix A), with torchvision semantics.

Everything here works on a single image inside ``tf.data.Dataset.map`` (graph mode).
Every random parameter comes from stateless random ops driven by a ``seed`` tensor of
shape [2] (int32 or int64), so each image and each view gets its own draws and a run is
reproducible from its seeds alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from simsiam_keras.config import AugmentConfig

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision/PIL
_CROP_ATTEMPTS = 10

# Indices of the colour-jitter ops, as in torchvision's ColorJitter.get_params.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    # stateless_split's output depends on the seed dtype; int64 makes [a, b] mean one thing.
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)
    return [seeds[i] for i in range(num)]


# --------------------------------------------------------------------------- crop


def sample_crop_box(
    height: int | tf.Tensor,
    width: int | tf.Tensor,
    scale: Sequence[float],
    ratio: Sequence[float],
    seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """torchvision ``RandomResizedCrop.get_params``: (offset_y, offset_x, crop_h, crop_w).

    All ten attempts are drawn at once; the first one that fits wins, otherwise the
    centre crop clamped to the ratio range. ``height``/``width`` may be dynamic tensors.
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)
    # One draw for everything: 10 scales, 10 log-ratios, then the two offsets.
    u = tf.random.stateless_uniform([2 * _CROP_ATTEMPTS + 2], seed, dtype=tf.float32)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    target_area = height_f * width_f * (scale[0] + (scale[1] - scale[0]) * u[:_CROP_ATTEMPTS])
    aspect = tf.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[_CROP_ATTEMPTS:-2])
    # tf.round is round-half-to-even, like Python's round().
    w = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
    h = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    found = tf.reduce_any(fits)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    min_ratio, max_ratio = float(min(ratio)), float(max(ratio))
    in_ratio = width_f / height_f
    fallback_w = tf.where(
        in_ratio > max_ratio, tf.cast(tf.round(height_f * max_ratio), tf.int32), width
    )
    fallback_h = tf.where(
        in_ratio < min_ratio, tf.cast(tf.round(width_f / min_ratio), tf.int32), height
    )

    crop_h = tf.where(found, h[first], fallback_h)
    crop_w = tf.where(found, w[first], fallback_w)
    slack = tf.stack([height - crop_h, width - crop_w])
    # Uniform integers in [0, slack]; the minimum guards against u * (slack + 1) rounding up.
    random_offset = tf.minimum(
        tf.cast(tf.floor(u[-2:] * tf.cast(slack + 1, tf.float32)), tf.int32), slack
    )
    offset = tf.where(found, random_offset, slack // 2)
    offset_y, offset_x = offset[0], offset[1]
    return offset_y, offset_x, crop_h, crop_w


def random_resized_crop(
    image: tf.Tensor,
    size: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    seed: tf.Tensor,
) -> tf.Tensor:
    """Crop a torchvision-style random box and resize it to (size, size), bilinear + antialias."""
    shape = tf.shape(image)
    offset_y, offset_x, crop_h, crop_w = sample_crop_box(shape[0], shape[1], scale, ratio, seed)
    crop = tf.slice(image, tf.stack([offset_y, offset_x, 0]), tf.stack([crop_h, crop_w, -1]))
    return resize_crop(crop, size)


def resize_crop(crop: tf.Tensor, size: int) -> tf.Tensor:
    """Resize a crop to (size, size) as float32, bilinear with antialiasing when it shrinks."""
    crop = tf.cast(crop, tf.float32)
    shape = tf.shape(crop)
    # Antialiasing only changes a downscale, and the antialiased kernel is several times
    # slower, so pure upscales (every crop at CIFAR size) take the plain bilinear path.
    return tf.cond(
        (shape[0] > size) | (shape[1] > size),
        lambda: tf.image.resize(crop, (size, size), method="bilinear", antialias=True),
        lambda: tf.image.resize(crop, (size, size), method="bilinear"),
    )


# ------------------------------------------------------------------ random helpers


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


def random_flip(image: tf.Tensor, prob: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Horizontal flip with probability ``prob``."""
    return random_apply(tf.image.flip_left_right, prob, image, seed)


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


# ------------------------------------------------------------------- colour jitter
# torchvision semantics on float images in [0, 1]: blend with a degenerate image, clip.


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

    ``order`` is a random permutation of the 4 op indices (BRIGHTNESS, CONTRAST,
    SATURATION, HUE); ``factors[i]`` is op i's factor, from [max(0, 1 - s), 1 + s] (hue:
    a shift from [-hue, hue]).
    """
    order_seed, factor_seed = _split(seed, 2)
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


# ------------------------------------------------------------------------- blur


def blur_kernel_size(image_size: int, fraction: float) -> int:
    """Odd kernel side about ``fraction`` x ``image_size`` (23 at 224 for 0.1), at least 3."""
    size = int(round(fraction * image_size))
    if size % 2 == 0:
        size += 1
    return max(size, 3)


def gaussian_kernel(sigma: tf.Tensor | float, kernel_size: int) -> tf.Tensor:
    """Normalised 1-D Gaussian of odd length ``kernel_size``."""
    radius = kernel_size // 2
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    sigma = tf.cast(sigma, tf.float32)
    kernel = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
    return kernel / tf.reduce_sum(kernel)


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
    apply_seed, sigma_seed = _split(seed, 2)

    def blur(x: tf.Tensor) -> tf.Tensor:
        sigma = tf.random.stateless_uniform(
            [], sigma_seed, minval=sigma_range[0], maxval=sigma_range[1]
        )
        return gaussian_blur(x, sigma, kernel_size)

    return random_apply(blur, prob, image, apply_seed)


# ---------------------------------------------------------------------- pipeline


class SimSiamAugment:
    """One SimSiam view of one image: crop, flip, jitter, grayscale, blur (Appendix A).

    Call with a float HxWx3 image in [0, 255] (any, possibly dynamic, size) and a [2]
    seed; returns float32 (image_size, image_size, 3) in [0, 255], not normalised.
    """

    def __init__(self, image_size: int, config: AugmentConfig | None = None):
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_size = int(image_size)
        self.config = config if config is not None else AugmentConfig()
        self.blur_kernel_size = blur_kernel_size(self.image_size, self.config.blur_kernel_fraction)

    def __call__(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        c = self.config
        image = tf.cast(image, tf.float32)
        x = random_resized_crop(image, self.image_size, c.crop_scale, c.crop_ratio, self.crop_seed(seed))
        return self.appearance(x, seed)

    @staticmethod
    def crop_seed(seed: tf.Tensor) -> tf.Tensor:
        """The seed of the view's crop box, for pipelines that crop while decoding."""
        return _split(seed, 6)[0]

    def appearance(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Everything after the crop (flip, jitter, grayscale, blur) on a resized crop in [0, 255]."""
        c = self.config
        _, flip_seed, jitter_apply_seed, jitter_seed, gray_seed, blur_seed = _split(seed, 6)
        x = x / 255.0
        # torchvision flips last; the flip commutes with jitter, grayscale and blur.
        x = random_flip(x, c.flip_prob, flip_seed)
        x = random_apply(
            lambda v: color_jitter(v, c.brightness, c.contrast, c.saturation, c.hue, jitter_seed),
            c.jitter_prob,
            x,
            jitter_apply_seed,
        )
        x = random_grayscale(x, c.grayscale_prob, gray_seed)
        if c.blur_prob > 0:
            x = random_gaussian_blur(x, c.blur_prob, c.blur_sigma, self.blur_kernel_size, blur_seed)
        x = tf.clip_by_value(x * 255.0, 0.0, 255.0)
        return tf.ensure_shape(x, (self.image_size, self.image_size, 3))

    def get_config(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SimSiamAugment":
        augment = {
            k: tuple(v) if isinstance(v, list) else v for k, v in dict(config.get("config") or {}).items()
        }
        return cls(config["image_size"], AugmentConfig(**augment))
