"""MaxPooling2D padded as PyTorch pads, without keeping a padded copy for the backward pass."""

from __future__ import annotations

import keras
import tensorflow as tf

from simsiam_keras.nets.symmetric_conv import SymmetricPadding


@keras.saving.register_keras_serializable(package="simsiam_keras")
class MaxPooling2D(SymmetricPadding, keras.layers.MaxPooling2D):
    """keras.layers.MaxPooling2D that first pads `symmetric_padding` zeros on each side, as a
    ZeroPadding2D layer before it would (ResNet-50's stem: torch.nn.MaxPool2d(3, 2, padding=1),
    whose -inf padding equals zeros on its post-ReLU input).

    As nets/symmetric_conv.Conv2D does, the backward pass in training pads the input again instead
    of keeping the padded copy from the forward pass: the input is kept anyway (the ReLU before
    it needs it), so the copy was memory spent twice (ResNet-50 at 224 px: 3.2 MB an image and view).
    """

    def call(self, inputs, training=None):
        if not self.symmetric_padding:
            return super().call(inputs)
        ksize, strides = [1, *self.pool_size, 1], [1, *self.strides, 1]

        def pool(x):
            return tf.nn.max_pool2d(tf.pad(x, self.pads), ksize, strides, "VALID")

        @tf.custom_gradient
        def padded_pool(x):
            pooled = pool(x)

            def grad(upstream):
                dx = tf.raw_ops.MaxPoolGrad(orig_input=self.pad_again(x, upstream), orig_output=pooled, grad=upstream,
                                            ksize=ksize, strides=strides, padding="VALID")
                return self.unpad(dx)

            return pooled, grad

        return (padded_pool if training else pool)(inputs)
