"""Training images per second and host memory of the SimSiam train step (never asserted in tests)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import tensorflow as tf

from simsiam_keras.benchmark import torch_peer
from simsiam_keras.benchmark.host_memory import HostMemory, measure_host_memory
from simsiam_keras.benchmark.op_time import op_time_by_type, traced
from simsiam_keras.benchmark.peer_process import PeerProcess
from simsiam_keras.benchmark.roofline import matmul_rate, train_step_flops
from simsiam_keras.config import BENCHMARK_BATCH_SIZE, check_config, make_config
from simsiam_keras.data.autotuner import without_autotuner
from simsiam_keras.data.pipeline import check_augment_on
from simsiam_keras.nets.backbone import check_backbone
from simsiam_keras.train.distribute import check_batch_size, make_strategy
from simsiam_keras.train.pretrain import build_compiled_model
from simsiam_keras.train.step_memory import trains_on_host


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
    rates are the best round of each, `ratio` is ours over the peer's, and `round_ratios` the
    same per round. `gflops` (and `peer_gflops`) is the rate of the best round in floating-point
    operations (`step_gflop` a step: convolutions and matmuls, benchmark.roofline), `matmul_gflops`
    a float32 2048 x 2048 matmul's on the same threads (None unless the step is float32 on one CPU replica). `steps_per_execution`
    and `jit_compile` are the pretraining run's settings of the same names. With
    `augment_on="device"` the step gets uint8 crops and view seeds and draws the views'
    appearance itself, as a `--augment-on device` run's does. With `profile_dir`, `steps` more
    steps of ours run under the TensorFlow profiler, and `profile` lists the op types by their
    share of the op time (benchmark.op_time). Everything is checked before the model is built.
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
    flops = train_step_flops(model, batch)
    # A float32 matmul on this process's CPU threads compares with a float32 step on one CPU replica only.
    comparable = mixed_precision == "off" and distribution.num_replicas_in_sync == 1 and trains_on_host(distribution)
    peak = matmul_rate() if comparable else None  # after the memory's peak is read
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
        # Round i of ours over round i of the peer's: the rounds alternate, so each pair shared the machine's state.
        "round_ratios": [ours_rate / peer_rate for ours_rate, peer_rate in zip(rates, peer_rates)],
        "parameters": float(model.backbone.count_params()),
        "profile": op_time_by_type(profile_dir) if profile_dir else None,
        # The step's convolution and matmul work (benchmark.roofline), the rates it ran at, and a float32 matmul's.
        "step_gflop": flops / 1e9,
        "gflops": flops / 1e9 * best / batch,
        "peer_gflops": flops / 1e9 * max(peer_rates) / batch if peer_rates else None,
        "matmul_gflops": peak / 1e9 if peak else None,
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
