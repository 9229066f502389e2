"""The labelled subset of a training split that fine-tuning sees: P%, N per class, or a list of images.

`--labels 10%` takes round(10% of each class's images) of every class (class-balanced), drawn with
a seeded generator; `--labels 5-per-class` takes 5 of each; a labels file lists one image a line,
by its index in the split or its file name (the 1% / 10% ImageNet subsets of the SimCLR protocol
are such files), optionally followed by its class name, which must agree with the split's. A
subset that leaves a class without an image is refused: its classifier could never predict it.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from simsiam_keras.data.eval_splits import LabelledSplit

PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
PER_CLASS = re.compile(r"^(\d+)-per-class$")
INDICES_FILE = "labelled_indices.txt"


@dataclasses.dataclass
class LabelChoice:
    """Which images of the split carry labels, and how they were chosen."""

    indices: np.ndarray  # sorted indices into the split
    labels: np.ndarray  # their labels
    how: str  # "10%", "5-per-class" or "file:PATH"
    fraction: float  # of the split's images

    def per_class(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()


def split_labels(split: LabelledSplit) -> np.ndarray:
    """Every label of `split`, in order (a streamed split's labels are read without decoding its images)."""
    if split.arrays is not None:
        _, labels = split.arrays(split_image_size(split))
        return np.asarray(labels, np.int64)
    labels = [np.asarray(y) for _, y in split.encoded(None).map(lambda data, label: (0, label)).batch(4096)]
    return np.concatenate(labels).astype(np.int64) if labels else np.zeros((0,), np.int64)


def split_image_size(split: LabelledSplit) -> int:
    """An image size the split's arrays can be asked for (its views' size if it holds views, else any)."""
    return split.view[0] if split.view is not None else 32


def _check_every_class(labels: np.ndarray, class_names: list[str], how: str) -> None:
    counts = np.bincount(labels, minlength=len(class_names))
    empty = [class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(f"labels {how} leaves class {empty[0]!r} with no labelled image "
                         f"({len(empty)} such classes): ask for more labels")


def choose_labels(
    labels: np.ndarray, class_names: list[str], how: str, seed: int = 0, files: list[str] | None = None
) -> LabelChoice:
    """The labelled subset `how` names (`P%`, `N-per-class` or `file:PATH`) of a split with `labels`.

    Class-balanced and seeded; raises ValueError (one line, naming the problem) when the request
    is malformed, names images the split does not have, or leaves a class with no image.
    """
    labels = np.asarray(labels, np.int64)
    rng = np.random.default_rng(seed)
    if how.startswith("file:"):
        chosen = _read_labels_file(how[len("file:"):], labels, class_names, files)
    elif (match := PERCENT.match(how)) or (match := PER_CLASS.match(how)):
        percent = match.re is PERCENT
        amount = float(match.group(1))
        if amount <= 0 or (percent and amount > 100):
            raise ValueError(f"labels {how}: expected a percentage in (0, 100] or N-per-class with N >= 1")
        chosen = []
        for c in range(len(class_names)):
            members = np.flatnonzero(labels == c)
            take = int(round(amount / 100 * len(members))) if percent else int(amount)
            if take == 0:
                raise ValueError(f"labels {how} leaves class {class_names[c]!r} ({len(members)} images) with no "
                                 "labelled image: ask for a larger fraction or N-per-class")
            if take > len(members):
                raise ValueError(f"labels {how}: class {class_names[c]!r} has only {len(members)} images")
            chosen.append(rng.permutation(members)[:take])
        chosen = np.concatenate(chosen) if chosen else np.zeros((0,), np.int64)
    else:
        raise ValueError(f"labels {how!r}: expected P% (e.g. 10%) or N-per-class (e.g. 5-per-class)")
    chosen = np.unique(chosen)
    _check_every_class(labels[chosen], class_names, how)
    return LabelChoice(chosen, labels[chosen], how, len(chosen) / max(1, len(labels)))


def _read_labels_file(path: str, labels: np.ndarray, class_names: list[str], files: list[str] | None) -> np.ndarray:
    """Indices of the images a labels file lists: `INDEX` or `NAME` a line, optionally `,CLASS` or a tab and CLASS."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labels_file {path}: no such file")
    by_name: dict[str, int] = {}
    for i, file in enumerate(files or []):
        by_name.setdefault(file, i)
        by_name.setdefault(os.path.basename(file), i)
    chosen = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = [field.strip() for field in re.split(r"[,\t]", line.strip())]
            if not fields[0]:
                continue
            key = fields[0]
            if key in by_name:
                index = by_name[key]
            elif key.isdigit() and int(key) < len(labels):
                index = int(key)
            else:
                known = "an index below " + f"{len(labels)}" + (" or a file name of the split" if files else "")
                raise ValueError(f"labels_file {path} line {number}: {key!r} is not an image of the split ({known})")
            if len(fields) > 1 and fields[1]:
                if fields[1] not in class_names:
                    raise ValueError(f"labels_file {path} line {number}: class {fields[1]!r} is not a class of the "
                                     f"split (its classes: {', '.join(class_names[:10])}{' ...' if len(class_names) > 10 else ''})")
                if class_names.index(fields[1]) != labels[index]:
                    raise ValueError(f"labels_file {path} line {number}: {key!r} is of class "
                                     f"{class_names[labels[index]]!r} in the split, not {fields[1]!r}")
            chosen.append(index)
    if not chosen:
        raise ValueError(f"labels_file {path}: lists no image")
    return np.asarray(chosen, np.int64)


def write_indices(choice: LabelChoice, output_dir: str, files: list[str] | None = None) -> str:
    """OUTPUT/labelled_indices.txt: one chosen index a line (with its file when known): a labels file again."""
    path = os.path.join(output_dir, INDICES_FILE)
    with open(path, "w") as f:
        for index in choice.indices:
            f.write(f"{files[index]}\n" if files else f"{index}\n")
    return path


def subset(split: LabelledSplit, indices: np.ndarray) -> LabelledSplit:
    """The images of `split` at `indices` (sorted), as a split: arrays indexed, or the stream filtered."""
    indices = np.asarray(indices, np.int64)
    files = [split.files[i] for i in indices] if split.files else None
    if split.arrays is not None:
        def arrays(size: int) -> tuple[np.ndarray, np.ndarray]:
            images, labels = split.arrays(size)
            return images[indices], np.asarray(labels)[indices]

        return LabelledSplit(split.name, len(indices), arrays=arrays, view=split.view, files=files)
    keep = np.zeros(split.size, bool)
    keep[indices] = True
    keep_t = tf.constant(keep)

    def encoded(limit: int | None) -> tf.data.Dataset:
        ds = split.encoded(None).enumerate().filter(lambda i, element: keep_t[i]).map(lambda i, element: element)
        return ds.take(limit) if limit else ds

    return LabelledSplit(split.name, len(indices), encoded=encoded, files=files)
