"""Preemption and divergence: a SIGKILLed run resumes where it stopped, a NaN loss stops with its step."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import simsiam_keras  # noqa: F401  (registers the classes model.keras needs)
from simsiam_keras.cli.pretrain import main
from simsiam_keras.train import backup
from simsiam_keras.train.divergence import DivergenceError
from tests.commands import refused_while_locked, run_main

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "pretrain.py")
STEPS, EPOCHS, EVERY = 8, 4, 3  # 64 images in batches of 8; a backup every 3 global steps
RUN = ["--preset", "cifar", "--image-size", "16", "--backbone-width", "8", "--proj-dim", "32", "--proj-hidden-dim", "32",
       "--pred-hidden-dim", "8", "--batch-size", "8", "--epochs", str(EPOCHS), "--knn-every", "2",
       "--backup-every-steps", str(EVERY), "--strategy", "default", "--deterministic"]


# For the commands run in this process: TensorFlow's op determinism, once on, would stay on for later tests.
IN_PROCESS = [flag for flag in RUN if flag != "--deterministic"]


def command(*args):
    return [sys.executable, SCRIPT, *args]


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def history_rows(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def backed_up_step(run) -> int | None:
    """The global step of the newest backup, from the index file alone (cheap enough to poll)."""
    try:
        text = (run / "backup" / "checkpoint").read_text()
    except FileNotFoundError:
        return None
    line = text.splitlines()[0] if text else ""
    return int(line.split("ckpt-")[1].rstrip('"')) if "ckpt-" in line else None


def stop_at_random_step(process, run, sig, rng, after=0):
    """Sends `sig` to `process` once its newest backup is past global step `after` and a random step
    (signal) or at the first mid-epoch backup past the first epoch (SIGKILL: a resume must then skip
    whole epochs and part of one); returns the exit status."""
    target = after + int(rng.integers(1, EPOCHS * STEPS - after - 6)) if sig != signal.SIGKILL else None
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        step = backed_up_step(run)
        if step is not None and (step >= target if target else step > STEPS and step % STEPS):
            break
        time.sleep(0.005)
    if target:
        time.sleep(rng.uniform(0, 0.5))  # so that the signal lands on any step, not just after a backup
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.kill(process.pid, sig)
    return process.wait(timeout=60)


def assert_same_run(reference, run, exact=True, epochs=EPOCHS):
    """The final weights, both optimizers' states and history.csv are the uninterrupted run's."""
    expected, got = (keras.models.load_model(p / "model.keras", safe_mode=True) for p in (reference, run))
    for model in (expected, got):
        assert model.optimizer.iterations.numpy() == model.predictor_optimizer.iterations.numpy() == epochs * STEPS
    for name, a, b in [("weights", expected.weights, got.weights),
                       ("encoder optimizer", expected.optimizer.variables, got.optimizer.variables),
                       ("predictor optimizer", expected.predictor_optimizer.variables, got.predictor_optimizer.variables)]:
        assert len(a) == len(b)
        if exact:
            unequal = [v.path for v, w in zip(a, b) if not np.array_equal(v.numpy(), w.numpy())]
        else:
            unequal = [v.path for v, w in zip(a, b) if not np.allclose(v.numpy(), w.numpy(), rtol=1e-4, atol=1e-6)]
        assert not unequal, f"{name} differ from the uninterrupted run's: {unequal[:5]}"
    # One row per epoch, the same values as the uninterrupted run (the interrupted epoch's loss
    # is the mean over all its steps, before and after the kill), lr schedule included.
    rows, reference_rows = history_rows(run), history_rows(reference)
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, epochs + 1)]
    for row, ref in zip(rows, reference_rows):
        for key in ("loss", "z_std", "lr_encoder", "lr_predictor", "knn_acc"):
            assert row[key] == ref[key] or float(row[key]) == pytest.approx(float(ref[key]), rel=1e-6 if exact else 1e-4), (key, row, ref)
    return rows


PREEMPTED = re.compile(r"^preempted at epoch (\d+), step (\d+): backed up; run the same command to resume$", re.M)


@pytest.mark.slow
def test_killed_or_preempted_run_resumes_at_the_same_step_and_ends_like_an_uninterrupted_one(npz_dataset, tmp_path):
    args = ["--dataset", f"npz:{npz_dataset}", *RUN]
    reference = tmp_path / "uninterrupted"
    uninterrupted = subprocess.Popen(command(*args, "--output-dir", str(reference)), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=ENV)
    run, preempted = tmp_path / "killed", tmp_path / "preempted"
    process = subprocess.Popen(command(*args, "--output-dir", str(run)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=ENV)
    noticed = subprocess.Popen(command(*args, "--output-dir", str(preempted)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=ENV)
    rng = np.random.default_rng()
    try:
        stop_at_random_step(process, run, signal.SIGKILL, rng)
        # SIGTERM at a random step: the run finishes that step, backs it up, and exits with 143.
        assert stop_at_random_step(noticed, preempted, signal.SIGTERM, rng) == 143
    finally:
        for p in (process, noticed):
            if p.poll() is None:
                p.kill()
        _, errors = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, errors[-2000:]
    killed_at = backup.latest_position(str(run))  # the index still names a loadable backup
    assert killed_at is not None and killed_at.step and killed_at.epoch >= 1, killed_at
    assert not (run / "model.keras").exists()
    rows_before = history_rows(run)
    assert len(rows_before) >= killed_at.epoch

    said = PREEMPTED.findall(noticed.stderr.read())
    assert len(said) == 1, "no preemption line"
    epoch, step = map(int, said[0])
    stopped_at = backup.latest_position(str(preempted))  # backed up at the very step it stopped
    assert (stopped_at.epoch * STEPS + stopped_at.step) == ((epoch - 1) * STEPS + step), (said, stopped_at)
    assert [int(r["epoch"]) for r in history_rows(preempted)] == list(range(1, stopped_at.epoch + 1))
    assert not (preempted / "model.keras").exists() and not (preempted / "run.lock").exists()

    resumed = subprocess.Popen(command(*args, "--output-dir", str(run)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=ENV)
    continued = subprocess.run(command(*args, "--output-dir", str(preempted)), capture_output=True, text=True, env=ENV,
                               timeout=300)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert (f"from its backup at the epoch {killed_at.epoch + 1}, step {killed_at.step} of {STEPS} "
            f"(global step {killed_at.global_step})") in out, out
    # The resumed run continues with the epoch it was killed in, not from its beginning.
    assert f"Epoch {killed_at.epoch + 1}/{EPOCHS}" in out
    assert f"Epoch {killed_at.epoch}/{EPOCHS}" not in out
    assert continued.returncode == 0, continued.stderr[-2000:]
    assert f"(global step {stopped_at.global_step})" in continued.stdout, continued.stdout

    rows = assert_same_run(reference, run)
    assert_same_run(reference, preempted)  # no step repeated or skipped: the same weights bit for bit
    assert len(os.listdir(run / "logs" / "train")) >= 2, "TensorBoard events of the resumed run were not appended"

    # Re-running a finished run trains nothing and keeps its history (in this process, so without
    # --deterministic: a runtime setting, not part of the recipe a resume checks).
    again = run_main(main, "--dataset", f"npz:{npz_dataset}", *IN_PROCESS, "--output-dir", run)
    assert again.returncode == 0 and f"all {EPOCHS} epochs were already trained" in again.stdout, again.stderr[-2000:]
    assert history_rows(run) == rows


def test_mirrored_run_preempted_at_a_random_step_resumes_like_an_uninterrupted_one_and_its_folder_has_one_writer(
    npz_dataset, tmp_path, monkeypatch
):
    """Two replicas (the test process's two logical CPUs); SIGTERM is sent by this process to itself
    at step k, so that it arrives while the run's handler is installed."""
    epochs = 1
    args = ["--dataset", f"npz:{npz_dataset}", *IN_PROCESS, "--epochs", str(epochs), "--knn-every", "0",
            "--strategy", "mirrored", "--cpu-replicas", "2"]
    reference, run = tmp_path / "uninterrupted", tmp_path / "preempted"
    assert run_main(main, *args, "--output-dir", reference).returncode == 0

    # Not a scheduled backup's step: the backup at k is then the one the signal makes.
    k = int(np.random.default_rng().choice([s for s in range(1, epochs * STEPS) if s % EVERY]))
    original = backup.BackupCallback.on_train_batch_end

    original_save, sent = backup.RunBackup.save, []

    def signalled_at_step_k(self, batch, logs=None):
        original(self, batch, logs)
        if self.epoch * STEPS + self.step == k:
            os.kill(os.getpid(), signal.SIGTERM)
            sent.append(signal.SIGTERM)

    def signalled_again_while_backing_up(self, epoch, step):
        if sent == [signal.SIGTERM]:  # the impatient second notice (SIGINT: Ctrl-C) must not cut the backup
            os.kill(os.getpid(), signal.SIGINT)
            sent.append(signal.SIGINT)
        original_save(self, epoch, step)

    monkeypatch.setattr(backup.BackupCallback, "on_train_batch_end", signalled_at_step_k)
    monkeypatch.setattr(backup.RunBackup, "save", signalled_again_while_backing_up)
    stopped = run_main(main, *args, "--output-dir", run)
    monkeypatch.undo()
    assert sent == [signal.SIGTERM, signal.SIGINT]
    assert stopped.returncode == 143, stopped.stderr[-2000:]  # the first signal's status
    epoch, step = (k - 1) // STEPS + 1, (k - 1) % STEPS + 1
    assert f"preempted at epoch {epoch}, step {step}: backed up; run the same command to resume" in stopped.stderr
    assert backup.latest_position(str(run)).global_step == k

    # A second writer while the folder's lock is held by a live process: refused, the folder untouched.
    refused, holder_pid = refused_while_locked(main, args, run)
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --output-dir {run} is being written by process {holder_pid} on "), last
    # The same lock, its process now gone: taken over with a warning, and the run resumes at step k.
    resumed = run_main(main, *args, "--output-dir", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"taking over the lock of {run} from process {holder_pid}" in resumed.stderr
    assert f"(global step {k})" in resumed.stdout
    assert not (run / "run.lock").exists()
    assert_same_run(reference, run, epochs=epochs)


def test_resuming_with_another_architecture_or_recipe_is_refused_before_building(npz_dataset, tmp_path):
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    from simsiam_keras.config import make_config

    config = make_config("cifar", image_size=16, backbone_width=8, proj_dim=32, proj_hidden_dim=32, pred_hidden_dim=8,
                         batch_size=8, epochs=1, output_dir=str(run))
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    epoch, step = tf.Variable(0, dtype=tf.int64), tf.Variable(3, dtype=tf.int64)
    tf.train.Checkpoint(epoch=epoch, step=step, steps_per_epoch=tf.Variable(8, dtype=tf.int64)).write(str(run / "backup" / "ckpt-3"))
    (run / "backup" / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-3"\n')
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}

    result = run_main(main, "--dataset", f"npz:{npz_dataset}", *IN_PROCESS, "--backbone-width", "16", "--epochs", "1",
                      "--output-dir", run)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot resume") and "different architecture (backbone_width 8 there, 16 here)" in last
    assert "Traceback" not in result.stderr
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before, "a refused resume touched the run"

    # The same refusal, in-process and for the recipe, and --resume with nothing to resume.
    with pytest.raises(ValueError, match=r"different training recipe \(epochs 1 there, 5 here\)"):
        backup.check_resumable(make_config("cifar", **{**config.to_dict(), "epochs": 5, "augment": {}}))
    assert backup.check_resumable(config).global_step == 3
    with pytest.raises(ValueError, match="holds no backup to resume from"):
        backup.check_resumable(make_config("cifar", output_dir=str(tmp_path / "empty"), resume=True))


def test_skipped_steps_feed_each_replica_the_batches_it_would_have_had():
    from simsiam_keras.data import pipeline

    images = np.arange(40 * 2 * 2 * 3, dtype=np.uint8).reshape(40, 2, 2, 3) % 251
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())

    def step_batches(skip_steps, steps):
        fn = pipeline.input_fn(images, lambda image: image, 8, seed=3, skip_steps=skip_steps, deterministic=True)
        iterator = iter(strategy.distribute_datasets_from_function(fn))
        return [[r[0].numpy() for r in strategy.experimental_local_results(next(iterator))] for _ in range(steps)]

    full = step_batches(0, 12)  # 12 steps of 2 x 4 images: past the end of the first pass over the data
    assert all(np.array_equal(a, b) for a, b in zip(step_batches(7, 5), full[7:], strict=True) for a, b in zip(a, b))


def test_a_resumed_stream_of_files_reads_at_most_one_pass_to_get_back_in_place():
    from simsiam_keras.data import pipeline
    from simsiam_keras.data.images import EncodedImages

    class CountedReads(EncodedImages):
        def __init__(self, encoded):
            self.encoded, self.reads = encoded, tf.Variable(0, dtype=tf.int64)

        def __len__(self):
            return len(self.encoded)

        def dataset(self, num_shards=1, index=0, seed=0, shuffle=True):
            ds = tf.data.Dataset.from_tensor_slices(self.encoded).shard(num_shards, index)
            ds = ds.shuffle(len(self.encoded), seed=seed, reshuffle_each_iteration=True) if shuffle else ds

            def read(data):
                self.reads.assign_add(1)
                return data

            return ds.map(read)

    values = [10 * i for i in range(10)]
    images = CountedReads([tf.io.encode_png(tf.fill((4, 4, 3), tf.constant(v, tf.uint8))).numpy() for v in values])
    # 1000 passes of 10 images and 4 more images already trained: the rest of pass 1001 follows.
    ds = pipeline.two_view_dataset(images, lambda image: image, 2, seed=1, skip_batches=5 * 1000 + 2, deterministic=True)
    rest = [int(view[0, 0, 0]) for batch, _ in ds.take(3) for view in batch]
    assert len(set(rest)) == 6 and set(rest) <= set(values), rest
    assert images.reads.numpy() < 100, f"{images.reads.numpy()} reads to skip 1000 passes"


@pytest.fixture
def nan_at_step(monkeypatch):
    """Makes the SimSiam loss NaN from global step `k` on (in this process)."""
    from simsiam_keras.method.model import SimSiam

    def install(k):
        original = SimSiam.compute_simsiam_loss

        def poisoned(self, *args):
            loss = original(self, *args)
            return tf.where(self.optimizer.iterations >= k - 1, tf.constant(float("nan")), loss)

        monkeypatch.setattr(SimSiam, "compute_simsiam_loss", poisoned)

    return install


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_backup(tmp_path, tiny_config, nan_at_step):
    from simsiam_keras.data.images import from_arrays
    from simsiam_keras.train.pretrain import build_compiled_model, pretrain

    rng = np.random.default_rng(0)
    source = from_arrays("tiny", x_train=rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8))
    config = tiny_config
    config.batch_size, config.epochs, config.backup_every_steps = 16, 3, 3  # 4 steps per epoch
    config.strategy, config.output_dir = "default", str(tmp_path / "run")
    nan_at_step(7)  # epoch 2, step 3; backups after global steps 3, 4 (epoch end), 6
    with pytest.raises(DivergenceError) as error:
        pretrain(config, source=source, verbose=0)
    message = str(error.value)
    assert "the loss is nan at epoch 2, step 3 of 4 (global step 7)" in message
    assert "the last good backup (epoch 2, step 2 of 4)" in message and config.output_dir in message
    assert not os.path.exists(os.path.join(config.output_dir, "model.keras"))
    assert [r["epoch"] for r in history_rows(tmp_path / "run")] == ["1"]

    position = backup.latest_position(config.output_dir)
    assert (position.epoch, position.step, position.global_step) == (1, 2, 6)
    model = build_compiled_model(config, tf.distribute.get_strategy(), 4)
    run_backup = backup.RunBackup(model, config.output_dir, tf.distribute.get_strategy(), 4)
    run_backup.restore(position)
    assert model.optimizer.iterations.numpy() == model.predictor_optimizer.iterations.numpy() == 6
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights + model.optimizer.variables)


def test_cli_divergence_is_one_error_line_and_exit_code_3(npz_dataset, tmp_path):
    run = tmp_path / "run"
    result = run_main(main, "--dataset", f"npz:{npz_dataset}", *IN_PROCESS, "--base-lr", "1e30", "--output-dir", run)
    assert result.returncode == 3, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "at epoch 1, step" in last and "training stopped" in last, last
    assert "Traceback" not in result.stderr
    assert not (run / "model.keras").exists()


def test_a_backup_killed_while_being_written_leaves_the_previous_one_loadable(tmp_path, tiny_config):
    from simsiam_keras.train.pretrain import build_compiled_model

    strategy = tf.distribute.get_strategy()
    model = build_compiled_model(tiny_config, strategy, 4)
    writer = backup.RunBackup(model, str(tmp_path), strategy, 4)
    writer.save(1, 2)
    # Killed after writing (part of) the files of the next backup, before the index named it.
    directory = tmp_path / "backup"
    (directory / "ckpt-7.index").write_bytes(b"\x00half")
    (directory / "ckpt-7.data-00000-of-00001").write_bytes(b"")
    (directory / "ckpt-7_temp").mkdir()
    position = backup.latest_position(str(tmp_path))
    assert (position.epoch, position.step, position.global_step) == (1, 2, 6)
    restored = build_compiled_model(tiny_config, strategy, 4)
    backup.RunBackup(restored, str(tmp_path), strategy, 4).restore(position)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(model.weights, restored.weights))
    writer.save(1, 3)  # the resumed run writes that backup again, over the debris
    assert backup.latest_position(str(tmp_path)).global_step == 7
    backup.RunBackup(restored, str(tmp_path), strategy, 4).restore(backup.latest_position(str(tmp_path)))


def test_a_restarted_non_chief_worker_deletes_the_backup_files_its_killed_predecessor_left(
    tmp_path, tiny_config, monkeypatch
):
    from types import SimpleNamespace

    from simsiam_keras.train.pretrain import build_compiled_model

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    model = build_compiled_model(tiny_config, tf.distribute.get_strategy(), 4)
    worker1 = SimpleNamespace(cluster_resolver=SimpleNamespace(task_type="worker", task_id=1))
    monkeypatch.setattr(backup, "is_chief", lambda strategy: strategy is not worker1)
    run = str(tmp_path / "run")
    killed = backup.RunBackup(model, run, worker1, 4)
    os.makedirs(killed.scratch)
    (Path(killed.scratch) / "ckpt.data-00000-of-00001").write_bytes(b"\x00half")  # killed mid-write
    restarted = backup.RunBackup(model, run, worker1, 4)
    assert restarted.scratch == killed.scratch  # a restarted worker finds its predecessor's directory
    restarted.save(1, 2)
    assert os.listdir(tmp_path / "tmp") == []
    assert not os.path.exists(run)  # only the chief writes the run's files
    other_run = backup.RunBackup(model, str(tmp_path / "other"), worker1, 4)
    assert other_run.scratch != killed.scratch  # two runs on one host do not share it


def test_a_full_disk_or_a_damaged_newest_backup_falls_back_to_the_previous_one(tmp_path, tiny_config, capsys):
    from simsiam_keras.train.pretrain import build_compiled_model

    strategy = tf.distribute.get_strategy()
    tiny_config.output_dir = str(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(tiny_config.to_dict()))
    model = build_compiled_model(tiny_config, strategy, 4)
    writer = backup.RunBackup(model, str(tmp_path), strategy, 4)
    writer.save(1, 1)
    writer.save(1, 2)
    directory = tmp_path / "backup"

    # The disk fills up while the next backup is written: one line, and the previous backup stays named.
    def no_space(prefix, options=None):
        os.makedirs(f"{prefix}_temp", exist_ok=True)
        (Path(f"{prefix}_temp") / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\x00" * 10)
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}_temp; No space left on device")

    writer.contents._write = no_space
    with pytest.raises(backup.BackupError) as error:
        writer.save(1, 3)
    message = str(error.value)
    assert "\n" not in message and "No space left on device" in message
    assert f"the previous backup {directory / 'ckpt-6'} is intact" in message
    assert backup.check_resumable(tiny_config).global_step == 6
    del writer.contents._write

    # The newest backup truncated (a node died mid-write, or a bad disk): skipped with a warning naming it.
    data = directory / "ckpt-6.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    capsys.readouterr()
    position = backup.check_resumable(tiny_config)
    assert position.global_step == 5
    assert f"warning: skipping the damaged backup {directory / 'ckpt-6'}" in capsys.readouterr().err
    restored = build_compiled_model(tiny_config, strategy, 4)
    resumed = backup.RunBackup(restored, str(tmp_path), strategy, 4)
    resumed.restore(position)
    assert (resumed.epoch.numpy(), resumed.step.numpy()) == (1, 1)
    # Set aside, so that the backups kept from now on are the readable one and the next.
    assert (directory / "damaged" / "ckpt-6.index").exists() and not (directory / "ckpt-6.index").exists()
    resumed.save(1, 3)
    resumed.save(2, 0)
    assert [p.global_step for p in backup.readable_backups(str(tmp_path))[0]] == [8, 7]
    assert backup.readable_backups(str(tmp_path))[1] == []

    # No readable backup, or history with no backup: refused with one line unless `restart`.
    for name in ("ckpt-7.index", "ckpt-8.index"):
        (directory / name).write_bytes(b"\x00damaged")
    with pytest.raises(ValueError, match=r"no backup in .* is readable \(ckpt-8: .*run with `restart` to start afresh"):
        backup.check_resumable(tiny_config)
    shutil.rmtree(directory)
    (tmp_path / "history.csv").write_text("epoch,loss,z_std,knn_acc,lr_encoder,lr_predictor\n1,-0.5,0.1,,0.1,0.1\n")
    with pytest.raises(ValueError, match=r"has a history.csv but no backup"):
        backup.check_resumable(tiny_config)
    tiny_config.restart = True
    assert backup.check_resumable(tiny_config) is None


def test_cli_a_backup_that_cannot_be_written_is_one_error_line_exit_74_and_the_previous_one_intact(
    npz_dataset, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    original, writes = tf.train.Checkpoint._write, []

    def disk_full_on_the_second_backup(self, prefix, options=None):
        writes.append(prefix)
        if len(writes) == 1:
            return original(self, prefix, options=options)
        os.makedirs(f"{prefix}_temp", exist_ok=True)  # what a write cut short leaves
        (Path(f"{prefix}_temp") / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\x00" * 10)
        raise tf.errors.ResourceExhaustedError(None, None, f"{prefix}_temp; No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "_write", disk_full_on_the_second_backup)
    result = run_main(main, "--dataset", f"npz:{npz_dataset}", *IN_PROCESS, "--epochs", "1", "--knn-every", "0",
                      "--output-dir", run)
    monkeypatch.undo()
    assert result.returncode == 74, result.stderr[-2000:]
    assert len(writes) == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]], result.stderr[-2000:]
    assert errors[0].startswith(f"error: could not write the backup at the epoch 1, step {2 * EVERY} of {STEPS}")
    assert "No space left on device" in errors[0]
    assert f"the previous backup {run / 'backup' / f'ckpt-{EVERY}'} is intact" in errors[0]
    intact = backup.latest_position(str(run), full=True)  # every tensor of it reads back
    assert intact.global_step == EVERY
    assert not (run / "model.keras").exists() and not (run / "run.lock").exists()
