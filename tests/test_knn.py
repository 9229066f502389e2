"""The weighted kNN monitor (Wu et al. 2018) and the history file it feeds."""

import csv
import math

import numpy as np

from simsiam_keras.evaluate.knn import knn_accuracy, knn_predict
from simsiam_keras.train.history import HISTORY_COLUMNS, HistoryCSV


def test_knn_votes_are_exp_cosine_over_temperature_of_the_k_nearest():
    bank = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [-1.0, 0.0]])  # norms must not matter
    labels = np.array([0, 1, 1, 2])
    query = np.array([[1.0, 1.0]])
    scores = knn_predict(bank, labels, query, num_classes=3, k=3, temperature=0.5)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    sims = [float(unit(query[0]) @ unit(b)) for b in bank]
    # The three nearest are bank rows 0, 1 and 2; row 3 (label 2) is left out.
    expected = [math.exp(sims[0] / 0.5), math.exp(sims[1] / 0.5) + math.exp(sims[2] / 0.5), 0.0]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5)


def test_knn_accuracy_on_separated_and_on_shuffled_labels():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 5
    labels = np.repeat(np.arange(4), 50)
    features = centres[labels] + rng.normal(size=(200, 16))
    assert knn_accuracy(features[::2], labels[::2], features[1::2], labels[1::2], k=20) == 1.0
    shuffled = rng.permutation(labels[::2])
    assert knn_accuracy(features[::2], shuffled, features[1::2], labels[1::2], k=20) < 0.5


def test_history_csv_has_fixed_columns_and_blank_cells(tmp_path):
    path = tmp_path / "history.csv"
    history = HistoryCSV(str(path))
    history.on_train_begin()
    history.on_epoch_end(0, {"loss": -0.5, "z_std": 0.04})
    history.on_epoch_end(1, {"loss": -0.6, "z_std": 0.04, "knn_acc": 0.3})
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["knn_acc"] == "" and float(rows[1]["knn_acc"]) == 0.3
