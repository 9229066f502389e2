"""Parity: every exported format must give the Keras model's outputs on a fixed batch, to 1e-4 of their scale."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf

from simsiam_keras.data.synthetic import make_synthetic
from simsiam_keras.saved_run import INPUT_NAME, SIGNATURE

PARITY_TOLERANCE = 1e-4
# The fixed parity batch is run as two batches of different sizes, which also checks that
# the batch dimension is dynamic in every format.
PARITY_BATCHES = (1, 7)


class ParityError(RuntimeError):
    """An exported format disagrees with the Keras model beyond the tolerance."""


def parity_images(image_size: int, count: int = sum(PARITY_BATCHES)) -> np.ndarray:
    """The fixed parity batch: embedded synthetic images (seed 0), float32 in [0, 255]."""
    return make_synthetic(num_train=count, num_test=0, image_size=image_size, seed=0)["x_train"].astype(np.float32)


def _in_batches(run: Callable[[np.ndarray], dict[str, np.ndarray]], images: np.ndarray) -> dict[str, np.ndarray]:
    parts, start = [], 0
    for size in PARITY_BATCHES:
        parts.append(run(images[start : start + size]))
        start += size
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def run_saved_model(path: str | Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """The `serve` signature of a SavedModel on a batch, as numpy arrays."""
    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    return _in_batches(lambda x: {k: v.numpy() for k, v in signature(**{INPUT_NAME: tf.constant(x)}).items()}, images)


def run_onnx(path: str | Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """An ONNX model under ONNX Runtime (CPU) on a batch, as numpy arrays keyed by output name."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return _in_batches(lambda x: dict(zip(names, session.run(names, {INPUT_NAME: x}))), images)


def compare_outputs(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], tolerance: float = PARITY_TOLERANCE
) -> dict[str, dict[str, float]]:
    """Max abs difference per output, absolute and relative to the reference's max |value|.

    Raises ParityError when an output is missing, has another shape, or differs by more
    than `tolerance` relative to its scale.
    """
    figures = {}
    for name, ref in reference.items():
        if name not in candidate or candidate[name].shape != ref.shape:
            got = candidate[name].shape if name in candidate else "missing"
            raise ParityError(f"output {name!r}: expected shape {ref.shape}, got {got}")
        diff = float(np.max(np.abs(candidate[name].astype(np.float64) - ref)))
        scale = float(np.max(np.abs(ref))) or 1.0
        relative = diff / scale
        if not math.isfinite(relative) or relative > tolerance:
            raise ParityError(
                f"output {name!r} differs from the Keras model by {diff:.3g} ({relative:.3g} of its scale {scale:.3g}), "
                f"above the tolerance {tolerance:g}"
            )
        figures[name] = {"max_abs_diff": diff, "scale": scale, "max_rel_diff": relative}
    return figures
