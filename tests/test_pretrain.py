"""A pretraining run end to end: the command line, the run directory, and learning on the synthetic data."""

import csv
import json
import os
import re

import keras
import numpy as np
import pytest

from simsiam_keras.cli.pretrain import main
from tests.commands import run_main

TINY = ["--preset", "cifar", "--image-size", "16", "--backbone-width", "4", "--proj-dim", "32", "--proj-hidden-dim", "32",
        "--pred-hidden-dim", "8", "--batch-size", "16"]


def run_cli(*args):
    return run_main(main, *args)


def test_cli_run_writes_config_history_and_model(npz_dataset, tmp_path):
    out = tmp_path / "run"
    result = run_cli("--dataset", f"npz:{npz_dataset}", *TINY, "--epochs", "2", "--knn-every", "1",
                     "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["batch_size"] == 16 and config["proj_dim"] == 32 and config["data"]["train_images"] == 64
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"epoch", "loss", "z_std", "knn_acc", "lr_encoder", "lr_predictor"} <= set(rows[0])
    assert all(-1 <= float(r["loss"]) <= 1 and 0 <= float(r["knn_acc"]) <= 1 for r in rows)
    assert os.listdir(out / "logs"), "no TensorBoard logs"
    # What it will do, first; what it did and what to run next, last.
    lines = result.stdout.strip().splitlines()
    plan = next(line for line in lines if line.startswith("pretraining SimSiam"))
    assert f"npz:{npz_dataset} (64 images, 16x16)" in plan and "2 epochs of 4 steps at batch 16" in plan, plan
    assert "kNN monitor before training and every epoch (64 bank, 16 query images)" in plan and "takes" not in plan
    before = re.search(r"before training: knn_acc ([0-9.]+)", result.stdout).group(1)
    done, after = lines[-2], float(rows[-1]["knn_acc"])
    assert done.startswith(f"kNN accuracy {float(before):.3f} at random init -> {after:.3f} after training"), done
    assert done.endswith(f"{out} holds model.keras, curves.png, history.csv, config.json"), done
    assert lines[-1].startswith(f"next: simsiam-knn-eval --checkpoint {out} --dataset npz:{npz_dataset}"), lines[-1]
    for command in ("simsiam-linear-eval", f"simsiam-export --checkpoint {out} --output exported/run", "simsiam-embed"):
        assert command in lines[-1]
    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    assert model.optimizer.iterations.numpy() == model.predictor_optimizer.iterations.numpy() == 2 * 64 // 16
    assert model.backbone.output_shape == (None, 4 * 8)


def test_the_plan_of_the_untouched_quickstart_says_how_long_it_takes(npz_dataset):
    from simsiam_keras.config import PRESET_DURATIONS, make_config
    from simsiam_keras.data.sources import load_dataset
    from simsiam_keras.train.pretrain import describe_plan

    source = load_dataset(f"npz:{npz_dataset}")
    quickstart = make_config(output_dir="runs/elsewhere", seed=3)
    assert describe_plan(quickstart, source, 78, None).endswith(f"; takes {PRESET_DURATIONS['quickstart']}")
    for changed in (make_config(epochs=4), make_config(backbone_width=16), make_config("cifar")):
        assert "takes" not in describe_plan(changed, source, 78, None)


def test_cli_epochs_zero_saves_the_random_init_baseline(npz_dataset, tmp_path):
    out = tmp_path / "baseline"
    result = run_cli("--dataset", f"npz:{npz_dataset}", *TINY, "--epochs", "0", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "random init: knn_acc" in result.stdout
    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    assert model.optimizer.iterations.numpy() == 0
    gammas = [l.gamma.numpy() for l in model.backbone.layers if l.name.endswith("_bn2")]
    assert gammas and all(np.all(g == 0) for g in gammas), "not the untouched initialisation"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--strategy", "mirrored", "--cpu-replicas", "2", "--batch-size", "15"], "does not divide by the 2 replicas"),
        (["--dataset", "npz:/nonexistent.npz"], "no such file"),
        (["--backbone", "resnet50", "--image-size", "16"], "too small for resnet50"),
    ],
)
def test_cli_mistakes_get_one_clear_line(tmp_path, args, message):
    result = run_cli(*TINY, *args, "--epochs", "1", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists(), "a failed run must not leave a run directory"


def test_short_pretraining_raises_knn_accuracy_on_synthetic_data(synthetic_run):
    monitor_start = synthetic_run.knn_before
    assert synthetic_run.history["knn_acc"][-1] > monitor_start + 0.07, (monitor_start, synthetic_run.history["knn_acc"])


@pytest.mark.parametrize("runtime", [
    ["--cache-decoded", "off"],
    pytest.param(["--cache-decoded", "on", "--strategy", "mirrored", "--cpu-replicas", "2", "--epochs", "2"],
                 marks=pytest.mark.slow),
], ids=["crop-while-decoding", "cached-mirrored"])
def test_cli_pretrains_on_a_folder_with_bad_files(tmp_path, runtime):
    from tests.test_pipeline import write_exotic_images, write_image_files

    data = tmp_path / "images"
    _, bad = write_image_files(data / "train" / "cat", good=8)
    exotic = write_exotic_images(data / "train" / "cat")
    write_image_files(data / "train" / "dog", good=8, size=(20, 50))
    for label in ("cat", "dog"):
        write_image_files(data / "test" / label, good=4)
    out = tmp_path / "run"
    result = run_cli("--dataset", f"folder:{data}", *TINY, "--batch-size", "4", "--epochs", "1", "--steps-per-epoch", "4",
                     "--knn-every", "1", "--output-dir", str(out), *runtime)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: skipped" in result.stdout and "could not be decoded in epoch 1" in result.stdout
    if "on" in runtime:  # the cached pass reads every file once: exactly the bad ones are skipped
        counts = re.findall(r"warning: skipped (\d+) image files", result.stdout)
        assert sum(map(int, counts)) == 2 * bad, result.stdout
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == (2 if "on" in runtime else 1) and rows[0]["knn_acc"] != ""
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["train_images"] == 16 + len(exotic) + 2 * bad and config["data"]["test_images"] == 8  # bad test files are dropped


def test_folder_where_nothing_decodes_is_an_error_before_training(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"junk")
    (tmp_path / "b.png").write_bytes(b"")
    result = run_cli("--dataset", f"folder:{tmp_path}", *TINY, "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "none of the 2 train images could be decoded" in result.stderr
    assert not (tmp_path / "run").exists()
