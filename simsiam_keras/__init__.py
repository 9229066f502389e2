"""SimSiam (Chen & He, CVPR 2021) in Keras 3 on TensorFlow.

The package reads like the paper's Figure 1: `data` (datasets, the two-view pipeline) ->
`augment` (the views) -> `nets` (backbone, projector, predictor) -> `method` (loss, the
`SimSiam` model and its train step, optimizers) -> `train` (a whole run) -> `evaluate` (kNN,
linear probe) -> `export` (SavedModel, ONNX). `config` holds the paper's hyper-parameters.
Importing the package registers its Keras classes, so `keras.models.load_model` can read the
`.keras` files a run writes.
"""

from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.config import SimSiamConfig, make_config
from simsiam_keras.data.eval_splits import eval_data
from simsiam_keras.data.pipeline import two_view_dataset
from simsiam_keras.data.sources import load_dataset
from simsiam_keras.evaluate.knn_eval import knn_eval
from simsiam_keras.evaluate.linear_probe import linear_eval
from simsiam_keras.evaluate.monitor import KNNMonitor
from simsiam_keras.export.export import export_backbone
from simsiam_keras.export.load import load_backbone
from simsiam_keras.method.model import SimSiam, build_simsiam
from simsiam_keras.train.pretrain import pretrain

__version__ = "0.1.0"
__all__ = [
    "KNNMonitor",
    "SimSiam",
    "SimSiamAugment",
    "SimSiamConfig",
    "build_simsiam",
    "eval_data",
    "export_backbone",
    "knn_eval",
    "linear_eval",
    "load_backbone",
    "load_dataset",
    "make_config",
    "pretrain",
    "two_view_dataset",
]
