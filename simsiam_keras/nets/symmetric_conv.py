"""Conv2D padded as PyTorch pads: the same zeros on every side, without keeping a padded copy."""

from __future__ import annotations

import keras
import tensorflow as tf


class SymmetricPadding:
    """What a Keras layer needs to pad `symmetric_padding` zeros on each side of the image first,
    as torch.nn layers pad, and to pad again in its backward pass instead of keeping the copy."""

    def __init__(self, *args, symmetric_padding: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if symmetric_padding and (self.padding != "valid" or self.data_format != "channels_last"):
            raise ValueError("symmetric_padding needs padding='valid' and channels_last")
        self.symmetric_padding = int(symmetric_padding)

    @property
    def pads(self) -> list[list[int]]:
        p = self.symmetric_padding
        return [[0, 0], [p, p], [p, p], [0, 0]]

    def pad_again(self, x: tf.Tensor, upstream: tf.Tensor) -> tf.Tensor:
        """`x` padded in the backward pass: not before the gradient reaches this layer."""
        with tf.control_dependencies([upstream]):
            return tf.pad(x, self.pads)

    def unpad(self, gradient: tf.Tensor) -> tf.Tensor:
        p = self.symmetric_padding
        return gradient[:, p:-p, p:-p, :]

    def compute_output_shape(self, input_shape):
        p = 2 * self.symmetric_padding
        padded = [input_shape[0], *(None if d is None else d + p for d in input_shape[1:3]), input_shape[3]]
        return super().compute_output_shape(padded)

    def get_config(self) -> dict:
        return {**super().get_config(), "symmetric_padding": self.symmetric_padding}


@keras.saving.register_keras_serializable(package="simsiam_keras")
class Conv2D(SymmetricPadding, keras.layers.Conv2D):
    """keras.layers.Conv2D that pads `symmetric_padding` zeros on each side of the image, as
    torch.nn.Conv2d does (Keras' "same" pads only the bottom/right at stride 2).

    It pads, then convolves without padding, as a ZeroPadding2D layer before a Conv2D would; but in
    training the backward pass pads the input again instead of keeping the padded copy: the layer's
    input is kept anyway (the ReLU before it needs it), so the copy was memory spent twice (for
    ResNet-18 at width 64, batch 256, 32 px, ~290 MB a step). It keeps Keras' class name, because a
    `.keras` file stores each layer's weights under its class name.
    """

    def call(self, inputs, training=None):
        if not self.symmetric_padding:
            return super().call(inputs)
        strides, dilations = [1, *self.strides, 1], [1, *self.dilation_rate, 1]

        def convolve(x, kernel):
            return tf.nn.conv2d(tf.pad(x, self.pads), kernel, strides, "VALID", dilations=dilations)

        @tf.custom_gradient
        def padded_conv(x, kernel):
            def grad(upstream):
                padded = self.pad_again(x, upstream)  # from the input the backward keeps anyway
                dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(padded), filter=kernel, out_backprop=upstream,
                                                    strides=strides, padding="VALID", dilations=dilations)
                dk = tf.raw_ops.Conv2DBackpropFilter(input=padded, filter_sizes=tf.shape(kernel), out_backprop=upstream,
                                                     strides=strides, padding="VALID", dilations=dilations)
                return self.unpad(dx), dk

            return convolve(x, kernel), grad

        kernel = tf.cast(self.kernel, self.compute_dtype)
        return (padded_conv if training else convolve)(inputs, kernel)
