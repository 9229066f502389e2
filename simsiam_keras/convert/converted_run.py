"""A PyTorch file's weights written as ours: a run directory, a linear classifier's folder, or an export folder."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

from simsiam_keras.convert.torch_to_keras import CONVERTED, load_torch_model
from simsiam_keras.evaluate.linear_probe import save_classifier
from simsiam_keras.export.atomic_folder import check_target, staged
from simsiam_keras.export.backbone import export_backbone
from simsiam_keras.export.export_folder import ExportResult, parse_formats
from simsiam_keras.method.optimizers import make_optimizers


@dataclasses.dataclass
class Conversion:
    output: Path
    kind: str  # "run", "classifier" or "export"
    info: dict[str, Any]
    seconds: float
    export: ExportResult | None = None


def from_torch(
    torch_file: str | Path,
    output: str | Path,
    *,
    backbone_only: bool = False,
    normalization: str | None = None,
    image_size: int | None = None,
    stem_padding: int | None = None,
    layout: str | None = None,
    formats: str | Sequence[str] = ("saved_model", "onnx"),
    overwrite: bool = False,
) -> Conversion:
    """Converts a PyTorch SimSiam file (`torch.save`'s) and writes it; nothing is written if anything fails.

    Writes a run directory (`model.keras` with both heads and both optimizers compiled as
    pretraining does, and `config.json` with a `converted_from` record), for a linear-eval
    file a folder with `classifier.keras` and `classifier.json`, or with `backbone_only`
    an export folder exactly as `export.backbone.export_backbone` writes it (SavedModel, ONNX,
    metadata.json; parity checked).
    """
    start = time.time()
    output = Path(output)
    check_target(output, overwrite)
    if backbone_only:
        parse_formats(formats)
    converted = load_torch_model(
        torch_file, normalization=normalization, image_size=image_size, stem_padding=stem_padding, layout=layout
    )
    settings = {**converted.config.to_dict(), "output_dir": None}
    if backbone_only:
        result = export_backbone(converted.backbone, output, config=settings, formats=formats,
                                 overwrite=overwrite, source=converted.info)
        return Conversion(output, "export", converted.info, time.time() - start, result)
    with staged(output, like_makedirs=True) as staging:
        if converted.is_classifier:
            classes = int(converted.model.output_shape[-1])
            save_classifier(converted.model, str(staging), [str(i) for i in range(classes)], str(torch_file),
                            converted.config.backbone, {"name": "converted from PyTorch"})
            sidecar = staging / "classifier.json"
            sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), CONVERTED: converted.info}, indent=2))
            kind = "classifier"
        else:
            # The file's optimizer state is not converted: both optimizers start afresh.
            converted.model.compile(*make_optimizers(converted.config, converted.config.steps_per_epoch or 1))
            converted.model.save(staging / "model.keras")
            settings = {**converted.config.to_dict(), "output_dir": str(output), CONVERTED: converted.info}
            (staging / "config.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
            kind = "run"
    return Conversion(output, kind, converted.info, time.time() - start)
