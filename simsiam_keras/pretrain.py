"""A whole pretraining run from a config: the library function behind scripts/pretrain.py."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Iterator

import keras
import tensorflow as tf

from simsiam_keras import pipeline, sources
from simsiam_keras.augment import SimSiamAugment
from simsiam_keras.callbacks import HistoryCSV, KNNMonitor
from simsiam_keras.config import SimSiamConfig
from simsiam_keras.curves import plot_history
from simsiam_keras.distribute import check_batch_size, make_strategy
from simsiam_keras.model import SimSiam, build_simsiam
from simsiam_keras.optimizers import make_optimizers

MIXED_PRECISION = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@dataclasses.dataclass
class PretrainResult:
    model: SimSiam
    history: dict[str, list[float]]
    output_dir: str
    seconds: float
    # kNN accuracy of the encoder before training (the random-init baseline), when monitored.
    knn_before: float | None = None


@contextlib.contextmanager
def dtype_policy(mixed_precision: str) -> Iterator[None]:
    """Builds layers under a mixed-precision policy without leaving it set globally."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, got {mixed_precision!r}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_PRECISION[mixed_precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_compiled_model(
    config: SimSiamConfig, strategy: tf.distribute.Strategy, steps_per_epoch: int
) -> SimSiam:
    """The SimSiam model and both optimizers, created and built in the strategy's scope."""
    with strategy.scope(), dtype_policy(config.mixed_precision):
        model = build_simsiam(config, sync_bn=strategy.num_replicas_in_sync > 1)
        model.compile(*make_optimizers(config, steps_per_epoch))
    return model


def pretrain(config: SimSiamConfig, source: sources.DataSource | None = None, verbose: int | str = "auto") -> PretrainResult:
    """Pretrains SimSiam as `config` says and writes the run directory.

    The directory holds config.json, history.csv (one row per epoch), model.keras and
    TensorBoard logs under logs/. `epochs == 0` saves the randomly initialised model, the
    baseline every evaluation compares against.
    """
    strategy = make_strategy(config.strategy, config.cpu_replicas, config.tpu)
    check_batch_size(config.batch_size, strategy.num_replicas_in_sync)
    if source is None:
        source = sources.load_source(config.dataset, config.image_size, config.seed, config.data_dir)
    keras.utils.set_random_seed(config.seed)
    images = source.pretrain_images
    cache_decoded = pipeline.cache_pays(images, config.cache_decoded)
    steps = config.steps_per_epoch or pipeline.steps_per_epoch(len(images), config.batch_size)
    start = time.time()
    model = build_compiled_model(config, strategy, steps)
    os.makedirs(config.output_dir, exist_ok=True)
    with open(os.path.join(config.output_dir, "config.json"), "w") as f:
        f.write(json.dumps({**config.to_dict(), "data": sources.describe(source)}, indent=2, sort_keys=True))
    history: dict[str, list[float]] = {}
    knn_before = None
    monitor = None
    if config.knn_every > 0 and source.has_labels:
        monitor = KNNMonitor(source.x_train, source.y_train, source.x_test, source.y_test,
                             config.knn_every, config.knn_k, config.knn_temperature)
    if config.epochs > 0:
        callbacks: list[keras.callbacks.Callback] = [monitor] if monitor else []
        skipped = pipeline.SkippedFiles() if source.train_stream is not None and not config.data_service else None
        callbacks += [skipped] if skipped else []
        callbacks += [
            HistoryCSV(os.path.join(config.output_dir, "history.csv")),
            keras.callbacks.TensorBoard(os.path.join(config.output_dir, "logs")),
        ]
        dataset = strategy.distribute_datasets_from_function(pipeline.input_fn(
            images, SimSiamAugment(config.image_size, config.augment), config.batch_size, config.seed,
            data_service=config.data_service, skipped=skipped, cache_decoded=cache_decoded,
        ))
        fit = model.fit(
            dataset, epochs=config.epochs, steps_per_epoch=steps, callbacks=callbacks, shuffle=False, verbose=verbose
        )
        history = fit.history
        knn_before = monitor.initial_accuracy if monitor else None
    elif monitor:
        monitor.set_model(model)
        knn_before = monitor.evaluate()
        print(f"random init: knn_acc {knn_before:.4f}")
    model.save(os.path.join(config.output_dir, "model.keras"))
    if history:
        plot_history([config.output_dir], os.path.join(config.output_dir, "curves.png"))
    return PretrainResult(model, history, config.output_dir, time.time() - start, knn_before)
