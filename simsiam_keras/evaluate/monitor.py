"""The kNN monitor (Figure 2, right): kNN accuracy of the backbone's features during pretraining."""

from __future__ import annotations

import keras
import numpy as np

from simsiam_keras.config import EVAL_RESIZE_RATIO
from simsiam_keras.data.eval_splits import EvalData, LabelledSplit
from simsiam_keras.evaluate.knn import KNN_K, KNN_TEMPERATURE, knn_top1_of_model
from simsiam_keras.saved_run import FeatureExtractor


class KNNMonitor(keras.callbacks.Callback):
    """Every `every` epochs, kNN top-1 of `model.backbone` on `data` (bank: train, queries: test), as `knn_acc`.

    Images are seen through the evaluation view at the backbone's image size with `resize_ratio`.
    """

    def __init__(self, data: EvalData, every: int = 1, k: int = KNN_K, temperature: float = KNN_TEMPERATURE,
                 resize_ratio: float = EVAL_RESIZE_RATIO, batch_size: int = 256):
        super().__init__()
        if every < 1:
            raise ValueError(f"the kNN monitor needs every >= 1, got {every}")
        self.data, self.every, self.k, self.temperature = data, every, k, temperature
        self.resize_ratio, self.batch_size = resize_ratio, batch_size
        self.initial_accuracy: float | None = None
        # False for a resumed run: its encoder at the start is not the random-init one.
        self.evaluate_at_start = True
        self._extractor: tuple[keras.Model, FeatureExtractor] | None = None

    @classmethod
    def from_arrays(cls, x_bank: np.ndarray, y_bank: np.ndarray, x_query: np.ndarray, y_query: np.ndarray,
                    **kwargs) -> KNNMonitor:
        """A monitor on in-memory uint8 images and their integer labels."""
        names = [str(i) for i in range(int(max(y_bank.max(), y_query.max())) + 1)]
        data = EvalData("arrays", names, LabelledSplit("train", len(x_bank), arrays=lambda size: (x_bank, y_bank)),
                        LabelledSplit("test", len(x_query), arrays=lambda size: (x_query, y_query)))
        return cls(data, **kwargs)

    def evaluate(self) -> float:
        """kNN top-1 of the model's backbone now."""
        backbone = self.model.backbone
        if self._extractor is None or self._extractor[0] is not backbone:
            self._extractor = (backbone, FeatureExtractor.from_keras(backbone))
        extractor = self._extractor[1]
        size, ratio = extractor.image_size, self.resize_ratio
        bank, query = (split.batches(size, ratio, self.batch_size) for split in (self.data.bank, self.data.query))
        return knn_top1_of_model(extractor, bank, query, self.k, self.temperature)["top1"]

    def on_train_begin(self, logs: dict | None = None) -> None:
        # The starting point of the curve: the random-init encoder on a fresh run.
        if not self.evaluate_at_start or self.initial_accuracy is not None:
            return
        self.initial_accuracy = self.evaluate()
        print(f"before training: knn_acc {self.initial_accuracy:.4f}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        last = self.params.get("epochs") == epoch + 1
        if logs is not None and ((epoch + 1) % self.every == 0 or last):
            logs["knn_acc"] = self.evaluate()
            print(f"epoch {epoch + 1}: knn_acc {logs['knn_acc']:.4f}")
