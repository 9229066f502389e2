"""Backbones: the encoder's trunk, from RGB pixels in [0, 255] to pooled features.

`resnet50` follows torchvision's layout (bottleneck blocks, stride on the 3x3 conv,
symmetric padding), as does `resnet18`; `resnet18_cifar` is the CIFAR variant used in Appendix D (3x3 stride-1
stem, no max-pool). The ImageNet mean/std normalisation is the backbone's first layer, so
everything downstream (kNN, export) feeds raw pixels.
"""

from __future__ import annotations

from typing import Sequence

import keras

from simsiam_keras.config import IMAGENET_MEAN, IMAGENET_STD
from simsiam_keras.nets import recomputed_activation, symmetric_conv, symmetric_pool
from simsiam_keras.nets.torch_defaults import batch_norm, conv_initializer

# Total downsampling of each backbone: the smallest image it can take.
MIN_IMAGE_SIZE = {"resnet50": 32, "resnet18": 32, "resnet18_cifar": 8}


def _conv(filters: int, kernel: int, stride: int, name: str, pad: int | None = None):
    def apply(x):
        pad_ = kernel // 2 if pad is None else pad
        if (stride > 1 and kernel > 1) or pad_ != kernel // 2:
            # torchvision pads symmetrically; Keras' "same" pads bottom/right only at stride 2. The
            # Identity holds the place of the ZeroPadding2D layer earlier versions had, so that their
            # backups (which number a model's layers) restore.
            x = keras.layers.Identity(name=f"{name}_pad")(x)
            return symmetric_conv.Conv2D(
                filters, kernel, strides=stride, padding="valid", symmetric_padding=pad_, use_bias=False,
                kernel_initializer=conv_initializer(), name=name,
            )(x)
        return keras.layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False,
            kernel_initializer=conv_initializer(), name=name,
        )(x)

    return apply


def _bn_relu_conv(x, filters: int, kernel: int, stride: int, sync_bn: bool, name: str, index: int):
    """bn{index} -> relu{index} -> conv{index + 1} of a block; where the conv has stride 1, the ReLU's
    output is recomputed in the backward instead of kept (nets/recomputed_activation.py)."""
    bn = batch_norm(sync_bn, name=f"{name}_bn{index}")
    conv_name, relu_name = f"{name}_conv{index + 1}", f"{name}_relu{index}"
    if stride > 1:
        return _conv(filters, kernel, stride, conv_name)(keras.layers.ReLU(name=relu_name)(bn(x)))
    relu = recomputed_activation.ReLU(name=relu_name)
    conv = recomputed_activation.Conv2D(
        filters, kernel, padding="same", use_bias=False, kernel_initializer=conv_initializer(), name=conv_name,
    )
    return conv(relu(bn(x)))  # linked by `resnet`, as a loaded model is


def _shortcut(x, filters: int, stride: int, sync_bn: bool, name: str):
    if stride == 1 and x.shape[-1] == filters:
        return x
    x = _conv(filters, 1, stride, f"{name}_down_conv")(x)
    return batch_norm(sync_bn, name=f"{name}_down_bn")(x)


def _basic_block(x, filters: int, stride: int, sync_bn: bool, name: str):
    shortcut = _shortcut(x, filters, stride, sync_bn, name)
    y = _conv(filters, 3, stride, f"{name}_conv1")(x)
    y = _bn_relu_conv(y, filters, 3, 1, sync_bn, name, 1)
    y = batch_norm(sync_bn, zero_gamma=True, name=f"{name}_bn2")(y)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def _bottleneck_block(x, filters: int, stride: int, sync_bn: bool, name: str):
    shortcut = _shortcut(x, filters * 4, stride, sync_bn, name)
    y = _conv(filters, 1, 1, f"{name}_conv1")(x)
    y = _bn_relu_conv(y, filters, 3, stride, sync_bn, name, 1)
    y = _bn_relu_conv(y, filters * 4, 1, 1, sync_bn, name, 2)
    y = batch_norm(sync_bn, zero_gamma=True, name=f"{name}_bn3")(y)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def _normalized_input(image_size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = keras.layers.Normalization(
        mean=[255.0 * m for m in mean],
        variance=[(255.0 * s) ** 2 for s in std],
        name="normalize",
    )(inputs)
    return inputs, x


def resnet(
    depth: int, image_size: int, width: int = 64, cifar_stem: bool = False, sync_bn: bool = False,
    name: str | None = None, stem_padding: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
) -> keras.Model:
    """torchvision-style ResNet-18/50 trunk with global average pooling; `width` scales every stage.

    `stem_padding` overrides the first conv's kernel // 2; `mean`/`std` (per channel, [0, 1] scale)
    are the input normalisation.
    """
    blocks, block_fn = {18: ([2, 2, 2, 2], _basic_block), 50: ([3, 4, 6, 3], _bottleneck_block)}[depth]
    inputs, x = _normalized_input(image_size, mean, std)
    if cifar_stem:
        x = _conv(width, 3, 1, "stem_conv", stem_padding)(x)
        x = keras.layers.ReLU(name="stem_relu")(batch_norm(sync_bn, name="stem_bn")(x))
    else:
        x = _conv(width, 7, 2, "stem_conv", stem_padding)(x)
        x = keras.layers.ReLU(name="stem_relu")(batch_norm(sync_bn, name="stem_bn")(x))
        # Zero padding equals PyTorch's -inf padding here: the input is post-ReLU. The Identity holds
        # the place of the ZeroPadding2D layer earlier versions had, as in _conv.
        x = keras.layers.Identity(name="stem_pool_pad")(x)
        x = symmetric_pool.MaxPooling2D(3, strides=2, symmetric_padding=1, name="stem_pool")(x)
    for stage, count in enumerate(blocks):
        for block in range(count):
            stride = 2 if stage > 0 and block == 0 else 1
            x = block_fn(x, width * 2**stage, stride, sync_bn, f"stage{stage + 1}_block{block + 1}")
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, features, name=name or f"resnet{depth}")
    recomputed_activation.link_chains(model)
    return model


def check_backbone(name: str, image_size: int, width: int = 64) -> None:
    """Raises ValueError, before anything is built, for an unknown name, a bad width or a too-small image.

    keras.applications models check their own minimum image size when they are built.
    """
    if name not in MIN_IMAGE_SIZE:
        application = getattr(keras.applications, name, None)
        if application is None or not callable(application) or name.startswith("_"):
            raise ValueError(
                f"unknown backbone {name!r}: use resnet50, resnet18, resnet18_cifar or a keras.applications name such as ResNet50V2"
            )
    if image_size < MIN_IMAGE_SIZE.get(name, 1):
        raise ValueError(
            f"image_size {image_size} is too small for {name}: it needs at least {MIN_IMAGE_SIZE.get(name, 1)} pixels"
        )
    if width < 1:
        raise ValueError(f"backbone_width must be positive, got {width}")


def build_backbone(
    name: str, image_size: int, width: int = 64, sync_bn: bool = False, stem_padding: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
) -> keras.Model:
    """A backbone by name: `resnet50`, `resnet18`, `resnet18_cifar`, or any `keras.applications` model (random init).

    `mean`/`std` are the input normalisation (per channel, [0, 1] scale); `stem_padding` (ResNets
    only) overrides the first conv's padding.
    """
    check_backbone(name, image_size, width)
    options = dict(sync_bn=sync_bn, name=name, stem_padding=stem_padding, mean=mean, std=std)
    if name == "resnet50":
        return resnet(50, image_size, width, **options)
    if name == "resnet18":
        return resnet(18, image_size, width, **options)
    if name == "resnet18_cifar":
        return resnet(18, image_size, width, cifar_stem=True, **options)
    application = getattr(keras.applications, name)
    inputs, x = _normalized_input(image_size, mean, std)
    trunk = application(include_top=False, weights=None, input_shape=(image_size, image_size, 3), pooling="avg")
    return keras.Model(inputs, trunk(x), name=name)
