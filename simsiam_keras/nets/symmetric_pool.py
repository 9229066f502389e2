"""MaxPooling2D padded as PyTorch pads, without keeping a padded copy for the backward pass."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="simsiam_keras")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """keras.layers.MaxPooling2D that first pads `symmetric_padding` zeros on each side, as a
    ZeroPadding2D layer before it would (ResNet-50's stem: torch.nn.MaxPool2d(3, 2, padding=1),
    whose -inf padding equals zeros on its post-ReLU input).

    As nets/symmetric_conv.Conv2D does, the backward pass in training pads the input again instead
    of keeping the padded copy from the forward pass: the input is kept anyway (the ReLU before
    it needs it), so the copy was memory spent twice (ResNet-50 at 224 px: 3.2 MB an image and view).
    """

    def __init__(self, *args, symmetric_padding: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if symmetric_padding and (self.padding != "valid" or self.data_format != "channels_last"):
            raise ValueError("symmetric_padding needs padding='valid' and channels_last")
        self.symmetric_padding = int(symmetric_padding)

    def call(self, inputs, training=None):
        if not self.symmetric_padding:
            return super().call(inputs)
        p = self.symmetric_padding
        pads = [[0, 0], [p, p], [p, p], [0, 0]]
        ksize, strides = [1, *self.pool_size, 1], [1, *self.strides, 1]

        def pool(x):
            return tf.nn.max_pool2d(tf.pad(x, pads), ksize, strides, "VALID")

        @tf.custom_gradient
        def padded_pool(x):
            pooled = pool(x)

            def grad(upstream):
                with tf.control_dependencies([upstream]):  # not before the backward reaches this layer
                    padded = tf.pad(x, pads)
                dx = tf.raw_ops.MaxPoolGrad(orig_input=padded, orig_output=pooled, grad=upstream, ksize=ksize,
                                            strides=strides, padding="VALID")
                return dx[:, p:-p, p:-p, :]

            return pooled, grad

        return (padded_pool if training else pool)(inputs)

    def compute_output_shape(self, input_shape):
        p = 2 * self.symmetric_padding
        padded = [input_shape[0], *(None if d is None else d + p for d in input_shape[1:3]), input_shape[3]]
        return super().compute_output_shape(padded)

    def get_config(self) -> dict:
        return {**super().get_config(), "symmetric_padding": self.symmetric_padding}
