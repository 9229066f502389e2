"""Our Keras model with a PyTorch file's weights: the layout found, the architecture read, each weight checked and set.

`load_torch_model` reads a facebookresearch, mmpretrain, solo-learn or torchvision-layout file
(without torch), builds our model with its depth, widths, stem and head sizes, and fills it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from simsiam_keras.config import SimSiamConfig, check_config, make_config
from simsiam_keras.convert.architecture import infer_architecture
from simsiam_keras.convert.layouts import (
    NORMALIZATIONS,
    SourceWeights,
    find_state_dict,
    parse_normalization,
    parse_state_dict,
)
from simsiam_keras.convert.state_dict import COUNTER, assign_torch_params, is_batch_norm, resnet_modules, torch_shapes
from simsiam_keras.convert.torch_format import read_torch_file
from simsiam_keras.evaluate.linear_probe import build_classifier
from simsiam_keras.method.model import build_simsiam
from simsiam_keras.nets.backbone import build_backbone

# The key of config.json (and classifier.json) that records a conversion.
CONVERTED = "converted_from"


@dataclasses.dataclass
class TorchModel:
    """Our model built from a PyTorch file's weights, before anything is written."""

    model: keras.Model  # a SimSiam, or a backbone + linear classifier for a linear-eval file
    backbone: keras.Model
    config: SimSiamConfig
    # Where it came from and what was done: file, layout, architecture, ignored keys, folded biases...
    info: dict[str, Any]

    @property
    def is_classifier(self) -> bool:
        return not hasattr(self.model, "backbone")


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
        if match and f"fc{match[1]}" in layers and "bias" not in torch_shapes(layers[f"fc{match[1]}"]) and bn in layers:
            # BN follows the fc and uses running statistics in eval mode:
            # BN(x + b) = (x + b - mean) / sqrt(var + eps) = (x - (mean - b)) / sqrt(var + eps),
            # and in training the batch mean absorbs b, so the bias folds exactly into the running mean.
            # (The authors froze fc.6's bias for this reason: builder.py.)
            if f"{bn}.running_mean" in weights:
                weights[f"{bn}.running_mean"] = weights[f"{bn}.running_mean"] - weights[name]
            folded.append(source.source_key(group, name))
            del weights[name]
    expected = {module: torch_shapes(layer) for module, layer in layers.items()}
    for name, value in weights.items():
        module, _, param = name.rpartition(".")
        key = source.source_key(group, name)
        if module not in expected or (param not in expected[module] and not (param == COUNTER and is_batch_norm(layers[module]))):
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
        assign_torch_params(layers[module], {p: weights[f"{module}.{p}"] for p in expected[module]})
    counters = {name: int(value) for name, value in weights.items() if name.endswith("." + COUNTER)}
    return counters, folded


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_torch_model(
    path: str | Path,
    *,
    normalization: str | None = None,
    image_size: int | None = None,
    stem_padding: int | None = None,
    layout: str | None = None,
) -> TorchModel:
    """Our model with a PyTorch file's weights, in memory.

    `path` is a `torch.save` file (zip or legacy format) read without torch. The layout
    (facebookresearch, mmpretrain, solo-learn, torchvision) is detected from the key names
    unless `layout` names it; depth, width, stem and head sizes come from the shapes. A
    file without heads gets randomly initialised ones (noted in `info["heads"]`).
    `normalization` (a NORMALIZATIONS name or `R,G,B/R,G,B`), `image_size` and `stem_padding`
    override what the layout implies. Raises ValueError naming the first bad key.
    """
    path = Path(path)
    if normalization is not None:
        parse_normalization(normalization)
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    state, info = find_state_dict(read_torch_file(path), str(path))
    source = parse_state_dict(state, str(path), layout, info)
    source.info["file"] = str(path)
    arch = infer_architecture(source)
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
