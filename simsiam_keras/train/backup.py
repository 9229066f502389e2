"""Preemption-safe backups of a pretraining run, and resuming from them.

One `tf.train.Checkpoint` holds the model's weights, both optimizers (the encoder's
`model.optimizer` and `model.predictor_optimizer`: iterations, momentum buffers, loss scales),
the epoch's running loss and z_std, and the run's position: epochs completed and steps
completed in the current epoch. A `tf.train.CheckpointManager` writes it to `OUTPUT_DIR/backup/`
every `backup_every_steps` global steps and at each epoch end. Keras' `BackupAndRestore` is not
used: it saves `model.optimizer` only (the predictor's momentum and iterations would restart).

The manager writes the backup's files first (TensorFlow stages them and renames them into
place), then replaces TensorFlow's `checkpoint` index file, then deletes the oldest backup: a kill
at any moment leaves the index naming a complete backup. Each backup is read back once written
(its index and position), and again in full before a run resumes from it: a damaged newest
backup (a full disk, a node dead mid-write, a bad block) is skipped with a warning and the one
before it is used. An error while writing one (ENOSPC, EIO) leaves the previous one named by
the index, and raises `BackupError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Iterator, NamedTuple

import keras
import tensorflow as tf

from simsiam_keras.config import SimSiamConfig
from simsiam_keras.run_files import write_atomic
from simsiam_keras.train.distribute import is_chief
from simsiam_keras.train.divergence import DivergenceError, all_finite

BACKUP_DIR = "backup"
# Two backups: the newest, and the one before it while the next is written.
BACKUPS_KEPT = 2
# What the saved weights must match: a change here cannot load the backup.
ARCHITECTURE_FIELDS = (
    "backbone", "backbone_width", "image_size", "proj_layers", "proj_hidden_dim", "proj_dim",
    "pred_hidden_dim", "use_predictor", "stem_padding", "proj_output_affine",
)
# What a resumed run may change: where and how it runs, and what it reports. `augment_on` moves
# the same draws from the same seeds to another device: the views differ only by float rounding.
RUNTIME_FIELDS = (
    "data_dir", "strategy", "cpu_replicas", "tpu", "cache_decoded", "data_service", "augment_on", "output_dir",
    "knn_every", "knn_k", "knn_temperature", "backup_every_steps", "jit_compile", "resume", "deterministic",
    "steps_per_execution", "restart", "force_unlock", "preemption_signal",
)
_POSITION_KEYS = {"epoch": "epoch", "step": "step", "steps_per_epoch": "steps_per_epoch"}


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a backup stands: `epoch` epochs completed, then `step` steps of the next one."""

    epoch: int
    step: int
    steps_per_epoch: int
    path: str

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    def describe(self) -> str:
        if self.step == 0:
            return f"end of epoch {self.epoch}" if self.epoch else "start"
        return f"epoch {self.epoch + 1}, step {self.step} of {self.steps_per_epoch}"


def backup_dir(output_dir: str) -> str:
    return os.path.join(output_dir, BACKUP_DIR)


# What TensorFlow's checkpoint reader raises for a missing, truncated or garbled file.
_UNREADABLE = (tf.errors.OpError, ValueError, KeyError, IndexError, OSError)


class BackupError(RuntimeError):
    """A backup could not be written or read back; the previous one, if any, is intact."""


def _read_position(path: str, full: bool = False) -> Position:
    """The position a backup holds; `full` also reads every tensor (a truncated or damaged file fails)."""
    reader = tf.train.load_checkpoint(path)
    values = {key: int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")) for key, name in _POSITION_KEYS.items()}
    if full:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    return Position(path=path, **values)


def _backup_paths(directory: str) -> list[str]:
    """The backups in `directory`, newest first: those the index names, or every ckpt-N if the index is unreadable."""
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError):
        state = None
    if state is not None and state.model_checkpoint_path:
        paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
        if state.model_checkpoint_path not in paths:
            paths.append(state.model_checkpoint_path)
        # TensorFlow has already put `directory` before the index's relative names: joining them again
        # made every backup of a relative output_dir (runs/x) unreadable.
    else:
        names = os.listdir(directory) if os.path.isdir(directory) else []
        paths = [os.path.join(directory, n[: -len(".index")]) for n in names if re.fullmatch(r"ckpt-\d+\.index", n)]
    return sorted(set(paths), key=lambda p: int(p.rsplit("-", 1)[1]), reverse=True)


def readable_backups(output_dir: str, full: bool = False, first: bool = False) -> tuple[list[Position], list[tuple[str, str]]]:
    """The readable backups of `output_dir` newest first, and the damaged ones with what is wrong with each.

    `first`: stop at the newest readable one (with `full`, the only one read whole).
    """
    readable, damaged = [], []
    for path in _backup_paths(backup_dir(output_dir)):
        try:
            readable.append(_read_position(path, full))
        except _UNREADABLE as error:
            damaged.append((path, " ".join(str(error).split())[:200]))
        if first and readable:
            break
    return readable, damaged


def latest_position(output_dir: str, full: bool = False) -> Position | None:
    """The newest readable backup in `output_dir`, read without building anything."""
    readable, _ = readable_backups(output_dir, full, first=True)
    return readable[0] if readable else None


def _has_history(output_dir: str) -> bool:
    path = os.path.join(output_dir, "history.csv")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return len(f.read().strip().splitlines()) > 1


def _comparable(values: dict) -> dict:
    return json.loads(json.dumps(values))


def check_resumable(config: SimSiamConfig) -> Position | None:
    """The backup this run resumes from, or None for a fresh run; call before building anything.

    A backup made with another architecture, or another training recipe (data, batch, epochs,
    lr, ablations, precision, augmentation, seed), is refused with one line: resuming it would
    fail to load, or silently continue a different run.
    """
    if config.restart:
        return None
    readable, damaged = readable_backups(config.output_dir, full=True, first=True)
    position = readable[0] if readable else None
    for path, why in damaged:
        if position is not None and int(path.rsplit("-", 1)[1]) > position.global_step:
            print(f"warning: skipping the damaged backup {path} ({why}); resuming from {position.path}", file=sys.stderr)
    if position is None:
        if damaged or _has_history(config.output_dir):
            what = f"no backup in {backup_dir(config.output_dir)} is readable ({os.path.basename(damaged[0][0])}: {damaged[0][1]})" \
                if damaged else f"it has a history.csv but no backup in {backup_dir(config.output_dir)}"
            raise ValueError(f"cannot resume {config.output_dir}: {what}; run with `restart` to start afresh over its history")
        if config.resume:
            raise ValueError(f"resume: {backup_dir(config.output_dir)} holds no backup to resume from")
        return None
    config_path = os.path.join(config.output_dir, "config.json")
    if not os.path.exists(config_path):
        raise ValueError(f"{config.output_dir} has a backup but no config.json: cannot check it is the same run")
    with open(config_path) as f:
        saved = json.load(f)
    # Runs from before the option had an affine output BN in the projector.
    saved.setdefault("proj_output_affine", True)
    wanted = _comparable(config.to_dict())
    differ = [k for k in wanted if k in saved and k not in RUNTIME_FIELDS and saved[k] != wanted[k]]
    if differ:
        kind = "architecture" if any(k in ARCHITECTURE_FIELDS for k in differ) else "training recipe"
        shown = [k for k in differ if k in ARCHITECTURE_FIELDS] or differ
        changes = ", ".join(f"{k} {saved[k]!r} there, {wanted[k]!r} here" for k in shown)
        raise ValueError(
            f"cannot resume {config.output_dir}: its backup is of a different {kind} ({changes}); "
            "use another `output_dir`, or `restart` to start afresh there"
        )
    return position


def _worker_scratch(output_dir: str, strategy: tf.distribute.Strategy) -> str:
    """The temporary directory a non-chief task writes its unused backups to: one per run and task."""
    resolver = strategy.cluster_resolver
    run = hashlib.sha256(os.path.abspath(output_dir).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"simsiam_backup_{run}_{resolver.task_type}{resolver.task_id}")


class RunBackup:
    """What a backup of a compiled model holds (weights, optimizers, epoch metrics, the run's position), and its writer.

    Under multi-worker training every worker calls `save` (saving mirrored variables has
    collective ops) but only the chief writes to `OUTPUT_DIR/backup`; the others write to a
    temporary directory that is deleted at once. That directory is named after the run and the
    task, so a worker restarted after a kill first deletes what its killed predecessor left.
    """

    def __init__(self, model: keras.Model, output_dir: str, strategy: tf.distribute.Strategy, steps_per_epoch: int):
        self.model = model
        self.directory = backup_dir(output_dir)
        self.steps_per_epoch = steps_per_epoch
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.steps = tf.Variable(steps_per_epoch, dtype=tf.int64, trainable=False, name="steps_per_epoch")
        self.metric_variables = [v for metric in model.metrics for v in metric.variables]
        optimizers = {"encoder_optimizer": model.optimizer}
        if getattr(model, "predictor_optimizer", None) is not None:  # a fine-tuned classifier has one optimizer
            optimizers["predictor_optimizer"] = model.predictor_optimizer
        # What every backup holds (its names inside a backup file must stay: older backups restore by them).
        self.contents = tf.train.Checkpoint(
            model=model, metrics=self.metric_variables, epoch=self.epoch, step=self.step,
            steps_per_epoch=self.steps, **optimizers,
        )
        self.chief = is_chief(strategy)
        self.manager = tf.train.CheckpointManager(self.contents, self.directory, BACKUPS_KEPT) if self.chief else None
        self.scratch = None if self.chief else _worker_scratch(output_dir, strategy)
        self.latest: Position | None = None
        self._metric_values: list | None = None

    @contextlib.contextmanager
    def naming_last_good(self) -> Iterator[None]:
        """A `DivergenceError` raised inside says which backup is the last good one, and where it is."""
        try:
            yield
        except DivergenceError as error:
            last = self.latest
            kept = f"the last good backup ({last.describe()}) is in {self.directory}" if last else "no backup was made"
            raise DivergenceError(f"{error}; {kept}") from None

    def restore(self, position: Position) -> None:
        """Loads a backup into the model and both optimizers (every variable must be found)."""
        if position.steps_per_epoch != self.steps_per_epoch:
            raise ValueError(
                f"cannot resume {os.path.dirname(self.directory)}: its backup has {position.steps_per_epoch} "
                f"steps per epoch, this run {self.steps_per_epoch} (did the dataset change?)"
            )
        self.contents.read(position.path).assert_existing_objects_matched()
        self._metric_values = [v.numpy() for v in self.metric_variables]
        self.latest = position
        if self.chief:
            self._set_aside_newer_than(position)

    def _set_aside_newer_than(self, position: Position) -> None:
        """Moves the (damaged) backups newer than `position` into backup/damaged/ and names `position`
        in the index: the manager then never counts them among the backups it keeps."""
        newer = [p for p in _backup_paths(self.directory) if int(p.rsplit("-", 1)[1]) > position.global_step]
        if not newer:
            return
        damaged = os.path.join(self.directory, "damaged")
        os.makedirs(damaged, exist_ok=True)
        for path in newer:
            prefix = os.path.basename(path)
            for name in os.listdir(self.directory):
                if name == prefix or name.startswith(prefix + "."):
                    os.replace(os.path.join(self.directory, name), os.path.join(damaged, name))
        kept = [p for p in _backup_paths(self.directory) if int(p.rsplit("-", 1)[1]) <= position.global_step]
        # The index's text format (TensorFlow's CheckpointState), replaced whole.
        names = [os.path.basename(p) for p in reversed(kept)]
        index = [f'model_checkpoint_path: "{os.path.basename(position.path)}"']
        write_atomic(os.path.join(self.directory, "checkpoint"),
                     "\n".join(index + [f'all_model_checkpoint_paths: "{n}"' for n in names]) + "\n")
        self.manager = tf.train.CheckpointManager(self.contents, self.directory, BACKUPS_KEPT)

    def restore_epoch_metrics(self) -> None:
        """Puts back the running loss and z_std of the interrupted epoch (Keras reset them)."""
        if self._metric_values is not None:
            for variable, value in zip(self.metric_variables, self._metric_values):
                variable.assign(value)

    def save(self, epoch: int, step: int) -> None:
        """Backs up the run after `step` steps of epoch index `epoch` (step 0: after `epoch` epochs)."""
        if not all_finite(self.model.weights):
            raise DivergenceError(
                f"non-finite weights after {Position(epoch, step, self.steps_per_epoch, '').describe()}; "
                "training stopped"
            )
        self.epoch.assign(epoch)
        self.step.assign(step)
        global_step = epoch * self.steps_per_epoch + step
        where = Position(epoch, step, self.steps_per_epoch, "").describe()
        if self.chief:
            previous = self.latest.path if self.latest else None
            kept = f"the previous backup {previous} is intact" if previous else "there is no earlier backup"
            try:
                path = self.manager.save(checkpoint_number=global_step)
            except (tf.errors.OpError, OSError) as error:
                why = " ".join(str(error).split())[:200]
                raise BackupError(f"could not write the backup at the {where} to {self.directory} ({why}); {kept}; "
                                  "free the disk and run the same command to resume") from None
            try:
                _read_position(path)
            except _UNREADABLE as error:
                why = " ".join(str(error).split())[:200]
                raise BackupError(f"the backup just written at the {where}, {path}, does not read back ({why}); "
                                  f"{kept}; run the same command to resume from it") from None
        else:
            shutil.rmtree(self.scratch, ignore_errors=True)
            os.mkdir(self.scratch, mode=0o700)
            path = self.contents.write(os.path.join(self.scratch, "ckpt"))
            shutil.rmtree(self.scratch, ignore_errors=True)
        self.latest = Position(epoch, step, self.steps_per_epoch, path)


class BackupCallback(keras.callbacks.Callback):
    """Backs up every `every_steps` global steps (0: never mid-epoch) and at the end of each epoch.

    Put it last among the callbacks, so an epoch's backup follows its history row. With
    `resumed_at`, the steps of that epoch are numbered after the ones done before the restart,
    and its running metrics are put back when it begins.
    """

    def __init__(self, backup: RunBackup, every_steps: int, resumed_at: Position | None = None):
        super().__init__()
        self.backup = backup
        self.every_steps = every_steps
        self.resumed_at = resumed_at
        self.epoch = 0
        self.step = 0  # steps done in epoch index `epoch`

    def _offset(self) -> int:
        resumed = self.resumed_at
        return resumed.step if resumed is not None and resumed.epoch == self.epoch else 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch
        self.step = self._offset()
        if self.step:
            self.backup.restore_epoch_metrics()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = self.step = self._offset() + batch + 1
        steps = self.backup.steps_per_epoch
        if self.every_steps and step < steps and (self.epoch * steps + step) % self.every_steps == 0:
            self.backup.save(self.epoch, step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.step = self.backup.steps_per_epoch
        self.backup.save(epoch + 1, 0)

    def backup_now(self) -> tuple[int, int]:
        """Backs up where training stands, unless the last backup is there; returns (epoch 1-based, step)."""
        steps = self.backup.steps_per_epoch
        epoch, step = (self.epoch + 1, 0) if self.step == steps else (self.epoch, self.step)
        latest = self.backup.latest
        if latest is None or latest.global_step != epoch * steps + step:
            self.backup.save(epoch, step)
        return self.epoch + 1, self.step


class Segment(NamedTuple):
    """One `fit` call from epoch `first`, `steps` steps per epoch, after `skip` global steps of data."""

    first: int
    steps: int
    skip: int
    # Stop after the first epoch: the rest of an interrupted epoch (Keras epochs have a fixed length).
    one_epoch: bool


def resume_segments(start: Position | None, epochs: int, steps: int) -> list[Segment]:
    """The rest of the interrupted epoch, then the whole epochs that remain."""
    epoch, step = (start.epoch, start.step) if start else (0, 0)
    segments = []
    if step:
        segments.append(Segment(epoch, steps - step, epoch * steps + step, one_epoch=True))
        epoch += 1
    if epoch < epochs:
        segments.append(Segment(epoch, steps, epoch * steps, one_epoch=False))
    return segments


class StopAtEpochEnd(keras.callbacks.Callback):
    """Ends `fit` after one epoch while `params["epochs"]` stays the run's (for the progress bar and kNN schedule)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.model.stop_training = True
