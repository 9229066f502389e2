"""Labelled splits for frozen-feature evaluation, read as batches of the evaluation view.

Every evaluation (the kNN monitor, kNN evaluation, the linear probe) reads a labelled bank split
(`train`) and a query split (the first of `spec.TEST_SPLITS`) of the same dataset specs as
pretraining (each kind's source in `data.sources` finds them), and sees each image through the
one evaluation view, `augment.crop.eval_view`. Arrays (`synthetic`, `npz:`, in-memory TFDS) are
batched from memory; image folders and TFDS datasets stream encoded images and decode each batch
(`data.decode.decode_eval_view`), so no split has to fit in memory. Images that do not decode are
dropped with their labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from simsiam_keras.augment.crop import eval_view
from simsiam_keras.data.autotuner import without_autotuner
from simsiam_keras.data.decode import decode_eval_view

AUTOTUNE = tf.data.AUTOTUNE
# Image size -> (uint8 NHWC images, int64 labels).
Arrays = Callable[[int], tuple[np.ndarray, np.ndarray]]
# At most this many images (None: all) -> (encoded bytes, label) elements, in a fixed order.
Encoded = Callable[[int | None], tf.data.Dataset]


@dataclasses.dataclass
class LabelledSplit:
    """One labelled split, held as arrays or streamed as encoded images; read in order, once per call."""

    name: str
    size: int
    arrays: Arrays | None = dataclasses.field(default=None, repr=False)
    encoded: Encoded | None = dataclasses.field(default=None, repr=False)
    # Set when `arrays` already hold evaluation views, made at (image size, resize ratio).
    view: tuple[int, float] | None = None
    # The images' file paths in split order, when they are files (folders); else they are known by index.
    files: list[str] | None = dataclasses.field(default=None, repr=False)

    @property
    def streamed(self) -> bool:
        return self.arrays is None

    def batches(self, image_size: int, resize_ratio: float, batch_size: int = 256) -> tf.data.Dataset:
        """(float32 evaluation views in [0, 255], int64 labels) batches at `image_size`."""
        if self.view is not None and self.view != (image_size, resize_ratio):
            raise ValueError(f"the {self.name} split holds views at {self.view}, not at {(image_size, resize_ratio)}")
        if self.arrays is not None:
            images, labels = self.arrays(image_size)
            ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
            if self.view is None:
                ds = ds.map(lambda x, y: (eval_view(x, image_size, resize_ratio), y), num_parallel_calls=AUTOTUNE)
            else:
                ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
            return without_autotuner(ds.prefetch(AUTOTUNE))
        decoded = _decoded(self.encoded(None), image_size, resize_ratio)
        return without_autotuner(decoded.batch(batch_size).prefetch(AUTOTUNE))

    def in_memory(self, image_size: int, resize_ratio: float, limit: int | None = None) -> LabelledSplit:
        """The split with at most `limit` evaluation views decoded once and kept as uint8 arrays.

        What the kNN monitor reads every few epochs; in-memory arrays are returned as they are.
        """
        if not self.streamed:
            return self
        images, labels = [], []
        for x, y in _decoded(self.encoded(limit), image_size, resize_ratio, cast=False).batch(256):
            images.append(x.numpy())
            labels.append(y.numpy())
        images = np.concatenate(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
        labels = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
        return LabelledSplit(self.name, len(images), arrays=lambda size: (images, labels),
                             view=(image_size, resize_ratio))


def _decoded(encoded: tf.data.Dataset, image_size: int, resize_ratio: float, cast: bool = True) -> tf.data.Dataset:
    """(encoded bytes, label) -> (evaluation view, int64 label), undecodable images dropped, order kept."""

    def load(data, label):
        image, ok = decode_eval_view(data, image_size, resize_ratio)
        return (tf.cast(image, tf.float32) if cast else image), tf.cast(label, tf.int64), ok

    ds = encoded.map(load, num_parallel_calls=AUTOTUNE)  # deterministic: features keep the label order
    # Lambdas with distinct arguments: AutoGraph tells lambdas on one line apart by their signatures.
    return ds.filter(lambda image, label, ok: ok).map(lambda view, label, ok: (view, label))


@dataclasses.dataclass
class EvalData:
    """A dataset's bank (train) and query (test) splits, with its class names."""

    name: str
    class_names: list[str]
    bank: LabelledSplit
    query: LabelledSplit

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def in_memory(self, image_size: int, resize_ratio: float, limit: int | None = None) -> EvalData:
        """Both splits decoded once (see `LabelledSplit.in_memory`)."""
        return dataclasses.replace(self, bank=self.bank.in_memory(image_size, resize_ratio, limit),
                                   query=self.query.in_memory(image_size, resize_ratio, limit))


def numbered(num_classes: int) -> list[str]:
    """Class names for classes known only by their index: "0", "1", ..."""
    return [str(i) for i in range(num_classes)]


def _known(labels: np.ndarray | None, count: int) -> np.ndarray:
    """`labels`, or -1 for each of `count` images when they are unknown (None)."""
    return np.full(count, -1, np.int64) if labels is None else labels


def array_split(name: str, images: np.ndarray, labels: np.ndarray | None) -> LabelledSplit:
    """A split held in memory as uint8 images; unknown labels (None) become -1."""
    labels = _known(labels, len(images))
    return LabelledSplit(name, len(images), arrays=lambda size: (images, labels))


def file_split(name: str, files: list[str], labels: np.ndarray | None) -> LabelledSplit:
    """A split of image files, streamed in their order; `limit` reads evenly spaced files; unknown
    labels (None) become -1."""
    labels = _known(labels, len(files))

    def encoded(limit: int | None) -> tf.data.Dataset:
        # Evenly spaced files: the listing is sorted by class, so every class is kept.
        keep = np.linspace(0, len(files) - 1, min(limit or len(files), len(files))).astype(int)
        data = tf.data.Dataset.from_tensor_slices([files[i] for i in keep])
        data = data.map(tf.io.read_file, num_parallel_calls=AUTOTUNE)
        return tf.data.Dataset.zip((data, tf.data.Dataset.from_tensor_slices(labels[keep])))

    return LabelledSplit(name, len(files), encoded=encoded, files=list(files))


@dataclasses.dataclass
class ImageSplits:
    """A dataset's splits for embedding, labelled or not: `train`, then the test split when there is one.

    Labels are -1 where unknown.
    """

    name: str
    class_names: list[str]
    splits: dict[str, LabelledSplit]

    @classmethod
    def of(cls, data: EvalData) -> ImageSplits:
        return cls(data.name, data.class_names, {data.bank.name: data.bank, data.query.name: data.query})
