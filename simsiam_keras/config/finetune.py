"""Semi-supervised fine-tuning's settings (SimCLR Appendix B.5): the recipe and the protocol's epochs."""

from __future__ import annotations

import dataclasses
from typing import Any

from simsiam_keras.config.recipe import CROP_RATIO, FLIP_PROB, LABELLED_CROP_SCALE, Recipe


@dataclasses.dataclass
class FinetuneConfig(Recipe):
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
    crop_scale: tuple[float, float] = LABELLED_CROP_SCALE
    crop_ratio: tuple[float, float] = CROP_RATIO
    flip_prob: float = FLIP_PROB
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
