"""Callbacks of a pretraining run: the kNN monitor (Figure 2, right) and the history file."""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile

import keras
import numpy as np

from simsiam_keras.evaluate.knn import evaluate_backbone_knn

HISTORY_COLUMNS = ("epoch", "loss", "z_std", "knn_acc", "lr_encoder", "lr_predictor")


class KNNMonitor(keras.callbacks.Callback):
    """Every `every` epochs, kNN top-1 of the backbone's features on a labelled split, as `knn_acc`."""

    def __init__(
        self, x_bank: np.ndarray, y_bank: np.ndarray, x_query: np.ndarray, y_query: np.ndarray,
        every: int = 1, k: int = 200, temperature: float = 0.1,
    ):
        super().__init__()
        if every < 1:
            raise ValueError(f"the kNN monitor needs every >= 1, got {every}")
        self.x_bank, self.y_bank, self.x_query, self.y_query = x_bank, y_bank, x_query, y_query
        self.every, self.k, self.temperature = every, k, temperature
        self.initial_accuracy: float | None = None
        # False for a resumed run: its encoder at the start is not the random-init one.
        self.evaluate_at_start = True

    def evaluate(self) -> float:
        return evaluate_backbone_knn(
            self.model.backbone, self.x_bank, self.y_bank, self.x_query, self.y_query, self.k, self.temperature
        )

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


def _write_rows(path: str, rows: list[list]) -> None:
    """Writes a CSV file whole, through a temp file and `os.replace`: a kill never leaves half a row."""
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    fd, tmp = tempfile.mkstemp(prefix=".history-", suffix=".csv", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read_rows(path: str) -> list[list[str]]:
    if not os.path.exists(path):
        return [list(HISTORY_COLUMNS)]
    with open(path, newline="") as f:
        return list(csv.reader(f)) or [list(HISTORY_COLUMNS)]


def keep_history(path: str, epochs: int) -> None:
    """Keeps the header and the rows of epochs 1..`epochs`: the start of a fresh (0) or resumed run.

    A run killed after writing an epoch's row but before backing that epoch up redoes the
    epoch when it resumes; dropping the later rows here keeps one row per epoch.
    """
    header, *rows = _read_rows(path)
    _write_rows(path, [header] + [row for row in rows if row and int(row[0]) <= epochs])


def _scalar(value) -> float:
    # Under MultiWorkerMirroredStrategy the logs are 1-element vectors (see SimSiam._logs).
    return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])


class HistoryCSV(keras.callbacks.Callback):
    """One row per epoch with fixed columns (empty where a value was not computed that epoch).

    The file is rewritten whole at each epoch end (temp file + rename), so it is always complete.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not os.path.exists(self.path):
            _write_rows(self.path, [list(HISTORY_COLUMNS)])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        row: list = [epoch + 1]
        for key in HISTORY_COLUMNS[1:]:
            value = logs.get(key)
            row.append("" if value is None or math.isnan(_scalar(value)) else _scalar(value))
        _write_rows(self.path, _read_rows(self.path) + [row])
