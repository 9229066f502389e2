"""SGD as PyTorch defines it (coupled weight decay), and SimSiam's two optimizers (Sec. 3, Table 1c)."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from simsiam_keras.config import SimSiamConfig


@keras.saving.register_keras_serializable(package="simsiam_keras")
class TorchSGD(keras.optimizers.SGD):
    """SGD with torch.optim.SGD's update: coupled L2 weight decay, lr applied after momentum.

    PyTorch: g += wd * w; buf = momentum * buf + g; w -= lr * buf. Keras' SGD folds the lr into
    its velocity (which differs once the lr changes) and its `weight_decay` is decoupled, so
    neither reproduces the paper's optimiser. The decay is added after the cross-replica
    gradient sum: once per step whatever the number of replicas.
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.9, l2: float = 0.0, **kwargs):
        if kwargs.get("nesterov"):
            raise ValueError("TorchSGD does not implement Nesterov momentum")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.l2:
            gradient = gradient + ops.cast(self.l2, variable.dtype) * variable
        if self.momentum == 0:
            self.assign_sub(variable, learning_rate * gradient)
            return
        momentum_update(self, variable, self.momentums[self._get_variable_index(variable)], gradient, learning_rate,
                        self.momentum)

    def get_config(self) -> dict:
        return {**super().get_config(), "l2": self.l2}


def momentum_update(optimizer: keras.optimizers.Optimizer, variable, buf, gradient, learning_rate,
                    momentum: float) -> None:
    """torch.optim.SGD's momentum step: buf = momentum * buf + g; w -= lr * buf (g already decayed).

    On TensorFlow it is one kernel, ResourceApplyMomentum, which computes exactly this.
    """
    if keras.backend.backend() == "tensorflow" and not isinstance(gradient, tf.IndexedSlices):
        tf.raw_ops.ResourceApplyMomentum(
            var=_handle(variable), accum=_handle(buf), lr=learning_rate, grad=gradient,
            momentum=tf.cast(momentum, variable.dtype), use_locking=False, use_nesterov=False,
        )
        return
    optimizer.assign(buf, ops.cast(momentum, variable.dtype) * buf + gradient)
    optimizer.assign_sub(variable, learning_rate * buf)


def _handle(variable) -> tf.Tensor:
    """The resource handle of a Keras or TF variable (on this device, inside a strategy's update)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


def encoder_schedule(config: SimSiamConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """lr = base_lr x batch/256, optional linear warm-up, then cosine decay to 0 over the remaining steps."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(config.warmup_epochs * steps_per_epoch, total - 1)
    if warmup > 0:
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total - warmup, warmup_target=config.lr, warmup_steps=warmup
        )
    return keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=total)


def make_optimizers(config: SimSiamConfig, steps_per_epoch: int) -> tuple[keras.optimizers.Optimizer, keras.optimizers.Optimizer]:
    """The encoder's SGD (cosine schedule) and the predictor's SGD (fixed lr, or the same schedule).

    Under float16 mixed precision both are wrapped in a LossScaleOptimizer.
    """
    schedule = encoder_schedule(config, steps_per_epoch)
    if config.predictor_lr not in ("fixed", "cosine"):
        raise ValueError(f"predictor_lr must be 'fixed' or 'cosine', got {config.predictor_lr!r}")
    predictor_lr = config.lr if config.predictor_lr == "fixed" else encoder_schedule(config, steps_per_epoch)
    encoder_opt = TorchSGD(schedule, momentum=config.momentum, l2=config.weight_decay, name="encoder_sgd")
    predictor_opt = TorchSGD(predictor_lr, momentum=config.momentum, l2=config.weight_decay, name="predictor_sgd")
    if config.mixed_precision == "float16":
        encoder_opt = keras.optimizers.LossScaleOptimizer(encoder_opt, name="encoder_loss_scale")
        predictor_opt = keras.optimizers.LossScaleOptimizer(predictor_opt, name="predictor_loss_scale")
    return encoder_opt, predictor_opt
