"""One SimSiam view of one image: the whole augmentation recipe of Appendix A, composed.

Works on a single image inside ``tf.data.Dataset.map`` (graph mode), with torchvision's
semantics and every random parameter drawn per image and per view from a stateless seed. The
recipe comes in two halves, the crop and the appearance (flip, jitter, grayscale, blur);
``appearance_batch`` is the second half for a whole batch, for the train step to run on the
accelerator (``--augment-on device``) with the same draws from the same seeds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import tensorflow as tf

from simsiam_keras.augment import batch_appearance
from simsiam_keras.augment.blur import blur_kernel_size, random_gaussian_blur
from simsiam_keras.augment.colour import color_jitter, random_grayscale
from simsiam_keras.augment.crop import random_flip, random_resized_crop
from simsiam_keras.augment.seeds import random_apply, split_seed
from simsiam_keras.config import AugmentConfig

# The recipe is plain TensorFlow (Python control flow only on the config): tf.data and
# tf.function need not run AutoGraph's source transformation over it, ~2 s of every run's start.
plain_tf = tf.autograph.experimental.do_not_convert


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

    @plain_tf
    def __call__(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return self.appearance(self.crop(image, seed), seed)

    @plain_tf
    def crop(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """The view's random resized crop, float32 (image_size, image_size, 3) in [0, 255]."""
        c = self.config
        return random_resized_crop(tf.cast(image, tf.float32), self.image_size, c.crop_scale, c.crop_ratio,
                                   self.crop_seed(seed))

    @staticmethod
    @plain_tf
    def crop_seed(seed: tf.Tensor) -> tf.Tensor:
        """The seed of the view's crop box, for pipelines that crop while decoding."""
        return split_seed(seed, 6)[0]

    @plain_tf
    def appearance(self, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Everything after the crop (flip, jitter, grayscale, blur) on a resized crop in [0, 255]."""
        c = self.config
        _, flip_seed, jitter_apply_seed, jitter_seed, gray_seed, blur_seed = split_seed(seed, 6)
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

    @plain_tf
    def appearance_batch(self, views: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
        """`appearance` of each view of an [N, image_size, image_size, 3] batch (uint8 or float in [0, 255]).

        Row i of [N, 2] `seeds` is view i's seed; each view gets the draws `appearance(views[i],
        seeds[i])` gets (`batch_appearance.sample_appearance`). Batched ops only
        (`augment.batch_appearance`), for the train step to run on whatever device runs it.
        """
        x = tf.ensure_shape(tf.cast(views, tf.float32), (None, self.image_size, self.image_size, 3)) / 255.0
        params = batch_appearance.sample_appearance(self.config, seeds)
        x = batch_appearance.apply_appearance(x, params, self.config, self.blur_kernel_size)
        return tf.clip_by_value(x * 255.0, 0.0, 255.0)

    def get_config(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SimSiamAugment":
        augment = {
            k: tuple(v) if isinstance(v, list) else v for k, v in dict(config.get("config") or {}).items()
        }
        return cls(config["image_size"], AugmentConfig(**augment))
