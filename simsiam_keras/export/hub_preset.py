"""A KerasHub preset of the backbone: `keras_hub.models.Backbone.from_preset(dir)` and
`keras_hub.models.ImageClassifier.from_preset(dir, num_classes=N)` load it.

KerasHub's `ResNetBackbone` has torchvision's v1.5 layout (stride on the 3x3 conv, symmetric
padding, BN eps 1e-5), so our `resnet50` and `resnet18` at width 64 map onto it weight for weight.
Its stem is hard-coded (7x7 stride 2 and a max-pool) and its first stage has 64 filters, so the
CIFAR stem and narrower widths cannot be expressed: those are refused with the reason.

The preset's image converter holds the run's normalisation (pixels in [0, 255] times `scale`
plus `offset`) and resizes to the training image size; the backbone outputs the last feature
map, which the classifier (and our `features`) average-pools.

    NAME/keras_hub/  config.json, model.weights.h5, image_converter.json, preprocessor.json,
                     metadata.json (KerasHub's own), README.md (the model card)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import keras
import numpy as np

PRESET_DIR = "keras_hub"
INSTALL_HINT = "pip install 'simsiam-keras[keras-hub]'"
# Ours -> ResNetBackbone's arguments, by depth.
LAYOUTS = {
    "resnet50": dict(stackwise_num_blocks=[3, 4, 6, 3], block_type="bottleneck_block"),
    "resnet18": dict(stackwise_num_blocks=[2, 2, 2, 2], block_type="basic_block"),
}
HUB_WIDTH = 64


def require_keras_hub():
    """The keras_hub module, or a one-line ValueError saying how to install it."""
    try:
        import keras_hub
    except ImportError as error:
        raise ValueError(f"format keras-hub needs the keras-hub package ({error}); {INSTALL_HINT}") from None
    return keras_hub


def _layer(model: keras.Model, name: str) -> keras.layers.Layer | None:
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def check_expressible(backbone: keras.Model) -> str:
    """The backbone's KerasHub layout (`resnet50` or `resnet18`), or a ValueError naming why it has none."""
    name = backbone.name
    stem = _layer(backbone, "stem_conv")
    if name == "resnet18_cifar" or (stem is not None and stem.kernel_size == (3, 3)):
        raise ValueError(
            f"backbone {name}: format keras-hub cannot express the CIFAR stem (3x3, stride 1, no max-pool): "
            "KerasHub's ResNetBackbone hard-codes the 7x7 stride-2 stem; export litert, saved_model or onnx instead"
        )
    if name not in LAYOUTS or stem is None:
        raise ValueError(f"backbone {name}: format keras-hub supports {' and '.join(LAYOUTS)} "
                         "(KerasHub's ResNetBackbone); export litert, saved_model or onnx instead")
    if stem.filters != HUB_WIDTH:
        raise ValueError(f"backbone {name} has width {stem.filters}: KerasHub's ResNetBackbone fixes the first stage "
                         f"at {HUB_WIDTH} filters (train with backbone_width 64)")
    pad = _layer(backbone, "stem_conv_pad")  # a ZeroPadding2D in models built before the padding moved into the conv
    padding = getattr(stem, "symmetric_padding", 0)
    if not padding and pad is not None and tuple(getattr(pad, "padding", ())) == ((3, 3), (3, 3)):
        padding = 3
    if padding != 3:
        raise ValueError(f"backbone {name}: its stem padding is not KerasHub's 3 pixels")
    return name


def hub_layer_name(name: str) -> str:
    """Our layer name -> ResNetBackbone's: `stage2_block1_conv2` -> `stack1_block0_2_conv`."""
    if name.startswith("stem_"):
        return "conv1_" + name[len("stem_"):]
    stage, block, rest = re.fullmatch(r"stage(\d+)_block(\d+)_(.+)", name).groups()
    part = {"down_conv": "0_conv", "down_bn": "0_bn"}.get(rest) or re.sub(r"^(conv|bn)(\d)$", r"\2_\1", rest)
    return f"stack{int(stage) - 1}_block{int(block) - 1}_{part}"


def normalisation(backbone: keras.Model) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std on the [0, 255] scale, read from the backbone's Normalization layer."""
    config = backbone.get_layer("normalize").get_config()
    return np.ravel(config["mean"]).astype(np.float64), np.sqrt(np.ravel(config["variance"]).astype(np.float64))


def build_hub_backbone(backbone: keras.Model):
    """A KerasHub ResNetBackbone holding `backbone`'s weights, and its image converter."""
    keras_hub = require_keras_hub()
    layout = LAYOUTS[check_expressible(backbone)]
    hub = keras_hub.models.ResNetBackbone(
        input_conv_filters=[HUB_WIDTH], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[HUB_WIDTH * 2**i for i in range(4)], stackwise_num_strides=[1, 2, 2, 2],
        image_shape=(None, None, 3), **layout,
    )
    ours = {layer.name: layer for layer in backbone.layers if layer.weights and layer.name != "normalize"}
    theirs = {layer.name: layer for layer in hub.layers if layer.weights}
    mapped = {hub_layer_name(name) for name in ours}
    if mapped != set(theirs):
        raise ValueError(f"backbone {backbone.name}: its layers do not map onto ResNetBackbone's "
                         f"({len(mapped ^ set(theirs))} differ)")
    for name, layer in ours.items():
        theirs[hub_layer_name(name)].set_weights(layer.get_weights())
    mean, std = normalisation(backbone)
    size = int(backbone.input_shape[1])
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(size, size), scale=(1.0 / std).tolist(), offset=(-mean / std).tolist()
    )
    return hub, converter


def model_card(metadata: Mapping[str, Any]) -> str:
    """README.md of the preset: what it is, how it was trained, its evaluation results, how to load it."""
    training = metadata.get("training") or {}
    lines = [
        "---", "library_name: keras-hub", "tags: [simsiam, self-supervised, image-feature-extraction]", "---", "",
        f"# SimSiam {metadata['backbone']} backbone", "",
        "Self-supervised with SimSiam (Chen & He, *Exploring Simple Siamese Representation Learning*, CVPR 2021),",
        "exported by simsiam-keras as a KerasHub `ResNetBackbone` (torchvision v1.5 layout).", "",
        f"- dataset: {training.get('dataset')}",
        f"- epochs: {training.get('epochs')}",
        f"- recipe: {', '.join(f'{k} {v}' for k, v in (training.get('recipe') or {}).items()) or 'not recorded'}",
        f"- image size: {metadata['image_size']} (the image converter resizes to it and normalises with the run's "
        f"mean {metadata['normalisation']['mean']} and std {metadata['normalisation']['std']} on [0, 255] pixels)",
        f"- features: global average pool of the last feature map, {metadata['feature_dim']} dimensions",
    ]
    if metadata.get("source"):
        source = metadata["source"]
        lines.append(f"- converted from PyTorch: {Path(str(source.get('file'))).name} ({source.get('layout')} layout, "
                     f"epoch {source.get('epoch')}, sha256 {str(source.get('sha256'))[:16]})")
    results = metadata.get("results") or []
    if results:
        lines += ["", "| evaluation | dataset | split | metric | value |", "|---|---|---|---|---|"]
        lines += [f"| {r.get('protocol')} | {r.get('dataset')} | {r.get('split')} | {r.get('metric')} | "
                  f"{r.get('value'):.4f} |" for r in results]
    else:
        lines += ["", "No kNN or linear-probe evaluation of this run was recorded (results.json)."]
    lines += [
        "", "```python", "import keras_hub", "",
        'backbone = keras_hub.models.Backbone.from_preset("PRESET")',
        'classifier = keras_hub.models.ImageClassifier.from_preset("PRESET", num_classes=10)', "```", "",
    ]
    return "\n".join(lines)


def write_preset(backbone: keras.Model, path: Path, metadata: Mapping[str, Any]) -> None:
    """Writes the KerasHub preset of a float32 backbone to `path`, with its model card."""
    keras_hub = require_keras_hub()
    hub, converter = build_hub_backbone(backbone)
    hub.save_to_preset(str(path))
    keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter).save_to_preset(str(path))
    (path / "README.md").write_text(model_card(metadata))


def preset_features(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Pooled features of a preset as KerasHub loads it: image converter, backbone, average pool."""
    keras_hub = require_keras_hub()
    hub = keras_hub.models.Backbone.from_preset(str(path))
    converter = keras_hub.layers.ImageConverter.from_preset(str(path))
    return keras.ops.convert_to_numpy(keras.ops.mean(hub(converter(images)), axis=(1, 2)))
