"""The writers, one per format: the SavedModel, ONNX converted from it, and the call-out to LiteRT.

Each takes a float32 model of square RGB images (`float32_copy` makes one of a mixed-precision
model) and the function giving its named outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.export import litert
from simsiam_keras.export.parity import PARITY_BATCHES, compare_outputs, parity_images
from simsiam_keras.saved_run import INPUT_NAME, OUTPUT_NAME, SAVED_MODEL_DIR, SIGNATURE

ONNX_OPSET = 17

Outputs = Callable[[tf.Tensor], dict[str, tf.Tensor]]


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


def image_size(model: keras.Model) -> int:
    """The side of the square RGB images the model takes; ValueError for any other input."""
    shape = model.input_shape
    if not (len(shape) == 4 and shape[1] and shape[1] == shape[2] and shape[3] == 3):
        raise ValueError(f"expected a model of square RGB images (None, S, S, 3), got input shape {shape}")
    return int(shape[1])


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
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


def write_saved_model(model: keras.Model, outputs: Outputs, path: Path) -> None:
    """A SavedModel whose `serve` signature maps `images` to the named outputs.

    Written with keras.export.ExportArchive, which tracks the model's variables, so
    `keras.layers.TFSMLayer(..., trainable=True)` can fine-tune them.
    """
    size = image_size(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE,
        tf.function(outputs, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)]),
    )
    with quiet_tensorflow():
        archive.write_out(str(path), verbose=False)


def write_onnx(saved_model: Path, path: Path) -> None:
    """ONNX (opset 17, dynamic batch) converted by tf2onnx from the SavedModel's `serve` signature.

    Not tf2onnx.convert.from_keras (broken on Keras 3, onnx/tensorflow-onnx#2448), and not
    keras' `model.export(format="onnx")`: with Keras 3.15 it turns the Normalization layer's
    constant mean and variance into extra required graph inputs.
    """
    import onnx
    from tf2onnx import convert, tf_loader

    with quiet_tensorflow():
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


def write_litert(model: keras.Model, outputs: Outputs, staging: Path, reference: Mapping[str, np.ndarray],
                 images: np.ndarray, options: LiteRTOptions) -> dict[str, Any]:
    """The float32 `.tflite` (parity-checked) and the quantised ones (drift-checked), with sizes and latencies.

    Converted from the SavedModel already in `staging`; returns metadata.json's `litert` entry
    with the float32 model's parity figures under `parity`.
    """
    size = image_size(model)
    saved_model = staging / SAVED_MODEL_DIR
    files: dict[str, Any] = {}
    with quiet_tensorflow():
        flat = litert.convert(saved_model, SIGNATURE)
    (staging / litert.LITERT_FILES["float32"]).write_bytes(flat)
    parity = compare_outputs(reference, litert.run_litert(staging / litert.LITERT_FILES["float32"], images,
                                                          PARITY_BATCHES))
    quantized: dict[str, Any] = {}
    for name in ("float32", *options.quantize):
        path = staging / litert.LITERT_FILES[name]
        if name != "float32":
            with quiet_tensorflow():
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
