"""How close a train step comes to the machine: its arithmetic against a large matmul's rate.

A step's floating-point work is its convolutions' and dense layers' multiply-adds, twice (a
multiply and an add), three times (the forward pass, the input gradient, the weight gradient), for
every image of every view (the usual convention: the first convolution's input gradient, which no
one computes, is counted too, ~1% of a ResNet-50 step). BatchNorm, ReLU, the residual adds and the
optimizer's update are memory traffic, not counted; so are layer types other than Conv1D/2D/3D,
DepthwiseConv2D and Dense. Dividing by the step's time gives the rate it sustains, which
`simsiam-benchmark train` puts next to the rate of a float32 2048 x 2048 matmul on the same CPU
threads (for a float32 step on one CPU replica): a step near that rate has little left to gain from
scheduling or kernels, in any framework.
"""

from __future__ import annotations

import time
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

MATMUL_SIZE = 2048


def _leaf_layers(model: keras.Layer) -> Iterator[keras.Layer]:
    for layer in getattr(model, "layers", ()):
        if getattr(layer, "layers", None):
            yield from _leaf_layers(layer)
        else:
            yield layer


def forward_multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one image's forward pass through `model`'s convolutions and dense layers
    (nested models included; each layer counted once, at the output shape of its call)."""
    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)):
            kernel = layer.kernel.shape  # conv: window, inputs per group, outputs; dense: inputs, outputs
            per_output = int(np.prod(kernel[:-1]))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            per_output = int(np.prod(layer.kernel.shape[:2]))
        else:
            continue
        total += int(np.prod(layer.output.shape[1:])) * per_output
    return total


def train_step_flops(model: keras.Model, batch_size: int, views: int = 2) -> float:
    """Floating-point operations of a train step over `views` views of `batch_size` images:
    2 x 3 x `forward_multiply_adds` per image (forward, input gradient, weight gradient)."""
    return 2.0 * 3 * forward_multiply_adds(model) * batch_size * views


def matmul_rate(size: int = MATMUL_SIZE, repeats: int = 10) -> float:
    """FLOP/s of TensorFlow's float32 `size` x `size` matmul on its current threads (best of `repeats`)."""
    a = tf.random.normal([size, size], seed=0)
    b = tf.random.normal([size, size], seed=1)
    matmul = tf.function(tf.linalg.matmul, autograph=False)
    for _ in range(2):
        matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best
