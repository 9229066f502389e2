"""The paper's hyper-parameters, in one place: pretraining, the linear probe, fine-tuning, and the rules they share.

`from simsiam_keras.config import X` finds every setting; each module holds one kind:
recipe.py (the lr scaling rule, the views), pretrain.py (SimSiamConfig and its presets),
linear_probe.py, finetune.py, data.py (what is held in memory) and tools.py (benchmark, embed).
"""

from simsiam_keras.config.data import CACHE_DECODED, DATA_MEMORY_BUDGET_BYTES, MONITOR_IMAGES, STREAM_SHUFFLE_BUFFER
from simsiam_keras.config.finetune import FINETUNE_EPOCHS, FinetuneConfig, finetune_epochs, make_finetune_config
from simsiam_keras.config.linear_probe import (
    GRADIENT_ONLY,
    GRADIENT_RECIPES,
    LARS_MIN_STEPS_PER_EPOCH,
    LINEAR_PROBE_RECIPES,
    PAPER_PROBE_BATCH,
    LinearProbeConfig,
    default_linear_probe_recipe,
    make_linear_probe_config,
)
from simsiam_keras.config.pretrain import (
    AUGMENT_ON,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESET_DURATIONS,
    PRESETS,
    AugmentConfig,
    SimSiamConfig,
    check_config,
    check_target_momentum,
    default_preset,
    expected_duration,
    make_config,
)
from simsiam_keras.config.recipe import (
    CROP_RATIO,
    EVAL_RESIZE_RATIO,
    FLIP_PROB,
    LABELLED_CROP_SCALE,
    LR_REFERENCE_BATCH,
    Recipe,
    check_eval_resize_ratio,
    scaled_lr,
)
from simsiam_keras.config.tools import BENCHMARK_BATCH_SIZE, DUPLICATE_THRESHOLD, PROJECTOR_POINTS
