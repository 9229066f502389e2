"""`folder:PATH`: image files in one of three layouts, listed by extension and streamed for pretraining."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from simsiam_keras.data.decode import decode_image
from simsiam_keras.data.images import DataSource, ImageFiles

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass
class FileSplit:
    """Image files of one split; `labels` index `class_names`, or are None for unlabelled images."""

    files: list[str]
    labels: np.ndarray | None
    class_names: list[str]


def _image_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, name)
        for name in os.listdir(folder)
        if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
        and os.path.isfile(os.path.join(folder, name))
    )


def _subfolders(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.isdir(os.path.join(folder, n)))


def _labelled_split(folder: str, class_names: list[str]) -> FileSplit:
    files, labels = [], []
    for index, name in enumerate(class_names):
        if os.path.isdir(os.path.join(folder, name)):
            found = _image_files(os.path.join(folder, name))
            files += found
            labels += [index] * len(found)
    return FileSplit(files, np.asarray(labels, np.int64), class_names)


def list_image_folder(path: str) -> dict[str, FileSplit]:
    """The splits of the dataset `folder:PATH`.

    `PATH/<split>/<label>/*.jpg` gives labelled splits (class indices shared by all splits),
    `PATH/<label>/*.jpg` one labelled `train` split, and a flat folder of images one
    unlabelled `train` split. JPEG, PNG, BMP and GIF files are listed by extension.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"dataset folder:{path}: no such folder")
    top, subfolders = _image_files(path), _subfolders(path)
    splits: dict[str, FileSplit] = {}
    if top:
        splits["train"] = FileSplit(top, None, [])
    elif subfolders and all(_subfolders(os.path.join(path, s)) for s in subfolders):
        class_names = sorted({c for s in subfolders for c in _subfolders(os.path.join(path, s))})
        splits = {s: _labelled_split(os.path.join(path, s), class_names) for s in subfolders}
    elif subfolders:
        splits["train"] = _labelled_split(path, subfolders)
    splits = {name: split for name, split in splits.items() if split.files}
    if "train" not in splits:
        raise ValueError(
            f"dataset folder:{path}: no images found (expected PATH/<split>/<label>/*.jpg, "
            f"PATH/<label>/*.jpg or a folder of images; a labelled layout needs a 'train' split)"
        )
    return splits


def load_folder(path: str) -> DataSource:
    """`folder:PATH` for pretraining: the train split's files, streamed (labelled splits feed evaluation)."""
    train = list_image_folder(path)["train"]
    if not any_decodes(train.files):
        raise ValueError(f"dataset folder:{path}: none of the {len(train.files)} train images could be decoded")
    return DataSource(f"folder:{path}", None, train_stream=ImageFiles(train.files))


def any_decodes(files: list[str]) -> bool:
    """Whether at least one file decodes: stops at the first that does (a cheap check up front)."""
    ds = tf.data.Dataset.from_tensor_slices(files).map(lambda p: decode_image(tf.io.read_file(p))[1])
    return bool(list(ds.filter(lambda ok: ok).take(1)))
