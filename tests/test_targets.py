"""Sec. 5.2's proof-of-concept targets: k-step alternation and the moving-average target bank."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.config import make_config
from simsiam_keras.data.pipeline import input_fn, two_view_dataset
from simsiam_keras.data.synthetic import make_synthetic
from simsiam_keras.method.model import SimSiam, build_simsiam
from simsiam_keras.method.optimizers import make_optimizers
from simsiam_keras.method.targets import AlternatingTargets, TargetBank
from simsiam_keras.train import backup
from simsiam_keras.train.distribute import make_strategy
from simsiam_keras.train.pretrain import build_compiled_model
from tests import toy

STEPS = 7


def batches(n=STEPS, ids=False, seed=7):
    """Fixed batches of (x1, x2[, ids]): 32 of 64 images, so the ids of different steps overlap."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x1 = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
        x2 = np.clip(x1 + rng.normal(0, 20, x1.shape), 0, 255).astype("float32")
        out.append((x1, x2, rng.permutation(64)[:32]) if ids else (x1, x2))
    return out


def compiled_toy(config, alternation_steps: int = 1) -> SimSiam:
    """The toy SimSiam compiled as pretraining compiles it: the targets' logic without a ResNet's tracing time."""
    model = toy.toy_simsiam(alternation_steps=alternation_steps)
    model.compile(*make_optimizers(config, STEPS))
    return model


def fit_steps(model, steps, callbacks=()) -> list[float]:
    """One fit over the batches, an epoch each: the loss of each step."""
    data = tf.data.Dataset.from_tensor_slices(tuple(np.stack(column) for column in zip(*steps)))
    return model.fit(data, epochs=len(steps), steps_per_epoch=1, shuffle=False, verbose=0,
                     callbacks=list(callbacks)).history["loss"]


def test_one_step_alternation_is_simsiam(tiny_config):
    plain = compiled_toy(tiny_config)
    assert plain.alternation is None and plain.target_bank is None  # the default path has neither
    expected = fit_steps(plain, batches(4))
    assert len(set(expected)) == 4  # four different batches
    model = compiled_toy(tiny_config)
    # The alternation's machinery with k = 1: targets from a copy of the weights refreshed every step.
    model.alternation = AlternatingTargets(model.backbone, model.projector, steps=1)
    np.testing.assert_allclose(fit_steps(model, batches(4)), expected, rtol=1e-6, atol=1e-7)
    for a, b in zip(plain.weights, model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_targets_are_constant_within_a_block_and_refreshed_at_its_boundaries(tiny_config):
    model = compiled_toy(tiny_config, alternation_steps=3)
    # The copy's BN moving statistics move with its forward passes, unused: its targets use batch statistics.
    online = model.backbone.trainable_weights + model.projector.trainable_weights
    frozen = model.alternation.backbone.trainable_weights + model.alternation.projector.trainable_weights
    probe = tf.constant(batches(1, seed=1)[0][0])
    seen, starts = [], []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if len(seen) % 3 == 0:
                starts.append([w.numpy().copy() for w in online])  # a block begins with these weights

        def on_train_batch_end(self, batch, logs=None):
            for copy, start in zip(frozen, starts[-1], strict=True):
                np.testing.assert_array_equal(copy.numpy(), start)
            features = model.alternation.backbone(probe, training=True)
            seen.append(model.alternation.projector(features, training=True).numpy())

    fit_steps(model, batches(), [Watch()])
    assert int(model.alternation.step.numpy()) == STEPS and len(seen) == STEPS
    for step in range(1, STEPS):
        if step % 3:
            np.testing.assert_array_equal(seen[step], seen[step - 1])  # within a block
        else:
            assert np.abs(seen[step] - seen[step - 1]).max() > 1e-4  # refreshed at the boundary


def test_bank_update_rule_on_a_toy_encoder():
    encoder = keras.layers.Dense(3, kernel_initializer="glorot_uniform")  # a toy F_theta
    bank = TargetBank(num_images=5, dim=3, momentum=0.8)
    rng = np.random.default_rng(0)

    def project(n):
        return encoder(rng.normal(size=(n, 4)).astype("float32")).numpy()

    ids = tf.constant([3, 1])
    t1, t2 = project(2), project(2)
    s1, s2 = bank(ids, t1, t2)
    # First visit: the image's own projections are its targets; the bank keeps their mean.
    np.testing.assert_allclose(s1, t1, rtol=1e-6)
    np.testing.assert_allclose(s2, t2, rtol=1e-6)
    stored = bank.targets.numpy()
    np.testing.assert_allclose(stored[[3, 1]], 0.5 * (t1 + t2), rtol=1e-6)
    assert not stored[[0, 2, 4]].any()
    # Next visit: eta <- m eta + (1 - m) F(T'(x)), T' the other view.
    u1, u2 = project(2), project(2)
    s1, s2 = bank(ids, u1, u2)
    eta = stored[[3, 1]]
    np.testing.assert_allclose(s1, 0.8 * eta + 0.2 * u1, rtol=1e-5)
    np.testing.assert_allclose(s2, 0.8 * eta + 0.2 * u2, rtol=1e-5)
    np.testing.assert_allclose(bank.targets.numpy()[[3, 1]], 0.5 * (s1 + s2), rtol=1e-5)
    # The asymmetric loss has one target, p1's: the bank keeps it.
    s1, s2 = bank(tf.constant([0]), u1[:1], u2[:1], symmetric=False)
    np.testing.assert_allclose(bank.targets.numpy()[0], u2[0], rtol=1e-6)


def test_replicas_update_disjoint_rows_of_one_bank():
    strategy = make_strategy("mirrored", 2)
    with strategy.scope():
        bank = TargetBank(num_images=16, dim=2, momentum=0.5)
    # Image i is filled with i: each replica's batch of the pipeline names its images.
    images = np.broadcast_to(np.arange(16, dtype=np.uint8)[:, None, None, None], (16, 4, 4, 3)).copy()
    data = strategy.distribute_datasets_from_function(input_fn(images, lambda image: image, 8, image_ids=True))

    @tf.function
    def step(batch):
        def replica_step(x1, x2, ids):
            pixel = tf.reduce_mean(x1, axis=[1, 2, 3])[:, None]
            return bank(ids, tf.concat([pixel, pixel], 1), tf.concat([pixel, -pixel], 1))[0], ids

        return strategy.run(replica_step, args=batch)

    _, ids = step(next(iter(data)))
    ids = [set(v.numpy().tolist()) for v in strategy.experimental_local_results(ids)]
    assert len(ids[0]) == len(ids[1]) == 4 and not ids[0] & ids[1]
    expected = np.zeros((16, 2), np.float32)
    for i in ids[0] | ids[1]:
        expected[i] = [i, 0]  # the mean of the image's two first targets, (i, i) and (i, -i)
    for copy in bank.targets.values:  # each replica's rows reach every replica's copy
        np.testing.assert_allclose(copy.numpy(), expected)


def test_replicas_take_the_same_copy_at_each_block_start():
    strategy = make_strategy("mirrored", 2)
    with strategy.scope():
        backbone = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
        projector = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        alternation = AlternatingTargets(backbone, projector, steps=2)
    kernel, copy = backbone.layers[0].kernel, alternation.backbone.layers[0].kernel
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    views = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(x[4 * context.replica_id_in_sync_group:][:4]))

    @tf.function
    def step(views):
        return strategy.run(lambda v: alternation(backbone.weights + projector.weights, v, v)[0], args=(views,))

    starts = []
    for i in range(5):
        if i % 2 == 0:
            starts.append(kernel.numpy())
        targets = strategy.experimental_local_results(step(views))
        assert [t.shape[0] for t in targets] == [4, 4]  # each replica projects its own part of the batch
        for value in strategy.experimental_local_results(copy.value):
            np.testing.assert_array_equal(value.numpy(), starts[-1])
        kernel.assign(kernel + 1.0)  # the online weights move on after every step
    assert int(alternation.step.numpy()) == 5


@pytest.mark.slow
def test_block_and_bank_survive_a_backup_and_a_resume(tiny_config, tmp_path):
    """A run resumed from a backup in the middle of a block ends with the uninterrupted run's bank, block
    copy and weights."""
    from simsiam_keras.data.images import from_arrays
    from simsiam_keras.train.pretrain import pretrain

    source = from_arrays("synthetic", make_synthetic(64, 0, image_size=16)["x_train"])
    config = tiny_config
    # 4 steps an epoch, blocks of 4 steps from step 0, 4, 8; backups after global steps 4, 6 and 8.
    config.alternation_steps, config.target_momentum, config.batch_size = 4, 0.8, 16
    config.strategy, config.backup_every_steps, config.output_dir = "default", 6, str(tmp_path / "run")
    first = pretrain(config, source=source, verbose=0)
    bank, alternation = first.model.target_bank, first.model.alternation
    assert np.count_nonzero(np.abs(bank.targets.numpy()).sum(1)) == 64  # every image has its row
    assert int(alternation.step.numpy()) == 8
    expected = [v.numpy() for v in (bank.targets, *alternation.weights, *first.model.weights)]
    keras.backend.clear_session()
    # Back to the backup after global step 6, in the middle of the block that started at step 4.
    directory = tmp_path / "run" / "backup"
    tf.compat.v1.train.update_checkpoint_state(str(directory), str(directory / "ckpt-6"))
    assert backup.latest_position(config.output_dir).global_step == 6
    resumed = pretrain(config, source=source, verbose=0)
    assert int(resumed.model.alternation.step.numpy()) == 8
    found = [v.numpy() for v in (resumed.model.target_bank.targets, *resumed.model.alternation.weights,
                                 *resumed.model.weights)]
    for a, b in zip(expected, found, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_moving_average_targets_keep_the_no_predictor_model_from_collapsing():
    """Table 1a vs Sec. 5.2 in miniature: without h SimSiam collapses, with the bank it does not."""
    images = make_synthetic(num_train=256, num_test=0, image_size=16, seed=0)["x_train"]
    # As test_collapse: the affine output BN (else BN pins every output dimension's variance) and a
    # large lr, so that the collapse shows within 30 steps.
    config = make_config("quickstart", image_size=16, backbone_width=8, proj_dim=64, proj_hidden_dim=64,
                         batch_size=64, epochs=3, base_lr=3.0, use_predictor=False, proj_output_affine=True)
    # One pipeline for both runs (its graph takes seconds to build); without a bank the ids go unused.
    data = two_view_dataset(images, SimSiamAugment(16, config.augment), 64, image_ids=True)

    def z_std(target_momentum):
        keras.utils.set_random_seed(0)
        config.target_momentum = target_momentum
        model = build_compiled_model(config, make_strategy("default"), 10, num_images=len(images))
        history = model.fit(data, epochs=3, steps_per_epoch=10, shuffle=False, verbose=0).history
        return history["z_std"][-1] * math.sqrt(config.proj_dim)  # as a fraction of the healthy 1/sqrt(d)

    collapsing, averaged = z_std(None), z_std(0.8)
    assert collapsing < 0.7, f"without the predictor z_std should fall, got {collapsing:.2f} of 1/sqrt(d)"
    assert averaged > 0.8 and averaged > collapsing + 0.2, (averaged, collapsing)


@pytest.mark.parametrize("settings, message", [
    ({"target_momentum": 1.0}, r"target_momentum must be in \[0, 1\)"),
    ({"target_momentum": -0.1}, r"target_momentum must be in \[0, 1\)"),
    ({"alternation_steps": 0}, "alternation_steps must be at least 1"),
    ({"alternation_steps": 2, "stop_gradient": False}, "alternation_steps 2 needs stop_gradient"),
    ({"target_momentum": 0.8, "stop_gradient": False}, "target_momentum needs stop_gradient"),
])
def test_settings_that_cannot_run_are_refused_before_anything_is_built(tmp_path, settings, message):
    from simsiam_keras.train.pretrain import pretrain

    config = make_config("quickstart", output_dir=str(tmp_path / "run"), **settings)
    with pytest.raises(ValueError, match=message):
        pretrain(config)
    assert not (tmp_path / "run").exists()


def test_a_target_bank_needs_the_number_of_images(tiny_config):
    tiny_config.target_momentum = 0.8
    with pytest.raises(ValueError, match="num_images"):
        build_simsiam(tiny_config)
