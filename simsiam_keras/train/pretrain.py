"""A whole pretraining run from a config: the library function behind scripts/pretrain.py."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.config import MONITOR_IMAGES, SimSiamConfig, check_config, expected_duration
from simsiam_keras.data import pipeline, sources
from simsiam_keras.data.eval_splits import EvalData
from simsiam_keras.data.images import DataSource, EncodedImages
from simsiam_keras.data.sources import find_eval_data
from simsiam_keras.evaluate.curves import plot_history
from simsiam_keras.evaluate.monitor import KNNMonitor
from simsiam_keras.method.model import SimSiam, build_simsiam
from simsiam_keras.method.optimizers import make_optimizers
from simsiam_keras.nets.backbone import MIN_IMAGE_SIZE, check_backbone
from simsiam_keras.run_files import check_output_dir, write_atomic
from simsiam_keras.run_lock import RunLock
from simsiam_keras.train import backup
from simsiam_keras.train.distribute import all_gpus, check_batch_size, is_chief, make_strategy, weights_fingerprint
from simsiam_keras.train.divergence import DivergenceGuard
from simsiam_keras.train.history import HistoryCSV, keep_history
from simsiam_keras.train.preemption import PreemptionSignals, StopOnSignal
from simsiam_keras.train.step_memory import reserve_step_memory

MIXED_PRECISION = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@dataclasses.dataclass
class PretrainResult:
    model: SimSiam
    history: dict[str, list[float]]
    output_dir: str
    seconds: float
    # kNN accuracy of the encoder before training (the random-init baseline), when monitored.
    knn_before: float | None = None

    @property
    def knn_after(self) -> float | None:
        """The kNN monitor's last accuracy, if it ran after an epoch."""
        accuracies = self.history.get("knn_acc")
        return accuracies[-1] if accuracies else None


@contextlib.contextmanager
def dtype_policy(mixed_precision: str) -> Iterator[None]:
    """Builds layers under a mixed-precision policy without leaving it set globally."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {mixed_precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_PRECISION[mixed_precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_compiled_model(
    config: SimSiamConfig, strategy: tf.distribute.Strategy, steps_per_epoch: int, num_images: int | None = None
) -> SimSiam:
    """The SimSiam model and both optimizers, created and built in the strategy's scope.

    `num_images` sizes the target bank of `config.target_momentum` (Sec. 5.2).

    jit_compile: on one replica Keras compiles the whole step with XLA; on several GPUs the
    step of each replica is compiled (SimSiam.compile's per_replica_jit_compile); TPUs compile
    every step anyway. On CPUs the host allocator reserves the step's memory in one region
    (step_memory.reserve_step_memory).
    """
    replicas = strategy.num_replicas_in_sync
    per_replica_jit = config.jit_compile and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy)
    if per_replica_jit and not all_gpus(strategy):
        # Off GPUs, MirroredStrategy's cross-replica updates go through merge_call, which XLA
        # cannot compile ("Trying to access resource ... located in device CPU:1 from device CPU:0").
        raise ValueError(
            f"jit_compile on several replicas needs GPUs: XLA cannot compile the cross-replica updates "
            f"of this strategy's {replicas} CPU replicas"
        )
    with strategy.scope(), dtype_policy(config.mixed_precision):
        model = build_simsiam(config, sync_bn=replicas > 1, num_images=num_images)
        # Without --jit-compile, Keras' "auto": XLA on one GPU, never on CPUs or under tf.distribute.
        model.compile(
            *make_optimizers(config, steps_per_epoch),
            jit_compile=True if config.jit_compile and replicas == 1 else "auto",
            per_replica_jit_compile=per_replica_jit,
            steps_per_execution=config.steps_per_execution,
        )
    reserve_step_memory(model.backbone, config.batch_size, strategy)
    return model


def check_steps_per_execution(config: SimSiamConfig, steps_per_epoch: int, start: backup.Position | None = None) -> None:
    """Raises ValueError unless steps_per_execution divides the epoch, the backup interval and the
    resumed position: Keras runs whole executions, so a partial one would train past them."""
    n = config.steps_per_execution
    if steps_per_epoch % n:
        raise ValueError(f"steps_per_execution {n} must divide the {steps_per_epoch} steps per epoch")
    if config.backup_every_steps % n:
        raise ValueError(f"steps_per_execution {n} must divide backup_every_steps {config.backup_every_steps}")
    if start is not None and start.step % n:
        raise ValueError(
            f"steps_per_execution {n} cannot resume {config.output_dir} at step {start.step} of its epoch: "
            f"use a divisor of {start.step}"
        )


def _monitor_data(config: SimSiamConfig, source: DataSource) -> EvalData | None:
    """The kNN monitor's labelled splits, if the data has them: streamed ones decoded once, up to MONITOR_IMAGES."""
    if config.knn_every <= 0:
        return None
    found = find_eval_data(source, config.data_dir, config.seed)
    if isinstance(found, str):
        return None
    return found.in_memory(config.image_size, config.eval_resize_ratio, MONITOR_IMAGES)


def _describe(source: DataSource, monitor_data: EvalData | None) -> dict:
    summary = sources.describe(source)
    if monitor_data is not None:
        summary.update(test_images=monitor_data.query.size, num_classes=monitor_data.num_classes)
    return summary


def describe_plan(config: SimSiamConfig, source: DataSource, steps: int, monitor_data: EvalData | None) -> str:
    """What a run is about to do, in one line: data, model, steps, kNN monitor, run directory and,
    for a preset's own run, how long it takes."""
    images = source.pretrain_images
    shape = f", {images.shape[1]}x{images.shape[2]}" if isinstance(images, np.ndarray) else ""
    monitor = "off"
    if monitor_data is not None:
        period = "every epoch" if config.knn_every == 1 else f"every {config.knn_every} epochs"
        monitor = f"before training and {period} ({monitor_data.bank.size:,} bank, {monitor_data.query.size:,} query images)"
    width = f" of width {config.backbone_width}" if config.backbone in MIN_IMAGE_SIZE else ""  # the ResNets
    duration = expected_duration(config)
    return (f"pretraining SimSiam on {source.name} ({len(images):,} images{shape}): {config.backbone}{width} "
            f"at {config.image_size} px, {config.epochs} epochs of {steps} steps "
            f"at batch {config.batch_size}, lr {config.lr:g}; kNN monitor {monitor}; writing {config.output_dir}"
            + (f"; takes {duration}" if duration else ""))


@dataclasses.dataclass
class PretrainRun:
    """A pretraining run ready to fit: its settings, strategy, data, compiled model, backup and start position."""

    config: SimSiamConfig
    strategy: tf.distribute.Strategy
    source: DataSource
    images: np.ndarray | EncodedImages  # source.pretrain_images, made once
    monitor_data: EvalData | None
    steps: int  # per epoch
    cache_decoded: bool
    model: SimSiam
    backup: backup.RunBackup
    start_at: backup.Position | None  # None: a fresh run
    started: float  # time.time() when the model began to be built

    @property
    def chief(self) -> bool:
        """Whether this process writes the run folder."""
        return is_chief(self.strategy)

    @property
    def history_path(self) -> str:
        return os.path.join(self.config.output_dir, "history.csv")


def check_run(config: SimSiamConfig) -> tuple[PreemptionSignals, backup.Position | None]:
    """Refuses settings no run can use, and a folder this run cannot write or resume, before anything is read;
    returns the preemption signals to catch and the backup to resume from (None: a fresh run)."""
    check_config(config)
    check_backbone(config.backbone, config.image_size, config.backbone_width)
    check_output_dir(config.output_dir)
    if config.backup_every_steps < 0:
        raise ValueError(f"backup_every_steps must be 0 (epoch ends only) or more, got {config.backup_every_steps}")
    signals = PreemptionSignals(config.preemption_signal)  # a bad signal name is refused before anything is read
    RunLock(config.output_dir, config.force_unlock).check()
    return signals, backup.check_resumable(config)


def prepare_run(config: SimSiamConfig, strategy: tf.distribute.Strategy, start_at: backup.Position | None,
                source: DataSource | None = None, verbose: int | str = "auto") -> PretrainRun:
    """Reads the data, builds and compiles the model, restores the backup `start_at` and writes config.json;
    call with the run folder's lock held (`pretrain` does)."""
    if config.restart and is_chief(strategy):
        shutil.rmtree(backup.backup_dir(config.output_dir), ignore_errors=True)
    check_batch_size(config.batch_size, strategy.num_replicas_in_sync)
    if source is None:
        source = sources.load_dataset(config.dataset, config.image_size, config.seed, config.data_dir)
    monitor_data = _monitor_data(config, source)
    keras.utils.set_random_seed(config.seed)
    images = source.pretrain_images
    pipeline.check_batch_fits(len(images), config.batch_size)
    cache_decoded = pipeline.cache_pays(images, config.cache_decoded)
    pipeline.check_augment_on(config.augment_on)
    steps = config.steps_per_epoch or pipeline.steps_per_epoch(len(images), config.batch_size)
    check_steps_per_execution(config, steps, start_at)
    started = time.time()
    model = build_compiled_model(config, strategy, steps, num_images=len(images))
    if verbose != 0:  # after the last check that can refuse the settings
        print(describe_plan(config, source, steps, monitor_data), flush=True)
    run = PretrainRun(config, strategy, source, images, monitor_data, steps, cache_decoded, model,
                      backup.RunBackup(model, config.output_dir, strategy, steps), start_at, started)
    if start_at is not None:
        run.backup.restore(start_at)
        print(f"resuming {config.output_dir} from its backup at the {start_at.describe()} (global step {start_at.global_step})")
    if run.chief:
        os.makedirs(config.output_dir, exist_ok=True)
        settings = {**config.to_dict(), "data": _describe(source, monitor_data)}
        write_atomic(os.path.join(config.output_dir, "config.json"), json.dumps(settings, indent=2, sort_keys=True))
        keep_history(run.history_path, start_at.epoch if start_at else 0)
    return run


def make_monitor(run: PretrainRun) -> KNNMonitor | None:
    """The kNN monitor of the run's labelled splits (None without them); it measures the random init on a fresh run."""
    if run.monitor_data is None:
        return None
    config = run.config
    monitor = KNNMonitor(run.monitor_data, config.knn_every, config.knn_k, config.knn_temperature,
                         config.eval_resize_ratio)
    monitor.evaluate_at_start = run.start_at is None
    return monitor


def make_callbacks(run: PretrainRun, monitor: KNNMonitor | None,
                   signals: PreemptionSignals) -> list[keras.callbacks.Callback]:
    """The run's callbacks in their order: kNN monitor, skipped-file counter, divergence guard, history and
    TensorBoard (chief), backups, then the stop on a preemption signal."""
    config, start_at = run.config, run.start_at
    callbacks: list[keras.callbacks.Callback] = [monitor] if monitor else []
    if run.source.train_stream is not None and not config.data_service:
        callbacks.append(pipeline.SkippedFiles())  # the input pipeline counts into it (`fit`)
    resumed_at = (start_at.epoch, start_at.step) if start_at and start_at.step else None
    callbacks.append(DivergenceGuard(run.steps, resumed_at, config.steps_per_execution))
    if run.chief:
        logs = os.path.join(config.output_dir, "logs")
        callbacks += [HistoryCSV(run.history_path), keras.callbacks.TensorBoard(logs)]
    # Last: an epoch's backup follows its history row, and a diverged step is never backed up;
    # then the stop on a preemption signal, after the step's scheduled backup.
    backups = backup.BackupCallback(run.backup, config.backup_every_steps, start_at)
    return callbacks + [backups, StopOnSignal(signals, backups.backup_now, run.strategy)]


def fit(run: PretrainRun, callbacks: list[keras.callbacks.Callback],
        verbose: int | str = "auto") -> dict[str, list[float]]:
    """Trains the epochs left from the run's start position (the rest of an interrupted epoch first); the history.

    A diverged loss raises `DivergenceError` naming the last good backup.
    """
    config, model = run.config, run.model
    skipped = next((c for c in callbacks if isinstance(c, pipeline.SkippedFiles)), None)
    segments = backup.resume_segments(run.start_at, config.epochs, run.steps)
    if not segments:
        print(f"{config.output_dir}: all {config.epochs} epochs were already trained")
    history: dict[str, list[float]] = {}
    with run.backup.naming_last_good():
        for segment in segments:
            dataset = run.strategy.distribute_datasets_from_function(pipeline.input_fn(
                run.images, SimSiamAugment(config.image_size, config.augment), config.batch_size,
                config.seed, data_service=config.data_service, skip_steps=segment.skip, skipped=skipped,
                cache_decoded=run.cache_decoded, augment_on=config.augment_on,
                image_ids=model.target_bank is not None,
            ))
            fitted = model.fit(
                dataset, initial_epoch=segment.first, epochs=config.epochs, steps_per_epoch=segment.steps,
                callbacks=callbacks + ([backup.StopAtEpochEnd()] if segment.one_epoch else []), shuffle=False,
                verbose=verbose,
            )
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(values)
    return history


def save_run(run: PretrainRun, history: dict[str, list[float]], knn_before: float | None) -> PretrainResult:
    """Writes model.keras and curves.png (chief); the run's result."""
    config, model = run.config, run.model
    if isinstance(run.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = run.strategy.cluster_resolver
        print(f"{resolver.task_type} {resolver.task_id}: final weights fingerprint {weights_fingerprint(model)}")
    if run.chief:
        model.save(os.path.join(config.output_dir, "model.keras"))
        if history or run.start_at is not None:
            plot_history([config.output_dir], os.path.join(config.output_dir, "curves.png"))
    return PretrainResult(model, history, config.output_dir, time.time() - run.started, knn_before)


def pretrain(config: SimSiamConfig, source: DataSource | None = None, verbose: int | str = "auto") -> PretrainResult:
    """Pretrains SimSiam as `config` says and writes the run directory.

    The directory holds config.json, history.csv (one row per epoch), model.keras, TensorBoard
    logs under logs/ and backups under backup/. If backup/ holds a backup of the same run (a
    run that was killed), training resumes from it: same epoch and step, same data stream,
    both optimizers' state. `epochs == 0` saves the randomly initialised model, the baseline
    every evaluation compares against. A NaN or Inf loss raises `DivergenceError`, leaving the
    last good backup in place.

    SIGTERM, SIGINT or `config.preemption_signal` stop training after the current step with a
    backup there, and raise `Preempted`; a backup that cannot be written raises `BackupError`.
    While it runs, the process holds the folder's lock (run.lock): a second run into it is
    refused with `RunLocked` (docs/preemption.md).
    """
    signals, start_at = check_run(config)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(config.strategy, config.cpu_replicas, config.tpu)
    # Only the chief writes the folder, so only it holds the lock.
    lock = RunLock(config.output_dir, config.force_unlock) if is_chief(strategy) else contextlib.nullcontext()
    with lock, signals:
        run = prepare_run(config, strategy, start_at, source, verbose)
        monitor = make_monitor(run)
        history, knn_before = {}, None
        if config.epochs > 0:
            history = fit(run, make_callbacks(run, monitor, signals), verbose)
            knn_before = monitor.initial_accuracy if monitor else None
        elif monitor:
            monitor.set_model(run.model)
            knn_before = monitor.evaluate()
            print(f"random init: knn_acc {knn_before:.4f}")
        return save_run(run, history, knn_before)
