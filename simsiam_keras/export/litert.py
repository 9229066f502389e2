"""LiteRT (TFLite) for phones and edge devices: the frozen backbone as float32, dynamic-range or int8 `.tflite`.

Each file is converted from the export's own SavedModel (its `serve` signature: float32 pixels
in [0, 255] -> `features`, normalisation inside, dynamic batch) with builtin ops only, since the
`ai-edge-litert` interpreter cannot run SELECT_TF_OPS:

    NAME/model.tflite          float32, within 1e-4 of the SavedModel's features (checked)
    NAME/model_dynamic.tflite  `--quantize dynamic`: int8 weights, float activations
    NAME/model_int8.tflite     `--quantize int8`: int8 weights and activations, calibrated on
                               CALIBRATION_IMAGES seeded evaluation views of the run's dataset;
                               float32 in and out, like the SavedModel

A quantised file is written only if its features stay close to the float ones (see
`check_drift`); `allow_drift` writes it anyway, with the figures in metadata.json.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf
# The runtime devices use (not tf.lite's interpreter, which TensorFlow is deprecating).
from ai_edge_litert.interpreter import Interpreter

from simsiam_keras.augment.crop import eval_view
from simsiam_keras.config import EVAL_RESIZE_RATIO
from simsiam_keras.data.sources import eval_data
from simsiam_keras.saved_run import INPUT_NAME, OUTPUT_NAME

QUANTIZE = ("dynamic", "int8")
LITERT_FILES = {"float32": "model.tflite", "dynamic": "model_dynamic.tflite", "int8": "model_int8.tflite"}
CALIBRATION_IMAGES = 256
CALIBRATION_POOL = 2048
# A quantised model is refused when its features' mean cosine similarity to the float ones is
# below MIN_MEAN_COSINE, or its kNN top-1 on the monitor split drops by more than MAX_KNN_DROP.
MIN_MEAN_COSINE = 0.98
MAX_KNN_DROP = 0.02
LATENCY_RUNS = 20
# Pixels per batch when the drift check runs a model (64 images at 64 px, 5 at 224 px): a ResNet-50's
# activations at 224 px take ~100 MB per image in Keras and in the interpreter's arena.
DRIFT_BATCH_PIXELS = 64 * 64 * 64

FeatureFn = Callable[[np.ndarray], np.ndarray]
# (float features, quantised features) -> figures: mean_cosine, min_cosine, and if measured
# knn_top1_float, knn_top1_quantized, knn_top1_change (see evaluate.drift).
DriftCheck = Callable[[FeatureFn, FeatureFn], dict[str, Any]]


class DriftError(RuntimeError):
    """A quantised model's features are further from the float ones than the tolerance."""


def parse_quantize(quantize: str | None | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`dynamic,int8` (or a sequence; None or "" for none) checked against QUANTIZE, in canonical order."""
    if not quantize:
        return ()
    names = [q.strip() for q in quantize.split(",")] if isinstance(quantize, str) else list(quantize)
    unknown = sorted(set(names) - set(QUANTIZE))
    if unknown:
        raise ValueError(f"quantize takes a comma-separated subset of {','.join(QUANTIZE)}, got {','.join(names)!r}")
    return tuple(q for q in QUANTIZE if q in names)


def convert(saved_model: Path, signature: str, quantize: str | None = None,
            calibration: np.ndarray | None = None) -> bytes:
    """The `.tflite` flatbuffer of a SavedModel's signature, builtin ops only.

    `quantize`: None (float32), "dynamic" (int8 weights) or "int8" (full integer inside, float32
    input and output, calibrated one image at a time on `calibration`).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[signature])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
        if calibration is None or not len(calibration):
            raise ValueError("quantize int8 needs calibration images")
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration.astype(np.float32))
    return converter.convert()


def _signature_runner(path: str | Path, signature: str):
    return Interpreter(model_path=str(path)).get_signature_runner(signature)


def feature_fn(path: str | Path, signature: str = "serve") -> FeatureFn:
    """A function of float32 NHWC pixel batches in [0, 255] -> features, run by the LiteRT interpreter."""
    runner = _signature_runner(path, signature)
    return lambda images: runner(**{INPUT_NAME: np.ascontiguousarray(images, np.float32)})[OUTPUT_NAME].copy()


def run_litert(path: str | Path, images: np.ndarray, batches: tuple[int, ...],
               signature: str = "serve") -> dict[str, np.ndarray]:
    """A `.tflite` model's named outputs on `images` run as consecutive batches of the given sizes."""
    runner, parts, start = _signature_runner(path, signature), [], 0
    for size in batches:
        outputs = runner(**{INPUT_NAME: np.ascontiguousarray(images[start : start + size], np.float32)})
        parts.append({name: value.copy() for name, value in outputs.items()})
        start += size
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def single_image_latency(path: str | Path, image_size: int, runs: int = LATENCY_RUNS) -> dict[str, Any]:
    """Median wall and CPU milliseconds of one image through the LiteRT interpreter (one thread)."""
    runner = Interpreter(model_path=str(path), num_threads=1)
    source = runner.get_input_details()[0]
    runner.resize_tensor_input(source["index"], [1, image_size, image_size, 3])
    runner.allocate_tensors()
    image = np.random.default_rng(0).uniform(0, 255, (1, image_size, image_size, 3)).astype(np.float32)
    walls, cpus = [], []
    for step in range(runs + 3):  # three warm-up runs
        runner.set_tensor(source["index"], image)
        wall, cpu = time.perf_counter(), time.process_time()
        runner.invoke()
        if step >= 3:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return {"wall_ms": round(1e3 * statistics.median(walls), 3), "cpu_ms": round(1e3 * statistics.median(cpus), 3),
            "runs": runs, "threads": 1, "batch": 1}


def run_dataset(settings: Mapping[str, Any], dataset: str | None = None) -> str:
    """The dataset quantisation reads: `dataset`, else the run's; a ValueError when neither is known."""
    name = dataset or (settings.get("data") or {}).get("name") or settings.get("dataset")
    if not name or name == "unknown":  # converted PyTorch weights do not say what they saw
        raise ValueError("quantize needs images of the data the backbone was trained on and this run does not "
                         "name its dataset; pass `dataset` (e.g. npz:FILE, folder:DIR or a TFDS name)")
    return name


def calibration_images(settings: Mapping[str, Any], image_size: int, count: int = CALIBRATION_IMAGES,
                       dataset: str | None = None) -> np.ndarray:
    """`count` training images of the run's dataset (or `dataset`) through the evaluation view, drawn
    with the run's seed.

    float32 [0, 255] at `image_size`, as evaluation and the SavedModel see them.
    """
    name = run_dataset(settings, dataset)
    seed = int(settings.get("seed") or 0)
    ratio = float(settings.get("eval_resize_ratio") or EVAL_RESIZE_RATIO)
    # A streamed split (folder, large TFDS) is decoded once, its first CALIBRATION_POOL images only.
    split = eval_data(name, settings.get("data_dir"), seed).bank.in_memory(image_size, ratio, CALIBRATION_POOL)
    images, _ = split.arrays(image_size)
    chosen = images[np.sort(np.random.default_rng(seed).permutation(len(images))[:count])]
    if split.view is not None:  # already evaluation views
        return chosen.astype(np.float32)
    return eval_view(tf.constant(chosen), image_size, ratio).numpy()


def cosine_figures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Mean and minimum cosine similarity of two feature matrices, row by row."""
    dot = np.sum(reference * candidate, axis=1)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = dot / np.maximum(norms, 1e-12)
    return {"mean_cosine": float(np.mean(cosine)), "min_cosine": float(np.min(cosine)), "images": len(cosine)}


def drift_batch_size(image_size: int) -> int:
    """Images per batch in a drift check: at most 64, fewer for large images (see DRIFT_BATCH_PIXELS)."""
    return max(1, min(64, DRIFT_BATCH_PIXELS // image_size**2))


def cosine_drift(images: np.ndarray) -> DriftCheck:
    """A drift check on given images only (no kNN): what an export without a run's labelled data can measure."""
    batch_size = drift_batch_size(images.shape[1])

    def check(reference: FeatureFn, candidate: FeatureFn) -> dict[str, Any]:
        parts = [(reference(images[i : i + batch_size]), candidate(images[i : i + batch_size]))
                 for i in range(0, len(images), batch_size)]
        return cosine_figures(np.concatenate([r for r, _ in parts]), np.concatenate([c for _, c in parts]))

    return check


def check_drift(quantize: str, figures: Mapping[str, Any], allow: bool = False) -> dict[str, Any]:
    """Figures with the tolerance and a verdict; raises DriftError beyond it unless `allow`."""
    problems = []
    if not figures["mean_cosine"] >= MIN_MEAN_COSINE:
        problems.append(f"mean cosine similarity {figures['mean_cosine']:.4f} < {MIN_MEAN_COSINE}")
    change = figures.get("knn_top1_change")
    if change is not None and not change >= -MAX_KNN_DROP:
        problems.append(f"kNN top-1 {figures['knn_top1_float']:.3f} -> {figures['knn_top1_quantized']:.3f} "
                        f"(drop > {MAX_KNN_DROP})")
    if problems and not allow:
        raise DriftError(f"the {quantize} model drifts from the float features: {'; '.join(problems)}; "
                         f"pass `allow_drift` to write it anyway")
    return {**figures, "tolerance": {"min_mean_cosine": MIN_MEAN_COSINE, "max_knn_drop": MAX_KNN_DROP},
            "within_tolerance": not problems}
