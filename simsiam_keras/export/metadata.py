"""What metadata.json says of an export: how the model was trained, its input normalisation, versions, sizes."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

import keras
import numpy as np

from simsiam_keras.config import SimSiamConfig

RECIPE_FIELDS = ("batch_size", "base_lr", "momentum", "weight_decay", "predictor_lr", "warmup_epochs", "proj_layers",
                 "proj_dim", "proj_hidden_dim", "pred_hidden_dim", "symmetric", "stop_gradient", "seed")


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def input_normalisation(model: keras.Model) -> dict[str, Any] | None:
    """The input normalisation baked into the graph, read from the model's Normalization layer."""
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Normalization):
            config = layer.get_config()
            mean = np.ravel(config["mean"]).astype(float)
            std = np.sqrt(np.ravel(config["variance"]).astype(float))
            return {
                "inside_graph": True,
                "formula": "(images - mean) / std, per RGB channel, on pixels in [0, 255]",
                "mean": [round(v, 6) for v in mean.tolist()],
                "std": [round(v, 6) for v in std.tolist()],
            }
    return None


def config_hash(settings: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of a run's settings: config.json without `data` and `output_dir`."""
    kept = {k: v for k, v in settings.items() if k not in ("data", "output_dir")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=list).encode()).hexdigest()[:16]


def training_info(config: SimSiamConfig | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """How an exported backbone was trained: dataset, epochs, width, precision and config hash."""
    if config is None:
        return None
    settings = config.to_dict() if isinstance(config, SimSiamConfig) else dict(config)
    return {
        # config.json's data summary names the data actually used, even when passed in directly.
        "dataset": (settings.get("data") or {}).get("name") or settings.get("dataset"),
        "epochs": settings.get("epochs"),
        "backbone_width": settings.get("backbone_width"),
        "mixed_precision": settings.get("mixed_precision"),
        # The evaluation view the run used (augment.crop.eval_view), which evaluations reuse.
        "eval_resize_ratio": settings.get("eval_resize_ratio"),
        "config_hash": config_hash(settings),
        # The SimSiam recipe (Sec. 4): what a model card needs to say how the backbone was made.
        "recipe": {k: settings.get(k) for k in RECIPE_FIELDS if k in settings},
    }


def absolute_run_dir(config: SimSiamConfig | Mapping[str, Any] | None, run_dir: str | Path | None) -> str | None:
    """The training run's directory, absolute, so evaluations can find it (see saved_run.run_dir_of)."""
    if run_dir is None and config is not None:
        run_dir = config.output_dir if isinstance(config, SimSiamConfig) else config.get("output_dir")
    return str(Path(run_dir).resolve()) if run_dir else None


def versions() -> dict[str, str]:
    """The versions of Python and of the packages an export went through."""
    found = {"python": platform.python_version()}
    for name in ("simsiam-keras", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert",
                 "keras-hub", "numpy"):
        try:
            found[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            pass
    return found


def disk_size(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
