"""Pretraining's settings: the paper's ImageNet recipe as defaults, the presets that override them, and their checks.

Defaults are SimSiam's ImageNet recipe (Sec. 3 and Appendix A of Chen & He, 2021);
a preset is a plain mapping of overrides (Appendix D for CIFAR).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Mapping

from simsiam_keras.config.recipe import CROP_RATIO, EVAL_RESIZE_RATIO, FLIP_PROB, Recipe, check_eval_resize_ratio

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Where the views' appearance (flip, colour jitter, grayscale, blur) is drawn: in the input
# pipeline on the host CPU, or in the train step on the device that runs it.
AUGMENT_ON = ("host", "device")


@dataclasses.dataclass
class AugmentConfig:
    """Augmentation recipe (Appendix A, torchvision semantics)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = CROP_RATIO
    flip_prob: float = FLIP_PROB
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
class SimSiamConfig(Recipe):
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
