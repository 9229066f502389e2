"""The images a dataset gives: uint8 arrays in memory, or encoded files/records streamed from storage.

A `DataSource` is what pretraining reads. Small datasets are held as uint8 NHWC RGB arrays;
folders and large TFDS datasets stream encoded images (`EncodedImages`), which the two-view
pipeline decodes (cropping JPEGs while decoding) per view.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow as tf

# A decoded image takes about this many times its encoded size (JPEG at quality 75-95: 8-20x);
# decoded-size estimates err on the large side so that caching never runs out of memory.
DECODED_PER_ENCODED_BYTE = 20


class EncodedImages:
    """Encoded image bytes (JPEG, PNG, BMP, GIF) read from storage as training streams through them."""

    def __len__(self) -> int:
        raise NotImplementedError

    def dataset(self, num_shards: int = 1, index: int = 0, seed: int = 0, shuffle: bool = True,
                image_ids: bool = False) -> tf.data.Dataset:
        """One pass over shard `index` of `num_shards` disjoint shards, as scalar string tensors.

        `image_ids`: (encoded image, id) pairs instead, the id an int64 in [0, len(self)), the same
        for an image in every pass and under any sharding.
        """
        raise NotImplementedError

    def decoded_bytes_estimate(self) -> int | None:
        """An upper estimate of the images' decoded size, or None when it is too costly to know."""
        return None


class ImageFiles(EncodedImages):
    """Image files, read in parallel; the file order is shuffled each pass."""

    def __init__(self, files: list[str]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def dataset(self, num_shards: int = 1, index: int = 0, seed: int = 0, shuffle: bool = True,
                image_ids: bool = False) -> tf.data.Dataset:
        # An image's id is its index in the file list.
        files = (self.files, np.arange(len(self.files))) if image_ids else self.files
        ds = tf.data.Dataset.from_tensor_slices(files).shard(num_shards, index)
        if shuffle:
            ds = ds.shuffle(len(self.files) // num_shards + 1, seed=seed, reshuffle_each_iteration=True)
        read = (lambda path, image_id: (tf.io.read_file(path), image_id)) if image_ids else tf.io.read_file
        # In order, so that the pipeline pairs each image with the same augmentation seed every run.
        return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def decoded_bytes_estimate(self) -> int | None:
        if len(self.files) > 100_000:  # stat-ing every file of a large folder costs more than it tells
            return None
        return DECODED_PER_ENCODED_BYTE * sum(os.path.getsize(f) for f in self.files)


@dataclasses.dataclass
class DataSource:
    """The images pretraining reads: uint8 NHWC RGB arrays, or `train_stream` of encoded images.

    Arrays may carry labels and a test split (the kNN monitor uses them); a streamed source's
    labelled splits are found by the source that opened it (`origin`, see `data.sources`).
    """

    name: str
    x_train: np.ndarray | None
    y_train: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_unlabelled: np.ndarray | None = None
    train_stream: EncodedImages | None = None
    # The `data.sources.Source` that opened a streamed dataset: its evaluation splits come from there.
    origin: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def pretrain_images(self) -> np.ndarray | EncodedImages:
        """Every training image, labelled or not: SimSiam needs no labels."""
        if self.train_stream is not None:
            return self.train_stream
        if self.x_unlabelled is None:
            return self.x_train
        return np.concatenate([self.x_train, self.x_unlabelled])

    @property
    def num_classes(self) -> int:
        labels = [y for y in (self.y_train, self.y_test) if y is not None]
        return int(max(int(y.max()) for y in labels) + 1) if labels else 0

    @property
    def has_labels(self) -> bool:
        """Whether the arrays hold labelled train and test splits."""
        return self.x_train is not None and self.y_train is not None and self.x_test is not None and self.y_test is not None


def as_rgb_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """Checks an image array and returns it as uint8 NHWC with 3 channels."""
    if x.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 images, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"{what} must have shape (N, H, W, 3) or (N, H, W), got {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{what} is empty: the dataset has no images")
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def as_labels(y: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    """Checks labels: `n` class indices >= 0, as int64."""
    if y is None:
        return None
    y = np.asarray(y).reshape(-1)
    if not np.issubdtype(y.dtype, np.integer) or len(y) != n:
        raise ValueError(f"{what} must be {n} integer labels, got dtype {y.dtype} and {len(y)} values")
    if n and y.min() < 0:
        raise ValueError(f"{what} must be class indices >= 0, got {y.min()}")
    return y.astype(np.int64)


def from_arrays(name: str, x_train, y_train=None, x_test=None, y_test=None) -> DataSource:
    """A checked DataSource from in-memory arrays (keras.datasets convention)."""
    x_train = as_rgb_uint8(np.asarray(x_train), "x_train")
    x_test = as_rgb_uint8(np.asarray(x_test), "x_test") if x_test is not None else None
    return DataSource(
        name,
        x_train,
        as_labels(y_train, len(x_train), "y_train"),
        x_test,
        as_labels(y_test, len(x_test), "y_test") if x_test is not None else None,
    )
