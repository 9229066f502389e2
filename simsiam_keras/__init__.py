"""SimSiam (Chen & He, CVPR 2021) in Keras 3 on TensorFlow.

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

from simsiam_keras import model, optimizers  # noqa: E402, F401  (registers SimSiam and TorchSGD)

__version__ = "0.1.0"
