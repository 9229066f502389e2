"""Export: the frozen backbone, or the linear classifier, as a SavedModel, ONNX, LiteRT or a KerasHub preset.

An export folder holds the inference graph only (no projector, predictor or optimizer state),
with the input normalisation inside it, so callers feed float32 RGB pixels in [0, 255]:

    NAME/saved_model/   signature `serve`: input `images` -> `features` (or `probabilities`, `logits`)
    NAME/model.onnx     opset 17, dynamic batch, same input and output names
    NAME/model*.tflite  `litert` (backbones also quantised: see export.litert)
    NAME/keras_hub/     `keras-hub`, a KerasHub preset of a ResNet backbone (see export.hub_preset)
    NAME/metadata.json  what the folder holds, where it came from, and the parity figures

Each export is checked at export time: the Keras model, the SavedModel and ONNX Runtime
(and the LiteRT interpreter, KerasHub) must agree on a fixed batch of images to 1e-4 of the
feature scale, or nothing is written.

While it writes, an export holds `NAME.lock` beside its folder (the folder itself is renamed into
place whole, so it cannot hold its own lock): a second export into `NAME` while the first lives
is refused with one line naming its process (`run_lock.RunLock.beside`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.config import SimSiamConfig
from simsiam_keras.data.synthetic import make_synthetic
from simsiam_keras.export import hub_preset, litert
from simsiam_keras.export.load import INPUT_NAME, METADATA, OUTPUT_NAME, SAVED_MODEL_DIR, load_keras_file
from simsiam_keras.files import RESULTS_FILE
from simsiam_keras.method.model import SimSiam
from simsiam_keras.run_lock import RunLock

FORMATS = ("saved_model", "onnx", "litert", "keras-hub")
# What an export writes unless told otherwise.
DEFAULT_FORMATS = ("saved_model", "onnx")

ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
SIGNATURE = "serve"
PARITY_TOLERANCE = 1e-4
# The fixed parity batch is run as two batches of different sizes, which also checks that
# the batch dimension is dynamic in every format.
PARITY_BATCHES = (1, 7)
CLASSIFIER_SIDECAR = "classifier.json"
RECIPE_FIELDS = ("batch_size", "base_lr", "momentum", "weight_decay", "predictor_lr", "warmup_epochs", "proj_layers",
                 "proj_dim", "proj_hidden_dim", "pred_hidden_dim", "symmetric", "stop_gradient", "seed")

Outputs = Callable[[tf.Tensor], dict[str, tf.Tensor]]
# (the run's settings, image size, dataset override) -> how a quantised model's drift is measured
# (evaluate.drift.monitor_drift).
DriftFactory = Callable[[Mapping[str, Any], int, "str | None"], litert.DriftCheck]


class ParityError(RuntimeError):
    """An exported format disagrees with the Keras model beyond the tolerance."""


@dataclasses.dataclass
class ExportResult:
    output_dir: Path
    metadata: dict[str, Any]
    seconds: float
    # Bytes on disk per entry of the export folder (`saved_model` is the folder's total).
    sizes: dict[str, int]


# -- preparing the model -------------------------------------------------------------------


def _float32_config(obj: Any) -> Any:
    """A serialised model with every dtype policy float32 and BatchNorm unsynchronised."""
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return {**obj, "class_name": "DTypePolicy", "config": {"name": "float32"}}
    if obj.get("class_name") == "__keras_tensor__":
        return {**obj, "config": {**obj["config"], "dtype": "float32"}}
    out = {k: _float32_config(v) for k, v in obj.items()}
    if out.get("synchronized") is True:
        out["synchronized"] = False
    return out


def float32_copy(model: keras.Model) -> keras.Model:
    """The same network rebuilt under a float32 policy with the same weights.

    A mixed-precision model computes in bf16/fp16, which ONNX Runtime rejects; inference
    only needs the float32 weights, which mixed precision keeps anyway. Synchronised
    BatchNorm only differs in training, so the copy uses the plain layer.
    """
    config = _float32_config(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _image_size(model: keras.Model) -> int:
    shape = model.input_shape
    if not (len(shape) == 4 and shape[1] and shape[1] == shape[2] and shape[3] == 3):
        raise ValueError(f"expected a model of square RGB images (None, S, S, 3), got input shape {shape}")
    return int(shape[1])


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


def parity_images(image_size: int, count: int = sum(PARITY_BATCHES)) -> np.ndarray:
    """The fixed parity batch: embedded synthetic images (seed 0), float32 in [0, 255]."""
    return make_synthetic(num_train=count, num_test=0, image_size=image_size, seed=0)["x_train"].astype(np.float32)


# -- writing -------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_tensorflow() -> Iterator[None]:
    """tf2onnx, TF's v1 freezing helpers and the SavedModel writer log every step at INFO/WARNING."""
    loggers = [logging.getLogger("tf2onnx"), tf.get_logger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _write_saved_model(model: keras.Model, outputs: Outputs, path: Path) -> None:
    """A SavedModel whose `serve` signature maps `images` to the named outputs.

    Written with keras.export.ExportArchive, which tracks the model's variables, so
    `keras.layers.TFSMLayer(..., trainable=True)` can fine-tune them.
    """
    size = _image_size(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE,
        tf.function(outputs, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)]),
    )
    with _quiet_tensorflow():
        archive.write_out(str(path), verbose=False)


def _write_onnx(saved_model: Path, path: Path) -> None:
    """ONNX (opset 17, dynamic batch) converted by tf2onnx from the SavedModel's `serve` signature.

    Not tf2onnx.convert.from_keras (broken on Keras 3, onnx/tensorflow-onnx#2448), and not
    keras' `model.export(format="onnx")`: with Keras 3.15 it turns the Normalization layer's
    constant mean and variance into extra required graph inputs.
    """
    import onnx
    from tf2onnx import convert, tf_loader

    with _quiet_tensorflow():
        graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
            str(saved_model), None, None, [SIGNATURE], [SIGNATURE],
            return_initialized_tables=True, return_tensors_to_rename=True,
        )
        proto, _ = convert.from_graph_def(
            graph_def, input_names=inputs, output_names=outputs, opset=ONNX_OPSET, tensors_to_rename=renames,
        )
    # tf2onnx names the dynamic batch dimension `unk__N`; call it what it is.
    for value in [*proto.graph.input, *proto.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        if not dim.HasField("dim_value"):
            dim.dim_param = "batch"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


# -- parity --------------------------------------------------------------------------------


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


# -- metadata ------------------------------------------------------------------------------


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


def _run_dir(config: SimSiamConfig | Mapping[str, Any] | None, run_dir: str | Path | None) -> str | None:
    """The training run's directory, absolute, so evaluations can find it (see load.run_dir_of)."""
    if run_dir is None and config is not None:
        run_dir = config.output_dir if isinstance(config, SimSiamConfig) else config.get("output_dir")
    return str(Path(run_dir).resolve()) if run_dir else None


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("simsiam-keras", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert",
                 "keras-hub", "numpy"):
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            pass
    return versions


def _disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- the export ----------------------------------------------------------------------------


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """`saved_model,onnx` (or a sequence) checked against FORMATS, in canonical order."""
    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    unknown = sorted(set(names) - set(FORMATS))
    if unknown or not names:
        raise ValueError(f"formats takes a comma-separated subset of {','.join(FORMATS)}, got {','.join(names)!r}")
    return tuple(f for f in FORMATS if f in names)


def check_target(output_dir: str | Path, overwrite: bool = False) -> Path:
    """The export folder, refused if it exists and `overwrite` is not set (checked before any work)."""
    target = Path(output_dir)
    if target.exists() and not overwrite:
        raise FileExistsError(f"output {target} already exists; pass `overwrite` to replace it")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"output {target} exists and is not a folder")
    return target


def replace_with(staging: Path, target: Path) -> None:
    """Moves the finished export into place; an old export is removed only once the new one is there."""
    if not target.exists():
        os.rename(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / target.name)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass
class LiteRTOptions:
    """What a `litert` export writes beside the float32 model, and how the quantised ones are checked.

    `calibration`: float32 [0, 255] images for `int8` (litert.calibration_images); `drift`: the
    check a quantised model must pass (litert.cosine_drift on the calibration or parity images
    when None); `allow_drift` writes a quantised model that fails it.
    """

    quantize: tuple[str, ...] = ()
    calibration: np.ndarray | None = None
    drift: litert.DriftCheck | None = None
    allow_drift: bool = False
    calibration_source: str | None = None


def _write_litert(model: keras.Model, outputs: Outputs, staging: Path, reference: Mapping[str, np.ndarray],
                  images: np.ndarray, options: LiteRTOptions) -> dict[str, Any]:
    """The float32 `.tflite` (parity-checked) and the quantised ones (drift-checked), with sizes and latencies."""
    size = _image_size(model)
    saved_model = staging / SAVED_MODEL_DIR
    files: dict[str, Any] = {}
    with _quiet_tensorflow():
        flat = litert.convert(saved_model, SIGNATURE)
    (staging / litert.LITERT_FILES["float32"]).write_bytes(flat)
    parity = compare_outputs(reference, litert.run_litert(staging / litert.LITERT_FILES["float32"], images,
                                                          PARITY_BATCHES))
    quantized: dict[str, Any] = {}
    for name in ("float32", *options.quantize):
        path = staging / litert.LITERT_FILES[name]
        if name != "float32":
            with _quiet_tensorflow():
                path.write_bytes(litert.convert(saved_model, SIGNATURE, name, options.calibration))
            drift = options.drift or litert.cosine_drift(
                options.calibration if options.calibration is not None else parity_images(size, 64))
            keras_features = lambda x: outputs(tf.constant(x, tf.float32))[OUTPUT_NAME].numpy()  # noqa: E731
            quantized[name] = litert.check_drift(name, drift(keras_features, litert.feature_fn(path)),
                                                 options.allow_drift)
        files[name] = {"file": path.name, "bytes": path.stat().st_size,
                       "latency": litert.single_image_latency(path, size)}
    return {
        "files": files,
        "parity": parity,
        "quantized": quantized,
        "calibration": (f"{len(options.calibration)} evaluation views of {options.calibration_source} (seeded)"
                        if "int8" in options.quantize else None),
        "ops": "TFLITE_BUILTINS only (int8: TFLITE_BUILTINS_INT8); input float32 [0, 255], dynamic batch",
        "latency_note": "median of single-image invokes, ai-edge-litert interpreter, one thread, this machine's CPU",
    }


def _export(
    model: keras.Model,
    outputs: Outputs,
    output_dir: str | Path,
    metadata: dict[str, Any],
    formats: str | Sequence[str],
    overwrite: bool,
    litert_options: LiteRTOptions | None = None,
    force_unlock: bool = False,
) -> ExportResult:
    """Writes the formats into a temporary folder beside the target, checks parity, then renames;
    all under the target's lock."""
    start = time.time()
    formats = parse_formats(formats)
    with RunLock.beside(output_dir, force_unlock):
        # Checked under the lock: an export that held it may have just written the target.
        target = check_target(output_dir, overwrite)
        return _export_locked(model, outputs, target, metadata, formats, litert_options, start)


def _export_locked(model: keras.Model, outputs: Outputs, target: Path, metadata: dict[str, Any],
                   formats: tuple[str, ...], litert_options: LiteRTOptions | None, start: float) -> ExportResult:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        saved_model = staging / SAVED_MODEL_DIR
        # ONNX and LiteRT are converted from the SavedModel; a KerasHub preset alone does not need it.
        if set(formats) - {"keras-hub"}:
            _write_saved_model(model, outputs, saved_model)
        images = parity_images(_image_size(model))
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
            _write_onnx(saved_model, staging / ONNX_FILE)
            parity["onnx"] = compare_outputs(reference, run_onnx(staging / ONNX_FILE, images))
        if "litert" in formats:
            extra["litert"] = _write_litert(model, outputs, staging, reference, images,
                                            litert_options or LiteRTOptions())
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
            "versions": _versions(),
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (staging / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        entries = (SAVED_MODEL_DIR, ONNX_FILE, *litert.LITERT_FILES.values(), hub_preset.PRESET_DIR, METADATA)
        sizes = {name: _disk_size(staging / name) for name in entries if (staging / name).exists()}
        replace_with(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(target, metadata, time.time() - start, sizes)


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
    check_target(output_dir, overwrite)
    RunLock.beside(output_dir, force_unlock).check()
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
        "image_size": _image_size(model),
        "feature_dim": int(model.output_shape[-1]),
        "normalisation": input_normalisation(model),
        "source_dtype_policy": backbone.dtype_policy.name,
        "training": training_info(config),
        "run_dir": _run_dir(config, run_dir),
        **({"source": dict(source)} if source else {}),
        **({"results": list(results)} if results else {}),
    }
    return _export(
        model, lambda images: {OUTPUT_NAME: model(images, training=False)}, output_dir, metadata, formats, overwrite,
        options, force_unlock,
    )


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
    check_target(output_dir, overwrite)
    RunLock.beside(output_dir, force_unlock).check()
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
        "image_size": _image_size(model),
        "num_classes": num_classes,
        "class_names": list(class_names),
        "normalisation": input_normalisation(model),
        "source_dtype_policy": classifier.dtype_policy.name,
        "classifier": details,
        "training": training_info(config),
        "run_dir": _run_dir(config, run_dir),
    }

    def outputs(images):
        logits = model(images, training=False)
        return {"probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits}

    return _export(model, outputs, output_dir, metadata, formats, overwrite, force_unlock=force_unlock)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def export_checkpoint(
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
    check_target(output_dir, overwrite)
    RunLock.beside(output_dir, force_unlock).check()
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
        size = _image_size(model.backbone)
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


# -- measurement ---------------------------------------------------------------------------
