"""The train step's half of `--augment-on device`: the views' appearance drawn where the step runs.

The input pipeline then only decodes and crops: each batch is ((uint8 crops1, crops2), (seeds1,
seeds2)[, image_ids]), and `AppearanceOnDevice` turns it into the (view1, view2[, image_ids]) a
host-augmented batch is, with the same draws from the same seeds (`SimSiamAugment.appearance_batch`).
"""

from __future__ import annotations

import tensorflow as tf

from simsiam_keras.augment.recipe import SimSiamAugment


class AppearanceOnDevice:
    """Flip, jitter, grayscale and blur of a batch's cropped views, each from its seed, on the step's device."""

    def __init__(self, augment: SimSiamAugment):
        # XLA-compiled on every device: 3x faster than plain TF ops even on a CPU, and one fused
        # kernel instead of hundreds of small ones on a GPU whose step is not compiled.
        self.appearance = tf.function(augment.appearance_batch, jit_compile=True, autograph=False)

    def __call__(self, data: tuple) -> tuple:
        (crops1, crops2), (seeds1, seeds2), *image_ids = data
        views = self.appearance(tf.concat([crops1, crops2], 0), tf.concat([seeds1, seeds2], 0))
        return (*tf.split(views, 2), *image_ids)


def views_as_given(data: tuple) -> tuple:
    """A host-augmented batch: (view1, view2[, image_ids]) already."""
    return data
