"""PyTorch's defaults in Keras (initialisers, BatchNorm momentum and eps): SimSiam's recipe assumes them.

Appendix A: conv and fc layers use PyTorch's default initialisers; models with other fc
initialisers may not converge. BN momentum 0.1 and eps 1e-5 in PyTorch are Keras'
momentum 0.9 and epsilon 1e-5.
"""

from __future__ import annotations

import math

import keras

from simsiam_keras.nets.batch_norm import BatchNormalization

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv_initializer() -> keras.initializers.Initializer:
    """torchvision ResNet conv init: kaiming normal, fan_out, ReLU gain."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def dense(units: int, fan_in: int, use_bias: bool = True, name: str | None = None) -> keras.layers.Dense:
    """fc layer with PyTorch's nn.Linear init: kernel and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.VarianceScaling(scale=1 / 3, mode="fan_in", distribution="uniform"),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound),
        name=name,
    )


def batch_norm(
    synchronized: bool = False,
    zero_gamma: bool = False,
    affine: bool = True,
    name: str | None = None,
) -> BatchNormalization:
    """BatchNorm with PyTorch's momentum/eps; `synchronized` averages statistics over replicas."""
    return BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        center=affine,
        scale=affine,
        gamma_initializer="zeros" if zero_gamma else "ones",
        synchronized=synchronized,
        name=name,
    )
