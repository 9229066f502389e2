"""torchvision's ResNets and SimSiam's heads in plain torch, and the checkpoint layouts the converter reads.

torchvision is not installed beside this torch, so its ResNet is rebuilt here with its exact module
names (conv1, bn1, layer1.0.conv1, ..., layer1.0.downsample.0/1, fc) and torchvision's forward
(stride on the 3x3 conv, max-pool after a 7x7 stem). `width` scales every stage, as our
backbone's does. The layout functions rename one model's `state_dict` as each PyTorch code
saves it; they are written from those codes' module names, not from the converter's tables.
"""

from __future__ import annotations

import collections

import numpy as np
import torch
from torch import nn

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SOLO_LEARN_CIFAR = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """torchvision.models.ResNet-18/50 (`stem_kernel=7`) or the CIFAR variant (3x3 stride-1 stem, no max-pool)."""

    def __init__(self, depth: int = 50, width: int = 64, stem_kernel: int = 7, stem_padding: int | None = None,
                 num_classes: int | None = 1000):
        super().__init__()
        block, counts = {18: (BasicBlock, [2, 2, 2, 2]), 50: (Bottleneck, [3, 4, 6, 3])}[depth]
        padding = stem_kernel // 2 if stem_padding is None else stem_padding
        self.conv1 = nn.Conv2d(3, width, stem_kernel, 2 if stem_kernel == 7 else 1, padding, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_kernel == 7 else nn.Identity()
        self.inplanes = width
        self.layer1 = self._make_layer(block, width, counts[0], 1)
        self.layer2 = self._make_layer(block, width * 2, counts[1], 2)
        self.layer3 = self._make_layer(block, width * 4, counts[2], 2)
        self.layer4 = self._make_layer(block, width * 8, counts[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = width * 8 * block.expansion
        self.fc = nn.Linear(self.feature_dim, num_classes) if num_classes else nn.Identity()

    def _make_layer(self, block, planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x):
        return self.fc(self.features(x))


class AuthorsSimSiam(nn.Module):
    """facebookresearch/simsiam's builder.py: the projector appended to the encoder as `fc`, the predictor beside it."""

    def __init__(self, backbone: dict, dim: int = 2048, pred_dim: int = 512, proj_layers: int = 3):
        super().__init__()
        self.encoder = ResNet(**backbone, num_classes=dim)
        prev = self.encoder.fc.weight.shape[1]
        hidden = []
        for _ in range(proj_layers - 1):
            hidden += [nn.Linear(prev, prev, bias=False), nn.BatchNorm1d(prev), nn.ReLU(inplace=True)]
        # The last fc keeps its (frozen) bias; BatchNorm1d(affine=False) follows.
        self.encoder.fc = nn.Sequential(*hidden, self.encoder.fc, nn.BatchNorm1d(dim, affine=False))
        self.encoder.fc[-2].bias.requires_grad = False
        self.predictor = nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim),
                                       nn.ReLU(inplace=True), nn.Linear(pred_dim, dim))


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BN affine terms and statistics, random fc biases and counters, so nothing is a no-op; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = module.num_features
                if module.affine:
                    module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=generator)))
            elif isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.5)
    return model.eval()


def torch_input(pixels: np.ndarray, normalization=IMAGENET) -> torch.Tensor:
    """NHWC pixels in [0, 255] -> the NCHW tensor torchvision's ToTensor + Normalize give."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in normalization)
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0 - mean) / std


def relative_error(reference, actual) -> float:
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    assert reference.shape == actual.shape
    return float(np.max(np.abs(reference - actual)) / np.max(np.abs(reference)))


# -- the layouts, as each code saves its model ---------------------------------------------


def facebookresearch(model: AuthorsSimSiam, ddp: bool = True) -> dict:
    """main_simsiam.py's save_checkpoint: the DistributedDataParallel model's keys (`module.`) and its SGD state."""
    prefix = "module." if ddp else ""
    state = collections.OrderedDict((prefix + k, v) for k, v in model.state_dict().items())
    optimizer = torch.optim.SGD([{"params": model.encoder.parameters(), "fix_lr": False},
                                 {"params": model.predictor.parameters(), "fix_lr": True}], lr=0.1, momentum=0.9)
    return {"epoch": 100, "arch": "resnet50", "state_dict": state, "optimizer": optimizer.state_dict()}


def _neck_name(index: int, param: str, head: str) -> str:
    return f"{head}.{'fc' if index % 3 == 0 else 'bn'}{index // 3}.{param}"


def mmpretrain(model: AuthorsSimSiam) -> dict:
    """mmpretrain's SimSiam: backbone.*, neck.fc0/bn0..., head.predictor.fc0/bn0/fc1, with mmengine's meta."""
    state = collections.OrderedDict()
    for key, value in model.state_dict().items():
        group, rest = key.split(".", 1)
        if key.startswith("encoder.fc."):
            index, param = key[len("encoder.fc."):].split(".", 1)
            state[_neck_name(int(index), param, "neck")] = value
        elif group == "encoder":
            state[f"backbone.{rest}"] = value
        else:
            index, param = rest.split(".", 1)
            state[_neck_name(int(index), param, "head.predictor")] = value
    return {"meta": {"epoch": 200, "mmengine_version": "0.7.0", "seed": 0}, "state_dict": state}


def solo_learn(model: AuthorsSimSiam, num_classes: int = 10, backbone_prefix: str = "backbone") -> dict:
    """solo-learn's Lightning checkpoint: backbone.* (older releases: encoder.*), projector.N, predictor.N, classifier."""
    state = collections.OrderedDict()
    for key, value in model.state_dict().items():
        if key.startswith("encoder.fc."):
            state["projector." + key[len("encoder.fc."):]] = value
        elif key.startswith("encoder."):
            state[f"{backbone_prefix}." + key[len("encoder."):]] = value
        else:
            state[key] = value
    features = model.encoder.fc[0].weight.shape[1]
    state["classifier.weight"] = torch.randn(num_classes, features)
    state["classifier.bias"] = torch.randn(num_classes)
    return {"epoch": 999, "global_step": 97000, "pytorch-lightning_version": "2.0.2", "state_dict": state,
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 999}}}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None, "kth_value": torch.tensor(float("inf")),
                                                                "dirpath": "/trained_models/simsiam"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.5, "params": [0, 1]}]}],
            "lr_schedulers": [{"base_lrs": [0.5], "last_epoch": 97000, "warmup_epochs": 10}]}


def mmpretrain_linear_eval(backbone: ResNet) -> dict:
    """mmpretrain's linear-eval ImageClassifier: backbone.* and LinearClsHead's head.fc."""
    state = collections.OrderedDict(
        (f"head.{k}" if k.startswith("fc.") else f"backbone.{k}", v) for k, v in backbone.state_dict().items()
    )
    return {"meta": {"epoch": 90}, "state_dict": state}


def linear_eval(backbone: ResNet) -> dict:
    """main_lincls.py's checkpoint: the DDP ResNet with its trained fc, best_acc1 a tensor."""
    state = collections.OrderedDict(("module." + k, v) for k, v in backbone.state_dict().items())
    return {"epoch": 90, "arch": "resnet50", "state_dict": state, "best_acc1": torch.tensor(68.1), "optimizer": {}}
