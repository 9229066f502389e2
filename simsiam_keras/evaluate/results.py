"""A run's numbers in one place: `RUN_DIR/results.json`, a list of evaluation records.

Every evaluation (linear probe, kNN, ...) appends one record, so a run directory tells its whole
story. Writes are atomic (temp file + `os.replace`): a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from simsiam_keras.run_files import RESULTS_FILE, write_atomic


def results_path(run_dir: str) -> str:
    """Where a run's results live."""
    return os.path.join(run_dir, RESULTS_FILE)


def read_results(run_dir: str) -> list[dict]:
    """The run's records, oldest first; [] when none were written yet."""
    path = results_path(run_dir)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise ValueError(f"{path} is not a JSON list of records")
    return records


def append_result(
    run_dir: str, *, dataset: str, split: str, metric: str, value: float, protocol: str, **extra: Any
) -> None:
    """Append one record (dataset, split, metric, value, protocol, timestamp, extra fields)."""
    record = {
        "dataset": dataset, "split": split, "metric": metric, "value": float(value),
        "protocol": protocol, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    os.makedirs(run_dir, exist_ok=True)
    records = read_results(run_dir) + [record]
    write_atomic(results_path(run_dir), json.dumps(records, indent=2, default=str))
