"""The projection MLP (end of the encoder f) and the prediction MLP h (Sec. 3, Table 3)."""

from __future__ import annotations

import keras

from simsiam_keras.nets.torch_defaults import batch_norm, dense


def projector(
    input_dim: int, hidden_dim: int = 2048, output_dim: int = 2048, num_layers: int = 3, sync_bn: bool = False,
    output_affine: bool = False,
) -> keras.Sequential:
    """fc-BN-ReLU x (num_layers-1), then fc-BN: BN after every fc including the output (Table 3c).

    fcs followed by BN have no bias; there is no ReLU at the output. 3 layers for ImageNet, 2 for CIFAR.
    The output BN has no scale and offset unless `output_affine`, as in the authors' code.
    """
    if num_layers < 1:
        raise ValueError(f"the projector needs at least one layer, got {num_layers}")
    layers: list[keras.layers.Layer] = [keras.Input((input_dim,))]
    fan_in = input_dim
    for i in range(num_layers - 1):
        layers += [
            dense(hidden_dim, fan_in, use_bias=False, name=f"fc{i + 1}"),
            batch_norm(sync_bn, name=f"bn{i + 1}"),
            keras.layers.ReLU(name=f"relu{i + 1}"),
        ]
        fan_in = hidden_dim
    layers += [
        dense(output_dim, fan_in, use_bias=False, name=f"fc{num_layers}"),
        batch_norm(sync_bn, affine=output_affine, name=f"bn{num_layers}"),
    ]
    return keras.Sequential(layers, name="projector")


def predictor(dim: int = 2048, hidden_dim: int = 512, sync_bn: bool = False) -> keras.Sequential:
    """Bottleneck MLP d -> d/4 -> d: BN on the hidden layer only (BN at the output is unstable, Table 3d)."""
    return keras.Sequential(
        [
            keras.Input((dim,)),
            dense(hidden_dim, dim, use_bias=False, name="fc1"),
            batch_norm(sync_bn, name="bn1"),
            keras.layers.ReLU(name="relu1"),
            dense(dim, hidden_dim, use_bias=True, name="fc2"),
        ],
        name="predictor",
    )
