"""The fused BatchNorm equals Keras' layer and PyTorch's BatchNorm (numpy reference): outputs, gradients,
moving statistics; on one replica, synchronised over two logical CPUs, and under mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.nets.batch_norm import BatchNormalization
from simsiam_keras.nets.torch_defaults import BN_EPSILON, BN_MOMENTUM, batch_norm
from simsiam_keras.train.distribute import make_strategy

SHAPES = {"4d": (8, 5, 3, 6), "2d": (16, 6)}


def inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(2.0, 3.0, shape)).astype("float32"), rng.normal(0, 1, shape).astype("float32")


def perturbed(layer, seed=1):
    """Non-trivial gamma, beta and moving statistics."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        values = rng.uniform(0.5, 1.5, weight.shape) if "variance" in weight.name else rng.normal(0, 1, weight.shape)
        weight.assign(values.astype("float32"))
    return layer


def torch_reference(x, dy, gamma, beta, moving_mean, moving_variance):
    """torch.nn.BatchNorm in training: output, input gradient of sum(y * dy), new running statistics."""
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    mean, var = x.mean(axes, dtype=np.float64), x.var(axes, dtype=np.float64)
    xhat = (x - mean) / np.sqrt(var + BN_EPSILON)
    y = xhat * gamma + beta
    g = dy * gamma
    dx = (g - g.mean(axes) - xhat * (g * xhat).mean(axes)) / np.sqrt(var + BN_EPSILON)
    keep = BN_MOMENTUM
    return y, dx, keep * moving_mean + (1 - keep) * mean, keep * moving_variance + (1 - keep) * var * n / (n - 1)


def train_call(layer, x, dy):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * dy)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return y, grads


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("affine", [True, False])
def test_training_matches_pytorch_and_keras(shape, affine):
    x, dy = inputs(shape)
    ours = batch_norm(affine=affine)
    ours.build(shape)
    perturbed(ours)
    keras_bn = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, center=affine, scale=affine)
    keras_bn.build(shape)
    keras_bn.set_weights(ours.get_weights())
    gamma = ours.gamma.numpy() if affine else 1.0
    beta = ours.beta.numpy() if affine else 0.0
    y_ref, dx_ref, mean_ref, var_ref = torch_reference(x, dy, gamma, beta, ours.moving_mean.numpy(),
                                                      ours.moving_variance.numpy())

    y, grads = train_call(ours, x, dy)
    y_keras, grads_keras = train_call(keras_bn, x, dy)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads[0].numpy(), dx_ref, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(y.numpy(), y_keras.numpy(), rtol=1e-4, atol=1e-4)
    assert len(grads) == len(grads_keras) == (3 if affine else 1)
    for a, b in zip(grads, grads_keras):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours.moving_mean.numpy(), mean_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.moving_mean.numpy(), keras_bn.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    # PyTorch (and TF's fused kernel) keep the unbiased batch variance; Keras 3 the biased one.
    np.testing.assert_allclose(ours.moving_variance.numpy(), var_ref, rtol=1e-5)
    assert not np.allclose(keras_bn.moving_variance.numpy(), var_ref, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_inference_is_keras_computation(shape):
    x, _ = inputs(shape)
    ours = batch_norm()
    ours.build(shape)
    perturbed(ours)
    keras_bn = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    keras_bn.build(shape)
    keras_bn.set_weights(ours.get_weights())
    np.testing.assert_array_equal(ours(x, training=False).numpy(), keras_bn(x, training=False).numpy())


def test_same_variables_and_config_as_keras():
    ours, theirs = batch_norm(zero_gamma=True, name="bn"), keras.layers.BatchNormalization(name="bn")
    for layer in (ours, theirs):
        layer.build((None, 4, 4, 8))
    assert [(w.path, w.shape, w.trainable) for w in ours.weights] == [(w.path, w.shape, w.trainable) for w in theirs.weights]
    assert set(ours.get_config()) == set(theirs.get_config())
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ours))
    assert type(restored) is BatchNormalization and restored.get_config() == ours.get_config()
    assert isinstance(ours, keras.layers.BatchNormalization)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_float32_statistics(policy):
    shape = SHAPES["4d"]
    x, dy = inputs(shape)
    reference = batch_norm()
    reference.build(shape)
    perturbed(reference)
    ours = BatchNormalization.from_config({**reference.get_config(), "dtype": policy})
    ours.build(shape)
    weights = reference.get_weights()
    ours.set_weights(weights)
    y, grads = train_call(ours, x, dy)
    y_ref, _ = train_call(reference, x, dy)
    assert y.dtype == policy.split("_")[1] and all(w.dtype == "float32" for w in ours.weights)
    assert all(g.dtype == tf.float32 for g in grads[1:])
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), y_ref.numpy(), atol=0.05)
    # Statistics are computed in float32 from the low-precision inputs.
    low = tf.cast(tf.cast(x, policy.split("_")[1]), tf.float32).numpy()
    mean = low.mean((0, 1, 2))
    expected = BN_MOMENTUM * weights[2] + (1 - BN_MOMENTUM) * mean
    np.testing.assert_allclose(ours.moving_mean.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_fused_path_uses_the_fused_kernel():
    layer = batch_norm()
    layer.build(SHAPES["4d"])
    graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(tf.TensorSpec(SHAPES["4d"])).graph
    kinds = {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in kinds and "Mean" not in kinds


def mirrored_call(strategy, layer, x, dy):
    """Each replica gets half of the batch; returns the concatenated outputs and the summed gradients."""
    half = len(x) // 2
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tuple(tf.constant(a[ctx.replica_id_in_sync_group * half:][:half]) for a in (x, dy)))

    def replica_fn(xi, dyi):
        with tf.GradientTape() as tape:
            tape.watch(xi)
            y = layer(xi, training=True)
            loss = tf.reduce_sum(y * dyi)
        return y, tape.gradient(loss, [xi] + layer.trainable_weights)

    @tf.function
    def step(values):
        return strategy.run(replica_fn, args=values)

    ys, grads = step(per_replica)
    y = np.concatenate([t.numpy() for t in strategy.experimental_local_results(ys)])
    dx = np.concatenate([t.numpy() for t in strategy.experimental_local_results(grads[0])])
    params = [strategy.reduce("SUM", g, axis=None).numpy() for g in grads[1:]]
    return y, [dx] + params


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_synchronised_over_two_replicas_equals_one_replica_and_keras(shape, monkeypatch):
    x, dy = inputs(shape)
    single = batch_norm()
    single.build(shape)
    perturbed(single)
    weights = single.get_weights()
    y_ref, dx_ref, mean_ref, var_ref = torch_reference(x, dy, weights[0], weights[1], weights[2], weights[3])
    strategy = make_strategy("mirrored", cpu_replicas=2)
    assert strategy.num_replicas_in_sync == 2
    reduces = []
    all_reduce = tf.distribute.ReplicaContext.all_reduce

    def counting_all_reduce(self, reduce_op, value, options=None):
        reduces.append(value)
        return all_reduce(self, reduce_op, value, options)

    monkeypatch.setattr(tf.distribute.ReplicaContext, "all_reduce", counting_all_reduce)
    results = {}
    for name, make in (("ours", lambda: batch_norm(synchronized=True)),
                       ("keras", lambda: keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                                                         synchronized=True))):
        reduces.clear()
        with strategy.scope():
            layer = make()
            layer.build((shape[0] // 2, *shape[1:]))
            layer.set_weights(weights)
        y, grads = mirrored_call(strategy, layer, x, dy)
        results[name] = (y, grads, layer.moving_mean.numpy(), layer.moving_variance.numpy(), len(reduces))
    y, grads, mean, var, count = results["ours"]
    # Per replica: one all-reduce forward and its gradient backward (Keras: three forward, two backward).
    assert (count, results["keras"][4]) == (2 * 2, 2 * 5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads[0], dx_ref, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, var_ref, rtol=1e-5)
    for a, b in zip(grads, results["keras"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(y, results["keras"][0], rtol=1e-4, atol=1e-4)


def test_files_and_backups_of_models_with_keras_batch_norm_load(tiny_config, tmp_path, monkeypatch):
    from simsiam_keras.nets import torch_defaults
    from simsiam_keras.train.backup import RunBackup, latest_position
    from simsiam_keras.train.pretrain import build_compiled_model

    strategy = tf.distribute.get_strategy()
    monkeypatch.setattr(torch_defaults, "BatchNormalization", keras.layers.BatchNormalization)  # the model as main built it
    old = build_compiled_model(tiny_config, strategy, steps_per_epoch=2)
    monkeypatch.undo()
    assert not any(isinstance(layer, BatchNormalization) for layer in old.backbone.layers)
    x = np.random.default_rng(0).uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    old.fit(tf.data.Dataset.from_tensors((x, x[:, ::-1])), epochs=1, verbose=0)
    old.save(tmp_path / "old.keras")
    RunBackup(old, str(tmp_path), strategy, 2).save(0, 1)

    loaded = keras.models.load_model(tmp_path / "old.keras", safe_mode=True)
    new = build_compiled_model(tiny_config, strategy, steps_per_epoch=2)
    assert any(isinstance(layer, BatchNormalization) for layer in new.backbone.layers)
    new.load_weights(tmp_path / "old.keras")
    for model in (loaded, new):
        for a, b in zip(old.weights, model.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    resumed = build_compiled_model(tiny_config, strategy, steps_per_epoch=2)
    RunBackup(resumed, str(tmp_path), strategy, 2).restore(latest_position(str(tmp_path)))
    for a, b in zip(old.weights + old.optimizer.variables + old.predictor_optimizer.variables,
                    resumed.weights + resumed.optimizer.variables + resumed.predictor_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
