"""Which of our models a PyTorch file holds: the backbone's depth, width and stem and the heads' sizes, from shapes."""

from __future__ import annotations

import re
from typing import Any

from simsiam_keras.convert.layouts import SourceWeights

# Our ResNets: (depth, stem kernel) -> the backbone's name.
RESNETS = {(50, 7): "resnet50", (18, 7): "resnet18", (18, 3): "resnet18_cifar"}
_BLOCKS = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}


def infer_architecture(source: SourceWeights) -> dict[str, Any]:
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
