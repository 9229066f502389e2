"""Our ResNets' weights under PyTorch's names and layouts: torchvision's `state_dict` and detectron2's.

Keras and PyTorch store the same numbers in other orders: a conv kernel is (kh, kw, in, out)
here and (out, in, kh, kw) there, a dense kernel (in, out) here and (out, in) there; BN's
gamma/beta/moving_mean/moving_variance are weight/bias/running_mean/running_var.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Mapping

import keras
import numpy as np

# BN statistics PyTorch counts and Keras does not keep.
COUNTER = "num_batches_tracked"
_KERAS_TO_TORCH = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                   "moving_mean": "running_mean", "moving_variance": "running_var"}


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


def is_batch_norm(layer: keras.layers.Layer) -> bool:
    """Whether the layer is a BatchNormalization (it has running statistics)."""
    return "moving_mean" in _variables(layer)


def torch_shapes(layer: keras.layers.Layer) -> dict[str, tuple[int, ...]]:
    """The shape of each of a layer's weights under PyTorch's names, in PyTorch's layouts."""
    shapes = {}
    for name, variable in _variables(layer).items():
        shape = tuple(variable.shape)
        if name == "kernel":
            shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
        shapes[_KERAS_TO_TORCH[name]] = shape
    return shapes


def assign_torch_params(layer: keras.layers.Layer, params: Mapping[str, np.ndarray]) -> None:
    """Sets a layer's weights from PyTorch's names and layouts (the inverse of `torch_params`)."""
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
        if is_batch_norm(layer):
            count = counters if isinstance(counters, int) else counters.get(f"{module}.{COUNTER}", 0)
            state[f"{module}.{COUNTER}"] = np.array(count, np.int64)
    return state


def detectron2_weights(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
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
