"""One writer per run folder: a live holder's lock refuses, a dead one's is taken over with a warning."""

import json
import os
import socket
import subprocess
import time

import pytest

from simsiam_keras import run_lock
from simsiam_keras.run_lock import LOCK_FILE, RunLock, RunLocked


def plant(folder, host, pid, age=0.0):
    folder.mkdir(exist_ok=True)
    path = folder / LOCK_FILE
    path.write_text(json.dumps({"host": host, "pid": pid, "started": "2026-12-04T20:00:00+00:00"}))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_the_lock_names_its_holder_refuses_a_second_writer_and_is_released(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder):
        holder = json.loads((folder / LOCK_FILE).read_text())
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid() and holder["started"]
        with pytest.raises(RunLocked, match=rf"output_dir {folder} is being written by process {os.getpid()} on "):
            RunLock(folder).acquire()
    assert not folder.exists()  # it made the folder, and nothing else was written there
    folder.mkdir()
    with RunLock(folder):
        pass
    assert os.listdir(folder) == []


def test_a_dead_process_lock_is_taken_over_on_this_host_and_after_the_timeout_from_another(tmp_path, capsys):
    gone = subprocess.Popen(["true"])
    gone.wait()
    plant(tmp_path / "a", socket.gethostname(), gone.pid)
    with RunLock(tmp_path / "a"):
        assert json.loads((tmp_path / "a" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of {tmp_path / 'a'} from process {gone.pid}" in capsys.readouterr().err

    # Another host's lock: its process cannot be asked; fresh, it is refused; stale, taken over.
    plant(tmp_path / "b", "elsewhere", 1)
    with pytest.raises(RunLocked, match="process 1 on elsewhere .*pass `force_unlock`"):
        RunLock(tmp_path / "b").check()
    with RunLock(tmp_path / "b", force_unlock=True):
        pass
    assert "force_unlock" in capsys.readouterr().err
    plant(tmp_path / "c", "elsewhere", 1, age=run_lock.STALE_AFTER_SECONDS + 5)
    with RunLock(tmp_path / "c"):
        pass
    assert "not refreshed for" in capsys.readouterr().err


def test_the_holder_refreshes_its_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_SECONDS", 0.05)
    with RunLock(tmp_path) as lock:
        os.utime(lock.path, (0, 0))
        time.sleep(0.5)
        assert time.time() - os.stat(lock.path).st_mtime < 5
