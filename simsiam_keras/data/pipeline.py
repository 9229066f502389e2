"""The two-view `tf.data` pipeline that feeds SimSiam (Figure 1: x -> two augmented views x1, x2).

The pipeline reads each image once and draws both views from it, with every random
parameter drawn per image and per view. `two_view_dataset` composes a reader of the images
(in-memory arrays, encoded images decoded once and cached, or encoded images streamed from
storage) with `view_pair_fn`, which makes an image's pair of views. Under a `tf.distribute`
strategy, `input_fn` gives each worker its own shard of the data.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.augment.crop import resize_crop, to_uint8
from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.config import AUGMENT_ON, CACHE_DECODED, DATA_MEMORY_BUDGET_BYTES
from simsiam_keras.data.autotuner import without_autotuner
from simsiam_keras.data.decode import decode_and_random_crop, decode_image
from simsiam_keras.data.images import EncodedImages, ImageFiles

AUTOTUNE = tf.data.AUTOTUNE


def as_view_fn(augment: Callable) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Adapts an augmentation to `(image, seed) -> view`.

    Our `SimSiamAugment` takes a stateless seed; a Keras preprocessing layer or any other
    callable of one image brings its own randomness.
    """
    if isinstance(augment, keras.layers.Layer):
        return lambda image, seed: augment(image)
    try:
        takes_seed = "seed" in inspect.signature(augment).parameters
    except (TypeError, ValueError):
        takes_seed = False
    return augment if takes_seed else (lambda image, seed: augment(image))


class SkippedFiles(keras.callbacks.Callback):
    """Counts the images (files, records) the pipeline could not decode, and warns once at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_files")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        skipped = int(self.count.numpy())
        if skipped:
            print(f"warning: skipped {skipped} image files that could not be decoded in epoch {epoch + 1}")
            self.count.assign(0)


def shard_seed(seed: int, index: int) -> int:
    """The seed of input shard `index`: each worker draws its own shuffles and augmentations."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0]) if index else seed


def two_view_dataset(
    images: np.ndarray | EncodedImages | Sequence[str],
    augment: Callable,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = True,
    deterministic: bool = False,
    skipped: SkippedFiles | None = None,
    shard: tuple[int, int] = (1, 0),
    cache_decoded: bool = False,
    reproducible: bool = True,
    skip_batches: int = 0,
    image_ids: bool = False,
    augment_on: str = "host",
) -> tf.data.Dataset:
    """Batches of (view1, view2), float32 in [0, 255], from uint8 NHWC images or encoded images.

    Each image is read once; each view gets its own seed, derived from a seeded per-element
    stream, so every draw is per image and per view and a run is reproducible by `seed`.
    `shard=(n, i)` keeps the i-th of n disjoint parts of every epoch (one per input worker).
    Encoded images (files, or TFDS records) are cropped while decoding (JPEG) or decoded then
    cropped; with `cache_decoded` they are decoded once and kept in memory instead. Images that
    cannot be decoded are dropped (and counted in `skipped`), never trained on. Batches are
    full (drop_remainder), as BN and an even split over replicas need. `reproducible=False` mixes
    the clock into every seed, for copies of the pipeline that would otherwise repeat each
    other's draws (tf.data service workers all start the same seed stream). `skip_batches`
    starts the stream after that many batches, as a resumed run needs. In-memory images skip
    the (image, seed) pairs before any augmentation: the stream is exactly the one an
    uninterrupted run sees. Streamed images would have to be read to be skipped, so a resumed
    stream restarts at the interrupted pass over the data, shuffled under a seed of its own,
    and skips within that pass only (at most one pass of reads); dropped undecodable files
    count in the skip.

    `image_ids` adds each image's int64 index in `images` (a target bank's row, Sec. 5.2) as the
    batches' last element: (view1, view2, image_id).

    `augment_on="device"` leaves the views' appearance (flip, jitter, grayscale, blur) to the
    train step: the pipeline only decodes and crops, and its batches are ((view1, view2),
    (seeds1, seeds2)[, image_id]): uint8 crops and each view's [2] seed, for
    `SimSiamAugment.appearance_batch` (`augment` must be a SimSiamAugment).
    """
    check_augment_on(augment_on, augment)
    if not isinstance(images, (np.ndarray, EncodedImages)):
        images = ImageFiles(list(images))
    check_batch_fits(len(images), batch_size, shard[0])
    seed = shard_seed(seed, shard[1])
    skip = skip_batches * batch_size
    encoded = isinstance(images, EncodedImages) and not cache_decoded
    if isinstance(images, np.ndarray):
        ds = _read_arrays(images, shard, seed, shuffle, image_ids)
    elif cache_decoded:
        ds = _read_decoded_once(images, shard, seed, shuffle, image_ids, skipped)
    else:
        ds, seed, passed = _read_encoded(images, shard, seed, shuffle, image_ids, skip if repeat else 0)
        skip -= passed
    if repeat:
        ds = ds.repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed).batch(2)))
    if skip:
        ds = ds.skip(skip)
    pair = view_pair_fn(augment, augment_on, encoded, image_ids, reproducible)
    ds = ds.map(pair, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if encoded:
        ds = _count_and_drop_bad(ds, skipped)
    return without_autotuner(ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE))


# The readers: one pass over this shard's images, as the elements `view_pair_fn` takes. With
# image_ids every element is (image, id); only then is an EncodedImages asked for ids.


def _reshuffled(ds: tf.data.Dataset, buffer: int, seed: int, shuffle: bool) -> tf.data.Dataset:
    return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True) if shuffle else ds


def _read_arrays(images: np.ndarray, shard: tuple[int, int], seed: int, shuffle: bool,
                 image_ids: bool) -> tf.data.Dataset:
    """In-memory uint8 images, shuffled each pass."""
    num_shards, index = shard
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(len(images))) if image_ids else images)
    return _reshuffled(ds.shard(num_shards, index), len(images) // num_shards + 1, seed, shuffle)


def _read_decoded_once(images: EncodedImages, shard: tuple[int, int], seed: int, shuffle: bool, image_ids: bool,
                       skipped: SkippedFiles | None) -> tf.data.Dataset:
    """Encoded images decoded in the first pass and kept in memory (undecodable ones counted, dropped)."""
    with_ids = {"image_ids": True} if image_ids else {}
    ds = images.dataset(*shard, seed, shuffle=False, **with_ids)
    ds = _count_and_drop_bad(ds.map(_decoded, num_parallel_calls=AUTOTUNE), skipped).cache()
    return _reshuffled(ds, len(images) // shard[0] + 1, seed, shuffle)


def _read_encoded(images: EncodedImages, shard: tuple[int, int], seed: int, shuffle: bool, image_ids: bool,
                  skip: int = 0) -> tuple[tf.data.Dataset, int, int]:
    """Encoded images read from storage each pass: (dataset, the seed of its draws, elements it skipped).

    Of `skip` elements to skip (a resumed stream), whole passes are not read: the stream restarts
    at the interrupted pass, shuffled under a seed of its own.
    """
    with_ids = {"image_ids": True} if image_ids else {}
    ds = images.dataset(*shard, seed, shuffle, **with_ids)
    pass_size = tf.get_static_value(ds.cardinality())
    passes = skip // pass_size if skip and pass_size and pass_size > 0 else 0
    if passes:
        seed = int(np.random.SeedSequence([seed, passes]).generate_state(1)[0])
        ds = images.dataset(*shard, seed, shuffle, **with_ids)
    return ds, seed, passes * pass_size


def view_pair_fn(augment: Callable, augment_on: str, encoded: bool, image_ids: bool,
                 reproducible: bool = True) -> Callable:
    """`(element, element seed) -> the element's pair of views`, each view drawn from its own seed.

    An element is an image (uint8, or encoded bytes when `encoded`), with its id when `image_ids`;
    the pair is (view1, view2[, image_id]), or ((view1, view2), (seed1, seed2)[, image_id]) for
    `augment_on="device"`. Encoded images give (pair, ok): ok when both views decoded.
    """
    view = _encoded_views(augment, augment_on) if encoded else _views(augment, augment_on)

    def seeds(element_seed):
        if not reproducible:
            clock = tf.bitcast(tf.timestamp(), tf.int64)
            element_seed = tf.random.experimental.stateless_fold_in(element_seed, clock)
        return tf.unstack(tf.random.experimental.stateless_split(element_seed, 2))

    def pair(view1, view2, seed1, seed2, image_id):
        views = ((view1, view2), (seed1, seed2)) if augment_on == "device" else (view1, view2)
        return (*views, image_id) if image_ids else views

    def encoded_pair(element, element_seed):
        data, image_id = element if image_ids else (element, None)
        seed1, seed2 = seeds(element_seed)
        (view1, ok1), (view2, ok2) = view(data, seed1), view(data, seed2)
        return pair(view1, view2, seed1, seed2, image_id), ok1 & ok2

    def decoded_pair(element, element_seed):
        image, image_id = element if image_ids else (element, None)
        image = tf.cast(image, tf.float32)
        seed1, seed2 = seeds(element_seed)
        return pair(view(image, seed1), view(image, seed2), seed1, seed2, image_id)

    return encoded_pair if encoded else decoded_pair


def _views(augment: Callable, augment_on: str) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """`(decoded image, seed) -> view`: the whole augmentation, or only its crop, as uint8, for the device."""
    if augment_on == "device":
        return lambda image, seed: to_uint8(augment.crop(image, seed))
    return as_view_fn(augment)


def _encoded_views(augment: Callable, augment_on: str) -> Callable:
    """`(encoded image, seed) -> (view, ok)`: crop-before-decode for SimSiamAugment, else a full decode."""
    if isinstance(augment, SimSiamAugment):
        c = augment.config

        def view(data, seed):
            crop, ok = decode_and_random_crop(data, c.crop_scale, c.crop_ratio, augment.crop_seed(seed))
            crop = resize_crop(crop, augment.image_size)
            return (to_uint8(crop) if augment_on == "device" else augment.appearance(crop, seed)), ok

        return view
    apply = as_view_fn(augment)

    def decoded_view(data, seed):
        image, ok = decode_image(data)
        return apply(tf.cast(image, tf.float32), seed), ok

    return decoded_view


def _decoded(data, *image_id):
    """decode_image of an encoded image (and its id, kept): (image or (image, id), ok)."""
    image, ok = decode_image(data)
    return ((image, *image_id) if image_id else image), ok


def _count_and_drop_bad(ds: tf.data.Dataset, skipped: SkippedFiles | None) -> tf.data.Dataset:
    """(value, ok) elements -> value, for the ok ones; the others are counted in `skipped`."""

    def keep(value, ok):
        if skipped is not None:
            skipped.count.assign_add(tf.cast(tf.logical_not(ok), tf.int64))
        return ok

    return ds.filter(keep).map(lambda value, ok: value)


def check_augment_on(augment_on: str, augment: Callable | None = None) -> None:
    """Raises ValueError unless `augment_on` is `host` or `device`, and `device` has a SimSiamAugment to split."""
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"augment_on must be one of {', '.join(AUGMENT_ON)}, got {augment_on!r}")
    if augment_on == "device" and augment is not None and not isinstance(augment, SimSiamAugment):
        raise ValueError(
            f"augment_on device needs a SimSiamAugment, whose appearance the train step applies; got {augment!r}"
        )


def cache_pays(images: np.ndarray | EncodedImages, setting: str = "auto") -> bool:
    """Whether to keep decoded images in memory: `on`, `off`, or `auto` (when they fit the budget)."""
    if setting not in CACHE_DECODED:
        raise ValueError(f"cache_decoded must be one of {', '.join(CACHE_DECODED)}, got {setting!r}")
    if isinstance(images, np.ndarray) or setting == "off":
        return False
    estimate = images.decoded_bytes_estimate()
    return setting == "on" or (estimate is not None and estimate <= DATA_MEMORY_BUDGET_BYTES)


def input_fn(
    images: np.ndarray | EncodedImages,
    augment: Callable,
    global_batch_size: int,
    seed: int = 0,
    data_service: str | None = None,
    skip_steps: int = 0,
    **kwargs,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """The per-worker pipeline for `strategy.distribute_datasets_from_function`.

    Each input pipeline (one per worker) reads its own disjoint shard of every epoch with its
    own seed and batches per replica, so no worker decodes images another one trains on. With
    `data_service` (a tf.data service dispatcher address), the service's workers run it instead,
    splitting each shard between them (`distributed_epoch`); their skipped files are not counted
    and their draws are not reproducible by seed. `skip_steps` global steps already trained
    (a resumed run) are skipped: each pipeline feeds that many batches to each of its replicas.
    A service's draws are not reproducible, so nothing is skipped there.
    """

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        options = {**kwargs, "skipped": None, "reproducible": False} if data_service else kwargs
        if skip_steps and not data_service:
            replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
            options = {**options, "skip_batches": skip_steps * replicas_per_pipeline}
        ds = two_view_dataset(
            images, augment, context.get_per_replica_batch_size(global_batch_size), seed,
            shard=(context.num_input_pipelines, context.input_pipeline_id), **options,
        )
        if data_service:
            ds = ds.apply(tf.data.experimental.service.distribute("distributed_epoch", data_service))
        return ds

    return dataset_fn


def check_batch_fits(num_images: int, batch_size: int, num_shards: int = 1) -> None:
    """Raises ValueError when a shard of the data cannot fill one batch (batches are full)."""
    if num_images // num_shards < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the dataset ({num_images} images"
            + (f" in {num_shards} shards)" if num_shards > 1 else ")")
        )


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Full batches per pass over the data."""
    return max(1, num_images // batch_size)
