"""--steps-per-execution trains the same steps as one step per call, with the callbacks a run uses;
--jit-compile compiles the per-replica step (checked on one CPU replica; several CPU replicas are an error)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.method.optimizers import make_optimizers
from simsiam_keras.train.backup import Position, latest_position
from simsiam_keras.train.distribute import all_gpus
from simsiam_keras.train.divergence import DivergenceError, DivergenceGuard
from simsiam_keras.train.pretrain import build_compiled_model, check_steps_per_execution, pretrain
from tests.toy import toy_simsiam


def four_batches(batch=32, size=16):
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (4 * batch, size, size, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x[:, ::-1])).batch(batch, drop_remainder=True).repeat()


class BatchEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(batch)


def train(config, callbacks=()):
    keras.utils.set_random_seed(0)
    model = build_compiled_model(config, tf.distribute.get_strategy(), steps_per_epoch=4)
    history = model.fit(four_batches(), epochs=1, steps_per_epoch=4, callbacks=list(callbacks), verbose=0).history
    return model, history


def test_two_steps_per_execution_train_the_same_four_steps(tiny_config):
    single, single_history = train(tiny_config)
    tiny_config.steps_per_execution = 2
    ends = BatchEnds()
    double, double_history = train(tiny_config, [ends])
    assert double.steps_per_execution == 2 and ends.batches == [1, 3]  # once per execution, after its last step
    assert int(double.optimizer.iterations) == int(double.predictor_optimizer.iterations) == 4
    np.testing.assert_allclose(double_history["loss"], single_history["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(single.weights, double.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.path)


def test_a_run_with_steps_per_execution_backs_up_between_executions(tiny_config, npz_dataset, tmp_path):
    tiny_config.dataset, tiny_config.output_dir = f"npz:{npz_dataset}", str(tmp_path / "run")
    tiny_config.epochs, tiny_config.steps_per_execution, tiny_config.backup_every_steps = 1, 2, 2
    tiny_config.steps_per_epoch = 2
    result = pretrain(tiny_config, verbose=0)
    assert int(result.model.optimizer.iterations) == 2
    assert latest_position(tiny_config.output_dir).global_step == 2


@pytest.mark.parametrize("steps, every, start, message", [
    (5, 4, None, "steps_per_execution 2 must divide the 5 steps per epoch"),
    (4, 3, None, "steps_per_execution 2 must divide backup_every_steps 3"),
    (4, 4, Position(1, 3, 4, "ckpt-7"), "cannot resume .* at step 3 of its epoch"),
])
def test_steps_per_execution_must_divide_epochs_backups_and_the_resumed_step(tiny_config, steps, every, start, message):
    tiny_config.steps_per_execution, tiny_config.backup_every_steps = 2, every
    with pytest.raises(ValueError, match=message):
        check_steps_per_execution(tiny_config, steps, start)
    tiny_config.steps_per_execution = 1
    check_steps_per_execution(tiny_config, steps, start)


def test_divergence_names_the_steps_of_the_execution():
    guard = DivergenceGuard(steps_per_epoch=8, steps_per_execution=4)
    guard.on_epoch_begin(1)
    with pytest.raises(DivergenceError, match=r"epoch 2, one of steps 5-8 of 8 \(global steps 13-16\)"):
        guard.on_train_batch_end(7, {"loss": float("nan")})


def test_per_replica_jit_compile_trains_like_the_plain_step(tiny_config):
    plain, compiled = toy_simsiam(), toy_simsiam()
    plain.compile(*make_optimizers(tiny_config, steps_per_epoch=4))
    compiled.compile(*make_optimizers(tiny_config, steps_per_epoch=4), per_replica_jit_compile=True)
    histories = [m.fit(four_batches(), epochs=1, steps_per_epoch=2, verbose=0).history for m in (plain, compiled)]
    np.testing.assert_allclose(histories[1]["loss"], histories[0]["loss"], rtol=1e-4, atol=1e-5)
    for a, b in zip(plain.weights, compiled.weights, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    views = (tf.TensorSpec((32, 16, 16, 3)),) * 2
    graph = tf.function(compiled.train_step).get_concrete_function(views).graph
    must_compile = [f for f in graph.as_graph_def().library.function if f.attr["_XlaMustCompile"].b]
    assert must_compile, "the per-replica step is not XLA-compiled"
    with pytest.raises(ValueError, match="jit_compile or per_replica_jit_compile, not both"):
        compiled.compile(*make_optimizers(tiny_config, steps_per_epoch=4), jit_compile=True, per_replica_jit_compile=True)


def test_all_gpus_reads_the_strategy_devices():
    class Extended:
        def __init__(self, devices):
            self.worker_devices = devices

    class Strategy:
        def __init__(self, devices):
            self.extended = Extended(devices)

    assert all_gpus(Strategy(("/job:localhost/replica:0/task:0/device:GPU:0", "/device:GPU:1")))
    assert not all_gpus(Strategy(("/device:GPU:0", "/device:CPU:0")))
    assert not all_gpus(tf.distribute.get_strategy())
