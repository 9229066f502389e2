"""Where the images come from: `--dataset` specs resolved into a DataSource.

`synthetic` (the embedded dataset), `npz:PATH` (keras.datasets convention), `folder:PATH`
and prepared TFDS datasets by name; every source is checked on load, so a mistake is one
clear error before a model is built. Small datasets are held as uint8 arrays; folders and
large TFDS datasets stream encoded images (`EncodedImages`), which the pipeline decodes
(cropping JPEGs while decoding) per view.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from typing import Any

import numpy as np

from simsiam_keras.config import DATA_MEMORY_BUDGET_BYTES, STREAM_SHUFFLE_BUFFER

# A decoded image takes about this many times its encoded size (JPEG at quality 75-95: 8-20x);
# decoded-size estimates err on the large side so that caching never runs out of memory.
DECODED_PER_ENCODED_BYTE = 20


class EncodedImages:
    """Encoded image bytes (JPEG, PNG, BMP, GIF) read from storage as training streams through them."""

    def __len__(self) -> int:
        raise NotImplementedError

    def dataset(self, num_shards: int = 1, index: int = 0, seed: int = 0, shuffle: bool = True):
        """One pass over shard `index` of `num_shards` disjoint shards, as scalar string tensors."""
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

    def dataset(self, num_shards: int = 1, index: int = 0, seed: int = 0, shuffle: bool = True):
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices(self.files).shard(num_shards, index)
        if shuffle:
            ds = ds.shuffle(len(self.files) // num_shards + 1, seed=seed, reshuffle_each_iteration=True)
        # In order, so that the pipeline pairs each image with the same augmentation seed every run.
        return ds.map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def decoded_bytes_estimate(self) -> int | None:
        if len(self.files) > 100_000:  # stat-ing every file of a large folder costs more than it tells
            return None
        return DECODED_PER_ENCODED_BYTE * sum(os.path.getsize(f) for f in self.files)


class TFDSImages(EncodedImages):
    """The encoded images of prepared TFDS splits, read without decoding (decoding is the pipeline's).

    Shards are TFDS even sub-splits (disjoint example ranges, so any number of workers works);
    TFDS interleaves the record files in parallel and we add an element shuffle buffer.
    """

    def __init__(self, name: str, splits: list[str], data_dir: str | None = None, shuffle_buffer: int = STREAM_SHUFFLE_BUFFER):
        import tensorflow_datasets as tfds

        self.name, self.splits, self.data_dir, self.shuffle_buffer = name, list(splits), data_dir, shuffle_buffer
        self.builder = tfds.builder(name, data_dir=data_dir)
        self.image_key = _image_key(self.builder)

    def __len__(self) -> int:
        return sum(self.builder.info.splits[s].num_examples for s in self.splits)

    def dataset(self, num_shards: int = 1, index: int = 0, seed: int = 0, shuffle: bool = True):
        import tensorflow as tf
        import tensorflow_datasets as tfds

        split = "+".join(self.splits)
        if num_shards > 1:
            split = tfds.even_splits(split, n=num_shards)[index]
        read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False,
                                      num_parallel_calls_for_interleave_files=tf.data.AUTOTUNE)
        ds = self.builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config,
                                     decoders={self.image_key: tfds.decode.SkipDecoding()})
        ds = ds.map(lambda example: example[self.image_key], num_parallel_calls=tf.data.AUTOTUNE)
        if shuffle:
            ds = ds.shuffle(self.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return ds


@dataclasses.dataclass
class DataSource:
    """Images as uint8 NHWC RGB arrays, or encoded images streamed for pretraining.

    With `train_stream`, pretraining reads those images and the arrays (if any) are the
    decoded labelled images the kNN monitor uses. Labels and the test split are optional.
    """

    name: str
    x_train: np.ndarray | None
    y_train: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_unlabelled: np.ndarray | None = None
    train_stream: EncodedImages | None = None

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
        return self.y_train is not None and self.x_test is not None and self.y_test is not None


def _as_rgb_uint8(x: np.ndarray, what: str) -> np.ndarray:
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


def _as_labels(y: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
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
    x_train = _as_rgb_uint8(np.asarray(x_train), "x_train")
    x_test = _as_rgb_uint8(np.asarray(x_test), "x_test") if x_test is not None else None
    return DataSource(
        name,
        x_train,
        _as_labels(y_train, len(x_train), "y_train"),
        x_test,
        _as_labels(y_test, len(x_test), "y_test") if x_test is not None else None,
    )


def load_npz(path: str) -> DataSource:
    """An .npz with `x_train` (uint8 NHWC) and optionally `y_train`, `x_test`, `y_test`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--dataset npz:{path}: no such file")
    if not zipfile.is_zipfile(path):
        # np.load would read a lone .npy array, or try to unpickle any other file.
        raise ValueError(f"--dataset npz:{path}: not an .npz archive (save one with numpy.savez)")
    try:
        # allow_pickle=False: object arrays would be unpickled, which can run arbitrary code.
        with np.load(path, allow_pickle=False) as f:
            if "x_train" not in f.files:
                raise ValueError(f"has no 'x_train' array (found: {', '.join(f.files) or 'nothing'})")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        if "pickle" in str(error).lower():
            error = "holds object arrays, which are never unpickled: save plain numeric arrays"
        raise ValueError(f"--dataset npz:{path}: {error}") from None
    try:
        return from_arrays(f"npz:{path}", **arrays)
    except ValueError as error:
        raise ValueError(f"--dataset npz:{path}: {error}") from None


def _image_key(builder) -> str:
    import tensorflow_datasets as tfds

    features = builder.info.features
    keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not keys:
        raise ValueError(f"--dataset {builder.name}: has no image feature (features: {', '.join(features)})")
    return "image" if "image" in keys else keys[0]


def tfds_builder(name: str, data_dir: str | None):
    """A prepared TFDS builder, or a one-line error saying how to prepare the dataset."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for unknown names
        raise ValueError(f"--dataset {name}: not a TFDS dataset ({error.__class__.__name__})") from None
    if not builder.is_prepared():
        how = ("put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the manual_dir "
               f"({os.path.join(builder.data_dir_root, 'downloads', 'manual')}) and run `tfds build imagenet2012`"
               if name.split("/")[0].split(":")[0] == "imagenet2012"
               else f"run `tfds build {name}` on a machine with internet")
        raise FileNotFoundError(f"--dataset {name}: not prepared in {builder.data_dir}; {how}, then pass --data-dir")
    return builder


def _streams(builder) -> bool:
    """Whether the dataset is read as encoded images: variable image sizes, or too large for memory."""
    shape = builder.info.features[_image_key(builder)].shape
    return None in shape or (builder.info.dataset_size or 0) * DECODED_PER_ENCODED_BYTE > DATA_MEMORY_BUDGET_BYTES


def load_tfds(name: str, data_dir: str | None = None, image_size: int = 224, monitor_images: int = 10000) -> DataSource:
    """A prepared TFDS image dataset, read offline.

    Small fixed-size datasets (CIFAR, STL-10) are read into memory; the others (ImageNet) stream
    their encoded images, and up to `monitor_images` of train and test/validation are decoded at
    `image_size` for the kNN monitor. STL-10's `unlabelled` split joins the pretraining images.
    """
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    splits = builder.info.splits
    test_split = next((s for s in ("test", "validation") if s in splits), None)
    pretrain_splits = ["train"] + (["unlabelled"] if "unlabelled" in splits else [])
    image_key = _image_key(builder)
    label_key = "label" if "label" in builder.info.features else None
    if _streams(builder):
        source = DataSource(name, None, train_stream=TFDSImages(name, pretrain_splits, data_dir))
        if label_key and test_split:
            def encoded(split: str):
                ds = builder.as_dataset(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
                return ds.take(monitor_images).map(lambda e: (e[image_key], e[label_key]))

            source.x_train, source.y_train = decode_for_eval(encoded("train"), image_size)
            source.x_test, source.y_test = decode_for_eval(encoded(test_split), image_size)
        return source

    def read(split: str) -> dict[str, np.ndarray]:
        return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))

    train = read("train")
    test = read(test_split) if test_split else {}
    source = from_arrays(name, train[image_key], train.get(label_key), test.get(image_key), test.get(label_key))
    if "unlabelled" in splits:
        source.x_unlabelled = _as_rgb_uint8(read("unlabelled")[image_key], "unlabelled")
    return source


def load_source(spec: str, image_size: int = 32, seed: int = 0, data_dir: str | None = None) -> DataSource:
    """Resolves `--dataset`: `synthetic`, `npz:PATH`, `folder:PATH`, or a prepared TFDS name such as `cifar10`."""
    if spec == "synthetic":
        from simsiam_keras.data.synthetic import make_synthetic

        return from_arrays("synthetic", **make_synthetic(image_size=image_size, seed=seed))
    if spec.startswith("npz:"):
        return load_npz(spec[len("npz:"):])
    if spec.startswith("folder:"):
        return load_folder(spec[len("folder:"):], image_size)
    return load_tfds(spec, data_dir, image_size)


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
    """The splits of `--dataset folder:PATH`.

    `PATH/<split>/<label>/*.jpg` gives labelled splits (class indices shared by all splits),
    `PATH/<label>/*.jpg` one labelled `train` split, and a flat folder of images one
    unlabelled `train` split. JPEG, PNG, BMP and GIF files are listed by extension.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--dataset folder:{path}: no such folder")
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
            f"--dataset folder:{path}: no images found (expected PATH/<split>/<label>/*.jpg, "
            f"PATH/<label>/*.jpg or a folder of images; a labelled layout needs a 'train' split)"
        )
    return splits


def decode_for_eval(encoded, image_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Encoded images decoded to uint8 arrays at `image_size` (shorter side resized, centre crop).

    `encoded` is a tf.data.Dataset of encoded bytes, or of (bytes, label) pairs; images that do
    not decode are dropped with their labels.
    """
    import tensorflow as tf

    from simsiam_keras.data.decode import decode_centre_crop

    labelled = isinstance(encoded.element_spec, tuple)

    def load(data, label=-1):
        image, ok = decode_centre_crop(data, image_size)
        return image, tf.cast(label, tf.int64), ok

    images, labels = [], []
    for batch, label, ok in encoded.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(256):
        images.append(batch.numpy()[ok.numpy()])
        labels.append(label.numpy()[ok.numpy()])
    x = np.concatenate(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    return x, (np.concatenate(labels) if labelled and labels else None)


def _read_files(files: list[str], labels: np.ndarray | None):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(files).map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
    return ds if labels is None else tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(labels)))


def load_folder(path: str, image_size: int, monitor_images: int = 10000) -> DataSource:
    """`folder:PATH`: the train split's files are streamed for pretraining.

    When the folder has labelled `train` and `test` (or `val`/`validation`) splits, up to
    `monitor_images` of each are decoded for the kNN monitor.
    """
    splits = list_image_folder(path)
    train = splits["train"]
    if not _any_decodes(train.files):
        raise ValueError(f"--dataset folder:{path}: none of the {len(train.files)} train images could be decoded")
    source = DataSource(f"folder:{path}", None, train_stream=ImageFiles(train.files))
    test = next((splits[s] for s in ("test", "val", "validation") if s in splits), None)
    if train.labels is not None and test is not None and test.labels is not None:
        def subset(split: FileSplit) -> tuple[list[str], np.ndarray]:
            keep = np.linspace(0, len(split.files) - 1, min(monitor_images, len(split.files))).astype(int)
            return [split.files[i] for i in keep], split.labels[keep]

        source.x_train, source.y_train = decode_for_eval(_read_files(*subset(train)), image_size)
        source.x_test, source.y_test = decode_for_eval(_read_files(*subset(test)), image_size)
    return source


def _any_decodes(files: list[str]) -> bool:
    """Whether at least one file decodes: stops at the first that does (a cheap check up front)."""
    import tensorflow as tf

    from simsiam_keras.data.decode import decode_image

    ds = tf.data.Dataset.from_tensor_slices(files).map(lambda p: decode_image(tf.io.read_file(p))[1])
    return bool(list(ds.filter(lambda ok: ok).take(1)))
