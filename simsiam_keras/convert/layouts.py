"""Where each PyTorch SimSiam code keeps its weights, mapped to one canonical set of names.

Canonical names are the Keras layer names of our heads plus PyTorch's parameter names
(`fc1.weight`, `bn1.running_mean`, ...) and torchvision's module names for the backbone
(`conv1.weight`, `layer1.0.downsample.1.running_var`, ...). The layouts:

| layout | backbone | projector | predictor |
| --- | --- | --- | --- |
| facebookresearch (`main_simsiam.py`) | `module.encoder.*` | `module.encoder.fc.{0,1,3,4,6,7}` | `module.predictor.{0,1,3}` |
| facebookresearch linear eval (`main_lincls.py`), torchvision | `module.*` / `*` | - | - (`fc` is a linear classifier) |
| mmpretrain / mmselfsup | `backbone.*` | `neck.fc{0,1,2}`, `neck.bn{0,1,2}` | `head.predictor.fc{0,1}`, `.bn0` |
| mmpretrain linear eval | `backbone.*` | - | - (`head.fc` is a linear classifier) |
| solo-learn (Lightning `.ckpt`) | `backbone.*` (older: `encoder.*`) | `projector.{0,1,3,4,6,7}` | `predictor.{0,1,3}` |

`module.` (DistributedDataParallel) is stripped when every key has it: the authors' single-GPU
saves lack it (facebookresearch/simsiam#8).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

import numpy as np

from simsiam_keras.config import IMAGENET_MEAN, IMAGENET_STD

# solo-learn normalises CIFAR-10 and CIFAR-100 alike (solo/data/classification_dataloader.py).
SOLO_LEARN_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
SOLO_LEARN_CIFAR_STD = (0.247, 0.243, 0.261)
NORMALIZATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "solo_learn_cifar": (SOLO_LEARN_CIFAR_MEAN, SOLO_LEARN_CIFAR_STD),
}
# solo-learn's CIFAR ResNets replace conv1 by Conv2d(3, 64, kernel_size=3, stride=1, padding=2).
SOLO_LEARN_CIFAR_STEM_PADDING = 2
GROUPS = ("backbone", "projector", "predictor", "classifier")
_BACKBONE_TOP = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def _sequential(rest: str) -> str | None:
    """`nn.Sequential(Linear, BN, ReLU, Linear, ...)` index -> fc{n}/bn{n}: Linear at 3k, BN at 3k+1."""
    match = re.fullmatch(r"(\d+)\.(\w+)", rest)
    if not match or int(match[1]) % 3 == 2:
        return None
    index, param = int(match[1]), match[2]
    return f"{'fc' if index % 3 == 0 else 'bn'}{index // 3 + 1}.{param}"


def _from_sequential(name: str) -> str:
    kind, number, param = re.fullmatch(r"(fc|bn)(\d+)\.(\w+)", name).groups()
    return f"{3 * (int(number) - 1) + (kind == 'bn')}.{param}"


def _numbered(rest: str) -> str | None:
    """mmpretrain's NonLinearNeck: fc0/bn0, fc1/bn1, ... -> fc1/bn1, fc2/bn2, ..."""
    match = re.fullmatch(r"(fc|bn)(\d+)\.(\w+)", rest)
    return f"{match[1]}{int(match[2]) + 1}.{match[3]}" if match else None


def _from_numbered(name: str) -> str:
    kind, number, param = re.fullmatch(r"(fc|bn)(\d+)\.(\w+)", name).groups()
    return f"{kind}{int(number) - 1}.{param}"


def _same(rest: str) -> str | None:
    return rest


def _head(rest: str) -> str | None:
    """A linear classifier's weight/bias -> our linear probe's `head` layer."""
    return f"head.{rest}"


def _from_head(name: str) -> str:
    return name[len("head."):]


def _torchvision(rest: str) -> str | None:
    """A torchvision ResNet's own names (its `fc` aside)."""
    return rest if rest.split(".")[0] in _BACKBONE_TOP else None


@dataclasses.dataclass(frozen=True)
class Rule:
    """Keys starting with `prefix` belong to `group` (None: known, not converted), renamed by `rename`."""

    prefix: str
    group: str | None
    rename: Callable[[str], str | None] = _same
    unrename: Callable[[str], str] = _same


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    rules: tuple[Rule, ...]
    # The source's input normalisation: a name in NORMALIZATIONS, for a 7x7 stem and for a 3x3 one.
    normalization: tuple[str, str] = ("imagenet", "imagenet")
    # The first conv's padding for a 3x3 stem (None: torchvision's kernel // 2).
    cifar_stem_padding: int | None = None


LAYOUTS = {
    "facebookresearch": Layout("facebookresearch", (
        Rule("encoder.fc.", "projector", _sequential, _from_sequential),
        Rule("encoder.", "backbone", _torchvision),
        Rule("predictor.", "predictor", _sequential, _from_sequential),
    )),
    "torchvision": Layout("torchvision", (
        Rule("fc.", "classifier", _head, _from_head),
        Rule("", "backbone", _torchvision),
    )),
    "mmpretrain": Layout("mmpretrain", (
        Rule("backbone.", "backbone", _torchvision),
        Rule("neck.", "projector", _numbered, _from_numbered),
        Rule("head.predictor.", "predictor", _numbered, _from_numbered),
        # LinearClsHead of mmpretrain's linear-eval ImageClassifier.
        Rule("head.fc.", "classifier", _head, _from_head),
    )),
    "solo-learn": Layout("solo-learn", (
        Rule("backbone.", "backbone", _torchvision),
        Rule("encoder.", "backbone", _torchvision),
        Rule("projector.", "projector", _sequential, _from_sequential),
        Rule("predictor.", "predictor", _sequential, _from_sequential),
        # The online linear classifier every solo-learn method trains on detached features.
        Rule("classifier.", None),
    ), normalization=("imagenet", "solo_learn_cifar"), cifar_stem_padding=SOLO_LEARN_CIFAR_STEM_PADDING),
}


@dataclasses.dataclass
class SourceWeights:
    """A checkpoint's arrays under canonical names, grouped, with where each came from."""

    layout: Layout
    groups: dict[str, dict[str, np.ndarray]]
    # Canonical "group/name" -> the checkpoint's key, for error messages.
    keys: dict[str, str]
    # The prefix stripped from every key ("module." or "").
    prefix: str
    # The rule each group's keys matched.
    rules: dict[str, Rule]
    ignored: list[str]
    # Top-level entries of the checkpoint besides the weights that say what it is (epoch, arch...).
    info: dict[str, Any]

    def source_key(self, group: str, name: str) -> str:
        """The checkpoint's key for the canonical `name` of `group`, also for a key it lacks."""
        if f"{group}/{name}" in self.keys:
            return self.keys[f"{group}/{name}"]
        rule = self.rules.get(group) or next(r for r in self.layout.rules if r.group == group)
        return self.prefix + rule.prefix + rule.unrename(name)


def find_state_dict(obj: Any, path: str) -> tuple[Mapping[str, np.ndarray], dict[str, Any]]:
    """The name -> array mapping inside a loaded checkpoint, and its plain top-level entries."""
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if state is None and isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        state = obj
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: holds no state_dict of weights")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise ValueError(f"{path}: state_dict entry {key!r} is not a tensor")
    info = {k: v for k, v in obj.items() if k != "state_dict" and isinstance(v, (int, float, str))} if state is not obj else {}
    return state, info


def detect_layout(keys: list[str]) -> str:
    """The layout whose key names these are (after `module.` is stripped)."""
    tops = {key.split(".")[0] for key in keys}
    if tops & {"neck", "head"}:
        return "mmpretrain"
    if tops & {"projector", "classifier"} or ("encoder" in tops and "predictor" not in tops):
        return "solo-learn"
    if "encoder" in tops:
        return "facebookresearch"
    if "backbone" in tops:
        return "mmpretrain"
    return "torchvision"


def parse_state_dict(state: Mapping[str, np.ndarray], path: str, layout: str | None = None,
                     info: dict[str, Any] | None = None) -> SourceWeights:
    """Splits a state_dict into canonical groups; an unknown key is a ValueError naming it."""
    keys = list(state)
    prefix = "module." if any(key.startswith("module.") for key in keys) else ""
    for key in keys:
        if not key.startswith(prefix):
            raise ValueError(f"{path}: key {key!r} lacks the 'module.' prefix every other key has")
    stripped = [key[len(prefix):] for key in keys]
    name = layout or detect_layout(stripped)
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}: choose one of {', '.join(LAYOUTS)}")
    chosen = LAYOUTS[name]
    groups: dict[str, dict[str, np.ndarray]] = {group: {} for group in GROUPS}
    sources: dict[str, str] = {}
    rules: dict[str, Rule] = {}
    ignored = []
    for key, short in zip(keys, stripped):
        rule = next((r for r in chosen.rules if short.startswith(r.prefix)), None)
        if rule is None:
            known = ", ".join(sorted({prefix + r.prefix for r in chosen.rules}))
            raise ValueError(f"{path}: unknown key {key!r} for the {name} layout (its keys start with {known})")
        if rule.group is None:
            ignored.append(key)
            continue
        canonical = rule.rename(short[len(rule.prefix):])
        if canonical is None:
            raise ValueError(f"{path}: unknown key {key!r}: no {rule.group} layer has that name in the {name} layout")
        if canonical in groups[rule.group]:
            raise ValueError(f"{path}: key {key!r} repeats {sources[f'{rule.group}/{canonical}']!r}")
        groups[rule.group][canonical] = state[key]
        sources[f"{rule.group}/{canonical}"] = key
        rules.setdefault(rule.group, rule)
    return SourceWeights(chosen, groups, sources, prefix, rules, ignored, dict(info or {}))


def parse_normalization(spec: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A NORMALIZATIONS name, or `R,G,B/R,G,B` (mean/std on the [0, 1] scale, as torchvision's Normalize)."""
    if spec in NORMALIZATIONS:
        return NORMALIZATIONS[spec]
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in spec.split("/"))
    except ValueError:
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(
            f"normalization {spec!r}: use {', '.join(NORMALIZATIONS)} or MEAN_R,MEAN_G,MEAN_B/STD_R,STD_G,STD_B "
            "on the [0, 1] scale, e.g. 0.5,0.5,0.5/0.25,0.25,0.25"
        )
    return mean, std
