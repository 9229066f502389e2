"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1: one preempted, both stopped at one step, restarted, same weights, chief-only files.

Each run is bounded in time: `tests.multi_worker.wait` kills workers that do not stop by themselves.
"""

import csv
import os
import re
import signal
import time

import keras
import pytest

import simsiam_keras  # noqa: F401  (registers the classes model.keras needs)
from tests.multi_worker import start_workers, wait

FLAGS = ["--image-size", "16", "--backbone-width", "8", "--proj-dim", "64", "--proj-hidden-dim", "64",
         "--pred-hidden-dim", "16", "--batch-size", "16", "--knn-every", "0", "--steps-per-epoch", "4",
         "--backup-every-steps", "2"]


def fingerprints(log_dir):
    logs = [(log_dir / f"worker{i}.log").read_text() for i in (0, 1)]
    return [re.findall(r"worker \d: final weights fingerprint (\w+)", log) for log in logs], logs


def history_epochs(run):
    with open(run / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Worker temp dirs land here, so the test can see that none is left behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    return tmp


def wait_for_backup(run, step, procs, deadline):
    """Waits until the chief has written the backup of global `step` (the index names it after its files)."""
    while not (run / "backup" / f"ckpt-{step}.index").exists() and time.time() < deadline and procs[1].poll() is None:
        time.sleep(0.2)
    assert procs[1].poll() is None, "the run ended before it could be interrupted"


@pytest.mark.slow
def test_two_workers_agree_only_the_chief_writes_and_a_preempted_worker_stops_both_at_one_step_and_resumes(tmp_path, private_tmp):
    run = tmp_path / "run"
    flags = [*FLAGS, "--epochs", "3"]
    procs = start_workers(str(run), flags, str(tmp_path))
    deadline = time.time() + 400
    # A preemption notice to worker 1 alone: both workers stop at one step, the chief backs it up.
    wait_for_backup(run, 2, procs, deadline)
    os.kill(procs[1].pid, signal.SIGTERM)
    codes = wait(procs, timeout=60)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in (0, 1)]
    assert codes == [143, 143], logs[0][-3000:] + logs[1][-3000:]
    said = [re.findall(r"preempted at epoch (\d+), step (\d+): backed up", log) for log in logs]
    assert said[0] and said[0] == said[1], said
    epoch, step = map(int, said[0][0])
    stopped = (epoch - 1) * 4 + step
    assert (run / "backup" / f"ckpt-{stopped}.index").exists(), stopped
    assert not (run / "run.lock").exists()

    # The job manager restarts the whole cluster with the same command.
    codes = wait(start_workers(str(run), flags, str(tmp_path)), timeout=400)
    (prints, logs) = fingerprints(tmp_path)
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert all("resuming" in log for log in logs), "a worker started from scratch"
    assert prints[0] and prints[0] == prints[1]
    assert history_epochs(run) == [1, 2, 3]  # one writer: no duplicated or missing rows
    assert sorted(os.listdir(run)) == ["backup", "config.json", "curves.png", "history.csv", "logs", "model.keras"]
    assert not [f for f in os.listdir(private_tmp) if f.startswith("simsiam_")], "a non-chief worker left its files"
    model = keras.models.load_model(run / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == int(model.predictor_optimizer.iterations.numpy()) == 12
