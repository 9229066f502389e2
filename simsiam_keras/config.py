"""The paper's hyper-parameters, in one place, and the presets that override them.

Defaults are SimSiam's ImageNet recipe (Sec. 3 and Appendix A of Chen & He, 2021);
a preset is a plain mapping of overrides (Appendix D for CIFAR).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Mapping

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Host memory a dataset may take when held decoded: TFDS datasets below it are read into
# arrays, folders below it are cached decoded; above it, images stream as encoded bytes.
DATA_MEMORY_BUDGET_BYTES = 2 * 1024**3
# Elements of encoded images kept in the shuffle buffer of a streamed TFDS dataset
# (about 1 GB of ImageNet JPEGs), on top of TFDS's shuffling of its record files.
STREAM_SHUFFLE_BUFFER = 10_000
CACHE_DECODED = ("auto", "on", "off")
# Where the views' appearance (flip, colour jitter, grayscale, blur) is drawn: in the input
# pipeline on the host CPU, or in the train step on the device that runs it.
AUGMENT_ON = ("host", "device")
# Images of each labelled split a streamed dataset (folder, large TFDS) decodes for the kNN monitor.
MONITOR_IMAGES = 10_000
# The evaluation view (Appendix A): resize the shorter side to crop x 256/224, then take the centre crop.
EVAL_RESIZE_RATIO = 256 / 224


@dataclasses.dataclass
class AugmentConfig:
    """Augmentation recipe (Appendix A, torchvision semantics)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    # Kernel side as a fraction of the image side: 23 px at 224.
    blur_kernel_fraction: float = 0.1


@dataclasses.dataclass
class SimSiamConfig:
    """Everything a pretraining run needs; defaults are the paper's ImageNet recipe."""

    # Data
    dataset: str = "synthetic"
    data_dir: str | None = None
    image_size: int = 224
    # Model (Sec. 3, Appendix B)
    backbone: str = "resnet50"
    backbone_width: int = 64
    # Padding of the ResNet's first conv; None is torchvision's kernel // 2 (solo-learn's CIFAR stem pads 2).
    stem_padding: int | None = None
    # The input normalisation inside the backbone, per RGB channel on the [0, 1] scale (torchvision's Normalize).
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    proj_layers: int = 3
    proj_hidden_dim: int = 2048
    proj_dim: int = 2048
    pred_hidden_dim: int = 512
    # Learnable scale and offset in the projector's output BN. The authors' code has
    # BatchNorm1d(affine=False) there; Sec. 4.4 (Table 3c): 68.1 with them, 68.2 without.
    proj_output_affine: bool = False
    # Ablations (Sec. 4)
    stop_gradient: bool = True
    use_predictor: bool = True
    similarity: str = "cosine"  # "cosine" or "cross_entropy" (Sec. 4.5)
    symmetric: bool = True  # False: the asymmetric loss of Sec. 4.6
    # Optimisation (Sec. 3)
    batch_size: int = 512
    epochs: int = 100
    base_lr: float = 0.05
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: int = 0
    predictor_lr: str = "fixed"  # "fixed" (Table 1c, the default) or "cosine"
    # Sec. 5.2's proof-of-concept experiments (method/targets.py). Multi-step alternation: the targets
    # of each block of k steps come from the encoder's weights at its start (1: SimSiam).
    alternation_steps: int = 1
    # Per-image moving-average targets eta_x <- m eta_x + (1 - m) F(T'(x)) (the paper: 0.8, without
    # the predictor); None: off.
    target_momentum: float | None = None
    # Augmentation
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    # Monitoring
    knn_every: int = 1
    knn_k: int = 200
    knn_temperature: float = 0.1
    # The un-augmented view every evaluation sees: shorter side resized to image_size x this ratio,
    # then the centre crop. CIFAR-size presets use 1.0, the whole image, as CIFAR evaluations do.
    eval_resize_ratio: float = EVAL_RESIZE_RATIO
    # Runtime
    seed: int = 0
    strategy: str = "auto"
    cpu_replicas: int = 0
    tpu: str | None = None
    mixed_precision: str = "off"
    # Input pipeline: keep decoded images in memory after the first epoch ("auto": when they
    # are estimated to fit in DATA_MEMORY_BUDGET_BYTES); "off" crops each view while decoding.
    cache_decoded: str = "auto"
    # "device": the pipeline only decodes and crops (uint8 views and their seeds); the train step
    # applies flip, jitter, grayscale and blur with the same draws. For GPU/TPU hosts whose CPUs
    # cannot feed them; on a CPU-only run "host" is as fast.
    augment_on: str = "host"
    # A tf.data service dispatcher ("grpc://host:port") whose workers run the input pipeline.
    data_service: str | None = None
    output_dir: str = "runs/simsiam"
    steps_per_epoch: int | None = None
    # Preemption: back up to OUTPUT_DIR/backup every N global steps (0: only at epoch ends) and
    # at each epoch end; re-running with the same output_dir resumes from the newest backup.
    backup_every_steps: int = 500
    # Require a backup to resume from (without it, a run with no backup starts afresh).
    resume: bool = False
    # Start afresh over an existing run folder: its backups and history rows are discarded (a run
    # whose backups are all unreadable, or that has history but no backup, refuses without it).
    restart: bool = False
    # A signal to treat as a preemption notice besides SIGTERM and SIGINT (e.g. "SIGUSR1" for
    # SLURM's --signal): the run stops after the current step, backed up, with status 128 + signum.
    preemption_signal: str | None = None
    # Take over the output folder's lock even when it may be held (a dead process on another host).
    force_unlock: bool = False
    # XLA-compile the train step: one replica, or the per-replica step on several GPUs.
    jit_compile: bool = False
    # Train steps per call of the compiled train function (Keras' steps_per_execution): fewer
    # round trips to Python; must divide the steps per epoch and backup_every_steps.
    steps_per_execution: int = 1
    # tf.config.experimental.enable_op_determinism(): bit-identical reruns, slower.
    deterministic: bool = False

    @property
    def lr(self) -> float:
        """Linear scaling rule: base_lr x global batch / 256."""
        return self.base_lr * self.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SimSiamConfig":
        values = dict(values)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        augment = values.pop("augment", {})
        for key in ("input_mean", "input_std"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        if isinstance(augment, Mapping):
            augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()})
        return cls(augment=augment, **values)


PRESETS: dict[str, dict[str, Any]] = {
    "imagenet": {},
    # Appendix D: CIFAR-10 recipe.
    "cifar": {
        "image_size": 32,
        "backbone": "resnet18_cifar",
        "proj_layers": 2,
        "base_lr": 0.03,
        "weight_decay": 5e-4,
        "batch_size": 512,
        "epochs": 800,
        "eval_resize_ratio": 1.0,
        "augment": {"blur_prob": 0.0},
    },
    # The embedded quickstart, `simsiam-pretrain` without arguments: under two minutes on a 2-core
    # CPU. A ResNet-18 of width 8 (a step costs half of width 16's), a small batch for more steps,
    # and a larger lr than CIFAR's so that a 234-step run learns: kNN 0.22 -> 0.42 in 115 CPU-s
    # (width 16, lr 0.4, 5 epochs: 0.23 -> 0.44 in 354 CPU-s).
    "quickstart": {
        "dataset": "synthetic",
        "image_size": 32,
        "backbone": "resnet18_cifar",
        "backbone_width": 8,
        "proj_layers": 2,
        "proj_hidden_dim": 512,
        "proj_dim": 512,
        "pred_hidden_dim": 128,
        "base_lr": 0.8,
        "weight_decay": 5e-4,
        "batch_size": 128,
        "epochs": 3,
        "knn_every": 1,
        "eval_resize_ratio": 1.0,
        "augment": {"blur_prob": 0.0},
    },
}


# How long a preset's own run takes (what a run prints at its start), process start to exit on a
# 2-core AVX2 CPU: `simsiam-pretrain` with no arguments costs 110 s of CPU time (user + sys), and
# its train step keeps both cores busy (0.27 CPU-s a step over two threads, the input pipeline 0.05).
PRESET_DURATIONS = {"quickstart": "about 1-1.5 minutes on a 2-core CPU (about 105 s of CPU time)"}


def expected_duration(config: SimSiamConfig) -> str | None:
    """How long `config` takes, when it is a preset's run as measured (any output_dir and seed); else None."""
    for preset, duration in PRESET_DURATIONS.items():
        if config == make_config(preset, output_dir=config.output_dir, seed=config.seed):
            return duration
    return None


def default_preset(dataset: str | None) -> str:
    """The preset a run without one uses: `quickstart` for the embedded dataset, the paper's `imagenet` otherwise."""
    return "quickstart" if dataset in (None, "synthetic") else "imagenet"


def make_config(preset: str | None = None, **overrides: Any) -> SimSiamConfig:
    """Paper defaults, then the preset's overrides, then the caller's (None means "keep").

    Without a preset, `default_preset` picks one from the dataset.
    """
    if preset is None:
        preset = default_preset(overrides.get("dataset"))
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is unknown: choose one of {sorted(PRESETS)}")
    values = SimSiamConfig().to_dict()
    for source in (PRESETS[preset], {k: v for k, v in overrides.items() if v is not None}):
        for key, value in source.items():
            if key == "augment":
                augment = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
                values["augment"] = {**values["augment"], **augment}
            else:
                values[key] = value
    return SimSiamConfig.from_dict(values)


@dataclasses.dataclass
class LinearEvalConfig:
    """Linear classification on frozen pool5 features; defaults are the paper's recipe (Appendix A).

    Gradient recipes (`lars`, `sgd`): lr = base_lr x batch / 256, cosine decay to 0, momentum 0.9,
    wd 0, 90 epochs; the head is initialised N(0, 0.01) with zero bias, as in the authors'
    `main_lincls.py`. Training views are torchvision's RandomResizedCrop (default scale (0.08, 1)) +
    horizontal flip; evaluation resizes the shorter side to crop x 256/224 and takes the centre crop.
    `lbfgs`: multinomial logistic regression on cached features, fitted full-batch by L-BFGS with its
    L2 penalty chosen from `l2_grid` on a held-out slice of the training split, then refitted on all of it.
    """

    optimizer: str = "lars"  # "lars" (apex LARC, trust coefficient 0.001), "sgd" or "lbfgs"
    base_lr: float = 0.02
    batch_size: int = 4096
    epochs: int = 90
    momentum: float = 0.9
    weight_decay: float = 0.0
    trust_coefficient: float = 0.001
    head_init_std: float = 0.01
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    # None: the ratio the checkpoint's run used (its config.json or export metadata), else the paper's.
    eval_resize_ratio: float | None = None
    # Extract features once, without augmentation, and train the head on them (fast on a CPU).
    cache_features: bool = False
    # l2-normalise the pooled features before the head (the saved classifier holds the normalisation).
    normalize_features: bool = False
    # lbfgs: penalties (lambda/2 ||W||^2 on the mean cross-entropy) tried on the held-out slice.
    l2_grid: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    holdout_fraction: float = 0.2
    max_iterations: int = 500
    seed: int = 0

    @property
    def lr(self) -> float:
        """Linear scaling rule, as the authors' code applies it: base_lr x batch / 256."""
        return self.base_lr * self.batch_size / 256

    @property
    def full_batch(self) -> bool:
        """Whether the head is fitted full-batch to convergence (no epochs, batch or lr)."""
        return self.optimizer == "lbfgs"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


LINEAR_EVAL_PRESETS: dict[str, dict[str, Any]] = {
    # Appendix A: LARS, base lr 0.02 (0.32 at batch 4096), cosine, 90 epochs, wd 0.
    "paper": {},
    # The authors' released main_lincls.py defaults with --lars: base lr 0.1 (1.6 at batch 4096).
    "lars_code": {"base_lr": 0.1},
    # Appendix A's alternative (from MoCo): SGD, lr 30 at batch 256, wd 0; ~1% lower on ImageNet.
    "sgd": {"optimizer": "sgd", "base_lr": 30.0, "batch_size": 256},
    # The authors' main_lincls.py without --lars: SGD, base lr 0.1 x batch / 256, batch 4096.
    "sgd_scaled": {"optimizer": "sgd", "base_lr": 0.1},
    # Small sets: L2-regularised multinomial logistic regression on cached, l2-normalised features,
    # full-batch L-BFGS, the penalty chosen on a held-out slice (Kornblith et al. 2019's protocol,
    # which SimCLR's and CLIP's linear probes use on small datasets).
    "lbfgs": {"optimizer": "lbfgs", "cache_features": True, "normalize_features": True},
}
# Settings of the gradient recipes that a full-batch fit has no use for.
GRADIENT_ONLY = ("epochs", "batch_size", "base_lr")
GRADIENT_RECIPES = tuple(name for name, preset in LINEAR_EVAL_PRESETS.items() if preset.get("optimizer") != "lbfgs")

# The paper's batch for the probe, and the steps an epoch from which its LARS recipe is the default.
# LARS with trust coefficient 0.001 moves the head by at most lr x 0.001 of its norm a step (x 10 with
# momentum 0.9), so over T cosine steps at lr 0.32 the head can grow by a factor of at most
# exp(0.0016 T) from its N(0, 0.01) initialisation: 1.3 for 5,000 images (2 steps an epoch, T = 180),
# 6.5 for CIFAR-10 (13 steps): it stays near its random start. Measured on cached features of the
# quickstart encoder, with batches of 4096 drawn for 90 epochs of S steps (docs/benchmarks.md, "Linear probe"):
# LARS reaches top-1 0.15 at S = 3, 0.29 at 16, 0.49 at 64 and 0.53 at 128, where it matches the
# `sgd` recipe (0.54); ImageNet gives S = 313. Below 128 steps an epoch (524,288 images) the
# features of the training split are cached for the full-batch fit (4.3 GB at 2048-d, float32).
PAPER_PROBE_BATCH = 4096
LARS_MIN_STEPS_PER_EPOCH = 128


def default_linear_eval_recipe(train_images: int) -> tuple[str, str]:
    """The probe's recipe for a training split of `train_images` images, and why (one line).

    The paper's LARS recipe where the split gives at least LARS_MIN_STEPS_PER_EPOCH steps an epoch
    at its batch of 4096 (ImageNet scale), else `lbfgs`, which converges at any size.
    """
    steps = math.ceil(train_images / PAPER_PROBE_BATCH)
    scale = (f"{train_images:,} training images give {steps} step{'s' * (steps != 1)} an epoch at the paper's "
             f"batch {PAPER_PROBE_BATCH}")
    if steps >= LARS_MIN_STEPS_PER_EPOCH:
        return "paper", f"{scale} (>= {LARS_MIN_STEPS_PER_EPOCH}): enough for the paper's LARS recipe"
    return "lbfgs", (f"{scale} (< {LARS_MIN_STEPS_PER_EPOCH}): too few for LARS to move the head, "
                     f"so full-batch L-BFGS on l2-normalised features")


def make_linear_eval_config(recipe: str = "paper", **overrides: Any) -> LinearEvalConfig:
    """A linear-eval recipe by name, then the caller's overrides (None means "keep")."""
    if recipe not in LINEAR_EVAL_PRESETS:
        raise ValueError(f"recipe {recipe!r} is unknown: choose one of {', '.join(LINEAR_EVAL_PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    values = {**LINEAR_EVAL_PRESETS[recipe], **overrides}
    unknown = set(values) - {f.name for f in dataclasses.fields(LinearEvalConfig)}
    if unknown:
        raise ValueError(f"unknown linear-eval fields {sorted(unknown)}")
    config = LinearEvalConfig(**values)
    if config.optimizer not in ("lars", "sgd", "lbfgs"):
        raise ValueError(f"optimizer must be 'lars', 'sgd' or 'lbfgs', got {config.optimizer!r}")
    for name in ("batch_size", "epochs", "max_iterations"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.base_lr <= 0:
        raise ValueError(f"base_lr must be positive, got {config.base_lr}")
    if config.full_batch:
        given = [name for name in GRADIENT_ONLY if name in overrides]
        if given:
            raise ValueError(f"{given[0]} does not apply to the {recipe} recipe (full-batch L-BFGS, fitted to "
                             f"convergence): choose a gradient recipe ({', '.join(GRADIENT_RECIPES)}) to set it")
        if not config.cache_features:
            raise ValueError(f"cache_features: the {recipe} recipe fits the head on cached features")
        if not config.l2_grid or not all(math.isfinite(v) and v > 0 for v in config.l2_grid):
            raise ValueError(f"l2_grid must hold positive numbers, got {config.l2_grid}")
        if not 0 < config.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {config.holdout_fraction}")
    if config.eval_resize_ratio is not None:
        check_eval_resize_ratio(config.eval_resize_ratio)
    return config


def check_eval_resize_ratio(ratio: float) -> float:
    """The evaluation view crops inside the resized image: the ratio must be a number >= 1."""
    if not (math.isfinite(ratio) and ratio >= 1):
        raise ValueError(f"eval_resize_ratio must be a number >= 1 (the paper's is 256/224), got {ratio}")
    return ratio


def check_target_momentum(momentum: float) -> float:
    """The moving average's m must be in [0, 1): at 1 the targets would never move."""
    number = isinstance(momentum, (int, float)) and not isinstance(momentum, bool)
    if not (number and math.isfinite(momentum) and 0 <= momentum < 1):
        raise ValueError(f"target_momentum must be in [0, 1) (the paper's is 0.8), got {momentum}")
    return momentum


def check_config(config: SimSiamConfig) -> SimSiamConfig:
    """Raises ValueError for a setting no run can use (NotADirectoryError for a run directory that is a
    file), before anything is built or written.

    Names and choices (similarity, strategy, precision, ...) are checked where they are used,
    which is also before anything is written; this checks the numbers, the image size against
    the backbone, the tf.data service address and the run directory's path.
    """
    at_least = {"batch_size": 1, "proj_layers": 1, "proj_dim": 1, "proj_hidden_dim": 1, "pred_hidden_dim": 1,
                "epochs": 0, "warmup_epochs": 0, "knn_every": 0, "knn_k": 1, "seed": 0, "cpu_replicas": 0,
                "steps_per_execution": 1, "alternation_steps": 1}
    for name, low in at_least.items():
        if getattr(config, name) < low:
            raise ValueError(f"{name} must be at least {low}, got {getattr(config, name)}")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {config.steps_per_epoch}")
    for name in ("base_lr", "knn_temperature"):
        if not (math.isfinite(getattr(config, name)) and getattr(config, name) > 0):
            raise ValueError(f"{name} must be a positive number, got {getattr(config, name)}")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {config.weight_decay}")
    if config.stem_padding is not None and config.stem_padding < 0:
        raise ValueError(f"stem_padding must be at least 0, got {config.stem_padding}")
    if len(config.input_mean) != 3 or len(config.input_std) != 3 or min(config.input_std) <= 0:
        raise ValueError(
            f"input_mean and input_std need 3 values each, std positive; got {config.input_mean}, {config.input_std}"
        )
    if not 0 <= config.momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {config.momentum}")
    check_eval_resize_ratio(config.eval_resize_ratio)
    if config.target_momentum is not None:
        check_target_momentum(config.target_momentum)
    if not config.stop_gradient:
        # Sec. 5.1: the targets eta are constants of the SGD sub-problem (7), never differentiated.
        if config.alternation_steps > 1:
            raise ValueError(f"alternation_steps {config.alternation_steps} needs stop_gradient: the targets of a "
                             "block come from fixed weights")
        if config.target_momentum is not None:
            raise ValueError("target_momentum needs stop_gradient: the bank's targets are constants of the loss")
    if config.data_service and not re.fullmatch(r"[a-z][a-z0-9+]*://[^/\s]+", config.data_service):
        raise ValueError(f"data_service {config.data_service!r}: expected PROTOCOL://HOST:PORT, e.g. grpc://host:5050")
    return config


# `benchmark.py train`: the global batch timed for each preset, sized for one CPU or GPU
# (the recipes' batch of 512 would take minutes per step at 224 px on a CPU).
BENCHMARK_BATCH_SIZE = {"cifar": 256, "imagenet": 32}


@dataclasses.dataclass
class FinetuneConfig:
    """Semi-supervised fine-tuning: the whole backbone + a linear head, end to end (SimCLR Appendix B.5, BYOL).

    SGD with Nesterov momentum 0.9, lr = base_lr x batch / 256 (0.8 at batch 4096), cosine decay to 0
    without warm-up, no weight decay; random resized crop + flip only; BatchNorm in training mode.
    60 epochs for 1% of ImageNet's labels, 30 for 10% (`epochs` None: chosen from the fraction).
    A small labelled set gives few steps an epoch: epochs are raised until the run takes `min_steps`
    (ImageNet 1% at batch 4096 takes 4 x 60 = 240), and the batch is capped to the labelled images.
    """

    base_lr: float = 0.05
    batch_size: int = 4096
    epochs: int | None = None
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    min_steps: int = 200
    head_init_std: float = 0.01
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    # None: the ratio the checkpoint's run used, else the paper's 256/224.
    eval_resize_ratio: float | None = None
    mixed_precision: str = "off"
    strategy: str = "auto"
    cpu_replicas: int = 0
    # Global steps between backups (0: at epoch ends only).
    backup_every_steps: int = 0
    resume: bool = False
    output_dir: str = "runs/finetune"
    seed: int = 0

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Epochs of the semi-supervised protocol by labelled fraction (SimCLR B.5): up to 1% -> 60, more -> 30.
FINETUNE_EPOCHS = ((0.01, 60), (1.0, 30))


def finetune_epochs(fraction: float) -> int:
    """The protocol's epochs for a labelled fraction of the training split."""
    return next(epochs for upto, epochs in FINETUNE_EPOCHS if fraction <= upto + 1e-9)


def make_finetune_config(**overrides: Any) -> FinetuneConfig:
    """The fine-tuning recipe with the caller's overrides (None means "keep"), checked."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(FinetuneConfig)}
    if unknown:
        raise ValueError(f"unknown fine-tuning fields {sorted(unknown)}")
    config = FinetuneConfig(**overrides)
    for name in ("batch_size", "min_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.epochs is not None and config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    if config.base_lr <= 0:
        raise ValueError(f"base_lr must be positive, got {config.base_lr}")
    return config


# simsiam-embed: points shown in the TensorBoard projector, and the cosine similarity above which two
# images are reported as near-duplicates (chosen on re-encoded, resized and cropped digits against each
# digit's nearest distinct digit: see docs/embed.md, "The duplicate threshold").
PROJECTOR_POINTS = 10_000
DUPLICATE_THRESHOLD = 0.995
