"""Every script answers a mistake with one line, `error: ...`, and exit status 2, touching nothing.

Each row of the table runs a script's entry point, `main(argv)` (what `python scripts/X.py ARGS`
calls), in this process, with the working directory in a prepared tree: a finished run with a
backup, an export folder, broken data and model files. The whole tree is compared before and
after each row. Python's stderr must hold exactly one line, the error; an exception escaping
`main` fails the row with its traceback. Two commands also run as real processes, to see a
whole stderr (TensorFlow's own C++ start-up log lines aside).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.commands import run_main

SCRIPTS = Path(__file__).parent.parent / "scripts"
# Small enough that a row whose check is missing trains for seconds, not minutes.
TINY = ["--preset", "quickstart", "--image-size", "16", "--backbone-width", "4", "--proj-dim", "16", "--proj-hidden-dim", "16",
        "--pred-hidden-dim", "4", "--batch-size", "16", "--epochs", "1", "--steps-per-epoch", "1",
        "--knn-every", "0", "--output-dir", "runs/new"]
RUN = "runs/simsiam"

ROWS = [
    # scripts/pretrain.py: flags and values
    ("pretrain", ["--epoch", "3"], "unrecognized arguments: --epoch 3"),  # no abbreviations
    ("pretrain", ["--image-size", "abc"], "argument --image-size: invalid int value: 'abc'"),
    ("pretrain", ["--strategy", "gpu"], "argument --strategy: invalid choice: 'gpu'"),
    ("pretrain", ["--mixed-precision", "fp8"], "argument --mixed-precision: invalid choice: 'fp8'"),
    ("pretrain", ["--epochs", "-1"], "--epochs must be at least 0"),
    ("pretrain", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ("pretrain", ["--steps-per-epoch", "0"], "--steps-per-epoch must be at least 1"),
    ("pretrain", ["--base-lr", "nan"], "--base-lr must be a positive number"),
    ("pretrain", ["--proj-dim", "0"], "--proj-dim must be at least 1"),
    ("pretrain", ["--data-service", "localhost:5050"], "expected PROTOCOL://HOST:PORT"),
    ("pretrain", ["--output-dir", "notes.txt"], "--output-dir notes.txt exists and is not a directory"),
    # image sizes the backbone cannot take, unknown backbones
    ("pretrain", ["--image-size", "4"], "--image-size 4 is too small for resnet18_cifar: it needs at least 8"),
    ("pretrain", ["--backbone", "resnet50", "--image-size", "16"], "too small for resnet50: it needs at least 32"),
    ("pretrain", ["--backbone", "NoSuchNet"], "unknown backbone 'NoSuchNet'"),
    # data: missing, wrong keys, dtypes, shapes, pickles, empty, too small for a batch
    ("pretrain", ["--dataset", "npz:data/missing.npz"], "npz:data/missing.npz: no such file"),
    ("pretrain", ["--dataset", "npz:data/no_x_train.npz"], "has no 'x_train' array (found: images)"),
    ("pretrain", ["--dataset", "npz:data/float.npz"], "npz:data/float.npz: x_train must be uint8 images, got dtype float32"),
    ("pretrain", ["--dataset", "npz:data/rgba.npz"], "x_train must have shape (N, H, W, 3) or (N, H, W), got (4, 16, 16, 4)"),
    ("pretrain", ["--dataset", "npz:data/bad_labels.npz"], "y_train must be 40 integer labels"),
    ("pretrain", ["--dataset", "npz:data/negative_labels.npz"], "y_train must be class indices >= 0"),
    ("pretrain", ["--dataset", "npz:data/object.npz"], "holds object arrays, which are never unpickled"),
    ("pretrain", ["--dataset", "npz:data/array.npy"], "not an .npz archive"),
    ("pretrain", ["--dataset", "npz:data/truncated.npz"], "not an .npz archive"),
    ("pretrain", ["--dataset", "npz:data/empty.npz"], "x_train is empty: the dataset has no images"),
    ("pretrain", ["--dataset", "npz:data/ten_images.npz"], "--batch-size 16 is larger than the dataset (10 images)"),
    ("pretrain", ["--dataset", "folder:data/no_images"], "folder:data/no_images: no images found"),
    ("pretrain", ["--dataset", "folder:data/missing"], "folder:data/missing: no such folder"),
    ("pretrain", ["--dataset", "no_such_dataset"], "--dataset no_such_dataset: not a TFDS dataset"),
    ("pretrain", ["--dataset", "cifar10", "--data-dir", "data/tfds"], "cifar10: not prepared in data/tfds"),
    # Sec. 5.2's options: values, and what they cannot be combined with
    ("pretrain", ["--alternation-steps", "0"], "--alternation-steps must be at least 1, got 0"),
    ("pretrain", ["--target-momentum", "1"], "--target-momentum must be in [0, 1) (the paper's is 0.8), got 1.0"),
    ("pretrain", ["--target-momentum", "-0.5"], "--target-momentum must be in [0, 1)"),
    ("pretrain", ["--target-momentum", "nan"], "--target-momentum must be in [0, 1)"),
    ("pretrain", ["--alternation-steps", "10", "--no-stop-gradient"], "--alternation-steps 10 needs stop_gradient"),
    ("pretrain", ["--target-momentum", "0.8", "--no-stop-gradient"], "--target-momentum needs stop_gradient"),
    # replicas, resuming
    ("pretrain", ["--strategy", "mirrored", "--cpu-replicas", "2", "--batch-size", "15"],
     "--batch-size 15 does not divide by the 2 replicas in sync"),
    ("pretrain", ["--output-dir", RUN, "--backbone-width", "8"],
     "its backup is of a different architecture (backbone_width 4 there, 8 here)"),
    ("pretrain", ["--output-dir", RUN, "--alternation-steps", "5"],
     "its backup is of a different training recipe (alternation_steps 1 there, 5 here"),
    ("pretrain", ["--resume", "--output-dir", "runs/never_ran"], "--resume: runs/never_ran/backup holds no backup"),
    # scripts/benchmark.py
    ("benchmark", [], "the following arguments are required: command"),
    ("benchmark", ["train", "--stepz", "3"], "unrecognized arguments: --stepz 3"),
    ("benchmark", ["train", "--preset", "quickstart"], "argument --preset: invalid choice: 'quickstart'"),
    ("benchmark", ["train", "--steps", "0"], "--steps must be at least 1"),
    ("benchmark", ["train", "--warmup-steps", "-1"], "--warmup-steps must be at least 0"),
    ("benchmark", ["train", "--batch-size", "0"], "--batch-size must be at least 1"),
    ("benchmark", ["train", "--image-size", "4"], "--image-size 4 is too small for resnet18_cifar"),
    ("benchmark", ["train", "--preset", "imagenet", "--image-size", "16"], "too small for resnet50"),
    ("benchmark", ["train", "--backbone-width", "4", "--image-size", "16", "--cpu-replicas", "2", "--batch-size", "9"],
     "--batch-size 9 does not divide by the 2 replicas in sync"),
    ("benchmark", ["input", "--batches", "0", "--jpeg-dir", "jpegs"], "--batches must be at least 1"),
    ("benchmark", ["input", "--jpeg-dir", "notes.txt"], "--jpeg-dir notes.txt exists and is not a folder"),
    ("benchmark", ["input", "--jpeg-batch-size", "4096", "--jpeg-dir", "jpegs"],
     "--batch-size 4096 is larger than the dataset (2000 images)"),
    # scripts/knn_eval.py
    ("knn_eval", [], "the following arguments are required: --checkpoint"),
    ("knn_eval", ["--checkpoint", RUN, "--kk", "3"], "unrecognized arguments: --kk 3"),
    ("knn_eval", ["--checkpoint", "runs/missing"], "--checkpoint runs/missing: no such file or directory"),
    ("knn_eval", ["--checkpoint", "notes.txt"], "expected a .keras or .onnx file"),
    ("knn_eval", ["--checkpoint", "models/lambda.keras"], "arbitrary code execution"),  # safe_mode=True
    ("knn_eval", ["--checkpoint", "models/not_a_zip.keras"], "not a .keras file"),
    ("knn_eval", ["--checkpoint", RUN, "--dataset", "npz:data/array.npy"], "not an .npz archive"),
    ("knn_eval", ["--checkpoint", RUN, "--dataset", "npz:data/ten_images.npz"], "evaluation needs labelled"),
    ("knn_eval", ["--checkpoint", RUN, "--k", "0"], "--k must be >= 1"),
    ("knn_eval", ["--checkpoint", RUN, "--format", "tflite"], "argument --format: invalid choice: 'tflite'"),
    ("knn_eval", ["--checkpoint", RUN, "--format", "onnx"], "found no onnx model"),
    ("knn_eval", ["--checkpoint", RUN, "--output", "missing/knn.json"], "no such directory missing"),
    # scripts/export.py
    ("export", ["--checkpoint", RUN], "the following arguments are required: --output"),
    ("export", ["--checkpoint", RUN, "--output", "exported/quickstart"], "--output exported/quickstart already exists"),
    ("export", ["--checkpoint", "runs/missing", "--output", "exported/new"], "no model.keras or classifier .keras file"),
    ("export", ["--checkpoint", "notes.txt", "--output", "exported/new"], "expected a .keras file or a run directory"),
    ("export", ["--checkpoint", "models/lambda.keras", "--output", "exported/new"], "arbitrary code execution"),
    ("export", ["--checkpoint", "models/not_a_zip.keras", "--output", "exported/new"], "not a .keras file"),
    ("export", ["--checkpoint", RUN, "--output", "exported/new", "--formats", "tflite"], "--formats takes"),
    # scripts/plot_history.py
    ("plot_history", [], "the following arguments are required: RUN_DIR"),
    ("plot_history", ["runs/missing"], "runs/missing: no history.csv"),
    ("plot_history", [RUN, "--labels", "a", "b"], "--labels: got 2 labels for 1 runs"),
    ("plot_history", [RUN, "--output", "missing/fig.png"], "no such directory missing"),
    ("plot_history", [RUN, "--output", "runs"], "is a directory"),
    ("plot_history", [RUN, "--output", "fig.xyz"], "Format 'xyz' is not supported"),
    ("plot_history", ["runs/header_only"], "no epochs recorded"),
    ("plot_history", ["runs/not_numbers"], "not a history.csv of numbers"),
    # scripts/linear_eval.py
    ("linear_eval", [], "the following arguments are required: --checkpoint"),
    ("linear_eval", ["--checkpoint", RUN, "--recipe", "adam"], "argument --recipe: invalid choice: 'adam'"),
    ("linear_eval", ["--checkpoint", "runs/missing"], "no such file or directory"),
    ("linear_eval", ["--checkpoint", RUN, "--epochs", "0"], "--epochs must be at least 1"),
    ("linear_eval", ["--checkpoint", RUN, "--lr", "-1"], "--lr must be positive"),
    # the synthetic set's 10,000 images get the full-batch lbfgs recipe, which has no epochs
    ("linear_eval", ["--checkpoint", RUN, "--epochs", "5"], "--epochs does not apply to the lbfgs recipe"),
    ("linear_eval", ["--checkpoint", "models/lambda.keras"], "arbitrary code execution"),
    ("linear_eval", ["--checkpoint", RUN, "--dataset", "npz:data/missing.npz"], "no such file"),
    ("linear_eval", ["--checkpoint", RUN, "--dataset", "npz:data/ten_images.npz"], "evaluation needs labelled"),
    ("linear_eval", ["--checkpoint", RUN, "--output-dir", "notes.txt"], "--output-dir notes.txt exists and is not a directory"),
]


def _row_id(row) -> str:
    script, argv, _ = row
    return f"{script}:{' '.join(argv) or '(none)'}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A working directory with a finished run (with backup), an export and broken inputs."""
    from simsiam_keras.config import make_config
    from simsiam_keras.data.images import from_arrays
    from simsiam_keras.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(40) % 4
    config = make_config("quickstart", image_size=16, backbone_width=4, proj_dim=16, proj_hidden_dim=16,
                         pred_hidden_dim=4, batch_size=16, epochs=1, knn_every=0, output_dir=str(root / RUN))
    pretrain(config, source=from_arrays("tiny", images, labels, images[:8], labels[:8]), verbose=0)
    assert (root / RUN / "backup").is_dir() and (root / RUN / "history.csv").is_file()
    keras.backend.clear_session()

    data = root / "data"
    (data / "no_images").mkdir(parents=True)
    (data / "no_images" / "readme.txt").write_text("not an image")
    (data / "tfds").mkdir()
    np.savez(data / "no_x_train.npz", images=images)
    np.savez(data / "float.npz", x_train=images.astype(np.float32))
    np.savez(data / "rgba.npz", x_train=np.zeros((4, 16, 16, 4), np.uint8))
    np.savez(data / "bad_labels.npz", x_train=images, y_train=np.arange(3))
    np.savez(data / "negative_labels.npz", x_train=images, y_train=labels - 1)
    np.savez(data / "object.npz", x_train=np.array([images, "text"], dtype=object))
    np.save(data / "array.npy", images)
    (data / "truncated.npz").write_bytes((data / "float.npz").read_bytes()[:200])
    np.savez(data / "empty.npz", x_train=images[:0])
    np.savez(data / "ten_images.npz", x_train=images[:10])

    models = root / "models"
    models.mkdir()
    inputs = keras.Input((16, 16, 3), name="images")
    scaled = keras.layers.Lambda(lambda x: x / 255.0)(inputs)  # Python code stored in the file
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(scaled)).save(models / "lambda.keras")
    (models / "not_a_zip.keras").write_text("a text file with the wrong extension")

    for name, text in (("header_only", "epoch,loss,z_std,knn_acc,lr_encoder,lr_predictor\n"),
                       ("not_numbers", "epoch,loss\n1,abc\n")):
        (root / "runs" / name).mkdir(parents=True)
        (root / "runs" / name / "history.csv").write_text(text)
    (root / "exported" / "quickstart").mkdir(parents=True)
    (root / "exported" / "quickstart" / "metadata.json").write_text('{"kind": "backbone"}\n')
    (root / "notes.txt").write_text("a file where a directory is expected\n")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root`: folders by name, files by size, mtime and content hash."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            state[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            stat = os.stat(path)
            digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()
            state[os.path.relpath(path, root)] = f"{stat.st_size} {stat.st_mtime_ns} {digest}"
    return state


_MAINS = {}


def script_main(name: str):
    """`main` of scripts/<name>.py, loaded from its file as `python scripts/<name>.py` would run it."""
    if name not in _MAINS:
        spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MAINS[name] = module.main
    return _MAINS[name]


@pytest.mark.parametrize("script, argv, message", ROWS, ids=[_row_id(r) for r in ROWS])
def test_mistake_is_one_line_exit_2_and_touches_nothing(tree, script, argv, message):
    if script == "pretrain":
        argv = TINY + argv  # later flags win
    before = snapshot(tree)
    result = run_main(script_main(script), *argv, cwd=tree)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert result.returncode == 2
    assert snapshot(tree) == before, "a failed command created or changed files"


# TensorFlow's C++ logging (absl format), printed at import whatever TF_CPP_MIN_LOG_LEVEL says.
TF_LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|To enable the following instructions)")


def test_a_real_process_prints_only_the_error_line(tmp_path):
    commands = {
        "pretrain": [*TINY, "--image-size", "4", "--output-dir", str(tmp_path / "run")],
        "benchmark": ["train", "--steps", "3", "--batchsize", "8"],
    }
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    processes = {
        script: subprocess.Popen([sys.executable, str(SCRIPTS / f"{script}.py"), *argv], cwd=tmp_path, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for script, argv in commands.items()
    }
    for script, process in processes.items():
        out, err = process.communicate(timeout=300)
        lines = [line for line in err.splitlines() if line.strip() and not TF_LOG_LINE.match(line)]
        assert process.returncode == 2, err[-2000:]
        assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
        assert out == ""
    assert os.listdir(tmp_path) == []
