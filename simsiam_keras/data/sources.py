"""A dataset spec resolved once, into the source of its kind: its training images and its evaluation splits.

`open_source` is the one place that dispatches on a spec's kind. The source it gives
(`SyntheticSource`, `NpzSource`, `FolderSource`, `TFDSSource`) reads nothing until asked:
`images()` are the images pretraining reads (a `DataSource`), `find_eval_data()` the labelled
bank and query splits every evaluation reads, `image_splits()` the splits embedding reads. A
`DataSource` in memory is evaluated on its own arrays (`ArraySource`); a streamed one by the
source that opened it. Every source is checked on load, so a mistake is one clear error before a
model is built.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import tensorflow as tf

from simsiam_keras.data.eval_splits import EvalData, ImageSplits, LabelledSplit, array_split, file_split, numbered
from simsiam_keras.data.folders import FileSplit, list_image_folder, load_folder
from simsiam_keras.data.images import DataSource, from_arrays
from simsiam_keras.data.npz import load_npz
from simsiam_keras.data.spec import DatasetSpec, parse_dataset, test_split
from simsiam_keras.data.synthetic import CLASS_NAMES, make_synthetic
from simsiam_keras.data.tfds import LABEL, class_label, encoded_split, image_feature, load_tfds, tfds_builder


class Source:
    """A dataset resolved from its spec: its training images and its labelled splits, read when asked."""

    name: str

    def images(self) -> DataSource:
        """The images pretraining reads, read (and checked) on every call."""
        raise NotImplementedError

    def find_eval_data(self) -> EvalData | str:
        """The labelled bank (train) and query (test) splits, checked but not yet read; or why there are none."""
        raise NotImplementedError

    def eval_data(self) -> EvalData:
        """`find_eval_data`, or a ValueError naming the dataset when it has no labelled splits."""
        found = self.find_eval_data()
        if isinstance(found, str):
            raise ValueError(f"dataset {self.name}: {found}")
        return found

    def image_splits(self) -> ImageSplits:
        """The splits embedding reads, labelled or not (labels -1 where unknown); these are the labelled ones."""
        return ImageSplits.of(self.eval_data())


class ArraySource(Source):
    """Images in memory (a `DataSource` of arrays): training and evaluation read the same arrays."""

    def __init__(self, data: DataSource):
        self.data = data

    @property
    def name(self) -> str:
        return self.data.name

    def images(self) -> DataSource:
        return self.data

    def find_eval_data(self) -> EvalData | str:
        data = self.data
        if not data.has_labels:
            return "evaluation needs labelled x_train/y_train and x_test/y_test"
        # The synthetic set's classes have names, also when a user generated its arrays.
        class_names = list(CLASS_NAMES) if data.name == "synthetic" else numbered(data.num_classes)
        return EvalData(data.name, class_names, array_split("train", data.x_train, data.y_train),
                        array_split("test", data.x_test, data.y_test))

    def image_splits(self) -> ImageSplits:
        found = self.find_eval_data()
        if isinstance(found, EvalData):
            return ImageSplits.of(found)
        data = self.data
        splits = {"train": array_split("train", data.x_train, data.y_train)}
        if data.x_test is not None:
            splits["test"] = array_split("test", data.x_test, data.y_test)
        return ImageSplits(data.name, numbered(data.num_classes), splits)


class NpzSource(ArraySource):
    """`npz:PATH`: its arrays, read once when first asked for."""

    def __init__(self, path: str):
        self.path = path

    @functools.cached_property
    def data(self) -> DataSource:
        return load_npz(self.path)


class SyntheticSource(Source):
    """`synthetic`: the embedded dataset, generated from `seed` (for training at `image_size`)."""

    name = "synthetic"

    def __init__(self, image_size: int = 32, seed: int = 0):
        self.image_size, self.seed = image_size, seed

    def images(self) -> DataSource:
        return from_arrays("synthetic", **make_synthetic(image_size=self.image_size, seed=self.seed))

    def find_eval_data(self) -> EvalData:
        # Generated at the evaluated model's image size (as pretraining generated it), once per size.
        generate = functools.lru_cache(maxsize=2)(lambda size: make_synthetic(image_size=size, seed=self.seed))

        def split(name: str, size: int) -> LabelledSplit:
            return LabelledSplit(name, size, arrays=lambda image_size: (generate(image_size)[f"x_{name}"],
                                                                        generate(image_size)[f"y_{name}"]))

        defaults = inspect.signature(make_synthetic).parameters
        return EvalData("synthetic", list(CLASS_NAMES), split("train", defaults["num_train"].default),
                        split("test", defaults["num_test"].default))


class FolderSource(Source):
    """`folder:PATH`: image files, streamed; labelled splits PATH/<split>/<label>/* feed evaluation."""

    def __init__(self, path: str):
        self.path = path
        self.name = f"folder:{path}"

    @functools.cached_property
    def listing(self) -> dict[str, FileSplit]:
        return list_image_folder(self.path)

    def images(self) -> DataSource:
        return dataclasses.replace(load_folder(self.path), origin=self)

    def find_eval_data(self) -> EvalData | str:
        splits = self.listing
        query = test_split(splits)
        if splits["train"].labels is None or query is None or splits[query].labels is None:
            return (f"evaluation needs labelled splits PATH/train/<label>/* and PATH/test/<label>/* "
                    f"(or val/validation); found {', '.join(splits)}")
        return EvalData(self.name, list(splits["train"].class_names),
                        file_split("train", splits["train"].files, splits["train"].labels),
                        file_split(query, splits[query].files, splits[query].labels))

    def image_splits(self) -> ImageSplits:
        found = self.find_eval_data()
        if isinstance(found, EvalData):
            return ImageSplits.of(found)
        listed = self.listing
        order = ["train"] + [name for name in (test_split(listed),) if name]
        splits = {name: file_split(name, listed[name].files, listed[name].labels) for name in order}
        return ImageSplits(self.name, list(listed["train"].class_names), splits)


class TFDSSource(Source):
    """A prepared TFDS dataset, read offline from `data_dir`: small ones into memory, large ones streamed."""

    def __init__(self, name: str, data_dir: str | None = None):
        self.name, self.data_dir = name, data_dir

    def images(self) -> DataSource:
        data = load_tfds(self.name, self.data_dir)
        return data if data.train_stream is None else dataclasses.replace(data, origin=self)

    def find_eval_data(self) -> EvalData | str:
        builder = tfds_builder(self.name, self.data_dir)
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

        return EvalData(self.name, list(label.names), split("train"), split(query))


def open_source(
    dataset: str | DatasetSpec | DataSource, image_size: int = 32, seed: int = 0, data_dir: str | None = None
) -> Source:
    """The source of `dataset` (`synthetic`, `npz:PATH`, `folder:PATH`, a prepared TFDS name, or a `DataSource`).

    Nothing is read yet. The synthetic dataset is generated at `image_size` with `seed`; TFDS
    datasets are read from `data_dir` (TFDS's default when None). A `DataSource` in memory is its
    own source; a streamed one is the source that opened it.
    """
    if isinstance(dataset, DataSource):
        if dataset.train_stream is None:
            return ArraySource(dataset)
        if dataset.origin is not None:
            return dataset.origin
        dataset = dataset.name  # a stream made by hand: its name is its spec
    spec = parse_dataset(dataset)
    if spec.kind == "synthetic":
        return SyntheticSource(image_size, seed)
    if spec.kind == "npz":
        return NpzSource(spec.location)
    if spec.kind == "folder":
        return FolderSource(spec.location)
    return TFDSSource(spec.location, data_dir)


def load_dataset(
    dataset: str | DatasetSpec, image_size: int = 32, seed: int = 0, data_dir: str | None = None
) -> DataSource:
    """The images of `dataset` (`synthetic`, `npz:PATH`, `folder:PATH` or a prepared TFDS name).

    The synthetic dataset is generated at `image_size` with `seed`; TFDS datasets are read from
    `data_dir` (TFDS's default when None).
    """
    return open_source(dataset, image_size, seed, data_dir).images()


def find_eval_data(dataset: str | DatasetSpec | DataSource, data_dir: str | None = None,
                   seed: int = 0) -> EvalData | str:
    """The labelled splits of `dataset`, checked but not yet read; or why it has none (a string)."""
    return open_source(dataset, seed=seed, data_dir=data_dir).find_eval_data()


def eval_data(dataset: str | DatasetSpec | DataSource, data_dir: str | None = None, seed: int = 0) -> EvalData:
    """The labelled bank and query splits of `dataset`, checked but not yet read.

    Raises FileNotFoundError or ValueError (naming the dataset) when there are none.
    """
    return open_source(dataset, seed=seed, data_dir=data_dir).eval_data()


def image_splits(dataset: str | DatasetSpec | DataSource, data_dir: str | None = None, seed: int = 0) -> ImageSplits:
    """The splits of `dataset` with their labels when known: what `eval_data` gives for labelled datasets,
    else the images of a flat `folder:` or of an `.npz` without labels (a TFDS dataset needs its labels).

    Raises FileNotFoundError or ValueError (naming the dataset) when there are no images to read.
    """
    return open_source(dataset, seed=seed, data_dir=data_dir).image_splits()


def describe(source: DataSource) -> dict[str, Any]:
    """A short summary for logs and config.json."""
    return {
        "name": source.name,
        "train_images": len(source.pretrain_images),
        "test_images": int(len(source.x_test)) if source.x_test is not None else 0,
        "image_shape": list(source.x_train.shape[1:]) if source.train_stream is None else None,
        "streamed": source.train_stream is not None,
        "num_classes": source.num_classes,
    }
