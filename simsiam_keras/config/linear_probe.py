"""The linear probe's settings: the paper's recipe (Appendix A), its alternatives, and which one the data calls for."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from simsiam_keras.config.recipe import CROP_RATIO, FLIP_PROB, LABELLED_CROP_SCALE, Recipe, check_eval_resize_ratio


@dataclasses.dataclass
class LinearProbeConfig(Recipe):
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
    crop_scale: tuple[float, float] = LABELLED_CROP_SCALE
    crop_ratio: tuple[float, float] = CROP_RATIO
    flip_prob: float = FLIP_PROB
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
    def full_batch(self) -> bool:
        """Whether the head is fitted full-batch to convergence (no epochs, batch or lr)."""
        return self.optimizer == "lbfgs"


LINEAR_PROBE_RECIPES: dict[str, dict[str, Any]] = {
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
GRADIENT_RECIPES = tuple(name for name, preset in LINEAR_PROBE_RECIPES.items() if preset.get("optimizer") != "lbfgs")

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


def default_linear_probe_recipe(train_images: int) -> tuple[str, str]:
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


def make_linear_probe_config(recipe: str = "paper", **overrides: Any) -> LinearProbeConfig:
    """A linear-probe recipe by name, then the caller's overrides (None means "keep")."""
    if recipe not in LINEAR_PROBE_RECIPES:
        raise ValueError(f"recipe {recipe!r} is unknown: choose one of {', '.join(LINEAR_PROBE_RECIPES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    values = {**LINEAR_PROBE_RECIPES[recipe], **overrides}
    unknown = set(values) - {f.name for f in dataclasses.fields(LinearProbeConfig)}
    if unknown:
        raise ValueError(f"unknown linear-eval fields {sorted(unknown)}")
    config = LinearProbeConfig(**values)
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

