"""`benchmark.py train --peer torch`: a one-line error without torch, and a tiny timed run with it."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simsiam_keras.config import make_config

SCRIPT = Path(__file__).parent.parent / "scripts" / "benchmark.py"
TINY = ["train", "--backbone-width", "4", "--image-size", "16", "--batch-size", "8", "--steps", "1", "--warmup-steps", "0"]


def benchmark_main():
    spec = importlib.util.spec_from_file_location("script_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_peer_without_torch_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert benchmark_main()([*TINY, "--peer", "torch"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --peer torch needs PyTorch"), lines
    assert "pip install -e .[torch]" in lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--peer", "torch", "--rounds", "0"], "--rounds must be at least 1"),
    (["--peer", "torch", "--threads", "0"], "--threads must be at least 1"),
    (["--peer", "torch", "--mixed-precision", "bfloat16"], "--peer torch times float32 steps only"),
])
def test_peer_mistakes_are_one_line_errors(argv, message, capsys):
    assert benchmark_main()([*TINY, *argv]) == 2
    assert message in capsys.readouterr().err


def test_peer_has_our_parameter_count():
    torch = pytest.importorskip("torch")
    from simsiam_keras.benchmark.torch_peer import build_torch_simsiam
    from simsiam_keras.method.model import build_simsiam

    config = make_config("cifar", image_size=16, backbone_width=4, proj_dim=16, proj_hidden_dim=32, pred_hidden_dim=8)
    encoder, predictor, _ = build_torch_simsiam(config)
    ours = build_simsiam(config)

    def count(variables):
        return sum(int(np.prod(v.shape)) for v in variables)

    assert sum(p.numel() for p in encoder.parameters()) == count(ours.encoder_variables)
    assert sum(p.numel() for p in predictor.parameters()) == count(ours.predictor_variables)
    assert encoder[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_tiny_peer_run_reports_both_rates_and_their_ratio():
    """As a user runs it: a fresh process (one that earlier tests' TensorFlow and torch state cannot
    reach), bounded in time."""
    pytest.importorskip("torch")
    # One thread each: on a loaded 2-core machine torch's oneDNN 1x1-convolution backward can
    # deadlock on 2 threads (docs/benchmarks.md, "Against PyTorch"; it hung this test in CI). Under load here:
    # 3 of 31 torch-only processes, 3 of 27 of these runs; 0 of 31 on one thread. Width 8: at
    # width 4, TensorFlow's oneDNN kernels corrupt the heap on one intra-op thread (upstream).
    # PYTHONFAULTHANDLER: a run that still hangs is aborted with every thread's stack.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONFAULTHANDLER": "1"}
    argv = [*TINY, "--backbone-width", "8", "--peer", "torch", "--threads", "1"]  # later flags win
    process = subprocess.Popen([sys.executable, str(SCRIPT), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        out, errors = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        out, errors = process.communicate(timeout=60)
        pytest.fail(f"the peer benchmark hung for 240 s; its threads:\n{errors[-8000:]}")
    assert process.returncode == 0, errors[-2000:]
    assert "torch" in out and out.count("images/s") >= 2, out
    assert "(its own process, 1 threads each)" in out, out
    # Each framework's peak memory from its own process: two high-water marks, each above what it added.
    ours_memory, peer_memory = (re.search(rf"{who}: peak host memory (\d+) MB during the run: (\d+) MB before it .* \+ (\d+) MB", out)
                  for who in ("ours", "torch peer, its own process"))
    for memory in ours_memory, peer_memory:
        peak, before, increase = (int(x) for x in memory.groups())
        assert 0 < increase <= peak and abs(before + increase - peak) <= 1, out
    rounds = re.search(r"rounds, images/s: ours ([\d. ]+); torch ([\d. ]+)", out)
    ours, torch_rates = ([float(x) for x in group.split()] for group in rounds.groups())
    assert len(ours) == len(torch_rates) == 2  # two alternating rounds by default with a peer
    ratio = float(re.search(r"ours/torch: ([\d.]+)x", out).group(1))
    assert ratio == pytest.approx(max(ours) / max(torch_rates), rel=0.02, abs=0.01)
    by_round = [float(x) for x in re.search(r"round by round: ([\d.x ]+)", out).group(1).replace("x", "").split()]
    assert by_round == pytest.approx([a / b for a, b in zip(ours, torch_rates)], rel=0.02, abs=0.01)
    # Both rates in GFLOP/s: the same step's work, so in the ratio of the images/s.
    work = re.search(r"([\d.]+) GFLOP a step .*: ([\d.]+) GFLOP/s .*; torch ([\d.]+) GFLOP/s .* matmul ([\d.]+) GFLOP/s", out)
    step_gflop, ours_gflops, torch_gflops, matmul_gflops = (float(x) for x in work.groups())
    assert ours_gflops == pytest.approx(step_gflop * max(ours) / 8, rel=0.1, abs=1)
    assert torch_gflops == pytest.approx(step_gflop * max(torch_rates) / 8, rel=0.1, abs=1) and matmul_gflops > 0
