"""Semi-supervised fine-tuning from few labels (SimCLR Appendix B.5), and the same from scratch.

The whole pretrained backbone plus a linear head is trained end to end on a labelled subset of
the training split (`data.labelled`), BatchNorm in training mode, with the recipe of
`config.FinetuneConfig`; `from_scratch` trains the same network from random initialisation with
the same labels, recipe and steps: the baseline that shows what pretraining bought. Without it,
the linear probe of the same encoder on the same labels (`evaluate.linear_probe`, full-batch
L-BFGS) is reported beside it when the labelled set is small enough for that to be cheap.

Training runs under the pretraining's machinery: any tf.distribute strategy, a mixed-precision
policy, backups every N steps and at epoch ends (`train.backup`), resumed by running the same
command again after a kill.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Any

import keras
import numpy as np

from simsiam_keras.config import (
    EVAL_RESIZE_RATIO,
    FinetuneConfig,
    finetune_epochs,
    make_linear_probe_config,
    scaled_lr,
)
from simsiam_keras.data.eval_splits import EvalData
from simsiam_keras.data.labelled import LabelChoice, choose_labels, split_labels, subset, write_indices
from simsiam_keras.data.sources import eval_data
from simsiam_keras.evaluate.linear_probe import HEAD, linear_probe, save_classifier, top_k_accuracy, train_dataset
from simsiam_keras.evaluate.results import append_result
from simsiam_keras.export.run import export_run
from simsiam_keras.nets import recomputed_activation
from simsiam_keras.run_files import write_atomic
from simsiam_keras.run_lock import RunLock
from simsiam_keras.saved_run import check_backbone_model, load_backbone, locate_model, run_dir_of, run_settings
from simsiam_keras.train import backup
from simsiam_keras.train.distribute import check_batch_size, is_chief, make_strategy
from simsiam_keras.train.divergence import DivergenceGuard
from simsiam_keras.train.preemption import PreemptionSignals, StopOnSignal
from simsiam_keras.train.pretrain import MIXED_PRECISION, dtype_policy

RESULT_FILE = "finetune.json"
SETTINGS_FILE = "config.json"
PROTOCOLS = {False: "finetune", True: "finetune_scratch"}
# Labelled sets up to this size also get the linear probe of the same encoder (cached features, L-BFGS).
PROBE_MAX_IMAGES = 50_000


@dataclasses.dataclass
class FinetuneResult:
    top1: float
    top5: float
    classifier: keras.Model
    output_dir: str
    seconds: float
    record: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What the recipe becomes on this labelled set: the batch, lr, epochs and steps, and why."""

    batch_size: int
    lr: float
    epochs: int
    steps_per_epoch: int
    notes: tuple[str, ...]

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def plan_schedule(config: FinetuneConfig, labelled: int, fraction: float, replicas: int = 1) -> Schedule:
    """The batch capped to the labelled images (a power of two, a multiple of the replicas), lr by the linear rule, and
    the protocol's epochs (60 for 1% of the labels, 30 for 10%) raised until the run takes `min_steps`."""
    notes = []
    batch = config.batch_size
    if batch > labelled:
        # A power of two: odd batches (13, 143) aborted inside TensorFlow's oneDNN kernels in 3 of 4 runs.
        batch = max(replicas, 2 ** int(math.log2(labelled)) // replicas * replicas)
        notes.append(f"batch {config.batch_size} capped to the {labelled} labelled images: {batch}")
    check_batch_size(batch, replicas)
    lr = scaled_lr(config.base_lr, batch)
    steps = math.ceil(labelled / batch)
    epochs = config.epochs or finetune_epochs(fraction)
    if config.epochs is None:
        notes.append(f"{epochs} epochs: the protocol's for {100 * fraction:.3g}% of the labels")
    if epochs * steps < config.min_steps:
        raised = math.ceil(config.min_steps / steps)
        notes.append(f"{epochs} epochs of {steps} steps are fewer than min_steps {config.min_steps}: "
                     f"{raised} epochs ({raised * steps} steps)")
        epochs = raised
    return Schedule(batch, lr, epochs, steps, tuple(notes))


def _keras_backbone(checkpoint: str) -> keras.Model:
    """The checkpoint's backbone as a trainable Keras model; exports have no trainable form."""
    found = locate_model(checkpoint)
    if found.kind != "keras":
        raise ValueError(f"checkpoint {checkpoint}: a {found.kind} export cannot be fine-tuned; give the run "
                         "directory or its .keras file (a converted run works too)")
    backbone = load_backbone(checkpoint)
    check_backbone_model(backbone, checkpoint)
    return backbone


def _rebuilt(backbone: keras.Model, policy: str, keep_weights: bool) -> keras.Model:
    """The backbone's architecture built again here (in the current strategy scope, under `policy`),
    with its weights (`keep_weights`) or a fresh random initialisation."""
    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = policy
        config["trainable"] = True  # a probe may have frozen the source's layers
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(backbone, clone_function=clone)
    recomputed_activation.link_chains(copy)  # the ReLU outputs recomputed in the backward, as in pretraining
    if keep_weights:
        copy.set_weights(backbone.get_weights())
    copy.trainable = True
    return copy


def build_finetune_classifier(backbone: keras.Model, num_classes: int, init_std: float = 0.01, seed: int = 0) -> keras.Model:
    """Trainable backbone + Dense(num_classes) head: `images` [0, 255] -> float32 logits.

    The backbone is called without a `training` argument, so `fit` runs its BatchNorm in training
    mode and `predict` in inference mode. The head is initialised N(0, init_std), zero bias.
    """
    size = backbone.input_shape[1]
    images = keras.Input((size, size, 3), name="images")
    head = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(0.0, init_std, seed=seed),
                              bias_initializer="zeros", dtype="float32", name=HEAD)
    return keras.Model(images, head(backbone(images)), name="finetuned_classifier")


def _check_output(output_dir: str, settings: dict[str, Any]) -> backup.Position | None:
    """None for a new output folder; the backup to resume for one this same fine-tuning left; else an error."""
    if not os.path.exists(output_dir):
        return None
    if not os.path.isdir(output_dir):
        raise NotADirectoryError(f"output_dir {output_dir} exists and is not a directory")
    position = backup.latest_position(output_dir)
    saved_path = os.path.join(output_dir, SETTINGS_FILE)
    if position is None or not os.path.isfile(saved_path):
        raise FileExistsError(f"output_dir {output_dir} exists: choose another folder, or delete it")
    with open(saved_path) as f:
        saved = json.load(f)
    wanted = json.loads(json.dumps(settings))
    differ = [k for k in wanted if k not in backup.RUNTIME_FIELDS and saved.get(k) != wanted[k]]
    if differ:
        raise ValueError(f"cannot resume {output_dir}: its backup is of another fine-tuning ({differ[0]} "
                         f"{saved.get(differ[0])!r} there, {wanted[differ[0]]!r} here); choose another output_dir")
    return position


def _labelled_data(data: EvalData, labels: str, seed: int) -> tuple[LabelChoice, EvalData]:
    choice = choose_labels(split_labels(data.bank), data.class_names, labels, seed, data.bank.files)
    return choice, dataclasses.replace(data, bank=subset(data.bank, choice.indices))


def _probe(backbone: keras.Model, labelled: EvalData, ratio: float) -> dict[str, Any]:
    """The linear probe (L-BFGS on cached features) of the frozen encoder on the same labels."""
    _, result = linear_probe(backbone, labelled, make_linear_probe_config("lbfgs", eval_resize_ratio=ratio))
    return {"top1": result["top1"], "top5": result["top5"], "knn_top1": result["knn_top1"], "recipe": "lbfgs"}


def finetune(
    checkpoint: str,
    dataset: str | EvalData = "synthetic",
    labels: str = "10%",
    output_dir: str | None = None,
    config: FinetuneConfig | None = None,
    from_scratch: bool = False,
    data_dir: str | None = None,
    probe: bool | None = None,
    export: str | None = None,
    verbose: int | str = 0,
    force_unlock: bool = False,
    preemption_signal: str | None = None,
) -> FinetuneResult:
    """Fine-tunes the backbone at `checkpoint` with a labelled subset of `dataset`'s training split.

    `labels`: `P%`, `N-per-class` or `file:PATH` (`data.labelled.choose_labels`). Writes to
    `output_dir` (default RUN/finetune-LABELS, or RUN/scratch-LABELS) classifier.keras and
    classifier.json (for `simsiam-export`), labelled_indices.txt, finetune.json, TensorBoard logs
    under logs/, backups under backup/; records top-1/top-5 in the run's results.json; with
    `export`, exports the classifier there (SavedModel + ONNX). `probe` None: the linear probe runs
    beside fine-tuning when the labelled set is at most PROBE_MAX_IMAGES (never from scratch).
    Everything is checked before anything is written; a folder holding a backup of the same
    fine-tuning is resumed.

    As in pretraining (docs/preemption.md), the process holds `output_dir`'s lock (run.lock) while
    it runs, a second writer is refused with `RunLocked` (`force_unlock` takes over another host's
    lock), and SIGTERM, SIGINT or `preemption_signal` stop training after the current step with a
    backup there, raising `Preempted`; a backup that cannot be written raises `BackupError`.
    """
    config = config or FinetuneConfig()
    if config.mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {config.mixed_precision!r}")
    signals = PreemptionSignals(preemption_signal)  # a bad signal name is refused before anything is read
    start = time.time()
    data = dataset if isinstance(dataset, EvalData) else eval_data(dataset, data_dir, config.seed)
    choice, labelled = _labelled_data(data, labels, config.seed)
    pretrained = _keras_backbone(checkpoint)
    settings_of_run = run_settings(checkpoint)
    ratio = config.eval_resize_ratio or settings_of_run.get("eval_resize_ratio", EVAL_RESIZE_RATIO)
    run_dir = str(run_dir_of(checkpoint))
    tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(labels.replace("file:", "")))
    output_dir = output_dir or os.path.join(run_dir, f"{'scratch' if from_scratch else 'finetune'}-{tag}")
    strategy = make_strategy(config.strategy, config.cpu_replicas)
    schedule = plan_schedule(config, len(choice.indices), choice.fraction, strategy.num_replicas_in_sync)
    settings = {**config.to_dict(), "checkpoint": str(checkpoint), "dataset": data.name, "labels": labels,
                "from_scratch": from_scratch, "output_dir": output_dir}
    RunLock(output_dir, force_unlock).check()
    start_at = _check_output(output_dir, settings)
    if export is not None and os.path.exists(export):
        raise FileExistsError(f"export {export} exists: choose another folder, or delete it")
    if export is not None:
        RunLock.beside(export, argument="export").check()
    run_probe = (not from_scratch and len(choice.indices) <= PROBE_MAX_IMAGES) if probe is None else probe

    chief = is_chief(strategy)
    # Only the chief writes the folder, so only it holds the lock.
    lock = RunLock(output_dir, force_unlock) if chief else contextlib.nullcontext()
    with lock, signals:
        for note in schedule.notes:
            print(f"note: {note}")
        probe_result = _probe(pretrained, labelled, ratio) if run_probe and start_at is None else None
        keras.utils.set_random_seed(config.seed)
        crop = pretrained.input_shape[1]
        with strategy.scope(), dtype_policy(config.mixed_precision):
            backbone = _rebuilt(pretrained, keras.config.dtype_policy().name, keep_weights=not from_scratch)
            classifier = build_finetune_classifier(backbone, data.num_classes, config.head_init_std, config.seed)
            lr = keras.optimizers.schedules.CosineDecay(schedule.lr, decay_steps=max(1, schedule.total_steps))
            optimizer = keras.optimizers.SGD(lr, momentum=config.momentum, nesterov=config.nesterov,
                                             weight_decay=config.weight_decay or None)
            classifier.compile(optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                               metrics=["accuracy"])
            classifier.optimizer.build(classifier.trainable_variables)  # before a restore, and for MirroredStrategy
        run_backup = backup.RunBackup(classifier, output_dir, strategy, schedule.steps_per_epoch)
        if start_at is not None:
            run_backup.restore(start_at)
            print(f"resuming {output_dir} from its backup at the {start_at.describe()}")
        elif chief:
            os.makedirs(output_dir, exist_ok=True)  # the lock made it
            write_atomic(os.path.join(output_dir, SETTINGS_FILE), json.dumps(settings, indent=2, sort_keys=True))
            write_indices(choice, output_dir, data.bank.files)
            if probe_result is not None:
                write_atomic(os.path.join(output_dir, "probe.json"), json.dumps(probe_result, indent=2))
        if probe_result is None and start_at is not None and os.path.isfile(os.path.join(output_dir, "probe.json")):
            with open(os.path.join(output_dir, "probe.json")) as f:
                probe_result = json.load(f)

        train_config = dataclasses.replace(config, batch_size=schedule.batch_size)
        resumed_at = (start_at.epoch, start_at.step) if start_at and start_at.step else None
        callbacks: list[keras.callbacks.Callback] = [DivergenceGuard(schedule.steps_per_epoch, resumed_at)]
        if chief:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")))
            # Last: the backup, then the stop on a preemption signal after the step's scheduled backup.
        backups = backup.BackupCallback(run_backup, config.backup_every_steps, start_at)
        callbacks += [backups, StopOnSignal(signals, backups.backup_now, strategy)]
        train_start = time.time()
        with run_backup.naming_last_good():
            for segment in backup.resume_segments(start_at, schedule.epochs, schedule.steps_per_epoch):
                batches = train_dataset(labelled.bank, crop, train_config).skip(segment.skip)
                classifier.fit(batches, initial_epoch=segment.first, epochs=schedule.epochs, steps_per_epoch=segment.steps,
                               callbacks=callbacks + ([backup.StopAtEpochEnd()] if segment.one_epoch else []),
                               verbose=verbose)
        train_seconds = time.time() - train_start

        logits, test_labels = [], []
        for images, y in data.query.batches(crop, ratio):
            logits.append(np.asarray(classifier(images, training=False), np.float32))
            test_labels.append(np.asarray(y))
        logits, test_labels = np.concatenate(logits), np.concatenate(test_labels)
        top1, top5 = top_k_accuracy(logits, test_labels, 1), top_k_accuracy(logits, test_labels, 5)
        saved = keras.Model(classifier.inputs, classifier.outputs, name="finetuned_classifier")
        protocol = PROTOCOLS[from_scratch]
        record = {
            "checkpoint": str(checkpoint),
            "dataset": data.name,
            "split": data.query.name,
            "protocol": protocol,
            "from_scratch": from_scratch,
            "top1": top1,
            "top5": top5,
            "test_images": int(len(test_labels)),
            "labels": {"how": labels, "images": int(len(choice.indices)), "fraction": choice.fraction,
                       "per_class": choice.per_class(data.num_classes), "file": "labelled_indices.txt"},
            "recipe": {**config.to_dict(), "batch_size": schedule.batch_size, "lr": schedule.lr,
                       "epochs": schedule.epochs, "steps_per_epoch": schedule.steps_per_epoch, "steps": schedule.total_steps,
                       "notes": list(schedule.notes), "eval_resize_ratio": ratio,
                       "replicas": strategy.num_replicas_in_sync},
            "linear_probe": probe_result,
            "train_seconds": train_seconds,
            "seconds": time.time() - start,
        }
        if chief:
            save_classifier(saved, output_dir, data.class_names, str(checkpoint),
                            str(settings_of_run.get("backbone", pretrained.name)),
                            {"name": protocol, **record["recipe"]})
            write_atomic(os.path.join(output_dir, RESULT_FILE), json.dumps(record, indent=2))
            for metric in ("top1", "top5"):
                append_result(run_dir, dataset=data.name, split=data.query.name, metric=metric, value=record[metric],
                              protocol=protocol, labels=labels, labelled_images=int(len(choice.indices)),
                              output_dir=output_dir, checkpoint=str(checkpoint))
            if export is not None:
                exported = export_run(os.path.join(output_dir, "classifier.keras"), export)
                record["export"] = str(exported.output_dir)
        return FinetuneResult(top1, top5, saved, output_dir, time.time() - start, record)
