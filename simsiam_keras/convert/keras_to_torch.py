"""One of our backbones written for PyTorch: torchvision's ResNet `state_dict` (`.pth`) or detectron2's `.pkl`."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Mapping

import keras

from simsiam_keras.convert.state_dict import COUNTER, detectron2_weights, torchvision_state_dict
from simsiam_keras.convert.torch_format import write_numpy_pickle, write_torch_file
from simsiam_keras.convert.torch_to_keras import CONVERTED, TorchModel
from simsiam_keras.export.metadata import input_normalisation
from simsiam_keras.saved_run import load_keras_file, read_simsiam_backbone

TORCH_FORMATS = ("torchvision", "detectron2")


@dataclasses.dataclass
class TorchExport:
    output: Path
    format: str
    keys: int
    normalization: dict[str, Any] | None
    seconds: float


def _check_output_file(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise FileExistsError(f"output {output} already exists; pass `overwrite` to replace it")
    if output.exists() and output.is_dir():
        raise FileExistsError(f"output {output} exists and is not a file")


def _keras_backbone(model: keras.Model | TorchModel | str | Path) -> tuple[keras.Model, Mapping[str, int] | int]:
    """The backbone inside a run, `.keras` file or model, and its BN counters.

    Our train step runs the encoder on both views: BN statistics move twice per step.
    """
    if isinstance(model, TorchModel):
        return model.backbone, model.info[COUNTER]
    if isinstance(model, keras.Model):
        return _backbone_of(model)
    path = Path(model)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {model}: no model.keras there and not a .keras file")
    # A run's SimSiam: its backbone's weights and the step count only, not the heads and optimizers.
    run = read_simsiam_backbone(path)
    backbone, counters = (run[0], 2 * run[1]) if run is not None else _backbone_of(load_keras_file(path, compile=True))
    for sidecar in (path.parent / "config.json", path.parent / "classifier.json"):
        recorded = json.loads(sidecar.read_text()).get(CONVERTED, {}).get(COUNTER) if sidecar.is_file() else None
        if recorded and not counters:
            counters = recorded
    return backbone, counters


def _backbone_of(model: keras.Model) -> tuple[keras.Model, int]:
    """A SimSiam's backbone and its BN counters (twice its encoder optimizer's steps), or a classifier's or plain backbone."""
    if hasattr(model, "backbone"):
        optimizer = getattr(model, "optimizer", None)
        return model.backbone, 2 * int(keras.ops.convert_to_numpy(optimizer.iterations)) if optimizer is not None else 0
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return (nested[0] if len(nested) == 1 else model), 0


def to_torch(
    model: keras.Model | TorchModel | str | Path, output: str | Path, format: str = "torchvision", overwrite: bool = False
) -> TorchExport:
    """Writes a backbone as torchvision's ResNet `state_dict` (`.pth`, no `fc`) or detectron2's `.pkl`; no torch needed.

    `model` is a run directory, a `.keras` file (SimSiam, backbone, or linear classifier), a
    Keras model or what `load_torch_model` returned. Each BN's `num_batches_tracked` is twice the
    encoder optimizer's step count (two views per step), or the converted file's own.
    """
    start = time.time()
    if format not in TORCH_FORMATS:
        raise ValueError(f"format must be one of {', '.join(TORCH_FORMATS)}, got {format!r}")
    output = Path(output)
    _check_output_file(output, overwrite)
    backbone, counters = _keras_backbone(model)
    state = torchvision_state_dict(backbone, counters)
    if format == "detectron2":
        write_numpy_pickle(detectron2_weights(state), output)
    else:
        write_torch_file(state, output)
    return TorchExport(output, format, len(state), input_normalisation(backbone), time.time() - start)
