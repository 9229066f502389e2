"""Multi-replica training on two logical CPUs equals single-device training on the same global batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.train.distribute import check_batch_size, make_strategy
from simsiam_keras.train.pretrain import build_compiled_model


def fixed_views(n=64, size=16):
    rng = np.random.default_rng(1)
    x1 = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    x2 = np.clip(x1 + rng.normal(0, 20, x1.shape), 0, 255).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x1, x2)).batch(32, drop_remainder=True)


def train(config, strategy):
    keras.utils.set_random_seed(0)
    model = build_compiled_model(config, strategy, steps_per_epoch=2)
    history = model.fit(fixed_views(), epochs=3, shuffle=False, verbose=0).history
    return model, history


@pytest.mark.slow
def test_mirrored_two_replicas_reproduce_single_device(tiny_config):
    single_model, single = train(tiny_config, make_strategy("default"))
    mirrored = make_strategy("mirrored", cpu_replicas=2)
    assert mirrored.num_replicas_in_sync == 2
    mirrored_model, multi = train(tiny_config, mirrored)
    bns = [l for l in mirrored_model.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.synchronized for l in bns)
    np.testing.assert_allclose(multi["loss"], single["loss"], rtol=1e-4, atol=1e-5)
    for a, b in zip(single_model.trainable_weights, mirrored_model.trainable_weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-3, atol=1e-5, err_msg=a.path)
    assert mirrored_model.predictor_optimizer.iterations.numpy() == 6


def test_batch_that_does_not_split_over_replicas_is_an_error():
    assert check_batch_size(64, 2) == 32
    with pytest.raises(ValueError, match="does not divide by the 3 replicas"):
        check_batch_size(64, 3)


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="strategy must be one of"):
        make_strategy("horovod")
