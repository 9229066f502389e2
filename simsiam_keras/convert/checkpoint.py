"""SimSiam weights between PyTorch checkpoints and our Keras models, matched by layer and variable names.

`from_torch` reads a facebookresearch, mmpretrain, solo-learn or torchvision-layout checkpoint
(depth, widths, stem, head sizes read from its shapes), builds our model with its weights and
writes a run directory or an export folder. `to_torch` writes one of our backbones as a
torchvision `state_dict` (`.pth`) or as the `.pkl` detectron2 reads. Neither needs PyTorch.

Keras and PyTorch store the same numbers in other orders: a conv kernel is (kh, kw, in, out)
here and (out, in, kh, kw) there, a dense kernel (in, out) here and (out, in) there; BN's
gamma/beta/moving_mean/moving_variance are weight/bias/running_mean/running_var.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from simsiam_keras.config import SimSiamConfig, check_config, make_config
from simsiam_keras.convert.layouts import (
    NORMALIZATIONS,
    SourceWeights,
    find_state_dict,
    parse_normalization,
    parse_state_dict,
)
from simsiam_keras.convert.torch_format import read_torch_file, write_numpy_pickle, write_torch_file
from simsiam_keras.evaluate.linear_probe import build_classifier, save_classifier
from simsiam_keras.export import export as export_lib
from simsiam_keras.export.load import load_keras_file, read_simsiam_backbone
from simsiam_keras.method.model import build_simsiam
from simsiam_keras.method.optimizers import make_optimizers
from simsiam_keras.nets.backbone import build_backbone

TORCH_FORMATS = ("torchvision", "detectron2")
# BN statistics PyTorch counts and Keras does not keep.
COUNTER = "num_batches_tracked"
_KERAS_TO_TORCH = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                   "moving_mean": "running_mean", "moving_variance": "running_var"}
# Our ResNets: (depth, stem kernel) -> the backbone's name.
RESNETS = {(50, 7): "resnet50", (18, 7): "resnet18", (18, 3): "resnet18_cifar"}
_BLOCKS = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}
# The key of config.json (and classifier.json) that records a conversion.
CONVERTED = "converted_from"


# -- one layer's weights in PyTorch's names and layouts ------------------------------------


def _variables(layer: keras.layers.Layer) -> dict[str, Any]:
    return {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}


def torch_params(layer: keras.layers.Layer) -> dict[str, np.ndarray]:
    """A conv, dense or BN layer's weights under PyTorch's names, in PyTorch's layouts."""
    params = {}
    for name, variable in _variables(layer).items():
        value = keras.ops.convert_to_numpy(variable)
        if name == "kernel":
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        params[_KERAS_TO_TORCH[name]] = np.ascontiguousarray(value)
    return params


def _is_batch_norm(layer: keras.layers.Layer) -> bool:
    return "moving_mean" in _variables(layer)


def _expected_shapes(layer: keras.layers.Layer) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, variable in _variables(layer).items():
        shape = tuple(variable.shape)
        if name == "kernel":
            shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
        shapes[_KERAS_TO_TORCH[name]] = shape
    return shapes


def _assign(layer: keras.layers.Layer, params: Mapping[str, np.ndarray]) -> None:
    for name, variable in _variables(layer).items():
        value = np.asarray(params[_KERAS_TO_TORCH[name]])
        if name == "kernel":
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
        variable.assign(value.astype(variable.dtype))


# -- our ResNets in torchvision's names ----------------------------------------------------


def resnet_modules(backbone: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """(torchvision module name, Keras layer) for each conv and BN of one of our ResNets, in torchvision's order."""
    found = []
    for layer in backbone.layers:
        if not layer.weights:
            continue
        name = layer.name
        if name in ("stem_conv", "stem_bn"):
            found.append(((0, 0, name == "stem_bn"), "conv1" if name == "stem_conv" else "bn1", layer))
            continue
        match = re.fullmatch(r"stage(\d+)_block(\d+)_(conv|bn)(\d)", name)
        down = re.fullmatch(r"stage(\d+)_block(\d+)_down_(conv|bn)", name)
        if match:
            stage, block, kind, k = int(match[1]), int(match[2]), match[3], int(match[4])
            found.append(((stage, block, 2 * k + (kind == "bn")), f"layer{stage}.{block - 1}.{kind}{k}", layer))
        elif down:
            stage, block, kind = int(down[1]), int(down[2]), down[3]
            found.append(((stage, block, 10 + (kind == "bn")), f"layer{stage}.{block - 1}.downsample.{int(kind == 'bn')}", layer))
        else:
            raise ValueError(
                f"backbone {backbone.name!r} has a layer {name!r} with weights that no torchvision ResNet has: "
                "only resnet50, resnet18 and resnet18_cifar convert"
            )
    return [(module, layer) for _, module, layer in sorted(found, key=lambda item: item[0])]


def torchvision_state_dict(backbone: keras.Model, counters: Mapping[str, int] | int = 0) -> "collections.OrderedDict[str, np.ndarray]":
    """The backbone as torchvision's ResNet `state_dict` without `fc`: float32 arrays, keys in torchvision's order.

    `counters` is each BN's `num_batches_tracked` (a number for all, or per `layerN...num_batches_tracked` key).
    """
    state: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    for module, layer in resnet_modules(backbone):
        for param, value in torch_params(layer).items():
            state[f"{module}.{param}"] = value
        if _is_batch_norm(layer):
            count = counters if isinstance(counters, int) else counters.get(f"{module}.{COUNTER}", 0)
            state[f"{module}.{COUNTER}"] = np.array(count, np.int64)
    return state


def detectron2_checkpoint(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """torchvision names renamed as MoCo's detection/convert-pretrain-to-detectron2.py does, in the dict detectron2 reads."""
    model = {}
    for key, value in state.items():
        new = key if "layer" in key else "stem." + key
        for t in (1, 2, 3, 4):
            new = new.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            new = new.replace(f"bn{t}", f"conv{t}.norm")
        new = new.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        model[new] = value
    return {"model": model, "__author__": "simsiam_keras", "matching_heuristics": True}


# -- reading a checkpoint's architecture ---------------------------------------------------


@dataclasses.dataclass
class TorchModel:
    """Our model built from a PyTorch checkpoint, before anything is written."""

    model: keras.Model  # a SimSiam, or a backbone + linear classifier for a linear-eval checkpoint
    backbone: keras.Model
    config: SimSiamConfig
    # Where it came from and what was done: file, layout, architecture, ignored keys, folded biases...
    info: dict[str, Any]

    @property
    def is_classifier(self) -> bool:
        return not hasattr(self.model, "backbone")


def _architecture(source: SourceWeights) -> dict[str, Any]:
    """Depth, width and stem of the backbone and the heads' sizes, read from the weights' shapes."""
    backbone = source.groups["backbone"]
    if not backbone:
        raise ValueError(f"{source.info['file']}: no backbone weights (no conv1, layer1...layer4 keys)")
    if "conv1.weight" not in backbone:
        raise ValueError(f"{source.info['file']}: missing key {source.source_key('backbone', 'conv1.weight')!r}")
    stem = backbone["conv1.weight"].shape
    if len(stem) != 4 or stem[1] != 3 or stem[2] != stem[3] or stem[2] not in (3, 7):
        raise ValueError(f"{source.info['file']}: key {source.source_key('backbone', 'conv1.weight')!r} has shape "
                         f"{stem}, expected (width, 3, 7, 7) or a CIFAR stem (width, 3, 3, 3)")
    blocks = [1 + max((int(m[1]) for k in backbone if (m := re.match(rf"layer{s}\.(\d+)\.", k))), default=-1)
              for s in (1, 2, 3, 4)]
    bottleneck = "layer1.0.conv3.weight" in backbone
    depth = 50 if bottleneck else 18
    name = RESNETS.get((depth, stem[2])) if blocks == _BLOCKS[depth] else None
    if name is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ValueError(
            f"{source.info['file']}: a ResNet with {blocks} {kind} blocks per stage and a {stem[2]}x{stem[2]} stem; "
            "only ResNet-50 (7x7 stem), ResNet-18 (7x7) and CIFAR ResNet-18 (3x3) convert"
        )
    arch: dict[str, Any] = {"backbone": name, "backbone_width": int(stem[0]), "stem_kernel": int(stem[2])}
    projector = source.groups["projector"]
    layers = sorted(int(m[1]) for k in projector if (m := re.fullmatch(r"fc(\d+)\.weight", k)))
    if layers:
        if layers != list(range(1, len(layers) + 1)):
            raise ValueError(f"{source.info['file']}: the projector's linear layers are {layers}, not 1..{len(layers)}")
        arch["proj_layers"] = len(layers)
        arch["proj_dim"] = int(projector[f"fc{len(layers)}.weight"].shape[0])
        arch["proj_hidden_dim"] = int(projector["fc1.weight"].shape[0]) if len(layers) > 1 else arch["proj_dim"]
        last = f"bn{len(layers)}"
        if f"{last}.running_mean" not in projector:
            raise ValueError(f"{source.info['file']}: missing key {source.source_key('projector', last + '.running_mean')!r} "
                             "(the projector ends with BN, Table 3c)")
        arch["proj_output_affine"] = f"{last}.weight" in projector
    if "fc1.weight" in source.groups["predictor"]:
        arch["pred_hidden_dim"] = int(source.groups["predictor"]["fc1.weight"].shape[0])
    return arch


def _load_group(
    source: SourceWeights, group: str, layers: Mapping[str, keras.layers.Layer], order: Sequence[str]
) -> tuple[dict[str, int], list[str]]:
    """Checks a group's weights against the Keras layers (unknown key, shape, missing key) and assigns them.

    A fc's bias followed by BN is folded into the BN's running mean; returns the BN counters and
    the folded biases' keys.
    """
    weights = dict(source.groups[group])
    folded = []
    for name in list(weights):
        match = re.fullmatch(r"fc(\d+)\.bias", name)
        bn = f"bn{match[1]}" if match else None
        if match and f"fc{match[1]}" in layers and "bias" not in _expected_shapes(layers[f"fc{match[1]}"]) and bn in layers:
            # BN follows the fc and uses running statistics in eval mode:
            # BN(x + b) = (x + b - mean) / sqrt(var + eps) = (x - (mean - b)) / sqrt(var + eps),
            # and in training the batch mean absorbs b, so the bias folds exactly into the running mean.
            # (The authors froze fc.6's bias for this reason: builder.py.)
            if f"{bn}.running_mean" in weights:
                weights[f"{bn}.running_mean"] = weights[f"{bn}.running_mean"] - weights[name]
            folded.append(source.source_key(group, name))
            del weights[name]
    expected = {module: _expected_shapes(layer) for module, layer in layers.items()}
    for name, value in weights.items():
        module, _, param = name.rpartition(".")
        key = source.source_key(group, name)
        if module not in expected or (param not in expected[module] and not (param == COUNTER and _is_batch_norm(layers[module]))):
            raise ValueError(f"{source.info['file']}: unexpected key {key!r}: our {group} has no such weight "
                             f"(a {source.info['architecture']['backbone']} with the checkpoint's sizes)")
        wanted = () if param == COUNTER else expected[module][param]
        if value.shape != wanted:
            raise ValueError(f"{source.info['file']}: key {key!r} has shape {value.shape}, expected {wanted}")
    for module in order:
        for param in expected[module]:
            if f"{module}.{param}" not in weights:
                if param == "bias" and group == "predictor":
                    weights[f"{module}.bias"] = np.zeros(expected[module]["bias"], np.float32)
                    continue
                raise ValueError(f"{source.info['file']}: missing key {source.source_key(group, f'{module}.{param}')!r}")
    for module in order:
        _assign(layers[module], {p: weights[f"{module}.{p}"] for p in expected[module]})
    counters = {name: int(value) for name, value in weights.items() if name.endswith("." + COUNTER)}
    return counters, folded


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_torch_model(
    checkpoint: str | Path,
    *,
    normalization: str | None = None,
    image_size: int | None = None,
    stem_padding: int | None = None,
    layout: str | None = None,
) -> TorchModel:
    """Our model with a PyTorch checkpoint's weights, in memory.

    `checkpoint` is a `torch.save` file (zip or legacy format) read without torch. The layout
    (facebookresearch, mmpretrain, solo-learn, torchvision) is detected from the key names
    unless `layout` names it; depth, width, stem and head sizes come from the shapes. A
    checkpoint without heads gets randomly initialised ones (noted in `info["heads"]`).
    `normalization` (a NORMALIZATIONS name or `R,G,B/R,G,B`), `image_size` and `stem_padding`
    override what the layout implies. Raises ValueError naming the first bad key.
    """
    path = Path(checkpoint)
    if normalization is not None:
        parse_normalization(normalization)
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    state, info = find_state_dict(read_torch_file(path), str(path))
    source = parse_state_dict(state, str(path), layout, info)
    source.info["file"] = str(path)
    arch = _architecture(source)
    source.info["architecture"] = arch
    cifar = arch.pop("stem_kernel") == 3
    spec = normalization or source.layout.normalization[cifar]
    mean, std = parse_normalization(spec)
    if stem_padding is None and cifar:
        stem_padding = source.layout.cifar_stem_padding
    heads = "converted" if source.groups["projector"] else "random: the checkpoint has no projector and predictor"
    if source.groups["projector"] and not source.groups["predictor"]:
        heads = "projector converted, predictor random: the checkpoint has none"
        arch["pred_hidden_dim"] = max(1, arch["proj_dim"] // 4)
    # Which data the weights saw is not in the file: the run's dataset is "unknown".
    config = make_config(
        "cifar" if cifar else "imagenet", dataset="unknown", image_size=image_size or (32 if cifar else 224),
        stem_padding=stem_padding, input_mean=tuple(mean), input_std=tuple(std), **arch,
    )
    check_config(config)
    classifier = source.groups["classifier"]
    if classifier:
        if "head.weight" not in classifier or classifier["head.weight"].ndim != 2:
            raise ValueError(f"{path}: the linear classifier needs {source.source_key('classifier', 'head.weight')!r} "
                             "(classes x features)")
        backbone = build_backbone(config.backbone, config.image_size, config.backbone_width, stem_padding=config.stem_padding,
                                  mean=config.input_mean, std=config.input_std)
        model = build_classifier(backbone, int(classifier["head.weight"].shape[0]))
        heads = "linear classifier converted"
        _load_group(source, "classifier", {"head": model.get_layer("head")}, ["head"])
    else:
        model = build_simsiam(config)
        backbone = model.backbone
    modules = resnet_modules(backbone)
    counters, folded = _load_group(source, "backbone", dict(modules), [m for m, _ in modules])
    if not classifier and source.groups["projector"]:
        layers = {layer.name: layer for layer in model.projector.layers if layer.weights}
        folded += _load_group(source, "projector", layers, list(layers))[1]
    if not classifier and source.groups["predictor"]:
        layers = {layer.name: layer for layer in model.predictor.layers if layer.weights}
        folded += _load_group(source, "predictor", layers, list(layers))[1]
    mean_text = ", ".join(f"{v:g}" for v in mean)
    std_text = ", ".join(f"{v:g}" for v in std)
    info = {
        "file": str(path.resolve()),
        "sha256": _sha256(path),
        "layout": source.layout.name,
        **{k: v for k, v in source.info.items() if k in ("epoch", "arch", "global_step")},
        "architecture": {**arch, "stem_padding": config.stem_padding, "image_size": config.image_size},
        "normalization": {"name": spec if spec in NORMALIZATIONS else "custom", "mean": list(mean), "std": list(std),
                          "formula": f"(pixels / 255 - [{mean_text}]) / [{std_text}]"},
        "heads": heads,
        "ignored_keys": source.ignored,
        "folded_biases": folded,
        COUNTER: counters,
    }
    return TorchModel(model, backbone, config, info)


# -- writing -------------------------------------------------------------------------------


@dataclasses.dataclass
class Conversion:
    output: Path
    kind: str  # "run", "classifier" or "export"
    info: dict[str, Any]
    seconds: float
    export: export_lib.ExportResult | None = None


def _check_output(output: Path, overwrite: bool, folder: bool) -> None:
    if output.exists() and not overwrite:
        raise FileExistsError(f"output {output} already exists; pass `overwrite` to replace it")
    if output.exists() and output.is_dir() != folder:
        raise FileExistsError(f"output {output} exists and is not a {'folder' if folder else 'file'}")


def from_torch(
    checkpoint: str | Path,
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
    """Converts a PyTorch SimSiam checkpoint and writes it; nothing is written if anything fails.

    Writes a run directory (`model.keras` with both heads and both optimizers compiled as
    pretraining does, and `config.json` with a `converted_from` record), for a linear-eval
    checkpoint a folder with `classifier.keras` and `classifier.json`, or with `backbone_only`
    an export folder exactly as `export.export_backbone` writes it (SavedModel, ONNX,
    metadata.json; parity checked).
    """
    start = time.time()
    output = Path(output)
    _check_output(output, overwrite, folder=True)
    if backbone_only:
        export_lib.parse_formats(formats)
    converted = load_torch_model(
        checkpoint, normalization=normalization, image_size=image_size, stem_padding=stem_padding, layout=layout
    )
    settings = {**converted.config.to_dict(), "output_dir": None}
    if backbone_only:
        result = export_lib.export_backbone(converted.backbone, output, config=settings, formats=formats,
                                            overwrite=overwrite, source=converted.info)
        return Conversion(output, "export", converted.info, time.time() - start, result)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    umask = os.umask(0)
    os.umask(umask)
    # mkdtemp makes the folder private; a run directory gets the permissions os.makedirs gives.
    staging.chmod(0o777 & ~umask)
    try:
        if converted.is_classifier:
            classes = int(converted.model.output_shape[-1])
            save_classifier(converted.model, str(staging), [str(i) for i in range(classes)], str(checkpoint),
                            converted.config.backbone, {"name": "converted from PyTorch"})
            sidecar = staging / "classifier.json"
            sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), CONVERTED: converted.info}, indent=2))
            kind = "classifier"
        else:
            # The checkpoint's optimizer state is not converted: both optimizers start afresh.
            converted.model.compile(*make_optimizers(converted.config, converted.config.steps_per_epoch or 1))
            converted.model.save(staging / "model.keras")
            settings = {**converted.config.to_dict(), "output_dir": str(output), CONVERTED: converted.info}
            (staging / "config.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
            kind = "run"
        export_lib.replace_with(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Conversion(output, kind, converted.info, time.time() - start)


@dataclasses.dataclass
class TorchExport:
    output: Path
    format: str
    keys: int
    normalization: dict[str, Any] | None
    seconds: float


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
    encoder optimizer's step count (two views per step), or the converted checkpoint's own.
    """
    start = time.time()
    if format not in TORCH_FORMATS:
        raise ValueError(f"format must be one of {', '.join(TORCH_FORMATS)}, got {format!r}")
    output = Path(output)
    _check_output(output, overwrite, folder=False)
    backbone, counters = _keras_backbone(model)
    state = torchvision_state_dict(backbone, counters)
    if format == "detectron2":
        write_numpy_pickle(detectron2_checkpoint(state), output)
    else:
        write_torch_file(state, output)
    return TorchExport(output, format, len(state), export_lib.input_normalisation(backbone), time.time() - start)
