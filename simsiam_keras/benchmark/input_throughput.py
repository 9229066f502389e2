"""Pairs of views per second of the input pipeline, per stage of the recipe and per augmentation mode."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from simsiam_keras.augment.crop import random_resized_crop, resize_crop
from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.benchmark.train_throughput import train_throughput
from simsiam_keras.config import AUGMENT_ON, make_config
from simsiam_keras.data.pipeline import check_batch_fits, two_view_dataset
from simsiam_keras.data.synthetic import make_synthetic


def _pairs_per_second(dataset: tf.data.Dataset, batch_size: int, batches: int, warmup: int) -> float:
    return _rates(dataset, batch_size, batches, warmup)[0]


def _rates(dataset: tf.data.Dataset, batch_size: int, batches: int, warmup: int) -> tuple[float, float]:
    """(pairs per second, pairs per CPU-second of this process) over `batches` batches after `warmup`."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    del iterator  # stops its prefetching threads before anything else is measured
    return batches * batch_size / wall, batches * batch_size / cpu


def augment_on_throughput(
    images: np.ndarray | list[str], preset: str, image_size: int, batch_size: int, batches: int = 10,
    warmup: int = 2, rounds: int = 3,
) -> dict[str, Any]:
    """The input pipeline's CPU-side rate with `--augment-on host` and `device`, measured alternately in this process.

    Host: the whole recipe on the CPU (float32 views). Device: decode, crop and resize only
    (uint8 crops and view seeds); the rest runs in the train step. Each of `rounds` rounds
    times each mode on a fresh iterator. Per mode, the medians over the rounds of the pairs of
    views per second, and of the pairs per CPU-second: per second of CPU time the pipeline used
    (all its threads), which is what each core of a host delivers when the pipeline has the host
    to itself, and on a shared machine what it would deliver. `device/host` is the ratio of the
    latter.
    """
    augment = SimSiamAugment(image_size, make_config(preset, image_size=image_size).augment)
    measured: dict[str, list[tuple[float, float]]] = {mode: [] for mode in AUGMENT_ON}
    for _ in range(rounds):
        for mode in AUGMENT_ON:
            dataset = two_view_dataset(images, augment, batch_size, augment_on=mode)
            measured[mode].append(_rates(dataset, batch_size, batches, warmup))
    result: dict[str, Any] = {
        mode: {
            "pairs_per_second": float(np.median([wall for wall, _ in rates])),
            "pairs_per_cpu_second": float(np.median([cpu for _, cpu in rates])),
        }
        for mode, rates in measured.items()
    }
    result["device/host"] = result["device"]["pairs_per_cpu_second"] / result["host"]["pairs_per_cpu_second"]
    return result


def device_augment_cost(preset: str, image_size: int, batch_size: int, repeats: int = 3) -> dict[str, float]:
    """What `--augment-on device` adds to a train step of `batch_size` pairs: the appearance of its 2 x batch
    views, XLA-compiled as the step runs it, on this process's default device (milliseconds, best of `repeats`).
    """
    augment = SimSiamAugment(image_size, make_config(preset, image_size=image_size).augment)
    rng = np.random.default_rng(0)
    crops = tf.constant(rng.integers(0, 256, (2 * batch_size, image_size, image_size, 3), dtype=np.uint8))
    view_seeds = tf.constant(rng.integers(0, 2**31, (2 * batch_size, 2)))
    appearance = tf.function(augment.appearance_batch, jit_compile=True, autograph=False)
    start = time.perf_counter()
    appearance(crops, view_seeds).numpy()
    compile_seconds = time.perf_counter() - start
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        appearance(crops, view_seeds).numpy()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
    return {"ms_per_step": 1000 * min(walls), "cpu_ms_per_step": 1000 * min(cpus), "compile_seconds": compile_seconds}


def _stage_views(augment: SimSiamAugment) -> dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]:
    """Cumulative pipelines: each stage adds one part of the recipe to the previous one."""
    c = augment.config
    size = augment.image_size

    def read(image, seed):
        return resize_crop(image, size)

    def crop(image, seed):
        return random_resized_crop(tf.cast(image, tf.float32), size, c.crop_scale, c.crop_ratio, augment.crop_seed(seed))

    no_blur = SimSiamAugment(size, dataclasses.replace(c, blur_prob=0.0))
    stages = {"read": read, "+crops": crop, "+colour": no_blur}
    if c.blur_prob > 0:
        stages["+blur"] = augment
    return stages


def input_throughput_arrays(
    preset: str = "cifar",
    image_size: int = 32,
    num_images: int = 10000,
    batch_size: int = 256,
    batches: int = 20,
    warmup: int = 5,
) -> dict[str, float]:
    """Pairs of views per second from in-memory uint8 images, per cumulative stage of the recipe."""
    config = make_config(preset, image_size=image_size)
    augment = SimSiamAugment(image_size, config.augment)
    images = _random_images(num_images, image_size)
    return {
        stage: _pairs_per_second(two_view_dataset(images, view, batch_size), batch_size, batches, warmup)
        for stage, view in _stage_views(augment).items()
    }


JPEG_FOLDER_SIZE = 2000


def write_jpeg_folder(folder: str, count: int = JPEG_FOLDER_SIZE, width: int = 500, height: int = 375) -> list[str]:
    """`count` JPEG files of natural-ish content (smooth shapes and texture, not white noise)."""
    os.makedirs(folder, exist_ok=True)
    small = make_synthetic(num_train=count, num_test=0, image_size=96, seed=0, random_colours=True)["x_train"]
    paths = []
    for start in range(0, count, 100):
        batch = tf.image.resize(small[start : start + 100], (height, width), method="bicubic")
        batch = tf.cast(tf.clip_by_value(batch, 0, 255), tf.uint8)
        for i, image in enumerate(batch):
            path = os.path.join(folder, f"{start + i:05d}.jpg")
            tf.io.write_file(path, tf.io.encode_jpeg(image, quality=90))
            paths.append(path)
    return paths


def input_throughput_files(
    files: list[str], preset: str = "imagenet", image_size: int = 224, batch_size: int = 64,
    batches: int = 10, warmup: int = 3,
) -> dict[str, float]:
    """Pairs of views per second from image files through `two_view_dataset`, per cumulative stage.

    `read+decode` decodes whole images; `+crops` crops each view while decoding (JPEG);
    `+colour` and `+blur` add the rest of the recipe. `cached` is the full recipe on images
    decoded once and kept in memory (`cache_decoded`), timed after the pass that fills it.
    """
    config = make_config(preset, image_size=image_size)
    c = config.augment
    crops_only = dataclasses.replace(c, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)

    def decode_only(image, seed):
        return resize_crop(image, image_size)

    stages = {
        "read+decode": decode_only,
        "+crops": SimSiamAugment(image_size, crops_only),
        "+colour": SimSiamAugment(image_size, dataclasses.replace(c, blur_prob=0.0)),
        "+blur": SimSiamAugment(image_size, c),
    }
    rates = {
        stage: _pairs_per_second(two_view_dataset(files, view, batch_size), batch_size, batches, warmup)
        for stage, view in stages.items()
    }
    cached = two_view_dataset(files, stages["+blur"], batch_size, cache_decoded=True)
    rates["cached"] = _pairs_per_second(cached, batch_size, batches, warmup=len(files) // batch_size + 1)
    return rates


def input_benchmark(
    batch_size: int = 256, batches: int = 20, backbone_width: int = 64, jpeg_dir: str = "/tmp/simsiam_benchmark_jpegs",
    jpeg_batch_size: int = 64, train_batch_size: int = 32, rounds: int = 3,
) -> dict[str, dict[str, Any]]:
    """Both input cases of `benchmark.py input`, each with the train-step rate of its preset (pairs/s).

    (a) in-memory 32x32 arrays, cifar preset, against resnet18_cifar; (b) a folder of JPEGs at
    224 (2,000 images of 500x375 are generated in `jpeg_dir` if it has none), imagenet preset,
    against resnet50. Each case has its rates per stage of the recipe, the train step's rate,
    `augment_on`: host against device mode, measured alternately (`augment_on_throughput`), and
    `device augmentation`: what device mode adds to its train step (`device_augment_cost`). The
    arguments are checked before anything is measured or written.
    """
    sizes = {"batch_size": batch_size, "batches": batches, "backbone_width": backbone_width,
             "jpeg_batch_size": jpeg_batch_size, "train_batch_size": train_batch_size, "rounds": rounds}
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if os.path.exists(jpeg_dir) and not os.path.isdir(jpeg_dir):
        raise NotADirectoryError(f"jpeg_dir {jpeg_dir} exists and is not a folder")
    files = sorted(os.path.join(jpeg_dir, f) for f in os.listdir(jpeg_dir)) if os.path.isdir(jpeg_dir) else []
    check_batch_fits(len(files) or JPEG_FOLDER_SIZE, jpeg_batch_size)
    arrays = _random_images(10000, 32)
    cases: dict[str, dict[str, Any]] = {}
    cases[f"(a) in-memory 32x32 arrays, cifar preset, batch {batch_size}; "
          f"train step resnet18_cifar width {backbone_width}"] = {
        "preset": "cifar",
        "stages": input_throughput_arrays("cifar", 32, batch_size=batch_size, batches=batches),
        "train step": train_throughput("resnet18_cifar", backbone_width, 32, batch_size,
                                       preset="cifar")["images_per_second"],
        "train batch": batch_size,
        "augment_on": augment_on_throughput(arrays, "cifar", 32, batch_size, batches, rounds=rounds),
        "device augmentation": device_augment_cost("cifar", 32, batch_size),
    }
    files = files or write_jpeg_folder(jpeg_dir, JPEG_FOLDER_SIZE)
    jpeg_batches = max(3, batches // 4)
    cases[f"(b) folder of {len(files)} JPEGs at 224, imagenet preset, batch {jpeg_batch_size}; "
          f"train step resnet50 width {backbone_width} batch {train_batch_size}"] = {
        "preset": "imagenet",
        "stages": input_throughput_files(files, "imagenet", 224, jpeg_batch_size, batches=jpeg_batches),
        "train step": train_throughput("resnet50", backbone_width, 224, train_batch_size, steps=3, warmup_steps=1,
                                       preset="imagenet")["images_per_second"],
        "train batch": train_batch_size,
        "augment_on": augment_on_throughput(files, "imagenet", 224, jpeg_batch_size, jpeg_batches, rounds=rounds),
        "device augmentation": device_augment_cost("imagenet", 224, train_batch_size),
    }
    return cases


def _random_images(count: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
