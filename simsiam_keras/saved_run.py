"""A saved run read back: what `--checkpoint` points at, located and loaded as a frozen backbone.

`--checkpoint` names a run, a `.keras` file, an export folder, a SavedModel or an ONNX file.
Evaluation (kNN, linear probe, the monitor) takes any of these and gets the same thing back:
a function of float32 NHWC pixel batches in [0, 255] that returns the pooled features.

* a pretraining run directory or its `model.keras` (a `SimSiam`: its `backbone`), or a
  `.keras` file holding a plain backbone or a backbone with a classifier head;
* an export folder `exported/NAME/` (`saved_model/`, `model.onnx`, `metadata.json`) or the
  SavedModel directory itself (signature `serve`: input `images`, output `features`);
* an ONNX file (input `images`, output `features`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import h5py
import keras
import numpy as np
import tensorflow as tf

# Importing them registers the classes a run's .keras file holds (SimSiam, TorchSGD, their layers).
from simsiam_keras.method.model import SimSiam  # noqa: F401
from simsiam_keras.method.optimizers import TorchSGD  # noqa: F401

KINDS = ("keras", "saved_model", "onnx")
# An export folder's names: simsiam_keras.export writes them, this module reads them.
INPUT_NAME = "images"
OUTPUT_NAME = "features"
METADATA = "metadata.json"
SAVED_MODEL_DIR = "saved_model"
ONNX_FILE = "model.onnx"
SIGNATURE = "serve"


@dataclasses.dataclass
class ModelLocation:
    """Where the model a `--checkpoint` names is: its file or folder, its kind, and its export's metadata."""

    kind: str
    path: Path
    metadata: dict[str, Any]


def _read_metadata(folder: Path) -> dict[str, Any]:
    file = folder / METADATA
    return json.loads(file.read_text()) if file.is_file() else {}


def locate_model(path: str | Path, kind: str | None = None) -> ModelLocation:
    """What `path` holds, checked without loading it; `kind` picks one format of an export folder.

    Raises FileNotFoundError or ValueError with a message fit for a command line.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}: choose one of {', '.join(KINDS)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path}: no such file or directory")
    candidates: list[ModelLocation] = []
    if path.is_file():
        found = {".keras": "keras", ".onnx": "onnx"}.get(path.suffix.lower())
        if found is None:
            raise ValueError(f"checkpoint {path}: expected a .keras or .onnx file, a run directory or an export folder")
        candidates.append(ModelLocation(found, path, _read_metadata(path.parent)))
    elif (path / "saved_model.pb").is_file():
        candidates.append(ModelLocation("saved_model", path, _read_metadata(path.parent)))
    else:
        metadata = _read_metadata(path)
        for name, found in (("model.keras", "keras"), (SAVED_MODEL_DIR, "saved_model"), (ONNX_FILE, "onnx")):
            target = path / name
            if target.is_file() or (target / "saved_model.pb").is_file():
                candidates.append(ModelLocation(found, target, metadata))
    if kind is not None:
        candidates = [c for c in candidates if c.kind == kind]
    if not candidates:
        wanted = f"{kind} model" if kind else "model.keras, saved_model/ or model.onnx"
        raise ValueError(f"checkpoint {path}: found no {wanted} there (expected a run directory or an export folder)")
    if candidates[0].metadata.get("kind", "backbone") != "backbone":
        raise ValueError(
            f"checkpoint {path}: an exported {candidates[0].metadata['kind']} has no {OUTPUT_NAME!r} output; "
            "use the backbone's export or the run directory"
        )
    return candidates[0]


def run_settings(path: str | Path) -> dict[str, Any]:
    """What is known of the run a checkpoint came from: its config.json, else an export's metadata.

    Keys as in config.json (`backbone`, `eval_resize_ratio`, ...); empty when nothing is known.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = folder / "config.json"
    if config.is_file():
        return json.loads(config.read_text())
    if folder.name == SAVED_MODEL_DIR and not (folder / METADATA).exists():
        folder = folder.parent
    metadata = _read_metadata(folder)
    settings = {k: v for k, v in (metadata.get("training") or {}).items() if v is not None}
    if "backbone" in metadata:
        settings["backbone"] = metadata["backbone"]
    return settings


def _features_only(model: keras.Model) -> keras.Model:
    """The backbone inside a loaded model: SimSiam's, a nested one, or the model cut at `pool`."""
    if hasattr(model, "backbone"):
        return model.backbone
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) == 1 and len(model.layers) > 1 and isinstance(model.layers[-1], keras.layers.Dense):
        return nested[0]
    names = [layer.name for layer in model.layers]
    if "pool" in names and names[-1] != "pool":
        return keras.Model(model.inputs, model.get_layer("pool").output, name=model.name)
    return model


def _saved_model_backbone(path: Path, image_size: int | None) -> keras.Model:
    """A keras.Model with input `images` around the SavedModel's `serve` endpoint."""
    layer = keras.layers.TFSMLayer(str(path), call_endpoint=SIGNATURE)
    if image_size is None:
        signature = tf.saved_model.load(str(path)).signatures.get(SIGNATURE)
        if signature is None:
            raise ValueError(f"checkpoint {path}: the SavedModel has no {SIGNATURE!r} signature")
        spec = next(iter(signature.structured_input_signature[1].values()))
        image_size = spec.shape[1]
        if image_size is None:
            raise ValueError(f"checkpoint {path}: the image size is not fixed by the signature; add a {METADATA}")
    inputs = keras.Input((image_size, image_size, 3), name=INPUT_NAME)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if OUTPUT_NAME not in outputs and len(outputs) != 1:
            raise ValueError(f"checkpoint {path}: no {OUTPUT_NAME!r} output in the serve signature ({', '.join(outputs)})")
        outputs = outputs[OUTPUT_NAME] if OUTPUT_NAME in outputs else next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=path.parent.name if path.name == SAVED_MODEL_DIR else path.name)


def load_backbone(path: str | Path) -> keras.Model:
    """The frozen backbone at `path` as a keras.Model: float32 NHWC pixels in [0, 255] -> features.

    Accepts a run directory, a `.keras` file, an export folder or a SavedModel directory
    (ONNX files have no Keras form: use `load_feature_extractor`).
    """
    found = locate_model(path)
    if found.kind == "onnx":
        raise ValueError(f"checkpoint {path}: an ONNX model has no Keras form; use load_feature_extractor")
    if found.kind == "saved_model":
        return _saved_model_backbone(found.path, found.metadata.get("image_size"))
    return _features_only(load_keras_file(found.path))


def load_keras_file(path: str | Path, compile: bool = False) -> keras.Model:
    """A `.keras` file, loaded with `safe_mode=True`: a model that would run stored Python code is refused.

    Any failure is a ValueError naming the file, fit for a command line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"checkpoint {path}: not a .keras file (a .keras file is a zip archive)")
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as error:  # Keras raises many types for a file it cannot read
        raise ValueError(
            f"checkpoint {path}: cannot be loaded: {' '.join(str(error).split()) or type(error).__name__}"
        ) from None


# A .keras archive's member files (Keras 3's format).
_KERAS_CONFIG, _KERAS_WEIGHTS = "config.json", "model.weights.h5"


def read_simsiam_backbone(path: str | Path) -> tuple[keras.Model, int] | None:
    """The backbone of a SimSiam `.keras` file and its encoder optimizer's step count, read weights only.

    Builds the backbone alone and reads its variables and the step count from the archive's
    weights file, without building the heads or either optimizer or reading their state (a
    ResNet-50 run: about half the CPU time of `load_keras_file(path, compile=True)`, a third
    less memory). None if the file holds no SimSiam, or its optimizer is a LossScaleOptimizer
    (whose step count lives elsewhere): load it whole. Errors as `load_keras_file`'s.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"checkpoint {path}: not a .keras file (a .keras file is a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(_KERAS_CONFIG))
            optimizer = (config.get("compile_config") or {}).get("optimizer") or {}
            if config.get("registered_name") != "simsiam_keras>SimSiam" or "backbone" not in config["config"]:
                return None
            if isinstance(optimizer, dict) and optimizer.get("class_name") == "LossScaleOptimizer":
                return None
            backbone = keras.saving.deserialize_keras_object(config["config"]["backbone"], safe_mode=True)
            # h5py reads a file in memory far faster than through the zip member's stream.
            weights = io.BytesIO(archive.read(_KERAS_WEIGHTS))
        with h5py.File(weights, "r") as store:
            _load_layers(backbone, store["backbone/layers"])
            steps = store.get("optimizer/vars/0")
            return backbone, int(steps[()]) if steps is not None else 0
    except Exception as error:  # Keras, h5py and zipfile raise many types for a file they cannot read
        raise ValueError(
            f"checkpoint {path}: cannot be loaded: {' '.join(str(error).split()) or type(error).__name__}"
        ) from None


def _snake_case(name: str) -> str:
    """Keras' name for a class in a weights file: BatchNormalization -> batch_normalization, Conv2D -> conv2d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _load_layers(model: keras.Model, layers: "h5py.Group") -> None:
    """Each layer's variables from its group, named as Keras saves a model's layers: by class, numbered in order."""
    used: dict[str, int] = {}
    for layer in model.layers:
        kind = _snake_case(layer.__class__.__name__)
        count = used.get(kind, 0)
        used[kind] = count + 1
        if layer.weights:
            group = layers[kind if count == 0 else f"{kind}_{count}"]["vars"]
            layer.load_own_variables({name: group[name][()] for name in group})


class FeatureExtractor:
    """Features of float32 NHWC image batches in [0, 255] at `image_size`, from any backend."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], image_size: int, feature_dim: int, kind: str):
        self._fn = fn
        self.image_size = int(image_size)
        self.feature_dim = int(feature_dim)
        self.kind = kind

    def __call__(self, batch: np.ndarray | tf.Tensor) -> np.ndarray:
        return np.asarray(self._fn(np.asarray(batch, np.float32)), np.float32)

    def __repr__(self) -> str:
        return f"FeatureExtractor(kind={self.kind!r}, image_size={self.image_size}, feature_dim={self.feature_dim})"

    @classmethod
    def from_keras(cls, model: keras.Model, kind: str = "keras") -> "FeatureExtractor":
        """Wraps a Keras backbone, run in inference mode (BN uses its moving statistics)."""
        size = model.input_shape[1]
        forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
        )
        return cls(lambda x: forward(x).numpy(), size, model.output_shape[-1], kind)


def _onnx_extractor(path: Path, metadata: dict[str, Any]) -> FeatureExtractor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = [i.name for i in inputs]
    if len(inputs) != 1:
        raise ValueError(f"checkpoint {path}: expected one input ({INPUT_NAME!r}), the ONNX model has {names}")
    if OUTPUT_NAME not in [o.name for o in outputs] and len(outputs) != 1:
        raise ValueError(f"checkpoint {path}: no {OUTPUT_NAME!r} output ({', '.join(o.name for o in outputs)})")
    output = next((o.name for o in outputs if o.name == OUTPUT_NAME), outputs[0].name)
    input_name = inputs[0].name
    image_size = metadata.get("image_size") or inputs[0].shape[1]
    feature_dim = metadata.get("feature_dim") or next(o for o in outputs if o.name == output).shape[-1]
    if not isinstance(image_size, int) or not isinstance(feature_dim, int):
        raise ValueError(f"checkpoint {path}: image size and feature dimension unknown (no {METADATA}, dynamic shapes)")
    return FeatureExtractor(
        lambda x: session.run([output], {input_name: x})[0], image_size, feature_dim, "onnx"
    )


def load_feature_extractor(path: str | Path, kind: str | None = None) -> FeatureExtractor:
    """A FeatureExtractor for a run, `.keras` file, export folder, SavedModel or ONNX file.

    An export folder holds several formats: the SavedModel is used unless `kind` says
    `onnx`. Image size and feature dimension come from `metadata.json` when there is one.
    """
    found = locate_model(path, kind)
    if found.kind == "onnx":
        return _onnx_extractor(found.path, found.metadata)
    return FeatureExtractor.from_keras(load_backbone(found.path), found.kind)


def run_dir_of(path: str | Path) -> Path:
    """The directory whose `results.json` records evaluations of the model at `path`.

    A run directory for `.keras` models (the folder of the file); for exports, the training
    run named in `metadata.json` when it still exists, else the export folder.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if folder.name == SAVED_MODEL_DIR and not (folder / METADATA).exists() and (folder.parent / METADATA).exists():
        folder = folder.parent
    metadata = _read_metadata(folder)
    for key in ("run_dir", "run", "training_run", "source_run"):
        run = metadata.get(key)
        if isinstance(run, str) and Path(run).is_dir():
            return Path(run)
    return folder


def check_backbone_model(model: keras.Model, checkpoint: str | Path) -> None:
    """Raises ValueError unless `model` maps (height, width, 3) images to a feature vector, as a backbone does."""
    inputs, outputs = model.inputs, model.outputs
    shape_in = tuple(inputs[0].shape) if len(inputs) == 1 else None
    shape_out = tuple(outputs[0].shape) if len(outputs) == 1 else None
    if shape_in is None or len(shape_in) != 4 or shape_in[-1] != 3 or shape_out is None or len(shape_out) != 2:
        raise ValueError(f"checkpoint {checkpoint}: a model of another architecture (input {shape_in}, output "
                         f"{shape_out}); expected a backbone of (height, width, 3) images to pooled features")
