"""SimSiam as a subclassed keras.Model (Figure 1 and Algorithm 1 of the paper): the method, and nothing else."""

from __future__ import annotations

import keras
import tensorflow as tf

from simsiam_keras.augment.on_device import AppearanceOnDevice, views_as_given
from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.config import SimSiamConfig
from simsiam_keras.method.base import BaseMethod, distributed_step
from simsiam_keras.method.loss import per_example_loss, z_std
from simsiam_keras.method.targets import AlternatingTargets, TargetBank, proof_of_concept_targets
from simsiam_keras.nets import backbone as backbone_lib
from simsiam_keras.nets import heads, recomputed_activation


@keras.saving.register_keras_serializable(package="simsiam_keras")
class SimSiam(BaseMethod):
    """Encoder f = backbone + projector, predictor h, trained on two views with stop-gradient.

    `call(views)` takes a pair of image batches and returns ((z1, z2), (p1, p2)). Training uses
    two optimizers: `optimizer` for the encoder and `predictor_optimizer` for h, so the predictor
    can keep a fixed learning rate (Table 1c); `BaseMethod` (method/base.py) holds that and the
    rest of the Keras and tf.distribute machinery.

    Two plug-ins change what the step sees, not how it runs. With `device_augment` (`--augment-on
    device`) the batches are uncoloured crops and their seeds, and `augment_views` draws the views'
    appearance on the step's device (augment/on_device.py); it is a setting of the run, not saved
    with the model. Sec. 5.2's proof-of-concept targets (method/targets.py) replace the other
    view's projection: `alternation_steps` k > 1 takes each block of k steps' targets from the
    encoder's weights at the block's start, and a `target_bank` smooths the targets per image over
    augmentations (its batches carry image ids). They are training state, saved in backups, not in
    the `.keras` file.
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
        self.augment_views = AppearanceOnDevice(device_augment) if device_augment is not None else views_as_given
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
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.z_std_tracker = keras.metrics.Mean(name="z_std")
        self.build(backbone.input_shape)

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

    def compute_simsiam_loss(self, p1, p2, z1, z2) -> tf.Tensor:
        """This replica's mean of the per-example loss D(p1, sg(z2))/2 + D(p2, sg(z1))/2 (Eq. 4), with this
        model's ablation settings. Predictions first, as in D(p, z): p1 regresses to z2, p2 to z1."""
        return tf.reduce_mean(
            per_example_loss(p1, p2, z1, z2, self.stop_gradient, self.similarity, self.symmetric)
        )

    def targets(self, x1, x2, z1, z2, image_ids: list):
        """What p2 and p1 regress to: z1 and z2, or Sec. 5.2's targets in their places."""
        online = self.backbone.weights + self.projector.weights
        return proof_of_concept_targets(self.alternation, self.target_bank, online, x1, x2, z1, z2, image_ids,
                                        self.symmetric)

    @property
    def metrics(self) -> list:
        return [self.loss_tracker, self.z_std_tracker]

    def track(self, loss, z1, z2) -> dict:
        """Updates the running loss and the collapse monitor z_std (Sec. 4.1); their logs."""
        self.loss_tracker.update_state(loss)
        self.z_std_tracker.update_state(0.5 * (z_std(z1) + z_std(z2)))
        return {m.name: m.result() for m in self.metrics}

    @distributed_step
    def train_step(self, data):
        x1, x2, *image_ids = self.augment_views(data)  # the two views of a batch (and the images' ids)
        with self.gradient_tape() as tape:
            (z1, z2), (p1, p2) = self((x1, x2), training=True)
            t1, t2 = self.targets(x1, x2, z1, z2, image_ids)
            loss = self.compute_simsiam_loss(p1, p2, t1, t2)
        self.apply_gradients(tape, loss)
        return self.track(loss, z1, z2)

    @distributed_step
    def test_step(self, data):
        x1, x2, *_ = self.augment_views(data)
        (z1, z2), (p1, p2) = self((x1, x2), training=False)
        return self.track(self.compute_simsiam_loss(p1, p2, z1, z2), z1, z2)

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
        recomputed_activation.link_chains(config["backbone"])  # as build_backbone links them
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
