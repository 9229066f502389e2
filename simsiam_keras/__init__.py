"""SimSiam (Chen & He, CVPR 2021) in Keras 3 on TensorFlow.

The package reads like the paper's Figure 1: `data` (datasets, the two-view pipeline) ->
`augment` (the views) -> `nets` (backbone, projector, predictor) -> `method` (loss, the
`SimSiam` model and its train step, optimizers) -> `train` (a whole run) -> `evaluate` (kNN,
linear probe) -> `export` (SavedModel, ONNX). `config` holds the paper's hyper-parameters.
Importing the package registers its Keras classes, so `keras.models.load_model` can read the
`.keras` files a run writes.

It also turns on TensorFlow's oneDNN CPU kernels (TF_ENABLE_ONEDNN_OPTS=1) unless the
environment already says otherwise: TensorFlow enables them by default only on CPUs with
AVX-512 VNNI/BF16 or AMX, and the train step runs about 1.5x faster with them on AVX2 CPUs.
The variable is read when TensorFlow is imported, so it takes effect only if this package is
imported first; `TF_ENABLE_ONEDNN_OPTS=0` keeps TensorFlow's own kernels.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from simsiam_keras.augment.recipe import SimSiamAugment  # noqa: E402
from simsiam_keras.config import SimSiamConfig, make_config  # noqa: E402
from simsiam_keras.data.pipeline import two_view_dataset  # noqa: E402
from simsiam_keras.data.sources import eval_data, load_dataset  # noqa: E402
from simsiam_keras.evaluate.embed import embed  # noqa: E402
from simsiam_keras.evaluate.knn_eval import knn_eval  # noqa: E402
from simsiam_keras.evaluate.linear_probe import linear_probe  # noqa: E402
from simsiam_keras.evaluate.monitor import KNNMonitor  # noqa: E402
from simsiam_keras.export.backbone import export_backbone  # noqa: E402
from simsiam_keras.method.model import SimSiam, build_simsiam  # noqa: E402
from simsiam_keras.saved_run import load_backbone  # noqa: E402
from simsiam_keras.train.finetune import finetune  # noqa: E402
from simsiam_keras.train.pretrain import pretrain  # noqa: E402

linear_eval = linear_probe  # its name before issue 23, kept for existing callers

__version__ = "0.1.0"
__all__ = [
    "KNNMonitor",
    "SimSiam",
    "SimSiamAugment",
    "SimSiamConfig",
    "build_simsiam",
    "embed",
    "eval_data",
    "export_backbone",
    "finetune",
    "knn_eval",
    "linear_eval",
    "linear_probe",
    "load_backbone",
    "load_dataset",
    "make_config",
    "pretrain",
    "two_view_dataset",
]
