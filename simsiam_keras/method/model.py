"""SimSiam as a subclassed keras.Model (Figure 1 and Algorithm 1 of the paper)."""

from __future__ import annotations

import keras
import tensorflow as tf

from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.config import SimSiamConfig
from simsiam_keras.method.loss import per_example_loss, z_std
from simsiam_keras.method.targets import AlternatingTargets, TargetBank
from simsiam_keras.nets import backbone as backbone_lib
from simsiam_keras.nets import heads


@keras.saving.register_keras_serializable(package="simsiam_keras")
class SimSiam(keras.Model):
    """Encoder f = backbone + projector, predictor h, trained on two views with stop-gradient.

    `call(views)` takes a pair of image batches and returns ((z1, z2), (p1, p2)). Training uses
    two optimizers: `optimizer` for the encoder and `predictor_optimizer` for h, so the predictor
    can keep a fixed learning rate (Table 1c). With `device_augment` (`--augment-on device`) the
    train step receives uncoloured crops and their seeds and draws the views' appearance itself
    (`augment_views`); it is a setting of the run, not saved with the model.

    Sec. 5.2's proof-of-concept targets are options: `alternation_steps` k > 1 takes each block of k
    steps' targets from the encoder's weights at the block's start, and a `target_bank` smooths the
    targets per image over augmentations (its batches carry image ids). Both live in
    `method/targets.py`; they are training state, saved in backups, not in the `.keras` file.
    """

    def __init__(
        self,
        backbone: keras.Model,
        projector: keras.Model,
        predictor: keras.Model | None = None,
        stop_gradient: bool = True,
        similarity: str = "cosine",
        symmetric: bool = True,
        device_augment: SimSiamAugment | None = None,
        alternation_steps: int = 1,
        target_bank: TargetBank | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.device_augment = device_augment
        # XLA-compiled on every device: 3x faster than plain TF ops even on a CPU, and one fused
        # kernel instead of hundreds of small ones on a GPU whose step is not compiled.
        self._appearance = None
        if device_augment is not None:
            self._appearance = tf.function(device_augment.appearance_batch, jit_compile=True, autograph=False)
        self.backbone = backbone
        self.projector = projector
        # None is the "no predictor" ablation (Table 1a): h is the identity.
        self.predictor = predictor
        self.stop_gradient = stop_gradient
        self.similarity = similarity
        self.symmetric = symmetric
        # Sec. 5.2; None: SimSiam's own targets, the other view's projection.
        self.alternation = AlternatingTargets(backbone, projector, alternation_steps) if alternation_steps > 1 else None
        self.target_bank = target_bank
        self.predictor_optimizer: keras.optimizers.Optimizer | None = None
        self.per_replica_jit_compile = False
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.z_std_tracker = keras.metrics.Mean(name="z_std")
        self.build(backbone.input_shape)

    def build(self, input_shape) -> None:
        # Backbone and heads are built functional models: nothing left to create.
        self.built = True

    @property
    def encoder_variables(self) -> list:
        return self.backbone.trainable_variables + self.projector.trainable_variables

    @property
    def predictor_variables(self) -> list:
        return self.predictor.trainable_variables if self.predictor is not None else []

    def encode(self, images, training: bool = False):
        """f(x): the projection z of a batch of images."""
        return self.projector(self.backbone(images, training=training), training=training)

    def predict_from(self, z, training: bool = False):
        """h(z), or z itself in the no-predictor ablation."""
        return z if self.predictor is None else self.predictor(z, training=training)

    def call(self, views, training: bool = False):
        x1, x2 = views
        # Two calls, as in the authors' code: BN statistics are computed per view.
        z1, z2 = self.encode(x1, training), self.encode(x2, training)
        return (z1, z2), (self.predict_from(z1, training), self.predict_from(z2, training))

    def compute_simsiam_loss(self, z1, z2, p1, p2) -> tf.Tensor:
        """This replica's mean of the per-example loss, with this model's ablation settings."""
        return tf.reduce_mean(
            per_example_loss(p1, p2, z1, z2, self.stop_gradient, self.similarity, self.symmetric)
        )

    # -- training ---------------------------------------------------------------------------

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
            raise ValueError("SimSiam.compile needs predictor_optimizer (or build the model without a predictor)")
        if per_replica_jit_compile and kwargs.get("jit_compile") is True:
            raise ValueError("SimSiam.compile takes jit_compile or per_replica_jit_compile, not both")
        super().compile(optimizer=optimizer, **kwargs)
        self.per_replica_jit_compile = per_replica_jit_compile
        # Without a predictor (Table 1a) a predictor optimizer would have nothing to update.
        self.predictor_optimizer = predictor_optimizer if self.predictor is not None else None
        with self.distribute_strategy.scope():
            self.optimizer.build(self.encoder_variables)
            if self.predictor_optimizer is not None:
                self.predictor_optimizer.build(self.predictor_variables)

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

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.z_std_tracker]

    def augment_views(self, data):
        """The batch's two views (and image ids, when it has them). With `device_augment`, `data` is
        ((uint8 crops1, crops2), (seeds1, seeds2)[, image_ids]) and each view's flip, jitter, grayscale
        and blur are drawn here from its seed, on the step's device."""
        if self.device_augment is None:
            return data
        (crops1, crops2), (seeds1, seeds2), *image_ids = data
        views = self._appearance(tf.concat([crops1, crops2], 0), tf.concat([seeds1, seeds2], 0))
        return (*tf.split(views, 2), *image_ids)

    def _forward(self, data, training: bool):
        x1, x2, *image_ids = data  # the two views of one batch of images (and the images' ids, for a target bank)
        (z1, z2), (p1, p2) = self((x1, x2), training=training)
        t1, t2 = self._targets(x1, x2, z1, z2, image_ids) if training else (z1, z2)
        loss = self.compute_simsiam_loss(t1, t2, p1, p2)
        return loss, z1, z2

    def _targets(self, x1, x2, z1, z2, image_ids: list):
        """The targets in z1's and z2's places: the views' projections (SimSiam), or Sec. 5.2's."""
        if self.alternation is not None:
            z1, z2 = self.alternation(self.backbone.weights + self.projector.weights, x1, x2)
        if self.target_bank is not None:
            if not image_ids:
                raise ValueError("target_bank: the batches carry no image ids (two_view_dataset(..., image_ids=True))")
            z1, z2 = self.target_bank(image_ids[0], z1, z2, self.symmetric)
        return z1, z2

    def _learning_rates(self) -> dict:
        """The learning rates this step applies (read before the step advances the schedules)."""
        rates = {}
        if self.optimizer is not None:
            rates["lr_encoder"] = tf.identity(self.optimizer.learning_rate)
        if self.predictor_optimizer is not None:
            rates["lr_predictor"] = tf.identity(self.predictor_optimizer.learning_rate)
        return rates

    def _logs(self, loss, z1, z2, rates: dict) -> dict:
        self.loss_tracker.update_state(loss)
        self.z_std_tracker.update_state(0.5 * (z_std(z1) + z_std(z2)))
        logs = {**{m.name: m.result() for m in self.metrics}, **rates}
        if self._multi_worker:
            # keras-team/keras#20585: under MultiWorkerMirroredStrategy Keras averages each log
            # with strategy.reduce(axis=0), which needs an axis to reduce.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    @property
    def _multi_worker(self) -> bool:
        return isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # compile() built the model and both optimizers, so no sample batch is needed. Drawing
        # one (Keras does under any strategy) opens an extra iterator on the dataset: that
        # advances its reshuffle seeds by as many passes as the iterator prefetched, so the
        # batches of every later pass would depend on timing, and a resumed run's would differ.
        optimizers = [o for o in (self.optimizer, self.predictor_optimizer) if o is not None]
        if all(layer.built for layer in self._flatten_layers()) and all(o.built for o in optimizers):
            return super()._maybe_symbolic_build(iterator=None, data_batch=None)
        # keras-team/keras#20585: Keras 3 builds from one batch averaged with strategy.reduce,
        # which MultiWorkerMirroredStrategy cannot do for our (view1, view2) batches. The first
        # local replica's batch has the same shapes, which is all the build needs.
        if iterator is not None and self._multi_worker:
            for _, _, batches in iterator:
                data_batch = self.distribute_strategy.experimental_local_results(next(batches))[0]
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        data = self.augment_views(data)
        if self.per_replica_jit_compile:
            return tf.function(self._train_step, jit_compile=True)(data)
        return self._train_step(data)

    def _train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        pairs = [(self.optimizer, self.encoder_variables)]
        if self.predictor_optimizer is not None:
            pairs.append((self.predictor_optimizer, self.predictor_variables))
        rates = self._learning_rates()
        loss_scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        with tf.GradientTape(persistent=loss_scaled) as tape:
            loss, z1, z2 = self._forward(data, training=True)
            # The optimizers sum gradients over replicas: scale to the global-batch mean.
            replica_loss = loss / replicas
            # Under float16 each optimizer has its own dynamic loss scale.
            targets = [opt.scale_loss(replica_loss) for opt, _ in pairs] if loss_scaled else None
        if loss_scaled:
            for (opt, variables), target in zip(pairs, targets):
                opt.apply_gradients(zip(tape.gradient(target, variables), variables))
            del tape
        else:
            grads = tape.gradient(replica_loss, [v for _, vs in pairs for v in vs])
            start = 0
            for opt, variables in pairs:
                opt.apply_gradients(zip(grads[start : start + len(variables)], variables))
                start += len(variables)
        return self._logs(loss, z1, z2, rates)

    def test_step(self, data):
        data = self.augment_views(data)
        loss, z1, z2 = self._forward(data, training=False)
        return self._logs(loss, z1, z2, self._learning_rates())

    # -- serialisation ----------------------------------------------------------------------

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "projector": keras.saving.serialize_keras_object(self.projector),
            "predictor": keras.saving.serialize_keras_object(self.predictor) if self.predictor is not None else None,
            "stop_gradient": self.stop_gradient,
            "similarity": self.similarity,
            "symmetric": self.symmetric,
        }

    @classmethod
    def from_config(cls, config: dict) -> "SimSiam":
        config = dict(config)
        for key in ("backbone", "projector", "predictor"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def build_simsiam(config: SimSiamConfig, sync_bn: bool = False, num_images: int | None = None) -> SimSiam:
    """The model a config describes; call inside the strategy's scope.

    A target bank (`config.target_momentum`) has a row per training image: `num_images` of them.
    """
    if config.target_momentum is not None and num_images is None:
        raise ValueError("num_images: a target bank (target_momentum) needs the number of training images")
    trunk = backbone_lib.build_backbone(
        config.backbone, config.image_size, config.backbone_width, sync_bn, config.stem_padding,
        config.input_mean, config.input_std,
    )
    feature_dim = trunk.output_shape[-1]
    proj = heads.projector(feature_dim, config.proj_hidden_dim, config.proj_dim, config.proj_layers, sync_bn,
                           config.proj_output_affine)
    pred = heads.predictor(config.proj_dim, config.pred_hidden_dim, sync_bn) if config.use_predictor else None
    bank = None
    if config.target_momentum is not None:
        bank = TargetBank(num_images, config.proj_dim, config.target_momentum)
    return SimSiam(
        trunk, proj, pred,
        stop_gradient=config.stop_gradient,
        similarity=config.similarity,
        symmetric=config.symmetric,
        device_augment=SimSiamAugment(config.image_size, config.augment) if config.augment_on == "device" else None,
        alternation_steps=config.alternation_steps,
        target_bank=bank,
        name="simsiam",
    )
