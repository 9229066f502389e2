"""What a two-optimizer method needs from Keras and tf.distribute, kept out of the method itself.

`BaseMethod` is the keras.Model that `SimSiam` extends (solo-learn's split: the machinery in a
base class, the method's file holding only what is the method). It owns:

- `compile` with two optimizers, the encoder's and the predictor's (Table 1c), both built in the
  strategy's scope, and their round trip through `.keras` files;
- `apply_gradients`: the global-batch mean over replicas, float16 loss scaling per optimizer, and
  each optimizer's slice of the gradients;
- `distributed_step`, the decorator of the method's `train_step`/`test_step`: the learning rates
  in the logs, the step XLA-compiled per replica, the logs' shape under MultiWorkerMirroredStrategy.
  Anything every step must do whatever the method (e.g. the workers agreeing to stop) goes in
  `run_step`;
- the symbolic build Keras does before `fit`.

This is the only module of the package that touches a private Keras attribute; each use says
which upstream issue it works around (tests/test_method_shape.py enforces both).
"""

from __future__ import annotations

import functools
from typing import Callable

import keras
import tensorflow as tf

Logs = dict[str, tf.Tensor]


def distributed_step(step: Callable[["BaseMethod", object], Logs]) -> Callable[["BaseMethod", object], Logs]:
    """Decorates a `train_step` or `test_step` that returns its metrics' logs with `BaseMethod.run_step`."""

    @functools.wraps(step)
    def run(model: "BaseMethod", data) -> Logs:
        return model.run_step(functools.partial(step, model), data)

    return run


class BaseMethod(keras.Model):
    """A keras.Model trained by `fit` with two optimizers, under any tf.distribute strategy.

    Subclasses are made of built functional models and define `encoder_variables`,
    `predictor_variables` and `predictor` (None when the method has no predictor).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.predictor_optimizer: keras.optimizers.Optimizer | None = None
        self.per_replica_jit_compile = False

    def build(self, input_shape=None) -> None:
        # The networks are built functional models: nothing left to create.
        self.built = True

    @property
    def encoder_variables(self) -> list:
        raise NotImplementedError

    @property
    def predictor_variables(self) -> list:
        raise NotImplementedError

    # -- compile: two optimizers ------------------------------------------------------------

    def compile(
        self,
        optimizer: keras.optimizers.Optimizer,
        predictor_optimizer: keras.optimizers.Optimizer | None = None,
        per_replica_jit_compile: bool = False,
        **kwargs,
    ) -> None:
        """Attach the encoder's and the predictor's optimizers and build both in the strategy scope.

        keras-team/keras#23085: a second optimizer that creates its variables lazily inside
        `fit` fails under MirroredStrategy, so both are built here. `per_replica_jit_compile`
        compiles the step each replica runs with XLA, inside `strategy.run`, as Keras 2 and the
        TF Model Garden did: Keras 3 turns XLA off under tf.distribute
        (`Trainer._resolve_auto_jit_compile`), and its `jit_compile=True` would compile
        `strategy.run` as a whole.
        """
        if self.predictor is not None and predictor_optimizer is None:
            raise ValueError(f"{type(self).__name__}.compile needs predictor_optimizer (or build the model without a predictor)")
        if per_replica_jit_compile and kwargs.get("jit_compile") is True:
            raise ValueError(f"{type(self).__name__}.compile takes jit_compile or per_replica_jit_compile, not both")
        super().compile(optimizer=optimizer, **kwargs)
        self.per_replica_jit_compile = per_replica_jit_compile
        # Without a predictor (Table 1a) a predictor optimizer would have nothing to update.
        self.predictor_optimizer = predictor_optimizer if self.predictor is not None else None
        with self.distribute_strategy.scope():
            for opt, variables in self._optimizers_and_variables():
                opt.build(variables)

    def get_compile_config(self) -> dict:
        if not self.compiled:
            return {}
        return {
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            "predictor_optimizer": keras.saving.serialize_keras_object(self.predictor_optimizer),
        }

    def compile_from_config(self, config: dict) -> None:
        # Keras skips compile on load when compile is overridden; restore both optimizers so
        # their iteration counts and slots are loaded from the .keras file.
        if not config:
            return
        self.compile(
            optimizer=keras.saving.deserialize_keras_object(config["optimizer"]),
            predictor_optimizer=keras.saving.deserialize_keras_object(config["predictor_optimizer"]),
        )

    def _optimizers_and_variables(self) -> list[tuple[keras.optimizers.Optimizer, list]]:
        pairs = [(self.optimizer, self.encoder_variables)]
        if self.predictor_optimizer is not None:
            pairs.append((self.predictor_optimizer, self.predictor_variables))
        return pairs

    # -- one step ---------------------------------------------------------------------------

    @property
    def loss_scaled(self) -> bool:
        """Whether the optimizers scale the loss (float16 mixed precision)."""
        return isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)

    def gradient_tape(self) -> tf.GradientTape:
        """The tape for one step's forward pass: persistent under float16, where each optimizer takes
        the gradients of its own scaled loss."""
        return tf.GradientTape(persistent=self.loss_scaled)

    def apply_gradients(self, tape: tf.GradientTape, loss: tf.Tensor) -> None:
        """One update of both optimizers from `loss`, this replica's mean over its examples.

        The optimizers sum gradients over replicas, so the gradients are those of loss / replicas,
        the global batch's mean; under float16 each optimizer scales them by its own dynamic loss
        scale (and unscales them before its update).
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        pairs = self._optimizers_and_variables()
        if self.loss_scaled:
            for opt, variables in pairs:
                scale = opt.scale_loss(tf.ones_like(loss)) / replicas
                opt.apply_gradients(zip(tape.gradient(loss, variables, output_gradients=scale), variables))
            return
        grads = tape.gradient(loss, [v for _, vs in pairs for v in vs], output_gradients=tf.ones_like(loss) / replicas)
        start = 0
        for opt, variables in pairs:
            opt.apply_gradients(zip(grads[start : start + len(variables)], variables))
            start += len(variables)

    def run_step(self, step: Callable[[object], Logs], data) -> Logs:
        """Runs a method's `step(data)` (see `distributed_step`) with what every step needs around it.

        The home of per-step machinery that is not the method: the learning rates logged, the step
        XLA-compiled per replica, the logs shaped for MultiWorkerMirroredStrategy; and, say, a stop
        flag all workers must agree on (an all-reduce here, in every replica's step, read by a callback).
        """

        def step_with_logs(data) -> Logs:
            rates = self.learning_rates()  # read before the step advances the schedules: the rates it applies
            return self._worker_logs({**step(data), **rates})

        if self.per_replica_jit_compile:
            return tf.function(step_with_logs, jit_compile=True)(data)
        return step_with_logs(data)

    def learning_rates(self) -> Logs:
        """The optimizers' current learning rates."""
        rates = {}
        if self.optimizer is not None:
            rates["lr_encoder"] = tf.identity(self.optimizer.learning_rate)
        if self.predictor_optimizer is not None:
            rates["lr_predictor"] = tf.identity(self.predictor_optimizer.learning_rate)
        return rates

    def _worker_logs(self, logs: Logs) -> Logs:
        if self.multi_worker:
            # keras-team/keras#20585: under MultiWorkerMirroredStrategy Keras averages each log
            # with strategy.reduce(axis=0), which needs an axis to reduce.
            return {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    @property
    def multi_worker(self) -> bool:
        return isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)

    # -- Keras' build before fit --------------------------------------------------------------

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' private hook (keras/src/backend/tensorflow/trainer.py), overridden for two reasons.
        # compile() built the model and both optimizers, so no sample batch is needed. Drawing
        # one (Keras does under any strategy) opens an extra iterator on the dataset: that
        # advances its reshuffle seeds by as many passes as the iterator prefetched, so the
        # batches of every later pass would depend on timing, and a resumed run's would differ.
        optimizers = [o for o in (self.optimizer, self.predictor_optimizer) if o is not None]
        if _all_built(self) and all(o.built for o in optimizers):
            return super()._maybe_symbolic_build(iterator=None, data_batch=None)
        # keras-team/keras#20585: Keras 3 builds from one batch averaged with strategy.reduce,
        # which MultiWorkerMirroredStrategy cannot do for our (view1, view2) batches. The first
        # local replica's batch has the same shapes, which is all the build needs.
        if iterator is not None and self.multi_worker:
            for _, _, batches in iterator:
                data_batch = self.distribute_strategy.experimental_local_results(next(batches))[0]
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def _all_built(layer: keras.layers.Layer) -> bool:
    """Whether `layer` and every layer inside it are built."""
    return layer.built and all(_all_built(inner) for inner in getattr(layer, "layers", ()))
