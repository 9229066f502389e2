"""Multi-replica training on two logical CPUs equals single-device training on the same global batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.train.distribute import check_batch_size, make_strategy
from simsiam_keras.train.pretrain import build_compiled_model


def fixed_views(n=64, size=16):
    """Two views of n images: (x1, x2), float32 pixels."""
    rng = np.random.default_rng(1)
    x1 = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    return x1, np.clip(x1 + rng.normal(0, 20, x1.shape), 0, 255).astype("float32")


def fit(config, strategy, data):
    keras.utils.set_random_seed(0)
    model = build_compiled_model(config, strategy, steps_per_epoch=2)
    history = model.fit(data, epochs=3, steps_per_epoch=2, shuffle=False, verbose=0).history
    return model, history


@pytest.mark.slow
def test_mirrored_two_replicas_reproduce_single_device_and_open_one_iterator(tiny_config):
    """The global batch of 32 split over two replicas trains as one device does. The replicas read
    as pretraining feeds them (`distribute_datasets_from_function`, a batch of 16 each), and fit must
    open no iterator but its own: Keras draws a sample batch under any strategy, and that iterator
    would advance the dataset's reshuffle seeds by a timing-dependent number of passes (a resumed
    run would see other data)."""
    x1, x2 = fixed_views()
    single_data = tf.data.Dataset.from_tensor_slices((x1, x2)).batch(32).repeat()
    single_model, single = fit(tiny_config, make_strategy("default"), single_data)
    passes = []  # one entry per iterator opened on the data

    def replica_batches():  # batch k of a replica: images 16k..16k+15, one replica after the other
        passes.append(len(passes))
        while True:
            for start in range(0, len(x1), 16):
                yield x1[start : start + 16], x2[start : start + 16]

    spec = tf.TensorSpec((16, 16, 16, 3), tf.float32)
    mirrored = make_strategy("mirrored", cpu_replicas=2)
    assert mirrored.num_replicas_in_sync == 2
    mirrored_data = mirrored.distribute_datasets_from_function(
        lambda context: tf.data.Dataset.from_generator(replica_batches, output_signature=(spec, spec)))
    mirrored_model, multi = fit(tiny_config, mirrored, mirrored_data)
    assert passes == [0], f"fit opened {len(passes)} iterators on the training data"
    bns = [l for l in mirrored_model.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.synchronized for l in bns)
    np.testing.assert_allclose(multi["loss"], single["loss"], rtol=1e-4, atol=1e-5)
    for a, b in zip(single_model.trainable_weights, mirrored_model.trainable_weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-3, atol=1e-5, err_msg=a.path)
    assert mirrored_model.optimizer.iterations.numpy() == mirrored_model.predictor_optimizer.iterations.numpy() == 6


def test_batch_that_does_not_split_over_replicas_is_an_error():
    assert check_batch_size(64, 2) == 32
    with pytest.raises(ValueError, match="does not divide by the 3 replicas"):
        check_batch_size(64, 3)


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="strategy must be one of"):
        make_strategy("horovod")
