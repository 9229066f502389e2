"""The same SimSiam train step in PyTorch: the peer `benchmark.py train --peer torch` times ours against.

It follows the authors' PyTorch code and torchvision: ResNet-18 (CIFAR stem) or ResNet-50 in
torchvision's layout at the config's width, the config's projector and predictor, the
symmetric negative-cosine loss with stop-gradient (Eq. 4), and torch.optim.SGD (momentum,
coupled weight decay) with a second parameter group for the predictor's fixed lr. Tensors are
channels_last. PyTorch is an optional extra (`pip install -e .[torch]`); nothing else in the
package imports this module.
"""

from __future__ import annotations

import math
import time
from typing import Any

from simsiam_keras.config import IMAGENET_MEAN, IMAGENET_STD, SimSiamConfig

INSTALL_HINT = "pip install -e .[torch]"


def import_torch() -> Any:
    """The torch module, or ValueError naming the extra to install."""
    try:
        import torch
    except ImportError as error:
        raise ValueError(f"peer torch needs PyTorch, which is not installed ({error}): {INSTALL_HINT}") from None
    return torch


def check_peer(config: SimSiamConfig) -> None:
    """Raises ValueError, before anything is built, when torch is missing or has no peer for `config`."""
    import_torch()
    if config.backbone not in ("resnet18_cifar", "resnet50"):
        raise ValueError(f"the torch peer has resnet18_cifar and resnet50, not {config.backbone!r}")


def _resnet(torch: Any, depth: int, width: int, cifar_stem: bool) -> Any:
    """torchvision's ResNet-18/50 trunk (zero-init last BN of each block), global-average pooled."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, inputs: int, filters: int, stride: int, bottleneck: bool):
            super().__init__()
            out = filters * (4 if bottleneck else 1)
            if bottleneck:
                shapes = [(inputs, filters, 1, 1), (filters, filters, 3, stride), (filters, out, 1, 1)]
            else:
                shapes = [(inputs, filters, 3, stride), (filters, filters, 3, 1)]
            layers = []
            for i, (a, b, k, s) in enumerate(shapes):
                layers += [nn.Conv2d(a, b, k, s, k // 2, bias=False), nn.BatchNorm2d(b)]
                if i < len(shapes) - 1:
                    layers.append(nn.ReLU(inplace=True))
            nn.init.zeros_(layers[-1].weight)
            self.residual = nn.Sequential(*layers)
            self.downsample = None
            if stride != 1 or inputs != out:
                self.downsample = nn.Sequential(nn.Conv2d(inputs, out, 1, stride, bias=False), nn.BatchNorm2d(out))

        def forward(self, x):
            shortcut = x if self.downsample is None else self.downsample(x)
            return torch.relu(self.residual(x) + shortcut)

    blocks, bottleneck = {18: ([2, 2, 2, 2], False), 50: ([3, 4, 6, 3], True)}[depth]
    if cifar_stem:
        layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    else:
        layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                  nn.MaxPool2d(3, 2, 1)]
    inputs = width
    for stage, count in enumerate(blocks):
        for block in range(count):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(Block(inputs, width * 2**stage, stride, bottleneck))
            inputs = width * 2**stage * (4 if bottleneck else 1)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    for module in layers:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(*layers), inputs


def build_torch_simsiam(config: SimSiamConfig) -> tuple[Any, Any, Any]:
    """(encoder, predictor, optimizer) for `config`: the networks in channels_last, SGD with two groups."""
    check_peer(config)
    torch = import_torch()
    nn = torch.nn
    depth = 18 if config.backbone == "resnet18_cifar" else 50
    trunk, features = _resnet(torch, depth, config.backbone_width, cifar_stem=depth == 18)
    proj, fan_in = [], features
    for _ in range(config.proj_layers - 1):
        proj += [nn.Linear(fan_in, config.proj_hidden_dim, bias=False), nn.BatchNorm1d(config.proj_hidden_dim),
                 nn.ReLU(inplace=True)]
        fan_in = config.proj_hidden_dim
    proj += [nn.Linear(fan_in, config.proj_dim, bias=False), nn.BatchNorm1d(config.proj_dim, affine=config.proj_output_affine)]
    encoder = nn.Sequential(trunk, *proj).to(memory_format=torch.channels_last)
    predictor = nn.Sequential(
        nn.Linear(config.proj_dim, config.pred_hidden_dim, bias=False), nn.BatchNorm1d(config.pred_hidden_dim),
        nn.ReLU(inplace=True), nn.Linear(config.pred_hidden_dim, config.proj_dim),
    )
    optimizer = torch.optim.SGD(
        [{"params": encoder.parameters()}, {"params": predictor.parameters(), "fixed_lr": True}],
        lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
    )
    return encoder, predictor, optimizer


class TorchStep:
    """One SimSiam train step in PyTorch on a fixed random batch of two views, timed by `rate`."""

    def __init__(self, config: SimSiamConfig, threads: int, total_steps: int = 1000):
        torch = import_torch()
        torch.set_num_threads(threads)
        self.torch, self.config, self.threads, self.total_steps = torch, config, threads, total_steps
        torch.manual_seed(config.seed)
        self.encoder, self.predictor, self.optimizer = build_torch_simsiam(config)
        self.encoder.train()
        self.predictor.train()
        shape = (config.batch_size, 3, config.image_size, config.image_size)
        self.views = [(torch.rand(shape) * 255).contiguous(memory_format=torch.channels_last) for _ in range(2)]
        self.mean = (torch.tensor(IMAGENET_MEAN) * 255).view(1, 3, 1, 1)
        self.std = (torch.tensor(IMAGENET_STD) * 255).view(1, 3, 1, 1)
        self.steps = 0

    def step(self) -> float:
        """One step: cosine lr for the encoder group, forward both views, loss, backward, SGD."""
        torch = self.torch
        f = torch.nn.functional
        lr = self.config.lr * 0.5 * (1 + math.cos(math.pi * min(self.steps, self.total_steps) / self.total_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr if group.get("fixed_lr") else lr
        x1, x2 = ((x - self.mean) / self.std for x in self.views)
        z1, z2 = self.encoder(x1), self.encoder(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = -0.5 * (f.cosine_similarity(p1, z2.detach(), dim=-1).mean()
                       + f.cosine_similarity(p2, z1.detach(), dim=-1).mean())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return float(loss.detach())

    def rate(self, steps: int) -> float:
        """Images per second (one image = two views) over `steps` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * self.config.batch_size / (time.perf_counter() - start)
