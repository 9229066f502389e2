"""nets/recomputed_activation: BN -> ReLU -> conv trained with the ReLU's output recomputed, not kept."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.nets import recomputed_activation
from simsiam_keras.nets.backbone import resnet


def _unlink(model: keras.Model) -> None:
    for layer in model.layers:
        if isinstance(layer, recomputed_activation.Conv2D) and layer.batch_norm is not None:
            layer.batch_norm.applied_by_next_conv = False
        layer._linked_batch_norm = None


def _linked_convs(model: keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, recomputed_activation.Conv2D) and layer.batch_norm]


def _train_step(model: keras.Model):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(model(x, training=True)))
        return loss, tape.gradient(loss, model.trainable_variables)

    return step


@pytest.mark.parametrize("depth, width, linked", [(18, 8, 8), (50, 4, 29)])
def test_training_is_unchanged_by_the_recomputation(depth, width, linked):
    """Same loss, gradients and moving statistics as the layers run one by one, to the bit."""
    recomputing, plain = (resnet(depth, 32, width, cifar_stem=depth == 18) for _ in range(2))
    assert len(_linked_convs(recomputing)) == linked  # a basic block's conv2; a bottleneck's stride-1 conv2 and conv3
    _unlink(plain)
    assert not _linked_convs(plain)
    for a, b in zip(recomputing.weights, plain.weights):
        b.assign(a)
    x = tf.random.stateless_uniform([6, 32, 32, 3], (0, 1), 0, 255)
    (loss, gradients), (plain_loss, plain_gradients) = _train_step(recomputing)(x), _train_step(plain)(x)
    assert float(loss) == float(plain_loss)
    for variable, got, want in zip(plain.trainable_variables, gradients, plain_gradients):
        np.testing.assert_array_equal(got, want, err_msg=variable.path)
    for a, b in zip(recomputing.non_trainable_variables, plain.non_trainable_variables):
        np.testing.assert_array_equal(a, b, err_msg=a.path)
    np.testing.assert_array_equal(recomputing(x, training=False), plain(x, training=False))


def test_the_backward_keeps_no_relu_output():
    """The filter gradient of a linked conv reads a ReLU recomputed after the upstream gradient arrives;
    one from the forward pass would stay in memory from the forward to the backward."""
    model = resnet(18, 16, 4, cifar_stem=True)
    linked = _linked_convs(model)
    assert linked and _relus_read_by_filter_gradients(model).count(True) == len(linked)
    _unlink(model)
    assert not any(_relus_read_by_filter_gradients(model))


def _relus_read_by_filter_gradients(model: keras.Model) -> list[bool]:
    """For each conv filter gradient of a train step that reads a ReLU: whether that ReLU waits for the
    upstream gradient (its input, the recomputed BatchNorm, has a control dependency)."""
    graph = _train_step(model).get_concrete_function(tf.TensorSpec([2, 16, 16, 3])).graph
    return [bool(op.inputs[0].op.inputs[0].op.control_inputs) for op in graph.get_operations()
            if op.type == "Conv2DBackpropFilter" and op.inputs[0].op.type == "Relu"]


def test_the_linked_layers_pass_through_only_in_training():
    model = resnet(18, 16, 4, cifar_stem=True)
    conv = _linked_convs(model)[0]
    relu = model.get_layer(conv.name.replace("conv2", "relu1"))
    x = tf.random.stateless_normal([2, 16, 16, 4], (0, 2))
    np.testing.assert_array_equal(relu(x, training=True), x)
    np.testing.assert_array_equal(conv.batch_norm(x, training=True), x)
    np.testing.assert_array_equal(relu(x, training=False), tf.nn.relu(x))
    conv.batch_norm.trainable = False  # a frozen BatchNorm normalises with its moving statistics
    np.testing.assert_array_equal(relu(x, training=True), tf.nn.relu(x))


def test_a_keras_batch_norm_stays_unlinked_and_a_relu_with_options_is_refused():
    relu, conv = recomputed_activation.ReLU(), recomputed_activation.Conv2D(4, 3, padding="same", use_bias=False)
    recomputed_activation.link(keras.layers.BatchNormalization(), relu, conv)
    assert conv.batch_norm is None and relu.batch_norm is None
    from simsiam_keras.nets.batch_norm import BatchNormalization

    with pytest.raises(ValueError, match="plain ReLU"):
        recomputed_activation.link(BatchNormalization(), recomputed_activation.ReLU(max_value=6.0), conv)


def test_only_chains_whose_outputs_feed_only_the_next_layer_are_linked():
    """A ReLU passing its input through while another layer also reads its output would hand that
    layer the un-activated values: such chains stay unlinked, and training gives the plain result."""
    from simsiam_keras.nets.batch_norm import BatchNormalization

    def chain(x, name):
        bn = BatchNormalization(name=f"{name}_bn")(x)
        relu = recomputed_activation.ReLU(name=f"{name}_relu")(bn)
        conv = recomputed_activation.Conv2D(4, 3, padding="same", use_bias=False, name=f"{name}_conv")(relu)
        return bn, relu, conv

    def build():
        x = keras.Input((8, 8, 4))
        _, _, clean = chain(x, "clean")
        _, relu_read, conv = chain(clean, "relu_read")  # its ReLU's output is also added below
        bn_read, _, conv = chain(keras.layers.Add()([conv, relu_read]), "bn_read")  # its BatchNorm's too
        _, relu_out, _ = chain(keras.layers.Add()([conv, bn_read]), "relu_out")  # its ReLU's is the model's output
        return keras.Model(x, relu_out)

    model, plain = build(), build()
    assert recomputed_activation.link_chains(model) == 1
    assert [layer.name for layer in _linked_convs(model)] == ["clean_conv"]
    for a, b in zip(model.weights, plain.weights):
        b.assign(a)
    x = tf.random.stateless_normal([3, 8, 8, 4], (0, 3))
    np.testing.assert_array_equal(model(x, training=True), plain(x, training=True))

    # Inputs made by keras.ops calls (no layer to look up) and chains `link` refuses: left alone, no error.
    x = keras.Input((8, 8, 4))
    y = recomputed_activation.Conv2D(4, 3, padding="same", use_bias=False)(keras.ops.relu(x) + 0.0)
    y = recomputed_activation.ReLU(max_value=6.0)(BatchNormalization()(y))
    y = recomputed_activation.Conv2D(4, 3, padding="same", use_bias=True)(y)
    y = recomputed_activation.ReLU()(keras.ops.add(BatchNormalization()(y), 0.0))
    assert recomputed_activation.link_chains(keras.Model(x, recomputed_activation.Conv2D(4, 1, use_bias=False)(y))) == 0


def test_a_loaded_or_cloned_backbone_recomputes_as_a_built_one(tmp_path):
    from simsiam_keras.config import make_config
    from simsiam_keras.method.model import build_simsiam
    from simsiam_keras.saved_run import load_backbone
    from simsiam_keras.train.finetune import _rebuilt

    config = make_config("quickstart", image_size=16, backbone_width=4, proj_dim=16, proj_hidden_dim=16, pred_hidden_dim=8)
    build_simsiam(config).save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras").backbone  # a notebook's fit after load_model
    finetuned = _rebuilt(load_backbone(tmp_path / "model.keras"), "float32", keep_weights=True)  # simsiam-finetune's
    for model in loaded, finetuned:
        assert len(_linked_convs(model)) == 8
        assert _relus_read_by_filter_gradients(model).count(True) == 8
