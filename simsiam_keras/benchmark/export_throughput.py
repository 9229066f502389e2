"""Inference images per second of an export's SavedModel and ONNX model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime
import tensorflow as tf

from simsiam_keras import saved_run


def _images_per_second(run: Callable[[], Any], batch: int, min_seconds: float, min_repeats: int) -> float:
    run()  # warm-up: graph tracing, session initialisation
    repeats, start = 0, time.perf_counter()
    while repeats < min_repeats or time.perf_counter() - start < min_seconds:
        run()
        repeats += 1
    return repeats * batch / (time.perf_counter() - start)


def export_throughput(
    export_dir: str | Path, batch_size: int = 64, min_seconds: float = 5.0, min_repeats: int = 3
) -> dict[str, Any]:
    """Inference throughput (images/s) of an export's SavedModel and ONNX model on this machine.

    Both run on the CPU with their default thread pools on the same fixed batch; the first
    call of each is a warm-up and is not timed.
    """
    folder = Path(export_dir)
    if not (folder / saved_run.METADATA).is_file():
        raise FileNotFoundError(f"export_dir {folder}: no {saved_run.METADATA} (not a folder simsiam-export wrote)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    metadata = json.loads((folder / saved_run.METADATA).read_text())
    size = metadata["image_size"]
    images = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32)
    figures: dict[str, Any] = {"batch": batch_size, "image_size": size, "backbone": metadata.get("backbone"),
                               "cpu_count": os.cpu_count()}
    if (folder / saved_run.SAVED_MODEL_DIR).is_dir():
        signature = tf.saved_model.load(str(folder / saved_run.SAVED_MODEL_DIR)).signatures[saved_run.SIGNATURE]
        tensor = tf.constant(images)
        figures["saved_model_images_per_s"] = _images_per_second(
            lambda: signature(**{saved_run.INPUT_NAME: tensor}), batch_size, min_seconds, min_repeats
        )
    if (folder / saved_run.ONNX_FILE).is_file():
        session = onnxruntime.InferenceSession(str(folder / saved_run.ONNX_FILE), providers=["CPUExecutionProvider"])
        figures["onnx_images_per_s"] = _images_per_second(
            lambda: session.run(None, {saved_run.INPUT_NAME: images}), batch_size, min_seconds, min_repeats
        )
    return figures
