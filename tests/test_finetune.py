"""simsiam-finetune: the labelled subset, fine-tuning beats the same labels from scratch on real images,
its files and records, and bad input refused with one line and nothing written."""

import json
import os
import shutil
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import simsiam_keras  # noqa: F401  (registers the classes model.keras needs)
from simsiam_keras.cli.finetune import main
from simsiam_keras.config import FinetuneConfig, make_config, make_finetune_config
from simsiam_keras.data.images import from_arrays
from simsiam_keras.data.labelled import choose_labels
from simsiam_keras.evaluate.results import read_results
from simsiam_keras.train import backup
from simsiam_keras.method.model import build_simsiam
from simsiam_keras.train.finetune import plan_schedule
from simsiam_keras.train.pretrain import pretrain
from tests.commands import refused_while_locked, run_main

# Small enough for a CPU test: batch 32, 120 steps (the protocol's lr rule at base lr 0.8).
QUICK = ("--batch-size", "32", "--lr", "0.8", "--min-steps", "120", "--epochs", "1", "--crop-scale", "0.3,1")


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """scikit-learn's 1,797 handwritten digits (real 8x8 images) upscaled to 32x32 RGB: 1,437 train, 360 test."""
    loaded = load_digits()
    images = np.round(loaded.images * (255 / 16)).astype(np.uint8)
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)[..., None].repeat(3, axis=3)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1437], order[1437:]
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x_train=images[train], y_train=loaded.target[train], x_test=images[test], y_test=loaded.target[test])
    return path


def test_labels_are_class_balanced_seeded_and_refuse_an_empty_class(tmp_path):
    labels = np.repeat(np.arange(3), [100, 50, 20])
    names = ["a", "b", "c"]
    choice = choose_labels(labels, names, "10%", seed=1)
    assert choice.per_class(3) == [10, 5, 2] and np.all(np.diff(choice.indices) > 0)
    assert np.array_equal(choice.indices, choose_labels(labels, names, "10%", seed=1).indices)
    assert not np.array_equal(choice.indices, choose_labels(labels, names, "10%", seed=2).indices)
    assert choose_labels(labels, names, "4-per-class").per_class(3) == [4, 4, 4]
    with pytest.raises(ValueError, match="leaves class 'c'"):
        choose_labels(labels, names, "2%")
    listed = tmp_path / "subset.txt"
    listed.write_text("img_0.png\n120,b\n\nimg_160.png\tc\n")
    files = [f"/data/train/x/img_{i}.png" for i in range(len(labels))]
    assert choose_labels(labels, names, f"file:{listed}", files=files).indices.tolist() == [0, 120, 160]
    listed.write_text("0\n120,zebra\n")
    with pytest.raises(ValueError, match="'zebra' is not a class"):
        choose_labels(labels, names, f"file:{listed}")


def test_small_sets_take_min_steps_at_a_capped_batch():
    schedule = plan_schedule(FinetuneConfig(), labelled=143, fraction=0.1)
    assert (schedule.batch_size, schedule.steps_per_epoch, schedule.epochs) == (128, 2, 100)
    assert schedule.lr == pytest.approx(0.05 * 128 / 256) and len(schedule.notes) == 3
    imagenet_1pct = plan_schedule(FinetuneConfig(), labelled=12_811, fraction=0.01)
    assert (imagenet_1pct.batch_size, imagenet_1pct.epochs, imagenet_1pct.steps_per_epoch) == (4096, 60, 4)
    assert plan_schedule(FinetuneConfig(), 13, 0.01, replicas=2).batch_size == 8
    with pytest.raises(ValueError, match="batch_size 33 does not divide"):
        plan_schedule(make_finetune_config(batch_size=33), 100, 0.1, replicas=2)


@pytest.fixture(scope="module")
def digits_run(digits_npz, tmp_path_factory):
    """SimSiam pretrained on the digits' training images without their labels (the semi-supervised setting):
    the quickstart recipe at width 8, 120 steps of 128 (kNN 0.33 -> 0.61; the session's synthetic run
    transfers too little to digits for fine-tuning to beat scratch at this budget: 0.44 vs 0.48)."""
    run = tmp_path_factory.mktemp("digits_run")
    loaded = np.load(digits_npz)
    source = from_arrays("digits", loaded["x_train"], loaded["y_train"], loaded["x_test"], loaded["y_test"])
    config = make_config("quickstart", backbone_width=8, base_lr=0.8, epochs=4, steps_per_epoch=30, knn_every=4,
                         eval_resize_ratio=1.0, output_dir=str(run))
    keras.utils.set_random_seed(config.seed)
    pretrain(config, source=source, verbose=0)
    keras.backend.clear_session()
    return run


@pytest.fixture(scope="module")
def finetuned(digits_run, digits_npz, tmp_path_factory):
    """The digits pretraining fine-tuned on 10% of the digits' labels, and the same network from scratch."""
    out = tmp_path_factory.mktemp("finetune")
    ran = {}
    for name, extra in (("pretrained", ()), ("scratch", ("--from-scratch",))):
        keras.backend.clear_session()
        ran[name] = run_main(main, "--checkpoint", digits_run, "--dataset", f"npz:{digits_npz}", "--labels", "10%",
                             "--output-dir", out / name, *QUICK, *extra)
    return out, ran


def test_finetuning_beats_the_same_labels_from_scratch_on_digits(finetuned, digits_run):
    out, ran = finetuned
    assert ran["pretrained"].returncode == 0, ran["pretrained"].stderr
    assert ran["scratch"].returncode == 0, ran["scratch"].stderr
    pretrained = json.loads((out / "pretrained" / "finetune.json").read_text())
    scratch = json.loads((out / "scratch" / "finetune.json").read_text())
    # Same labels, recipe and steps; a random-weights load would be the scratch run itself.
    assert pretrained["labels"] == scratch["labels"] and pretrained["labels"]["images"] == 143
    assert pretrained["recipe"]["steps"] == scratch["recipe"]["steps"] == 120
    # Measured 0.622 vs 0.478 (probe 0.706).
    assert pretrained["top1"] > scratch["top1"] + 0.08, (pretrained["top1"], scratch["top1"])
    assert pretrained["linear_probe"]["top1"] > 0.5 and scratch["linear_probe"] is None
    assert "linear probe of the same encoder" in ran["pretrained"].stdout


def test_finetune_writes_its_files_and_records(finetuned, digits_run):
    out, _ = finetuned
    folder = out / "pretrained"
    for name in ("classifier.keras", "classifier.json", "labelled_indices.txt", "finetune.json", "config.json"):
        assert (folder / name).is_file(), name
    assert os.listdir(folder / "logs") and os.listdir(folder / "backup")
    indices = [int(line) for line in (folder / "labelled_indices.txt").read_text().split()]
    assert len(indices) == 143 == len(set(indices))
    classifier = keras.models.load_model(folder / "classifier.keras")
    assert classifier.output_shape == (None, 10)
    records = [r for r in read_results(str(digits_run)) if r["protocol"].startswith("finetune")]
    assert {(r["protocol"], r["metric"]) for r in records} >= {("finetune", "top1"), ("finetune_scratch", "top1")}


def test_bad_input_is_one_line_exit_2_and_nothing_written(digits_run, digits_npz, finetuned, tmp_path):
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    other.save(tmp_path / "other.keras")
    listed = tmp_path / "labels.txt"
    listed.write_text("0\n1,eleven\n")
    before = (digits_run / "results.json").read_text()
    cases = {
        "another architecture": (("--checkpoint", tmp_path / "other.keras"), "another architecture"),
        "absent class": (("--checkpoint", digits_run, "--labels-file", listed), "'eleven' is not a class"),
        "empty class": (("--checkpoint", digits_run, "--labels", "0.1%"), "with no labelled image"),
        "existing output": (("--checkpoint", digits_run, "--output-dir", finetuned[0] / "scratch" / "logs"),
                            "exists"),
    }
    for case, (argv, message) in cases.items():
        target = tmp_path / "out" if case != "existing output" else None
        extra = ("--output-dir", target) if target else ()
        ran = run_main(main, "--dataset", f"npz:{digits_npz}", *argv, *extra)
        assert ran.returncode == 2, (case, ran.stderr)
        assert ran.stderr.count("\n") == 1 and message in ran.stderr, (case, ran.stderr)
        assert target is None or not target.exists(), case
    assert (digits_run / "results.json").read_text() == before


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A randomly initialised tiny SimSiam (16 px, width 4) saved as a run: enough to exercise the machinery."""
    run = tmp_path_factory.mktemp("tiny_run")
    config = make_config("quickstart", image_size=16, backbone_width=4, proj_dim=32, proj_hidden_dim=32,
                         pred_hidden_dim=8, output_dir=str(run))
    keras.utils.set_random_seed(0)
    build_simsiam(config).save(run / "model.keras")
    (run / "config.json").write_text(config.to_json())
    return run


STEPS = 4  # 8 labelled images of each of npz_dataset's 4 classes, in batches of 8


@pytest.fixture(scope="module")
def whole_finetuning(tiny_run, npz_dataset, tmp_path_factory):
    """The command line of a two-epoch fine-tuning of `tiny_run` (8 steps), and its uninterrupted run's folder."""
    argv = ("--checkpoint", tiny_run, "--dataset", f"npz:{npz_dataset}", "--labels", "8-per-class", "--batch-size", "8",
            "--epochs", "2", "--min-steps", "1", "--no-probe")
    whole = tmp_path_factory.mktemp("whole_finetuning") / "whole"
    ran = run_main(main, *argv, "--output-dir", whole)
    assert ran.returncode == 0, ran.stderr
    keras.backend.clear_session()
    return argv, whole


def same_classifier_weights(folder, other):
    weights = [keras.models.load_model(f / "classifier.keras").get_weights() for f in (folder, other)]
    return all(np.allclose(a, b, atol=1e-5) for a, b in zip(*weights, strict=True))


def test_a_killed_finetuning_resumes_to_the_same_weights(whole_finetuning, tmp_path):
    argv, whole = whole_finetuning
    # The state a kill after the first epoch leaves: the first epoch's backup, no results.
    killed = tmp_path / "killed"
    shutil.copytree(whole, killed, ignore=shutil.ignore_patterns("classifier.*", "finetune.json"))
    first = sorted(tf.train.get_checkpoint_state(killed / "backup").all_model_checkpoint_paths)[0]
    name = os.path.basename(first)
    (killed / "backup" / "checkpoint").write_text(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    keras.backend.clear_session()
    resumed = run_main(main, *argv, "--output-dir", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "end of epoch 1" in resumed.stdout
    assert same_classifier_weights(whole, killed)
    changed = run_main(main, *argv[:-1], "--lr", "0.1", "--no-probe", "--output-dir", killed)
    assert changed.returncode == 2 and "cannot resume" in changed.stderr


def test_mirrored_mixed_precision_finetuning(tiny_run, npz_dataset, tmp_path):
    ran = run_main(main, "--checkpoint", tiny_run, "--dataset", f"npz:{npz_dataset}", "--labels", "8-per-class",
                   "--batch-size", "8", "--epochs", "1", "--min-steps", "4", "--no-probe", "--strategy", "mirrored",
                   "--cpu-replicas", "2", "--mixed-precision", "bfloat16", "--output-dir", tmp_path / "out")
    assert ran.returncode == 0, ran.stderr
    record = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert record["recipe"]["replicas"] == 2 and record["recipe"]["steps"] == 4
    classifier = keras.models.load_model(tmp_path / "out" / "classifier.keras")
    policies = {layer.dtype_policy.name for layer in classifier.layers[1].layers if layer.weights}
    assert policies == {"mixed_bfloat16"} and classifier.outputs[0].dtype == "float32"


def test_a_preempted_finetuning_resumes_to_the_same_weights_and_its_folder_has_one_writer(
    whole_finetuning, tmp_path, monkeypatch
):
    """SIGTERM sent by this process to itself at a random step k, while the command's handler is installed."""
    argv, whole = whole_finetuning
    run = tmp_path / "preempted"
    k = int(np.random.default_rng().integers(1, 2 * STEPS))
    original, sent = backup.BackupCallback.on_train_batch_end, []

    def signalled_at_step_k(self, batch, logs=None):
        original(self, batch, logs)
        if self.epoch * STEPS + self.step == k and not sent:
            os.kill(os.getpid(), signal.SIGTERM)
            sent.append(k)

    monkeypatch.setattr(backup.BackupCallback, "on_train_batch_end", signalled_at_step_k)
    stopped = run_main(main, *argv, "--output-dir", run)
    monkeypatch.undo()
    assert sent == [k] and stopped.returncode == 143, stopped.stderr[-2000:]
    epoch, step = (k - 1) // STEPS + 1, (k - 1) % STEPS + 1
    assert stopped.stderr.strip().splitlines()[-1] == \
        f"preempted at epoch {epoch}, step {step}: backed up; run the same command to resume"
    assert backup.latest_position(str(run)).global_step == k
    assert not (run / "classifier.keras").exists() and not (run / "run.lock").exists()

    # A second writer while a live process holds the folder's lock: refused, the folder untouched.
    refused, holder_pid = refused_while_locked(main, argv, run)
    assert refused.stderr.count("\n") == 1, refused.stderr[-2000:]
    assert refused.stderr.startswith(f"error: --output-dir {run} is being written by process {holder_pid} on ")
    # Its process gone: the lock is taken over with a warning, and the run resumes at step k.
    keras.backend.clear_session()
    resumed = run_main(main, *argv, "--output-dir", run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"taking over the lock of {run} from process {holder_pid}" in resumed.stderr
    position = "end of epoch 1" if k == STEPS else f"epoch {epoch}, step {step} of {STEPS}"
    assert f"resuming {run} from its backup at the {position}" in resumed.stdout, resumed.stdout
    assert not (run / "run.lock").exists()
    assert same_classifier_weights(whole, run)


def test_a_diverging_finetuning_is_one_error_line_and_exit_code_3(whole_finetuning, tmp_path):
    argv, _ = whole_finetuning
    run = tmp_path / "diverged"
    ran = run_main(main, *argv, "--lr", "1e30", "--backup-every-steps", "1", "--output-dir", run)
    assert ran.returncode == 3, ran.stderr[-2000:]
    last = ran.stderr.strip().splitlines()[-1]
    # lr 1e30: the first step's update overflows the weights, so the second step's loss is NaN.
    assert last == (f"error: the loss is nan at epoch 1, step 2 of {STEPS} (global step 2); training stopped; "
                    f"the last good backup (epoch 1, step 1 of {STEPS}) is in {run / 'backup'}"), last
    assert "Traceback" not in ran.stderr
    assert not (run / "classifier.keras").exists() and not (run / "run.lock").exists()
