"""L2Normalize: the registered Keras layer that l2-normalises features (a linear probe's optional first step)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="simsiam_keras")
class L2Normalize(keras.layers.Layer):
    """x / max(||x||, sqrt(epsilon)) along the last axis: the l2-normalised features a linear probe may fit.

    A layer (not a Lambda) so that a classifier holding it saves, loads in safe mode and exports.
    """

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        squares = keras.ops.sum(keras.ops.square(inputs), axis=-1, keepdims=True)
        return inputs * keras.ops.rsqrt(keras.ops.maximum(squares, self.epsilon))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
