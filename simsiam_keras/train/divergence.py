"""The divergence guard: a NaN or Inf loss stops pretraining at once, naming the epoch and step.

Keras' `TerminateOnNaN` only sets `stop_training`, so the epoch still ends: its callbacks
would write a history row and a backup of the diverged weights, and `fit` returns normally.
This guard raises instead, before any later callback (the backup among them) runs.
"""

from __future__ import annotations

import math
from typing import Iterable

import keras
import numpy as np
import tensorflow as tf


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or non-finite weights."""


def all_finite(variables: Iterable) -> bool:
    """Whether every value of every variable is finite (no NaN, no Inf)."""
    checks = [tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(v))) for v in variables]
    return bool(tf.reduce_all(tf.stack(checks)).numpy()) if checks else True


class DivergenceGuard(keras.callbacks.Callback):
    """Raises `DivergenceError` at the first step whose loss is NaN or Inf.

    The `loss` in a step's logs is the running mean of the epoch, which turns non-finite at
    exactly the first non-finite step. `resumed_at=(epoch, step)`: the step numbering of an
    epoch that this process resumed in the middle (its first `step` steps ran before).
    """

    def __init__(self, steps_per_epoch: int, resumed_at: tuple[int, int] | None = None, steps_per_execution: int = 1):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.resumed_at = resumed_at
        # Keras calls back once per execution of `steps_per_execution` steps, after its last step.
        self.steps_per_execution = steps_per_execution
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # Under MultiWorkerMirroredStrategy the logs are 1-element vectors (see BaseMethod.run_step in method/base.py).
        loss = float(np.asarray((logs or {}).get("loss", 0.0), dtype=np.float64).reshape(-1)[0])
        if math.isfinite(loss):
            return
        offset = self.resumed_at[1] if self.resumed_at and self.resumed_at[0] == self.epoch else 0
        step = offset + batch + 1
        global_step = self.epoch * self.steps_per_epoch + step
        first = step - self.steps_per_execution + 1
        where = f"step {step}" if first == step else f"one of steps {first}-{step}"
        global_where = f"global step {global_step}" if first == step else f"global steps {global_step - step + first}-{global_step}"
        raise DivergenceError(
            f"the loss is {loss} at epoch {self.epoch + 1}, {where} of {self.steps_per_epoch} "
            f"({global_where}); training stopped"
        )
