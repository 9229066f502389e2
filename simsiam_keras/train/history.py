"""A run's `history.csv`: one row per epoch with fixed columns, always complete on disk."""

from __future__ import annotations

import csv
import io
import math
import os

import keras
import numpy as np

from simsiam_keras.run_files import write_atomic

HISTORY_COLUMNS = ("epoch", "loss", "z_std", "knn_acc", "lr_encoder", "lr_predictor")


def _write_rows(path: str, rows: list[list]) -> None:
    """Writes a CSV file whole, through a temp file and `os.replace`: a kill never leaves half a row."""
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    write_atomic(path, text.getvalue())


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
    # Under MultiWorkerMirroredStrategy the logs are 1-element vectors (see BaseMethod.run_step in method/base.py).
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
