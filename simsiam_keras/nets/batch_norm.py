"""BatchNorm trained as PyTorch's, on TensorFlow's fused kernel.

Keras 3's BatchNormalization computes the batch moments and then normalises in separate ops
(keras-team/keras-core#225), keeps the biased batch variance in its moving variance, and in
synchronised mode all-reduces the sum, the sum of squares and a full-size count separately.
`BatchNormalization` has the same variables, arguments and config, and in training:
- one replica (or unsynchronised): TensorFlow's FusedBatchNormV3 kernel, forward and backward;
- synchronised over several replicas: one all-reduce of the concatenated [sum, sum of squares],
  the count taken from the static shape;
- the moving variance follows torch.nn.BatchNorm: it averages the unbiased batch variance,
  while the batch is normalised with the biased one;
- statistics in float32 under mixed precision;
- once nets/recomputed_activation.py has linked it to the conv after its ReLU, it passes its input
  through, and that conv applies it.
Inference, masks, renorm and other axes use Keras' own computation.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="simsiam_keras")
class BatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization with PyTorch's running variance and the fused training kernel.

    The variables (gamma, beta, moving_mean, moving_variance) and the config are Keras', so
    weights, backups and `.keras` files of either layer load into the other. The class keeps
    Keras' name because a `.keras` file stores each layer's weights under its class name.
    """

    def _fusable(self, inputs, mask) -> bool:
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and rank in (2, 4)
            and self.axis in (-1, rank - 1)
        )

    # Set by nets/recomputed_activation.link: the conv after this layer's ReLU applies both in training.
    applied_by_next_conv = False

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if self.trains_fused(inputs, training):
            return inputs if self.applied_by_next_conv else self._fused(inputs)
        return self._unfused(inputs, self._synchronizing_replica())

    def trains_fused(self, inputs, training) -> bool:
        """Whether `call(inputs, training)` runs the fused training kernel."""
        return (
            bool(training) and self.trainable and self._fusable(inputs, None)
            and self._synchronizing_replica() is None
            and inputs.dtype != tf.float64  # the fused kernel takes 16- and 32-bit floats
        )

    def defers(self, inputs, training) -> bool:
        """Whether this layer and its ReLU pass `inputs` through, for the conv after them to apply."""
        return self.applied_by_next_conv and self.trains_fused(inputs, training)

    def _synchronizing_replica(self) -> tf.distribute.ReplicaContext | None:
        replica = tf.distribute.get_replica_context()
        if self.synchronized and replica is not None and replica.num_replicas_in_sync > 1:
            return replica
        return None

    def affine(self, channels: int) -> tuple[tf.Tensor, tf.Tensor]:
        gamma = tf.convert_to_tensor(self.gamma) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.convert_to_tensor(self.beta) if self.center else tf.zeros([channels], tf.float32)
        return gamma, beta

    def _fused(self, inputs):
        x = tf.convert_to_tensor(inputs)
        y, moving, _ = self.fused_kernel(x, *self.affine(x.shape[-1]), self.moving_statistics())
        self.assign_moving_statistics(moving)
        return y

    def moving_statistics(self) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.convert_to_tensor(self.moving_mean), tf.convert_to_tensor(self.moving_variance)

    def assign_moving_statistics(self, moving: tuple[tf.Tensor, tf.Tensor]) -> None:
        self.moving_mean.assign(moving[0])
        self.moving_variance.assign(moving[1])

    def fused_kernel(self, x, gamma, beta, moving: tuple[tf.Tensor, tf.Tensor]):
        """TensorFlow's fused training kernel: the normalised batch, the moving statistics updated, and
        the kernel's reserve spaces (the batch mean and biased variance, what its gradient takes).

        The kernel's running variance uses the unbiased batch variance, as torch.nn.BatchNorm does.
        """
        channels = x.shape[-1]
        images = x if len(x.shape) == 4 else tf.reshape(x, [-1, 1, 1, channels])
        y, moving_mean, moving_variance, *reserve = tf.raw_ops.FusedBatchNormV3(
            x=images, scale=gamma, offset=beta, mean=moving[0], variance=moving[1],
            epsilon=self.epsilon, exponential_avg_factor=1.0 - self.momentum, data_format="NHWC", is_training=True,
        )
        y = y if len(x.shape) == 4 else tf.reshape(y, tf.shape(x))
        return tf.cast(y, self.compute_dtype), (moving_mean, moving_variance), reserve

    def renormalize(self, x, gamma, beta, reserve) -> tf.Tensor:
        """`fused_kernel`'s normalised batch again (4-D `x`), from its reserve spaces: the same values."""
        y = tf.raw_ops.FusedBatchNormV3(x=x, scale=gamma, offset=beta, mean=reserve[0], variance=reserve[1],
                                        epsilon=self.epsilon, data_format="NHWC", is_training=False)[0]
        return tf.cast(y, x.dtype)

    def fused_gradient(self, upstream, x, gamma, reserve) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The gradients of `fused_kernel` (4-D `x`) for `x`, gamma and beta, given its output's."""
        d_x, d_gamma, d_beta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=upstream, x=x, scale=gamma, reserve_space_1=reserve[0], reserve_space_2=reserve[1],
            reserve_space_3=reserve[2], epsilon=self.epsilon, data_format="NHWC", is_training=True)
        return d_x, d_gamma, d_beta

    def _unfused(self, inputs, replica: tf.distribute.ReplicaContext | None):
        """Moments from sums (all-reduced in one op when `replica` is given), then the normalisation."""
        x = tf.cast(inputs, tf.float64 if inputs.dtype == tf.float64 else tf.float32)
        channels = x.shape[-1]
        axes = list(range(len(x.shape) - 1))
        sums = tf.concat([tf.reduce_sum(x, axes), tf.reduce_sum(tf.square(x), axes)], axis=0)
        local_count = math.prod(x.shape[:-1]) if None not in x.shape[:-1] else None
        if local_count is None:
            sums = tf.concat([sums, tf.cast(tf.size(x) // channels, x.dtype)[None]], axis=0)
        if replica is not None:
            sums = cross_replica_sum(replica, sums)
            local_count = local_count and local_count * replica.num_replicas_in_sync
        count = sums[2 * channels] if local_count is None else tf.constant(local_count, x.dtype)
        mean = sums[:channels] / count
        variance = tf.maximum(sums[channels : 2 * channels] / count - tf.square(mean), 0.0)
        unbiased = variance * count / tf.maximum(count - 1.0, 1.0)
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, unbiased)):
            batch = tf.cast(tf.stop_gradient(batch), moving.dtype)
            moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
        gamma, beta = (tf.cast(v, x.dtype) for v in self.affine(channels))
        y = tf.nn.batch_normalization(x, mean, variance, beta, gamma, self.epsilon)
        return tf.cast(y, self.compute_dtype)


def cross_replica_sum(replica: tf.distribute.ReplicaContext, value: tf.Tensor) -> tf.Tensor:
    """`replica.all_reduce(SUM, value)`, with the same gradient (the all-reduced upstream gradient),
    built so that tracing a step costs time linear in the number of layers.

    In graph mode `all_reduce` wraps the reduction in `tf.custom_gradient`, which searches the graph
    between its output and its input for variables; the output also depends on the other replicas'
    inputs, so each call walks the whole graph built so far (the forward, and in the backward pass
    everything before it): quadratic in depth. On 2 CPU replicas the first step of a width-8 CIFAR
    ResNet-18 (tracing included) took 43-48 s with `all_reduce`, 21-27 s with this.
    Reducing stop-gradient tensors ends each walk at once, and the gradient is attached by hand.
    """
    total = replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(value))

    @tf.custom_gradient
    def with_gradient(local, reduced):
        def grad(upstream):
            return replica.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(upstream)), None

        return tf.identity(reduced), grad

    return with_gradient(value, total)
