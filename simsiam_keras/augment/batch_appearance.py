"""The appearance half of the recipe (flip, colour jitter, grayscale, blur) on a whole batch of views.

With `--augment-on device` the input pipeline only decodes and crops, and ships each view's
seed with it; the train step runs these ops wherever it runs (GPU, TPU or CPU), on
[N, H, W, 3] float images in [0, 1]. `sample_appearance` draws each view's parameters from its
own seed exactly as `SimSiamAugment.appearance` draws them one image at a time (the same seed
splits, `seeds.split_seeds`/`seeds.uniform_rows`), and the ops use colour.py's and blur.py's
formulas. Every op works on the whole batch at once, with one parameter per image as an [N]
tensor: no loop over images and static shapes, so XLA compiles them, and under a
`tf.distribute` strategy each replica augments its own local batch.

Precision: the colour matrices and the blur are matmuls. In float32 on a CPU the results equal
the per-image ops' up to float rounding; TF32 (Ampere GPUs, on by default) and TPUs' default
matmul precision round them to about 1e-3 of the pixel value, below the 8-bit rounding that
torchvision's PIL ops apply after every op.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from simsiam_keras.augment.blur import blur_matrix, gaussian_kernel
from simsiam_keras.augment.colour import (
    BRIGHTNESS,
    CONTRAST,
    GRAY_MATRIX,
    HUE,
    SATURATION,
    active_ops,
    gray_mean,
    jitter_ranges,
    mix_channels,
    saturation_matrix,
)
from simsiam_keras.augment.seeds import scale_uniform, split_seeds, uniform_rows
from simsiam_keras.config import AugmentConfig

_EYE = np.eye(3, dtype=np.float32)
# Plain TensorFlow with Python control flow only on the config: AutoGraph need not convert it
# when a user's tf.function (with its default autograph=True) calls it.
plain_tf = tf.autograph.experimental.do_not_convert


def _per_image(values: tf.Tensor) -> tf.Tensor:
    """[N] -> [N, 1, 1, 1], to broadcast one value per image over an [N, H, W, C] batch."""
    return values[:, tf.newaxis, tf.newaxis, tf.newaxis]


def _applies(prob: float, unit: tf.Tensor) -> tf.Tensor:
    """`seeds.random_apply`'s choice from its draw `unit` ([N] in [0, 1)); a certain outcome ignores the draw."""
    if prob <= 0:
        return tf.zeros_like(unit, tf.bool)
    if prob >= 1:
        return tf.ones_like(unit, tf.bool)
    return unit < prob


@plain_tf
def sample_appearance(config: AugmentConfig, seeds: tf.Tensor) -> dict[str, tf.Tensor]:
    """Each view's appearance parameters, drawn from its seed (a row of [N, 2] `seeds`) as `appearance` draws them.

    `flip`, `jitter`, `grayscale`, `blur`: [N] bool, whether each op applies; `order` [N, 4]
    and `factors` [N, 4]: the jitter's (`colour.sample_color_jitter_params`); `sigma` [N]: the
    blur's. The draws of one depth of seed splitting share one op, so there are four in all.
    """
    c = config
    _, flip, jitter_apply, jitter, gray, blur = split_seeds(seeds, 6)
    flip_u, jitter_u, gray_u = tf.unstack(uniform_rows(tf.stack([flip, jitter_apply, gray], axis=1), 1)[..., 0], axis=1)
    # `split_seed(jitter, 2)` gives (order, factor) seeds, `split_seed(blur, 2)` (apply, sigma) seeds.
    firsts, seconds = split_seeds(tf.stack([jitter, blur], axis=1), 2)
    draws = uniform_rows(tf.stack([firsts[:, 0], seconds[:, 0], firsts[:, 1], seconds[:, 1]], axis=1), 4)
    low, high = jitter_ranges(c.brightness, c.contrast, c.saturation, c.hue)
    return {
        "flip": _applies(c.flip_prob, flip_u),
        "jitter": _applies(c.jitter_prob, jitter_u),
        "order": tf.argsort(draws[:, 0], axis=-1),
        "factors": low + (high - low) * draws[:, 1],
        "grayscale": _applies(c.grayscale_prob, gray_u),
        "blur": _applies(c.blur_prob, draws[:, 2, 0]),
        "sigma": scale_uniform(draws[:, 3, 0], c.blur_sigma[0], c.blur_sigma[1]),
    }


def flip(images: tf.Tensor, applies: tf.Tensor) -> tf.Tensor:
    """Horizontal flip of the images where `applies` ([N] bool)."""
    return tf.where(_per_image(applies), tf.reverse(images, axis=[2]), images)


def grayscale(images: tf.Tensor, applies: tf.Tensor) -> tf.Tensor:
    """`colour.to_grayscale` of the images where `applies`: one colour matrix per image, the luma's or the identity."""
    return mix_channels(images, tf.where(applies[:, tf.newaxis, tf.newaxis], GRAY_MATRIX, _EYE))


# ------------------------------------------------------------------ colour jitter


def rotate_hue(images: tf.Tensor, delta: tf.Tensor) -> tf.Tensor:
    """`colour.adjust_hue` with a delta per image ([N], in turns): the hue shifted in HSV, modulo one turn."""
    zero = tf.zeros_like(delta)
    shift = tf.stack([delta, zero, zero], axis=-1)[:, tf.newaxis, tf.newaxis, :]
    # Saturation and value are in [0, 1]: modulo 2 leaves them as they are.
    hsv = tf.math.floormod(tf.image.rgb_to_hsv(images) + shift, [1.0, 2.0, 2.0])
    return tf.image.hsv_to_rgb(hsv)


def _linear_op(
    images: tf.Tensor, op: tf.Tensor, factors: tf.Tensor, applies: tf.Tensor, active: Sequence[bool]
) -> tf.Tensor:
    """Each image's brightness, contrast or saturation (`op`, [N]) as a colour matrix and an offset, then the clip.

    The identity where not `applies`, or where `op` is the hue or an inactive op.
    """
    factor = tf.gather(factors, op, batch_dims=1)

    def doing(index: int) -> tf.Tensor:
        return applies & tf.equal(op, index) if active[index] else tf.zeros_like(applies)

    scale = tf.where(doing(BRIGHTNESS) | doing(CONTRAST), factor, 1.0)
    matrix = tf.where(
        doing(SATURATION)[:, tf.newaxis, tf.newaxis], saturation_matrix(factor), _EYE * scale[:, tf.newaxis, tf.newaxis]
    )
    mixed = mix_channels(images, matrix)
    if active[CONTRAST]:
        mixed += _per_image(tf.where(doing(CONTRAST), (1.0 - factor) * gray_mean(images), 0.0))
    return tf.clip_by_value(mixed, 0.0, 1.0)


def apply_color_jitter(
    images: tf.Tensor, order: tf.Tensor, factors: tf.Tensor, applies: tf.Tensor, active: Sequence[bool] = (True,) * 4
) -> tf.Tensor:
    """`colour.apply_color_jitter` of the images where `applies` ([N] bool), each in its own order.

    Brightness, contrast and saturation are each a colour matrix, an offset and a clip, so one
    batched op applies a different one of them to every image. The hue comes once: each image's
    linear ops before its hue (positions 0-2, a slot each), the hue of the whole batch, then its
    linear ops after the hue (positions 1-3). Three slots on each side rather than four slots
    that each rotate the hue, because the hue costs most.
    """
    if not any(active):
        return images
    if not active[HUE]:
        for position in range(4):
            images = _linear_op(images, order[:, position], factors, applies, active)
        return images
    hue_at = tf.argmax(tf.cast(tf.equal(order, HUE), tf.int32), axis=-1, output_type=tf.int32)
    linear = any(active[:HUE])
    for position in range(3) if linear else ():
        images = _linear_op(images, order[:, position], factors, applies & (position < hue_at), active)
    images = tf.where(_per_image(applies), rotate_hue(images, factors[:, HUE]), images)
    for position in range(1, 4) if linear else ():
        images = _linear_op(images, order[:, position], factors, applies & (position > hue_at), active)
    return images


# -------------------------------------------------------------------------- blur


def gaussian_blur(images: tf.Tensor, sigma: tf.Tensor, kernel_size: int) -> tf.Tensor:
    """`blur.gaussian_blur` of each image with its own sigma ([N]): one batched matmul per axis.

    Each image's separable kernel becomes its `blur.blur_matrix` per axis (reflect padding
    folded in), so the blur of the batch is one batched matmul per axis (what tensor cores and
    TPU matrix units do best). Needs H and W known when traced, and ``kernel_size // 2`` < H and < W.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(f"gaussian_blur needs the image height and width when traced, got shape {images.shape}")
    kernels = tf.cast(gaussian_kernel(sigma, kernel_size), images.dtype)
    rows = blur_matrix(height, kernels)
    columns = rows if height == width else blur_matrix(width, kernels)
    blurred = tf.einsum("ngh,nhwc->ngwc", rows, images)
    return tf.einsum("nvw,nhwc->nhvc", columns, blurred)


@plain_tf
def apply_appearance(
    images: tf.Tensor, params: dict[str, tf.Tensor], config: AugmentConfig, blur_kernel_size: int
) -> tf.Tensor:
    """Flip, jitter, grayscale and blur of each image (float [0, 1]) with its `sample_appearance` parameters.

    The order is `appearance`'s; an op whose probability is 0 is skipped, as `random_apply` skips it.
    """
    c = config
    if c.flip_prob > 0:
        images = flip(images, params["flip"])
    if c.jitter_prob > 0:
        active = active_ops(c.brightness, c.contrast, c.saturation, c.hue)
        images = apply_color_jitter(images, params["order"], params["factors"], params["jitter"], active)
    if c.grayscale_prob > 0:
        images = grayscale(images, params["grayscale"])
    if c.blur_prob > 0:
        blurred = gaussian_blur(images, params["sigma"], blur_kernel_size)
        images = tf.where(_per_image(params["blur"]), blurred, images)
    return images
