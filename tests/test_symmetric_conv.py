"""nets/symmetric_conv.Conv2D: PyTorch's symmetric padding, and a backward pass that keeps no padded copy."""

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.nets.symmetric_conv import Conv2D
from simsiam_keras.nets.symmetric_pool import MaxPooling2D


def _pair(stride: int, padding: int, kernel: int = 3):
    ours = Conv2D(4, kernel, strides=stride, padding="valid", symmetric_padding=padding, use_bias=False)
    reference = keras.layers.Conv2D(4, kernel, strides=stride, padding="valid", use_bias=False)
    ours.build((None, 9, 9, 3))
    reference.build((None, 9 + 2 * padding, 9 + 2 * padding, 3))
    reference.kernel.assign(ours.kernel)
    return ours, reference


def test_output_and_gradients_equal_zero_padding_then_convolution():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 9, 3)), tf.float32)
    for stride, padding, kernel in ((2, 1, 3), (2, 3, 7), (1, 2, 3)):
        ours, reference = _pair(stride, padding, kernel)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = ours(x, training=True)
            y_ref = reference(tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]]))
            upstream = tf.constant(rng.normal(size=y_ref.shape), tf.float32)
            loss, loss_ref = tf.reduce_sum(y * upstream), tf.reduce_sum(y_ref * upstream)
        np.testing.assert_allclose(y, y_ref, atol=1e-5)
        np.testing.assert_allclose(ours(x, training=False), y_ref, atol=1e-5)
        for got, want in zip(tape.gradient(loss, [x, ours.kernel]), tape.gradient(loss_ref, [x, reference.kernel])):
            np.testing.assert_allclose(got, want, atol=1e-4)
        assert tuple(ours.compute_output_shape((None, 9, 9, 3)))[1:] == tuple(y.shape[1:])


def test_the_backward_pads_again_after_the_gradient_arrives():
    """The filter gradient reads a padding made in the backward (after the upstream gradient), not one
    from the forward pass, which would stay in memory from the forward to the backward."""
    ours, _ = _pair(2, 1)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(ours(x, training=True)))
        return tape.gradient(loss, ours.kernel)

    _assert_padded_after_the_gradient(step.get_concrete_function(tf.TensorSpec([2, 9, 9, 3])).graph,
                                      "Conv2DBackpropFilter")


def _assert_padded_after_the_gradient(graph, gradient_op: str):
    """Every `gradient_op` reads a padding that waits for the upstream gradient."""
    gradients = [op for op in graph.get_operations() if op.type == gradient_op]
    assert gradients
    for op in gradients:
        padding = op.inputs[0].op
        assert padding.type in ("Pad", "PadV2"), padding
        # The control dependency sits on the padding op or on its constant paddings.
        assert padding.control_inputs or padding.inputs[1].op.control_inputs, padding


def test_the_stem_max_pool_equals_zero_padding_then_pooling_and_keeps_no_padded_copy():
    """nets/symmetric_pool.MaxPooling2D (ResNet-50's stem): the same output and input gradient as
    ZeroPadding2D + MaxPooling2D, and its backward pads again after the gradient arrives."""
    rng = np.random.default_rng(1)
    x = tf.constant(np.maximum(rng.normal(size=(2, 10, 10, 3)), 0), tf.float32)  # post-ReLU, as in the stem
    ours = MaxPooling2D(3, strides=2, symmetric_padding=1)
    reference = keras.layers.MaxPooling2D(3, strides=2)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y, y_ref = ours(x, training=True), reference(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]))
        upstream = tf.constant(rng.normal(size=y_ref.shape), tf.float32)
        loss, loss_ref = tf.reduce_sum(y * upstream), tf.reduce_sum(y_ref * upstream)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(ours(x, training=False), y_ref)
    np.testing.assert_allclose(tape.gradient(loss, x), tape.gradient(loss_ref, x), atol=1e-6)
    assert tuple(ours.compute_output_shape((None, 10, 10, 3)))[1:] == tuple(y.shape[1:])

    @tf.function
    def step(images):
        with tf.GradientTape() as inner:
            inner.watch(images)
            out = tf.reduce_sum(tf.square(ours(images, training=True)))
        return inner.gradient(out, images)

    _assert_padded_after_the_gradient(step.get_concrete_function(tf.TensorSpec([2, 10, 10, 3])).graph, "MaxPoolGrad")
