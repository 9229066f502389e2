"""A linear classifier (backbone + linear head) exported: `images` -> `probabilities` (softmax) and `logits`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import tensorflow as tf

from simsiam_keras.config import SimSiamConfig
from simsiam_keras.export.atomic_folder import check_writable
from simsiam_keras.export.export_folder import DEFAULT_FORMATS, ExportResult, parse_formats, write_export
from simsiam_keras.export.metadata import absolute_run_dir, input_normalisation, training_info
from simsiam_keras.export.writers import float32_copy, image_size


def export_classifier(
    classifier: keras.Model,
    output_dir: str | Path,
    class_names: Sequence[str],
    *,
    details: Mapping[str, Any] | None = None,
    config: SimSiamConfig | Mapping[str, Any] | None = None,
    run_dir: str | Path | None = None,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    overwrite: bool = False,
    force_unlock: bool = False,
) -> ExportResult:
    """Exports backbone + linear head: `images` -> `probabilities` (softmax) and `logits`.

    `classifier` maps images to logits (the linear probe's `classifier.keras`); `details`
    is its classifier.json, kept in the metadata beside `class_names`. LiteRT is written in
    float32 only; a KerasHub preset holds backbones only.
    """
    formats = parse_formats(formats)
    check_writable(output_dir, overwrite, force_unlock)
    if "keras-hub" in formats:
        raise ValueError("format keras-hub exports a backbone (a run's model.keras), not a linear classifier")
    model = float32_copy(classifier)
    num_classes = int(model.output_shape[-1])
    if len(class_names) != num_classes:
        raise ValueError(f"the classifier has {num_classes} outputs but {len(class_names)} class names")
    details = {k: v for k, v in (details or {}).items() if k != "class_names"}
    metadata = {
        "kind": "classifier",
        "backbone": details.get("backbone", classifier.name),
        "image_size": image_size(model),
        "num_classes": num_classes,
        "class_names": list(class_names),
        "normalisation": input_normalisation(model),
        "source_dtype_policy": classifier.dtype_policy.name,
        "classifier": details,
        "training": training_info(config),
        "run_dir": absolute_run_dir(config, run_dir),
    }

    def outputs(images):
        logits = model(images, training=False)
        return {"probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits}

    return write_export(model, outputs, output_dir, metadata, formats, overwrite, force_unlock=force_unlock)
