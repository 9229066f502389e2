"""Labelled splits for frozen-feature evaluation, read as batches of the evaluation view.

Every evaluation (the kNN monitor, kNN evaluation, the linear probe) reads a labelled bank split
(`train`) and a query split (the first of `spec.TEST_SPLITS`) of the same dataset specs as
pretraining, and sees each image through the one evaluation view, `augment.crop.eval_view`.
Arrays (`synthetic`, `npz:`, in-memory TFDS) are batched from memory; image folders and TFDS
datasets stream encoded images and decode each batch (`data.decode.decode_eval_view`), so no
split has to fit in memory. Images that do not decode are dropped with their labels.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from simsiam_keras.augment.crop import eval_view
from simsiam_keras.data.decode import decode_eval_view
from simsiam_keras.data.folders import list_image_folder
from simsiam_keras.data.images import DataSource
from simsiam_keras.data.npz import load_npz
from simsiam_keras.data.spec import DatasetSpec, parse_dataset, test_split
from simsiam_keras.data.synthetic import CLASS_NAMES, make_synthetic
from simsiam_keras.data.tfds import LABEL, class_label, encoded_split, image_feature, tfds_builder

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
            return ds.prefetch(AUTOTUNE)
        return _decoded(self.encoded(None), image_size, resize_ratio).batch(batch_size).prefetch(AUTOTUNE)

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
    return ds.filter(lambda image, label, ok: ok).map(lambda image, label, ok: (image, label))


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


def _numbered(num_classes: int) -> list[str]:
    return [str(i) for i in range(num_classes)]


def _array_split(name: str, images: np.ndarray, labels: np.ndarray) -> LabelledSplit:
    return LabelledSplit(name, len(images), arrays=lambda size: (images, labels))


def _from_source(source: DataSource, class_names: list[str] | None = None) -> EvalData | str:
    if not source.has_labels:
        return "evaluation needs labelled x_train/y_train and x_test/y_test"
    return EvalData(source.name, class_names or _numbered(source.num_classes),
                    _array_split("train", source.x_train, source.y_train),
                    _array_split("test", source.x_test, source.y_test))


def _synthetic(seed: int) -> EvalData:
    # Generated at the model's image size (as pretraining generated it), once per size.
    generate = functools.lru_cache(maxsize=2)(lambda size: make_synthetic(image_size=size, seed=seed))

    def split(name: str, size: int) -> LabelledSplit:
        return LabelledSplit(name, size, arrays=lambda image_size: (generate(image_size)[f"x_{name}"],
                                                                    generate(image_size)[f"y_{name}"]))

    defaults = inspect.signature(make_synthetic).parameters
    return EvalData("synthetic", list(CLASS_NAMES), split("train", defaults["num_train"].default),
                    split("test", defaults["num_test"].default))


def _file_split(name: str, files: list[str], labels: np.ndarray) -> LabelledSplit:
    def encoded(limit: int | None) -> tf.data.Dataset:
        # Evenly spaced files: the listing is sorted by class, so every class is kept.
        keep = np.linspace(0, len(files) - 1, min(limit or len(files), len(files))).astype(int)
        data = tf.data.Dataset.from_tensor_slices([files[i] for i in keep])
        data = data.map(tf.io.read_file, num_parallel_calls=AUTOTUNE)
        return tf.data.Dataset.zip((data, tf.data.Dataset.from_tensor_slices(labels[keep])))

    return LabelledSplit(name, len(files), encoded=encoded, files=list(files))


def _folder(path: str) -> EvalData | str:
    splits = list_image_folder(path)
    query = test_split(splits)
    if splits["train"].labels is None or query is None or splits[query].labels is None:
        return (f"evaluation needs labelled splits PATH/train/<label>/* and PATH/test/<label>/* "
                f"(or val/validation); found {', '.join(splits)}")
    return EvalData(f"folder:{path}", list(splits["train"].class_names),
                    _file_split("train", splits["train"].files, splits["train"].labels),
                    _file_split(query, splits[query].files, splits[query].labels))


def _tfds(name: str, data_dir: str | None) -> EvalData | str:
    builder = tfds_builder(name, data_dir)
    splits = builder.info.splits
    label, query, image_key = class_label(builder), test_split(splits), image_feature(builder)
    if label is None or "train" not in splits or query is None:
        return "evaluation needs a class label and train + test (or val/validation) splits"

    def split(split_name: str) -> LabelledSplit:
        def encoded(limit: int | None) -> tf.data.Dataset:
            # TFDS shuffles examples when it prepares a dataset: the first `limit` are a fair sample.
            ds = encoded_split(builder, split_name).map(lambda e: (e[image_key], e[LABEL]))
            return ds.take(limit) if limit else ds

        return LabelledSplit(split_name, splits[split_name].num_examples, encoded=encoded)

    return EvalData(name, list(label.names), split("train"), split(query))


def find_eval_data(dataset: str | DatasetSpec | DataSource, data_dir: str | None = None,
                   seed: int = 0) -> EvalData | str:
    """The labelled splits of `dataset`, checked but not yet read; or why it has none (a string)."""
    if isinstance(dataset, DataSource):
        if dataset.train_stream is None:
            names = list(CLASS_NAMES) if dataset.name == "synthetic" else None
            return _from_source(dataset, names)
        dataset = dataset.name  # a streamed source's name is its spec
    spec = parse_dataset(dataset)
    if spec.kind == "synthetic":
        return _synthetic(seed)
    if spec.kind == "npz":
        return _from_source(load_npz(spec.location))
    if spec.kind == "folder":
        return _folder(spec.location)
    return _tfds(spec.location, data_dir)


def eval_data(dataset: str | DatasetSpec | DataSource, data_dir: str | None = None, seed: int = 0) -> EvalData:
    """The labelled bank and query splits of `dataset`, checked but not yet read.

    Raises FileNotFoundError or ValueError (naming the dataset) when there are none.
    """
    found = find_eval_data(dataset, data_dir, seed)
    if isinstance(found, str):
        name = dataset.name if isinstance(dataset, DataSource) else str(dataset)
        raise ValueError(f"dataset {name}: {found}")
    return found


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


def _unlabelled(name: str, images: np.ndarray, labels: np.ndarray | None) -> LabelledSplit:
    return _array_split(name, images, np.full(len(images), -1, np.int64) if labels is None else labels)


def image_splits(dataset: str | DatasetSpec | DataSource, data_dir: str | None = None, seed: int = 0) -> ImageSplits:
    """The splits of `dataset` with their labels when known: what `eval_data` gives for labelled datasets,
    else the images of a flat `folder:` or of an `.npz` without labels (a TFDS dataset needs its labels).

    Raises FileNotFoundError or ValueError (naming the dataset) when there are no images to read.
    """
    found = find_eval_data(dataset, data_dir, seed)
    if isinstance(found, EvalData):
        return ImageSplits.of(found)
    spec = None if isinstance(dataset, DataSource) else parse_dataset(dataset)
    if isinstance(dataset, DataSource) or spec.kind == "npz":
        source = dataset if isinstance(dataset, DataSource) else load_npz(spec.location)
        if source.x_train is None:
            return ImageSplits.of(eval_data(dataset, data_dir, seed))  # its one-line error
        splits = {"train": _unlabelled("train", source.x_train, source.y_train)}
        if source.x_test is not None:
            splits["test"] = _unlabelled("test", source.x_test, source.y_test)
        return ImageSplits(source.name, _numbered(source.num_classes), splits)
    if spec.kind == "folder":
        listed = list_image_folder(spec.location)
        splits = {}
        for name, files in listed.items():
            labels = files.labels if files.labels is not None else np.full(len(files.files), -1, np.int64)
            splits[name] = _file_split(name, files.files, labels)
        order = ["train"] + [name for name in (test_split(listed),) if name]
        return ImageSplits(f"folder:{spec.location}", list(listed["train"].class_names),
                           {name: splits[name] for name in order})
    return ImageSplits.of(eval_data(dataset, data_dir, seed))
