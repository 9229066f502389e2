"""The rules every recipe shares: the linear lr scaling rule, the training views' crop and flip, the evaluation view."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# The batch the base learning rates are quoted for (Sec. 3: lr = base lr x batch / 256, after Goyal et al. 2017).
LR_REFERENCE_BATCH = 256
# torchvision's RandomResizedCrop aspect ratios and its horizontal flip probability, used by every training view.
CROP_RATIO = (3 / 4, 4 / 3)
FLIP_PROB = 0.5
# RandomResizedCrop's default scale: the views of supervised training (linear probe, fine-tuning).
LABELLED_CROP_SCALE = (0.08, 1.0)
# The evaluation view (Appendix A): resize the shorter side to crop x 256/224, then take the centre crop.
EVAL_RESIZE_RATIO = 256 / 224


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule: base_lr x batch / 256."""
    return base_lr * batch_size / LR_REFERENCE_BATCH


def check_eval_resize_ratio(ratio: float) -> float:
    """The evaluation view crops inside the resized image: the ratio must be a number >= 1."""
    if not (math.isfinite(ratio) and ratio >= 1):
        raise ValueError(f"eval_resize_ratio must be a number >= 1 (the paper's is 256/224), got {ratio}")
    return ratio


class Recipe:
    """What every training recipe's settings have: `base_lr` and `batch_size`, and the lr they give."""

    base_lr: float
    batch_size: int

    @property
    def lr(self) -> float:
        """The applied lr, by the linear scaling rule as the authors' code applies it: base_lr x batch / 256."""
        return scaled_lr(self.base_lr, self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
