"""Runs a two-worker MultiWorkerMirroredStrategy pretraining on 127.0.0.1 (used by test_multi_worker.py).

    python -m tests.multi_worker OUTPUT_DIR [pretrain.py flags...]

starts both workers as subprocesses of `scripts/pretrain.py --strategy multi_worker` with their
TF_CONFIG, waits for them (bounded), and prints one JSON line: exit codes, seconds and log paths.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "pretrain.py")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(output_dir: str, flags: list[str], log_dir: str, workers: int = 2) -> list[subprocess.Popen]:
    """One process per worker, each with the cluster's TF_CONFIG and its own log file."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    procs = []
    for index in range(workers):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   TF_CPP_MIN_LOG_LEVEL="2")
        log = open(os.path.join(log_dir, f"worker{index}.log"), "w")
        cmd = [sys.executable, SCRIPT, "--strategy", "multi_worker", "--output-dir", output_dir, *flags]
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait(procs: list[subprocess.Popen], timeout: float) -> list[int | None]:
    """Exit codes; a worker still running after `timeout` seconds is killed (and reports None)."""
    deadline = time.time() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(None)
    return codes


if __name__ == "__main__":
    out, flags = sys.argv[1], sys.argv[2:]
    start = time.time()
    codes = wait(start_workers(out, flags, os.path.dirname(os.path.abspath(out))), timeout=600)
    print(json.dumps({"exit_codes": codes, "seconds": round(time.time() - start, 1)}))
