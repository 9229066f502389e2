"""BN -> ReLU -> conv trained without keeping the ReLU's output: the conv recomputes it in its backward.

For its backward pass a residual block keeps its first conv's output (BatchNorm's gradient needs it)
and the ReLU's output after that BatchNorm (the ReLU's and the next conv's gradients need it), as
PyTorch does. The second is one elementwise pass away from the first. Once `link`ed, the conv
applies the BatchNorm and the ReLU itself in training and recomputes them from the BatchNorm's
input in its backward: one tensor fewer per block (ResNet-18 at width 64, batch 256, 32 px: ~500 MB
of the step's ~2.5 GB), for one more BatchNorm pass per block. The BatchNorm and the ReLU then pass
their input through in training. Layers, weights, config and every result are unchanged.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any, Iterator

import keras
import tensorflow as tf

from simsiam_keras.nets.batch_norm import BatchNormalization


@keras.saving.register_keras_serializable(package="simsiam_keras", name="RecomputedReLU")
class ReLU(keras.layers.ReLU):
    """keras.layers.ReLU that, in training, leaves its work to the linked conv after it."""

    batch_norm = property(lambda self: _linked(self))

    def call(self, inputs, training=None):
        if self.batch_norm is not None and self.batch_norm.defers(inputs, training):
            return inputs
        return super().call(inputs)


@keras.saving.register_keras_serializable(package="simsiam_keras", name="RecomputingConv2D")
class Conv2D(keras.layers.Conv2D):
    """keras.layers.Conv2D that, in training, applies the linked BatchNorm and ReLU before it and
    recomputes them in its backward instead of keeping their output.

    It keeps Keras' class name, because a `.keras` file stores each layer's weights under its class name.
    """

    batch_norm = property(lambda self: _linked(self))

    def call(self, inputs, training=None):
        if self.batch_norm is None or not self.batch_norm.defers(inputs, training):
            return super().call(inputs)
        bn = self.batch_norm
        x = tf.convert_to_tensor(inputs)
        options = dict(strides=[1, *self.strides, 1], padding=self.padding.upper(), dilations=[1, *self.dilation_rate, 1])

        @tf.custom_gradient
        def bn_relu_conv(x, gamma, beta, kernel):
            y, moving, reserve = bn.fused_kernel(x, gamma, beta, bn.moving_statistics())

            def grad(upstream, *_):
                # Not before the gradient arrives: else the graph may recompute it during the forward pass.
                with tf.control_dependencies([upstream]):
                    activated = tf.nn.relu(bn.renormalize(x, gamma, beta, reserve))
                d_activated = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=kernel, out_backprop=upstream, **options)
                d_kernel = tf.raw_ops.Conv2DBackpropFilter(
                    input=activated, filter_sizes=tf.shape(kernel), out_backprop=upstream, **options)
                d_y = tf.raw_ops.ReluGrad(gradients=d_activated, features=activated)
                return (*bn.fused_gradient(d_y, x, gamma, reserve), d_kernel)

            return (tf.nn.conv2d(tf.nn.relu(y), kernel, **options), moving), grad

        outputs, updated = bn_relu_conv(x, *bn.affine(x.shape[-1]), tf.cast(self.kernel, self.compute_dtype))
        bn.assign_moving_statistics(updated)
        return outputs


def link(batch_norm: keras.layers.BatchNormalization, relu: ReLU, conv: Conv2D) -> None:
    """Has `conv` apply `batch_norm` and `relu` in training; `relu` must take only `batch_norm`'s output,
    and `conv` only `relu`'s. A Keras BatchNormalization (no fused kernel to recompute with) stays unlinked."""
    if not isinstance(batch_norm, BatchNormalization):
        return
    if not _plain(relu, conv):
        raise ValueError(f"{conv.name} cannot apply {relu.name}: link only a plain ReLU and a bias-free conv")
    batch_norm.applied_by_next_conv = True
    # A weak reference: an attribute holding the layer would make it (and its weights) part of the other layers'.
    relu._linked_batch_norm = conv._linked_batch_norm = weakref.ref(batch_norm)


def _plain(relu: ReLU, conv: Conv2D) -> bool:
    return (
        relu.max_value is None and not relu.negative_slope and not relu.threshold
        and not conv.use_bias and conv.groups == 1 and conv.data_format == "channels_last"
        and conv.activation in (None, keras.activations.linear)
    )


def _linked(layer: keras.layers.Layer) -> BatchNormalization | None:
    reference = getattr(layer, "_linked_batch_norm", None)
    return reference() if reference is not None else None


def link_chains(model: keras.Model) -> int:
    """`link`s every BatchNormalization -> ReLU -> Conv2D chain (of this module's ReLU and Conv2D) of
    the functional `model` and of the models in it, in which the BatchNorm's output feeds only the
    ReLU and the ReLU's only the conv, and which `link` takes (a plain ReLU, a bias-free conv):
    after building, loading (`keras.models.load_model`) or cloning a model. Returns how many."""
    linked = sum(link_chains(layer) for layer in model.layers if isinstance(layer, keras.Model))
    config = model.get_config()
    if "output_layers" not in config:  # a Sequential or subclassed model: only the models in it
        return linked
    inputs = {layer["name"]: [history[0] for history in _histories(layer["inbound_nodes"])] for layer in config["layers"]}
    consumers = Counter(name for names in inputs.values() for name in names)
    consumers.update(history[0] for history in _histories(config["output_layers"]))  # the model's outputs
    layers = {layer.name: layer for layer in model.layers}  # an input made by a keras.ops call has no layer here
    for conv in model.layers:
        if not isinstance(conv, Conv2D) or len(inputs[conv.name]) != 1:
            continue
        relu = layers.get(inputs[conv.name][0])
        if not isinstance(relu, ReLU) or consumers[relu.name] != 1 or len(inputs[relu.name]) != 1 or not _plain(relu, conv):
            continue
        batch_norm = layers.get(inputs[relu.name][0])
        if batch_norm is not None and consumers[batch_norm.name] == 1:
            link(batch_norm, relu, conv)
            linked += conv.batch_norm is batch_norm
    return linked


def _histories(value: Any) -> Iterator[list]:
    """Every [layer name, node index, tensor index] in a functional model's config entry: the
    `keras_history` of an input tensor, or an output of the model."""
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
        yield list(value)
    elif isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            yield value["config"]["keras_history"]
        else:
            for item in value.values():
                yield from _histories(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _histories(item)
