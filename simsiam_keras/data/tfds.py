"""Prepared TFDS datasets, read offline: small ones into memory, large ones streamed as encoded records.

`tensorflow_datasets` is imported where it is used: it takes seconds to import, and only runs
that read a TFDS dataset need it.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from simsiam_keras.config import DATA_MEMORY_BUDGET_BYTES, STREAM_SHUFFLE_BUFFER
from simsiam_keras.data.images import DECODED_PER_ENCODED_BYTE, DataSource, EncodedImages, as_rgb_uint8, from_arrays
from simsiam_keras.data.spec import test_split

LABEL = "label"


def image_feature(builder) -> str:
    """The one image feature a dataset is read by: `image` if it is an image, else the first image feature."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not keys:
        raise ValueError(f"dataset {builder.name}: has no image feature (features: {', '.join(features)})")
    return "image" if "image" in keys else keys[0]


def class_label(builder):
    """The dataset's `label` feature when it is a class label (evaluation needs one), else None."""
    import tensorflow_datasets as tfds

    label = builder.info.features[LABEL] if LABEL in builder.info.features else None
    return label if isinstance(label, tfds.features.ClassLabel) else None


def tfds_builder(name: str, data_dir: str | None):
    """A prepared TFDS builder, or a one-line error saying how to prepare the dataset."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for unknown names
        raise ValueError(f"dataset {name}: not a TFDS dataset ({error.__class__.__name__})") from None
    if not builder.is_prepared():
        how = ("put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in the manual_dir "
               f"({os.path.join(builder.data_dir_root, 'downloads', 'manual')}) and run `tfds build imagenet2012`"
               if name.split("/")[0].split(":")[0] == "imagenet2012"
               else f"run `tfds build {name}` on a machine with internet")
        raise FileNotFoundError(f"dataset {name}: not prepared in {builder.data_dir}; {how}, then pass its data_dir")
    return builder


def encoded_split(builder, split: str, shuffle_files: bool = False, read_config=None) -> tf.data.Dataset:
    """The split's examples with the image left encoded (decoding is ours: `data.decode`)."""
    import tensorflow_datasets as tfds

    return builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config,
                              decoders={image_feature(builder): tfds.decode.SkipDecoding()})


class TFDSImages(EncodedImages):
    """The encoded images of prepared TFDS splits, read without decoding (decoding is the pipeline's).

    Shards are TFDS even sub-splits (disjoint example ranges, so any number of workers works);
    TFDS interleaves the record files in parallel and we add an element shuffle buffer.
    """

    def __init__(self, name: str, splits: list[str], data_dir: str | None = None,
                 shuffle_buffer: int = STREAM_SHUFFLE_BUFFER):
        self.name, self.splits, self.data_dir, self.shuffle_buffer = name, list(splits), data_dir, shuffle_buffer
        self.builder = tfds_builder(name, data_dir)
        self.image_key = image_feature(self.builder)

    def __len__(self) -> int:
        return sum(self.builder.info.splits[s].num_examples for s in self.splits)

    def dataset(self, num_shards: int = 1, index: int = 0, seed: int = 0, shuffle: bool = True,
                image_ids: bool = False) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        split = "+".join(self.splits)
        if num_shards > 1:
            split = tfds.even_splits(split, n=num_shards)[index]
        read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False, add_tfds_id=image_ids,
                                      num_parallel_calls_for_interleave_files=tf.data.AUTOTUNE)
        ds = encoded_split(self.builder, split, shuffle_files=shuffle, read_config=read_config)
        if image_ids:
            image_id = self._image_id_fn()
            ds = ds.map(lambda example: (example[self.image_key], image_id(example["tfds_id"])),
                        num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(lambda example: example[self.image_key], num_parallel_calls=tf.data.AUTOTUNE)
        if shuffle:
            ds = ds.shuffle(self.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return ds

    def _image_id_fn(self):
        """tfds_id ("FILE__INDEX", the record's index in its file) -> the record's index in the splits, in order."""
        files, offsets, offset = [], [], 0
        for split in self.splits:
            info = self.builder.info.splits[split]
            for name, length in zip(info.filenames, info.shard_lengths):
                files.append(name)
                offsets.append(offset)
                offset += length
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(files, tf.constant(offsets, tf.int64)), default_value=-1)

        def image_id(tfds_id: tf.Tensor) -> tf.Tensor:
            start = table.lookup(tf.strings.regex_replace(tfds_id, "__[0-9]+$", ""))
            known = tf.debugging.assert_non_negative(start, message="a TFDS record from a file outside the splits")
            with tf.control_dependencies([known]):
                return start + tf.strings.to_number(tf.strings.regex_replace(tfds_id, "^.*__", ""), tf.int64)

        return image_id


def streams(builder) -> bool:
    """Whether the dataset is read as encoded images: variable image sizes, or too large for memory."""
    shape = builder.info.features[image_feature(builder)].shape
    return None in shape or (builder.info.dataset_size or 0) * DECODED_PER_ENCODED_BYTE > DATA_MEMORY_BUDGET_BYTES


def load_tfds(name: str, data_dir: str | None = None) -> DataSource:
    """A prepared TFDS image dataset for pretraining, read offline.

    Small fixed-size datasets (CIFAR, STL-10) are read into memory, with their labelled splits;
    the others (ImageNet) stream their encoded images. STL-10's `unlabelled` split joins the
    pretraining images.
    """
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    splits = builder.info.splits
    pretrain_splits = ["train"] + (["unlabelled"] if "unlabelled" in splits else [])
    if streams(builder):
        return DataSource(name, None, train_stream=TFDSImages(name, pretrain_splits, data_dir))
    image_key = image_feature(builder)
    label_key = LABEL if class_label(builder) is not None else None

    def read(split: str) -> dict[str, np.ndarray]:
        return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))

    train = read("train")
    query = test_split(splits)
    test = read(query) if query else {}
    source = from_arrays(name, train[image_key], train.get(label_key), test.get(image_key), test.get(label_key))
    if "unlabelled" in splits:
        source.x_unlabelled = as_rgb_uint8(read("unlabelled")[image_key], "unlabelled")
    return source
