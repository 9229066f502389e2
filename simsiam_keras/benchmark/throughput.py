"""Throughput measurements, reported by scripts/benchmark.py (never asserted in tests)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnxruntime
import tensorflow as tf

from simsiam_keras import saved_run
from simsiam_keras.augment.crop import random_resized_crop, resize_crop
from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.benchmark import torch_peer
from simsiam_keras.benchmark.profile import op_time_by_type, traced
from simsiam_keras.config import AUGMENT_ON, BENCHMARK_BATCH_SIZE, SimSiamConfig, check_config, make_config
from simsiam_keras.data.pipeline import check_augment_on, check_batch_fits, two_view_dataset, without_autotuner
from simsiam_keras.data.synthetic import make_synthetic
from simsiam_keras.nets.backbone import check_backbone
from simsiam_keras.train.distribute import check_batch_size, make_strategy
from simsiam_keras.train.pretrain import build_compiled_model


@dataclasses.dataclass
class HostMemory:
    """Resident host memory (RSS) of this process around a measured block, in MB (10^6 bytes).

    `peak_mb` is the high-water mark while the block ran; `before_mb` the RSS when it started
    (TensorFlow and the other imports are already in it), so `peak_mb - before_mb` is what the
    block added at its peak. Read from Linux's /proc/self/status (VmHWM, VmRSS); the peak is
    reset at the start through /proc/self/clear_refs. Where that reset is refused,
    `peak_includes_startup` is True and the peak covers the whole process since it started.
    Elsewhere (no /proc), `getrusage`'s whole-process peak is all there is.
    """

    before_mb: float | None = None
    peak_mb: float | None = None
    peak_includes_startup: bool = True

    @property
    def increase_mb(self) -> float | None:
        if self.peak_mb is None or self.before_mb is None:
            return None
        return self.peak_mb - self.before_mb


def _proc_status_mb(field: str) -> float | None:
    """A `kB` field of /proc/self/status (Linux) in MB, or None where there is no such file."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def _getrusage_peak_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB on Linux


@contextlib.contextmanager
def measure_host_memory() -> Iterator[HostMemory]:
    """Measures the peak RSS of the `with` block; the HostMemory is filled in when the block ends."""
    memory = HostMemory(before_mb=_proc_status_mb("VmRSS"))
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0, proc(5))
        memory.peak_includes_startup = False
        # The baseline is the reset mark itself: other threads may free memory between a read of
        # VmRSS and the reset, and the mark only grows from here, so the peak is never below it.
        memory.before_mb = _proc_status_mb("VmHWM")
    except OSError:
        pass
    try:
        yield memory
    finally:
        peak = _proc_status_mb("VmHWM") or _getrusage_peak_mb()
        # Linux sums RSS from per-CPU counters, read without syncing them: two readings can be a
        # few pages apart the wrong way, so a block that allocated nothing may read under its start.
        memory.peak_mb = None if peak is None else max(peak, memory.before_mb or 0.0)


class PeerProcess:
    """The torch peer (torch_peer.TorchStep) in a process of its own, so that each framework's peak memory is its own.

    A spawned child builds the peer when started and times `rate(steps)` when asked, so rounds
    still alternate with ours; `close()` returns the child's HostMemory (its own RSS, measured
    from after its imports, TensorFlow's and torch's) and ends it.
    """

    def __init__(self, config: SimSiamConfig, threads: int, total_steps: int):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state of ours, no fork of TF's threads
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve_peer, args=(child, config.to_dict(), threads, total_steps),
                                        name="torch-peer", daemon=True)
        self._process.start()
        child.close()
        self.version: str = self._ask("version")

    def _ask(self, *request: Any) -> Any:
        self._connection.send(request)
        try:
            reply = self._connection.recv()
        except EOFError:
            self._process.join(10)
            raise RuntimeError(f"the torch peer's process ended (exit code {self._process.exitcode})") from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    def rate(self, steps: int) -> float:
        """Images per second of the peer's step over `steps` steps."""
        return self._ask("rate", steps)

    def close(self) -> HostMemory:
        """The child's peak memory; the child ends."""
        memory = self._ask("memory")
        self._process.join(60)
        return memory


def _serve_peer(connection: Any, config: dict[str, Any], threads: int, total_steps: int) -> None:
    """The peer's process: builds the TorchStep, then answers `PeerProcess`'s requests until `memory`."""
    with measure_host_memory() as memory:
        try:
            step = torch_peer.TorchStep(SimSiamConfig.from_dict(config), threads, total_steps)
        except Exception as error:  # sent back whole: the parent raises it
            connection.recv()
            connection.send(error)
            return
        while (request := connection.recv())[0] != "memory":
            connection.send(step.torch.__version__ if request[0] == "version" else step.rate(request[1]))
    connection.send(memory)


def train_throughput(
    backbone: str | None = None,
    backbone_width: int | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    steps: int = 10,
    warmup_steps: int = 3,
    preset: str = "cifar",
    strategy: str = "auto",
    cpu_replicas: int = 0,
    mixed_precision: str = "off",
    peer: str | None = None,
    rounds: int | None = None,
    threads: int | None = None,
    steps_per_execution: int = 1,
    jit_compile: bool = False,
    augment_on: str = "host",
    profile_dir: str | None = None,
) -> dict[str, Any]:
    """SimSiam training images per second (one image = two views) on random in-memory data, and
    the host memory the run took (see HostMemory).

    Unset model settings come from the preset (cifar: resnet18_cifar at 32 px; imagenet:
    resnet50 at 224 px; width 64) and the batch from BENCHMARK_BATCH_SIZE. `peer="torch"` times the same step in PyTorch
    (torch_peer.TorchStep) alternately with ours, `rounds` times each (default 2 with a peer,
    else 1), both on `threads` threads (default: TensorFlow's intra-op thread count); the
    rates are the best round of each, and `ratio` is ours over the peer's. `steps_per_execution`
    and `jit_compile` are the pretraining run's settings of the same names. With
    `augment_on="device"` the step gets uint8 crops and view seeds and draws the views'
    appearance itself, as a `--augment-on device` run's does. With `profile_dir`, `steps` more
    steps of ours run under the TensorFlow profiler, and `profile` lists the op types by their
    share of the op time (benchmark.profile). Everything is checked before the model is built.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be at least 0, got {warmup_steps}")
    if peer not in (None, "torch"):
        raise ValueError(f"peer must be torch, got {peer!r}")
    rounds = rounds if rounds is not None else (2 if peer else 1)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if peer and mixed_precision != "off":
        raise ValueError("peer torch times float32 steps only: leave mixed_precision off")
    if preset not in BENCHMARK_BATCH_SIZE:
        raise ValueError(f"preset must be one of {', '.join(BENCHMARK_BATCH_SIZE)}, got {preset!r}")
    config = check_config(make_config(
        preset, backbone=backbone, backbone_width=backbone_width, image_size=image_size,
        batch_size=batch_size if batch_size is not None else BENCHMARK_BATCH_SIZE[preset],
        mixed_precision=mixed_precision, steps_per_execution=steps_per_execution, jit_compile=jit_compile,
        augment_on=augment_on,
    ))
    check_backbone(config.backbone, config.image_size, config.backbone_width)
    check_augment_on(augment_on)
    for name, count in (("steps", steps), ("warmup_steps", warmup_steps)):
        if count % steps_per_execution:
            raise ValueError(f"steps_per_execution {steps_per_execution} must divide {name} {count}")
    if peer:
        torch_peer.check_peer(config)
    threads = set_threads(threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    size, batch = config.image_size, config.batch_size
    with measure_host_memory() as memory:
        distribution = make_strategy(strategy, cpu_replicas)
        check_batch_size(batch, distribution.num_replicas_in_sync)
        model = build_compiled_model(config, distribution, steps_per_epoch=steps)
        rng = np.random.default_rng(0)
        if augment_on == "device":
            crops = tuple(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for _ in range(2))
            data = tf.data.Dataset.from_tensors((crops, tuple(rng.integers(0, 2**31, (batch, 2)) for _ in range(2))))
        else:
            views = tuple(rng.random((batch, size, size, 3), dtype=np.float32) * 255 for _ in range(2))
            data = tf.data.Dataset.from_tensors(views)
        data = without_autotuner(data.repeat())

        def ours(count: int) -> float:
            start = time.perf_counter()
            model.fit(data, epochs=1, steps_per_epoch=count, shuffle=False, verbose=0)
            return count * batch / (time.perf_counter() - start)

        peer_step = PeerProcess(config, threads, total_steps=steps * rounds + warmup_steps) if peer else None
        if warmup_steps:
            ours(warmup_steps)
            if peer_step:
                peer_step.rate(warmup_steps)
        rates, peer_rates = [], []
        for _ in range(rounds):
            rates.append(ours(steps))
            if peer_step:
                peer_rates.append(peer_step.rate(steps))
        if profile_dir:
            with traced(profile_dir):
                ours(steps)
    peer_memory = peer_step.close() if peer_step else HostMemory()
    best = max(rates)
    return {
        "backbone": config.backbone,
        "augment_on": augment_on,
        "backbone_width": config.backbone_width,
        "image_size": size,
        "batch_size": batch,
        "images_per_second": best,
        "seconds_per_step": batch / best,
        "rounds": rates,
        "threads": threads,
        "load_average": load,
        "replicas": distribution.num_replicas_in_sync,
        "peer": peer,
        "peer_version": peer_step.version if peer_step else None,
        "peer_rounds": peer_rates,
        "peer_images_per_second": max(peer_rates) if peer_rates else None,
        "ratio": best / max(peer_rates) if peer_rates else None,
        "parameters": float(model.backbone.count_params()),
        "profile": op_time_by_type(profile_dir) if profile_dir else None,
        "peak_rss_mb": memory.peak_mb,
        "rss_before_mb": memory.before_mb,
        "rss_increase_mb": memory.increase_mb,
        "peak_includes_startup": memory.peak_includes_startup,
        # The peer's own process, measured the same way (None without a peer).
        "peer_peak_rss_mb": peer_memory.peak_mb,
        "peer_rss_before_mb": peer_memory.before_mb,
        "peer_rss_increase_mb": peer_memory.increase_mb,
        "peer_peak_includes_startup": peer_memory.peak_includes_startup,
    }


def set_threads(threads: int | None = None) -> int:
    """Sets TensorFlow's intra-op thread count to `threads` (None: keep it) and returns the count in use.

    TensorFlow's default (0) is one thread per CPU this process may run on.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if tf.config.threading.get_intra_op_parallelism_threads() != threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:
                raise ValueError("threads must be set before TensorFlow starts: call it in a fresh process") from None
        return threads
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    if configured:
        return configured
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


def _images_per_second(run: Callable[[], Any], batch: int, min_seconds: float, min_repeats: int) -> float:
    run()  # warm-up: graph tracing, session initialisation
    repeats, start = 0, time.perf_counter()
    while repeats < min_repeats or time.perf_counter() - start < min_seconds:
        run()
        repeats += 1
    return repeats * batch / (time.perf_counter() - start)


def export_throughput(
    export_dir: str | Path, batch_size: int = 64, min_seconds: float = 5.0, min_repeats: int = 3
) -> dict[str, Any]:
    """Inference throughput (images/s) of an export's SavedModel and ONNX model on this machine.

    Both run on the CPU with their default thread pools on the same fixed batch; the first
    call of each is a warm-up and is not timed.
    """
    folder = Path(export_dir)
    if not (folder / saved_run.METADATA).is_file():
        raise FileNotFoundError(f"export_dir {folder}: no {saved_run.METADATA} (not a folder simsiam-export wrote)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    metadata = json.loads((folder / saved_run.METADATA).read_text())
    size = metadata["image_size"]
    images = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32)
    figures: dict[str, Any] = {"batch": batch_size, "image_size": size, "backbone": metadata.get("backbone"),
                               "cpu_count": os.cpu_count()}
    if (folder / saved_run.SAVED_MODEL_DIR).is_dir():
        signature = tf.saved_model.load(str(folder / saved_run.SAVED_MODEL_DIR)).signatures[saved_run.SIGNATURE]
        tensor = tf.constant(images)
        figures["saved_model_images_per_s"] = _images_per_second(
            lambda: signature(**{saved_run.INPUT_NAME: tensor}), batch_size, min_seconds, min_repeats
        )
    if (folder / saved_run.ONNX_FILE).is_file():
        session = onnxruntime.InferenceSession(str(folder / saved_run.ONNX_FILE), providers=["CPUExecutionProvider"])
        figures["onnx_images_per_s"] = _images_per_second(
            lambda: session.run(None, {saved_run.INPUT_NAME: images}), batch_size, min_seconds, min_repeats
        )
    return figures
