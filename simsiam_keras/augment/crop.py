"""RandomResizedCrop and horizontal flip with torchvision's semantics (Appendix A), one image at a time."""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from simsiam_keras.augment.seeds import random_apply

_CROP_ATTEMPTS = 10


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


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """A float image in [0, 255] rounded to uint8, as a decoded image is stored."""
    return tf.saturate_cast(tf.round(image), tf.uint8)


def random_flip(image: tf.Tensor, prob: float | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Horizontal flip with probability ``prob``."""
    return random_apply(tf.image.flip_left_right, prob, image, seed)



@tf.autograph.experimental.do_not_convert  # plain TensorFlow: no AutoGraph pass when tf.data maps it
def eval_view(images: tf.Tensor, size: int, resize_ratio: float) -> tf.Tensor:
    """The un-augmented view every evaluation sees (Appendix A): float32 [0, 255], `size` x `size`.

    torchvision's Resize(int(size x resize_ratio)) of the shorter side (the longer one becomes
    int(long x short / shorter)), bilinear with antialiasing, then CenterCrop(size). The paper's
    ratio is 256/224; 1.0 keeps the whole image of a CIFAR-size dataset. Takes one HxWx3 image or
    a batch of them.
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    short = int(size * resize_ratio)
    if short < size:
        raise ValueError(f"resize_ratio must be at least 1 (the crop is inside the resized image), got {resize_ratio}")
    scale = short / tf.cast(tf.minimum(height, width), tf.float64)
    new_h = tf.where(height <= width, short, tf.cast(tf.cast(height, tf.float64) * scale, tf.int32))
    new_w = tf.where(height <= width, tf.cast(tf.cast(width, tf.float64) * scale, tf.int32), short)
    images = tf.cond(
        (new_h == height) & (new_w == width),
        lambda: images,
        lambda: tf.image.resize(images, tf.stack([new_h, new_w]), method="bilinear", antialias=True),
    )
    top = tf.cast(tf.round(tf.cast(new_h - size, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - size, tf.float32) / 2), tf.int32)
    view = images[..., top : top + size, left : left + size, :]
    return tf.ensure_shape(view, [*images.shape[:-3], size, size, 3])
