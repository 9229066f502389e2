"""SimSiam (Chen & He, CVPR 2021) in Keras 3 on TensorFlow.

Importing the package registers its Keras classes, so `keras.models.load_model` can read the
`.keras` files a run writes.
"""

from simsiam_keras.method import model, optimizers  # noqa: F401  (registers SimSiam and TorchSGD)

__version__ = "0.1.0"
