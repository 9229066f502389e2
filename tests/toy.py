"""A SimSiam on a one-convolution backbone: for the tests of the method's machinery (targets, the
compiled step), which do not need a ResNet's tracing and XLA compile time."""

import keras

from simsiam_keras.method.model import SimSiam
from simsiam_keras.nets import heads
from simsiam_keras.nets.batch_norm import BatchNormalization


def toy_simsiam(**kwargs) -> SimSiam:
    """Uncompiled, from seed 0: conv 3x3/2 (8 channels), the package's BatchNorm, ReLU, pooling on
    16x16 images; projector 8 -> 32 -> 32, predictor 32 -> 8 -> 32. `kwargs` go to SimSiam."""
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, strides=2), BatchNormalization(),
                                 keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D()])
    return SimSiam(backbone, heads.projector(8, 32, 32, 2), heads.predictor(32, 8), **kwargs)
