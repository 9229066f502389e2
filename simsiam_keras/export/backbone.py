"""A backbone exported as a feature extractor: `images` (float32 [0, 255] NHWC) -> `features`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import keras

from simsiam_keras.config import SimSiamConfig
from simsiam_keras.export import hub_preset
from simsiam_keras.export.atomic_folder import check_writable
from simsiam_keras.export.export_folder import DEFAULT_FORMATS, ExportResult, parse_formats, write_export
from simsiam_keras.export.metadata import absolute_run_dir, input_normalisation, training_info
from simsiam_keras.export.writers import LiteRTOptions, float32_copy, image_size
from simsiam_keras.saved_run import OUTPUT_NAME


def check_backbone_formats(backbone: keras.Model, formats: Sequence[str]) -> None:
    """Refuses, before any work, a format this backbone cannot be written in (keras-hub: see hub_preset)."""
    if "keras-hub" in formats:
        hub_preset.check_expressible(backbone)
        hub_preset.require_keras_hub()


def export_backbone(
    backbone: keras.Model,
    output_dir: str | Path,
    *,
    config: SimSiamConfig | Mapping[str, Any] | None = None,
    run_dir: str | Path | None = None,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    overwrite: bool = False,
    source: Mapping[str, Any] | None = None,
    litert_options: LiteRTOptions | None = None,
    results: Sequence[Mapping[str, Any]] | None = None,
    force_unlock: bool = False,
) -> ExportResult:
    """Exports a backbone as a feature extractor: `images` (float32 [0, 255] NHWC) -> `features`.

    `config` (the run's SimSiamConfig or config.json) fills the training fields of
    metadata.json, `source` (where converted weights came from) its `source` field, `results`
    (the run's results.json records) its `results`. A mixed-precision backbone is exported from
    a float32 copy. `litert_options` says what `litert` quantises and how it is checked.
    `force_unlock` takes over the lock of another host's export into `output_dir` (see run_lock).
    """
    formats = parse_formats(formats)
    check_writable(output_dir, overwrite, force_unlock)
    check_backbone_formats(backbone, formats)
    options = litert_options or LiteRTOptions()
    if options.quantize and "litert" not in formats:
        raise ValueError("quantize applies to the litert format; add litert to `formats`")
    if "int8" in options.quantize and options.calibration is None:
        raise ValueError("quantize int8 needs calibration images (litert.calibration_images of the run's dataset)")
    model = float32_copy(backbone)
    metadata = {
        "kind": "backbone",
        "backbone": backbone.name,
        "image_size": image_size(model),
        "feature_dim": int(model.output_shape[-1]),
        "normalisation": input_normalisation(model),
        "source_dtype_policy": backbone.dtype_policy.name,
        "training": training_info(config),
        "run_dir": absolute_run_dir(config, run_dir),
        **({"source": dict(source)} if source else {}),
        **({"results": list(results)} if results else {}),
    }
    return write_export(
        model, lambda images: {OUTPUT_NAME: model(images, training=False)}, output_dir, metadata, formats, overwrite,
        options, force_unlock,
    )
