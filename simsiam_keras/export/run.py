"""A saved run exported: its `model.keras` (the backbone) or a linear probe's `classifier.keras` (simsiam-export)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from simsiam_keras.export import litert
from simsiam_keras.export.atomic_folder import check_writable
from simsiam_keras.export.backbone import check_backbone_formats, export_backbone
from simsiam_keras.export.classifier import export_classifier
from simsiam_keras.export.export_folder import DEFAULT_FORMATS, ExportResult, parse_formats
from simsiam_keras.export.metadata import training_info
from simsiam_keras.export.writers import LiteRTOptions, image_size
from simsiam_keras.method.model import SimSiam
from simsiam_keras.run_files import RESULTS_FILE
from simsiam_keras.run_lock import RunLock
from simsiam_keras.saved_run import load_keras_file

CLASSIFIER_SIDECAR = "classifier.json"
# (the run's settings, image size, dataset override) -> how a quantised model's drift is measured
# (evaluate.drift.monitor_drift).
DriftFactory = Callable[[Mapping[str, Any], int, "str | None"], litert.DriftCheck]


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def export_run(
    checkpoint: str | Path,
    output_dir: str | Path,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    overwrite: bool = False,
    *,
    quantize: str | Sequence[str] | None = None,
    allow_drift: bool = False,
    dataset: str | None = None,
    drift: DriftFactory | None = None,
    force_unlock: bool = False,
) -> ExportResult:
    """Exports a pretraining run's `model.keras` (its backbone) or a linear probe's `classifier.keras`.

    A run directory stands for its `model.keras`. The run's config.json (beside the model,
    or one level up for `RUN/linear/classifier.keras`) and results.json go into the metadata.
    `quantize` (litert; backbones only) calibrates `int8` on the run's dataset, or on
    `dataset`, which also feeds `drift` (evaluate.drift.monitor_drift: cosine and kNN on the
    monitor split; without it, cosine similarity on the calibration images).

    A live process writing `output_dir` (holding its lock) is refused before any work. The
    checkpoint's folder is only read, so a live run there does not stop the export: its
    model.keras is written whole when that run ends, and exported as it is now, with a warning.
    """
    formats = parse_formats(formats)
    quantize = litert.parse_quantize(quantize)
    check_writable(output_dir, overwrite, force_unlock)
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model.keras"
    writer = RunLock(path.parent).live_holder(others_only=True)  # not a fine-tuning exporting its own classifier
    if not path.is_file():
        running = f" yet: {path.parent} is being written by {writer}, which saves it when it ends" if writer \
            else " there"
        raise FileNotFoundError(f"checkpoint {checkpoint}: no model.keras or classifier .keras file{running}")
    if writer is not None:
        print(f"warning: {path.parent} is being written by {writer}; exporting its {path.name} as it is now "
              "(that run replaces it when it ends)", file=sys.stderr)
    if path.suffix != ".keras":
        raise ValueError(f"checkpoint {checkpoint}: expected a .keras file or a run directory")
    sidecar = _read_json(path.with_name(CLASSIFIER_SIDECAR)) if path.name != "model.keras" else None
    run_dir = path.parent if sidecar is None else path.parent.parent
    config = _read_json(run_dir / "config.json")
    if quantize and "litert" not in formats:
        raise ValueError("quantize applies to the litert format; add litert to `formats`")
    if sidecar is not None and (quantize or "keras-hub" in formats):
        raise ValueError(f"checkpoint {checkpoint}: a linear classifier exports to saved_model, onnx and float32 "
                         "litert; quantize and keras-hub take a run's model.keras")
    if quantize and sidecar is None:
        litert.run_dataset(config or {}, dataset)  # checked before the model is loaded
    model = load_keras_file(path)
    if isinstance(model, SimSiam):
        check_backbone_formats(model.backbone, formats)
        size = image_size(model.backbone)
        settings = config or {}
        options = LiteRTOptions(quantize=quantize, allow_drift=allow_drift)
        if "int8" in quantize:
            options.calibration = litert.calibration_images(settings, size, dataset=dataset)
            options.calibration_source = dataset or training_info(settings)["dataset"]
        if quantize and drift is not None:
            options.drift = drift(settings, size, dataset)
        results = _read_json(run_dir / RESULTS_FILE)
        return export_backbone(model.backbone, output_dir, config=config, run_dir=run_dir, formats=formats,
                               overwrite=overwrite, litert_options=options, results=results,
                               source=(config or {}).get("converted_from"), force_unlock=force_unlock)
    if sidecar is None:
        raise ValueError(
            f"checkpoint {checkpoint}: not a SimSiam model, and no {CLASSIFIER_SIDECAR} beside it for a classifier"
        )
    return export_classifier(model, output_dir, sidecar["class_names"], details=sidecar, config=config,
                             run_dir=run_dir, formats=formats, overwrite=overwrite, force_unlock=force_unlock)
