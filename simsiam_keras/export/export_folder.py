"""One export folder: every asked format written, each checked for parity, metadata.json, all or nothing."""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.export import hub_preset, litert
from simsiam_keras.export.atomic_folder import staged_under_lock
from simsiam_keras.export.metadata import disk_size, versions
from simsiam_keras.export.parity import (
    PARITY_BATCHES,
    PARITY_TOLERANCE,
    compare_outputs,
    parity_images,
    run_onnx,
    run_saved_model,
)
from simsiam_keras.export.writers import (
    ONNX_OPSET,
    LiteRTOptions,
    Outputs,
    image_size,
    write_litert,
    write_onnx,
    write_saved_model,
)
from simsiam_keras.saved_run import INPUT_NAME, METADATA, ONNX_FILE, OUTPUT_NAME, SAVED_MODEL_DIR, SIGNATURE

FORMATS = ("saved_model", "onnx", "litert", "keras-hub")
# What an export writes unless told otherwise.
DEFAULT_FORMATS = ("saved_model", "onnx")


@dataclasses.dataclass
class ExportResult:
    output_dir: Path
    metadata: dict[str, Any]
    seconds: float
    # Bytes on disk per entry of the export folder (`saved_model` is the folder's total).
    sizes: dict[str, int]


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """`saved_model,onnx` (or a sequence) checked against FORMATS, in canonical order."""
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    unknown = sorted(set(names) - set(FORMATS))
    if unknown or not names:
        raise ValueError(f"formats takes a comma-separated subset of {','.join(FORMATS)}, got {','.join(names)!r}")
    return tuple(f for f in FORMATS if f in names)


def write_export(
    model: keras.Model,
    outputs: Outputs,
    output_dir: str | Path,
    metadata: dict[str, Any],
    formats: str | Sequence[str],
    overwrite: bool,
    litert_options: LiteRTOptions | None = None,
    force_unlock: bool = False,
) -> ExportResult:
    """Writes the formats into a staging folder beside the target, checks parity, then renames;
    all under the target's lock. `metadata` is what the caller knows of the model."""
    start = time.time()
    formats = parse_formats(formats)
    with staged_under_lock(output_dir, overwrite, force_unlock) as staging:
        metadata, sizes = _write_formats(model, outputs, staging, metadata, formats, litert_options)
    return ExportResult(Path(output_dir), metadata, time.time() - start, sizes)


def _write_formats(
    model: keras.Model, outputs: Outputs, staging: Path, metadata: dict[str, Any], formats: tuple[str, ...],
    litert_options: LiteRTOptions | None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """The formats and metadata.json written into `staging`: the metadata and each entry's bytes on disk."""
    saved_model = staging / SAVED_MODEL_DIR
    # ONNX and LiteRT are converted from the SavedModel; a KerasHub preset alone does not need it.
    if set(formats) - {"keras-hub"}:
        write_saved_model(model, outputs, saved_model)
    images = parity_images(image_size(model))
    reference = {k: v.numpy().astype(np.float64) for k, v in outputs(tf.constant(images)).items()}
    parity: dict[str, Any] = {
        "images": f"{len(images)} embedded synthetic images (seed 0), run as batches of {list(PARITY_BATCHES)}",
        "tolerance": PARITY_TOLERANCE,
        "reference": "keras (float32)",
    }
    extra: dict[str, Any] = {}
    if "saved_model" in formats:
        parity["saved_model"] = compare_outputs(reference, run_saved_model(saved_model, images))
    if "onnx" in formats:
        write_onnx(saved_model, staging / ONNX_FILE)
        parity["onnx"] = compare_outputs(reference, run_onnx(staging / ONNX_FILE, images))
    if "litert" in formats:
        extra["litert"] = write_litert(model, outputs, staging, reference, images, litert_options or LiteRTOptions())
        parity["litert"] = extra["litert"].pop("parity")
    if "keras-hub" in formats:
        hub_preset.write_preset(model, staging / hub_preset.PRESET_DIR, metadata)
        features = hub_preset.preset_features(staging / hub_preset.PRESET_DIR, images)
        parity["keras-hub"] = compare_outputs(reference, {OUTPUT_NAME: features})
    if "saved_model" not in formats and saved_model.exists():
        shutil.rmtree(saved_model)
    files = {"saved_model": SAVED_MODEL_DIR, "onnx": ONNX_FILE, "litert": litert.LITERT_FILES["float32"],
             "keras-hub": hub_preset.PRESET_DIR}
    metadata = {
        **metadata,
        "formats": {f: files[f] for f in formats},
        "signature": SIGNATURE,
        "onnx_opset": ONNX_OPSET if "onnx" in formats else None,
        "input": {"name": INPUT_NAME, "shape": [None, *model.input_shape[1:]], "dtype": "float32",
                  "layout": "NHWC", "channels": "RGB", "range": [0, 255]},
        "outputs": {name: [None, *value.shape[1:]] for name, value in reference.items()},
        "parity": parity,
        **extra,
        "versions": versions(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (staging / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
    entries = (SAVED_MODEL_DIR, ONNX_FILE, *litert.LITERT_FILES.values(), hub_preset.PRESET_DIR, METADATA)
    return metadata, {name: disk_size(staging / name) for name in entries if (staging / name).exists()}
