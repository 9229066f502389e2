"""Labelled splits for frozen-feature evaluation, streamed as un-augmented batches.

kNN evaluation (and any probe on cached features) reads a labelled bank split (`train`) and
a query split (`test`, else `val`/`validation`) from the same `--dataset` specs as
pretraining. Arrays (`synthetic`, `npz:`) are batched from memory; image folders and TFDS
datasets stream encoded images and decode each batch, so no split has to fit in memory.
Files are decoded as the kNN monitor decodes them (`sources.decode_for_eval`): shorter side
resized to the image size, centre crop, rounded to uint8; files that do not decode are dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable

import numpy as np
import tensorflow as tf

from simsiam_keras.data import sources
from simsiam_keras.data.decode import decode_centre_crop
from simsiam_keras.data.pipeline import image_dataset

AUTOTUNE = tf.data.AUTOTUNE
QUERY_SPLITS = ("test", "val", "validation")


@dataclasses.dataclass
class LabelledSplit:
    """One labelled split; `batches(image_size, batch_size)` reads it in order, once."""

    name: str
    size: int
    make: Callable[[int, int], tf.data.Dataset] = dataclasses.field(repr=False)

    def batches(self, image_size: int, batch_size: int = 256) -> tf.data.Dataset:
        """(float32 NHWC images in [0, 255], int64 labels) batches at `image_size`."""
        return self.make(image_size, batch_size)


@dataclasses.dataclass
class EvalData:
    """A dataset's bank (train) and query (test) splits for evaluation."""

    name: str
    num_classes: int
    bank: LabelledSplit
    query: LabelledSplit


def encoded_batches(encoded: tf.data.Dataset, image_size: int, batch_size: int) -> tf.data.Dataset:
    """(encoded bytes, label) elements -> decoded (float32 images, int64 labels) batches, bad images dropped."""

    def load(data, label):
        image, ok = decode_centre_crop(data, image_size)
        return tf.cast(image, tf.float32), tf.cast(label, tf.int64), ok

    ds = encoded.map(load, num_parallel_calls=AUTOTUNE)  # deterministic: features keep the label order
    ds = ds.filter(lambda image, label, ok: ok).map(lambda image, label, ok: (image, label))
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def array_batches(images: np.ndarray, labels: np.ndarray, image_size: int, batch_size: int) -> tf.data.Dataset:
    """uint8 NHWC arrays -> (float32 images, int64 labels) batches, resized to `image_size` if needed."""
    labels = tf.data.Dataset.from_tensor_slices(labels.astype(np.int64)).batch(batch_size)
    return tf.data.Dataset.zip((image_dataset(images, image_size, batch_size), labels))


def _array_split(name: str, images: np.ndarray, labels: np.ndarray) -> LabelledSplit:
    return LabelledSplit(name, len(images), functools.partial(array_batches, images, labels))


def _synthetic(seed: int) -> EvalData:
    from simsiam_keras.data.synthetic import CLASS_NAMES, make_synthetic

    # Generated at the model's image size (as pretraining generated it), once per size.
    generate = functools.lru_cache(maxsize=2)(lambda size: make_synthetic(image_size=size, seed=seed))

    def split(name: str, x: str, y: str, size: int) -> LabelledSplit:
        def make(image_size: int, batch_size: int) -> tf.data.Dataset:
            data = generate(image_size)
            return array_batches(data[x], data[y], image_size, batch_size)

        return LabelledSplit(name, size, make)

    defaults = inspect.signature(make_synthetic).parameters
    return EvalData("synthetic", len(CLASS_NAMES),
                    split("train", "x_train", "y_train", defaults["num_train"].default),
                    split("test", "x_test", "y_test", defaults["num_test"].default))


def _arrays(source: sources.DataSource) -> EvalData:
    if not source.has_labels:
        raise ValueError(f"--dataset {source.name}: evaluation needs labelled x_train/y_train and x_test/y_test")
    return EvalData(source.name, source.num_classes, _array_split("train", source.x_train, source.y_train),
                    _array_split("test", source.x_test, source.y_test))


def _folder(path: str) -> EvalData:
    splits = sources.list_image_folder(path)
    query_name = next((s for s in QUERY_SPLITS if s in splits), None)
    if splits["train"].labels is None or query_name is None or splits[query_name].labels is None:
        raise ValueError(
            f"--dataset folder:{path}: evaluation needs labelled splits PATH/train/<label>/* and "
            f"PATH/test/<label>/* (or val/validation); found {', '.join(splits)}"
        )

    def split(name: str) -> LabelledSplit:
        files, labels = splits[name].files, splits[name].labels

        def make(image_size: int, batch_size: int) -> tf.data.Dataset:
            encoded = tf.data.Dataset.from_tensor_slices(files).map(tf.io.read_file, num_parallel_calls=AUTOTUNE)
            encoded = tf.data.Dataset.zip((encoded, tf.data.Dataset.from_tensor_slices(labels)))
            return encoded_batches(encoded, image_size, batch_size)

        return LabelledSplit(name, len(files), make)

    return EvalData(f"folder:{path}", len(splits["train"].class_names), split("train"), split(query_name))


def _tfds(name: str, data_dir: str | None) -> EvalData:
    import tensorflow_datasets as tfds

    builder = sources.tfds_builder(name, data_dir)
    features, splits = builder.info.features, builder.info.splits
    image_key = next((k for k, f in features.items() if isinstance(f, tfds.features.Image)), None)
    query_name = next((s for s in QUERY_SPLITS if s in splits), None)
    label = features["label"] if "label" in features else None
    if image_key is None or not isinstance(label, tfds.features.ClassLabel) or "train" not in splits or not query_name:
        raise ValueError(f"--dataset {name}: evaluation needs an image, a class label and train + test/validation splits")

    def split(split_name: str) -> LabelledSplit:
        def make(image_size: int, batch_size: int) -> tf.data.Dataset:
            # Encoded bytes, decoded by our decoder, as the file path does.
            ds = builder.as_dataset(split=split_name, shuffle_files=False,
                                    decoders={image_key: tfds.decode.SkipDecoding()})
            return encoded_batches(ds.map(lambda e: (e[image_key], e["label"])), image_size, batch_size)

        return LabelledSplit(split_name, splits[split_name].num_examples, make)

    return EvalData(name, label.num_classes, split("train"), split(query_name))


def eval_data(spec: str, data_dir: str | None = None, seed: int = 0) -> EvalData:
    """Resolves a `--dataset` spec into labelled bank and query splits, checked but not yet read.

    Raises FileNotFoundError or ValueError with a message fit for a command line.
    """
    if spec == "synthetic":
        return _synthetic(seed)
    if spec.startswith("npz:"):
        return _arrays(sources.load_npz(spec[len("npz:"):]))
    if spec.startswith("folder:"):
        return _folder(spec[len("folder:"):])
    return _tfds(spec, data_dir)
