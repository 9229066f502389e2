"""The stop-gradient targets of Sec. 5.2's proof-of-concept experiments, as alternatives to SimSiam's own.

Sec. 5.1 reads SimSiam as an EM-like alternation between the encoder's weights theta and per-image
targets eta (Eq. 5-8): SimSiam takes one SGD step per alternation, with eta_x = F_theta(T'(x)) for one
sampled augmentation T' (Eq. 10), i.e. the other view's projection. Sec. 5.2 varies each half:

- `AlternatingTargets`: k SGD steps per alternation (1-step / 10-step / 100-step / 1-epoch: 68.1 /
  68.7 / 68.9 / 67.0). The targets of all k steps of a block come from the weights theta_t the block
  started with.
- `TargetBank`: eta_x as a per-image moving average over augmentations, eta_x <- m eta_x +
  (1 - m) F_theta(T'(x)) (m = 0.8: 55.0% without the predictor, where Table 1a collapses).

Both are training state, not network: they are saved in the run's backups (tf.train.Checkpoint
tracks them through the model) and left out of the `.keras` file, which holds the network and its
optimizers. Targets are in the places of z1 and z2 in `per_example_loss`: `t2` is what p1 regresses
to, `t1` what p2 regresses to.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from simsiam_keras.config import check_target_momentum

# Every replica holds the same value; updates come from the first replica (after an all-gather).
FIRST_REPLICA = tf.VariableAggregation.ONLY_FIRST_REPLICA


class AlternatingTargets(tf.Module):
    """Multi-step alternation (Sec. 5.2): targets F_{theta_t}(T'(x)) from the weights of the block's start.

    The paper pre-computes the targets of the next k batches with the current weights and caches
    them. This keeps a copy of the encoder (backbone + projector) taken at the start of each block
    instead, and projects each batch's views with it when the batch arrives: the same targets
    (same images, same augmentations, same weights theta_t, the same batches for BN's statistics)
    from a copy of the weights rather than k batches of projections (one epoch of ImageNet's at
    d = 2048 would take 10.5 GB), and the pipeline need not look k batches ahead. BN runs in
    training mode, as it does for SimSiam's targets: the targets are normalised with their own
    batch's statistics, so `steps=1` gives SimSiam's targets exactly. The copy's BN moving
    statistics are never used.

    Each replica projects its own part of the batch, so its "cache" holds its shard. The copy and
    the step count are saved in backups: a resumed run continues the interrupted block with the
    weights it started with.
    """

    def __init__(self, backbone: keras.Model, projector: keras.Model, steps: int):
        super().__init__(name="alternation")
        if steps < 1:
            raise ValueError(f"alternation_steps must be at least 1, got {steps}")
        self.steps = steps
        self.backbone = keras.models.clone_model(backbone)
        self.projector = keras.models.clone_model(projector)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=FIRST_REPLICA, name="step")

    @property
    def weights(self) -> list:
        """theta_t: the copy's weights, in the order of the online encoder's."""
        return self.backbone.weights + self.projector.weights

    def refresh(self, online: list) -> None:
        """theta_t <- theta: copies the online encoder's weights (backbone + projector, in that order)."""
        for target, source in zip(self.weights, online, strict=True):
            target.assign(source)

    def __call__(self, online: list, x1: tf.Tensor, x2: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The targets of this step's views; at a block's first step the copy is refreshed from `online` first."""

        def refresh() -> tf.Tensor:
            self.refresh(online)
            return tf.constant(True)

        tf.cond(self.step % self.steps == 0, refresh, lambda: tf.constant(False))
        t1, t2 = (self.projector(self.backbone(x, training=True), training=True) for x in (x1, x2))
        self.step.assign_add(1)
        return tf.stop_gradient(t1), tf.stop_gradient(t2)


class TargetBank(tf.Module):
    """Per-image moving-average targets (Sec. 5.2, "Expectation over augmentations"), indexed by image id.

    For image x with stored eta_x, the target of p1 is m eta_x + (1 - m) F(T2(x)) and that of p2 is
    m eta_x + (1 - m) F(T1(x)): the paper's update with T' the other view, as in SimSiam. The bank
    then keeps the mean of the two (the one target, with the asymmetric loss). An image seen for
    the first time starts from its own projection (its row is still zero), so its first targets
    are SimSiam's, at any m and for either similarity. m = 0 gives SimSiam's targets throughout.

    The bank is a variable of every replica, kept identical, as MoCo keeps its queue: each replica
    computes the rows of its own images (the replicas' images in a step are disjoint) and an
    all-gather exchanges them, so the bank works under every strategy and is saved in backups like
    the weights (a resumed run continues it exactly). It takes num_images x dim x 4 bytes on each
    replica: 410 MB for CIFAR-10 at d = 2048, 10.5 GB for ImageNet.
    """

    def __init__(self, num_images: int, dim: int, momentum: float):
        super().__init__(name="target_bank")
        check_target_momentum(momentum)
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
        self.momentum = momentum
        self.targets = tf.Variable(
            lambda: tf.zeros([num_images, dim], tf.float32), trainable=False, aggregation=FIRST_REPLICA,
            name="targets",
        )

    def __call__(self, ids: tf.Tensor, t1: tf.Tensor, t2: tf.Tensor, symmetric: bool = True):
        """The smoothed targets (t1, t2) of images `ids`, and the bank updated with them."""
        ids = tf.cast(ids, tf.int64)
        t1, t2 = (tf.stop_gradient(tf.cast(t, tf.float32)) for t in (t1, t2))
        stored = tf.gather(self.targets, ids)
        seen = tf.reduce_any(stored != 0, axis=-1, keepdims=True)
        m = self.momentum
        s1, s2 = (m * tf.where(seen, stored, t) + (1 - m) * t for t in (t1, t2))
        self.write(ids, 0.5 * (s1 + s2) if symmetric else s2)
        return s1, s2

    def write(self, ids: tf.Tensor, rows: tf.Tensor) -> None:
        """Stores `rows` at `ids` on every replica: each replica's rows, all-gathered."""
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            ids, rows = replica.all_gather(ids, axis=0), replica.all_gather(rows, axis=0)
        self.targets.scatter_update(tf.IndexedSlices(rows, ids))


def proof_of_concept_targets(
    alternation: AlternatingTargets | None, bank: TargetBank | None, online: list, x1: tf.Tensor, x2: tf.Tensor,
    z1: tf.Tensor, z2: tf.Tensor, image_ids: list, symmetric: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The targets in z1's and z2's places: the views' projections (SimSiam's), or those of the Sec. 5.2
    experiments that are on. `online` is the encoder's weights (backbone + projector, in that order)."""
    if alternation is not None:
        z1, z2 = alternation(online, x1, x2)
    if bank is not None:
        if not image_ids:
            raise ValueError("target_bank: the batches carry no image ids (two_view_dataset(..., image_ids=True))")
        z1, z2 = bank(image_ids[0], z1, z2, symmetric)
    return z1, z2
