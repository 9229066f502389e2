"""Export: SavedModel and ONNX agree with Keras, hold only the backbone, and are written atomically.

The exports under test are made by the commands of docs/export.md, and that page's Python snippets
run against them, so the documentation cannot drift from the code.
"""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime
import pytest
import tensorflow as tf

import simsiam_keras  # noqa: F401  (registers the classes model.keras needs)
from simsiam_keras.cli.export import main as export_main
from simsiam_keras.config import make_config
from simsiam_keras.data.sources import load_dataset
from simsiam_keras.data.synthetic import CLASS_NAMES, make_synthetic
from simsiam_keras.export import export_folder
from simsiam_keras.export.backbone import export_backbone
from simsiam_keras.export.metadata import config_hash
from simsiam_keras.export.parity import ParityError, compare_outputs, run_onnx
from simsiam_keras.export.writers import float32_copy
from simsiam_keras.nets.backbone import build_backbone
from simsiam_keras.saved_run import load_feature_extractor
from simsiam_keras.train.pretrain import dtype_policy, pretrain
from tests.commands import Ran, run_main

ROOT = Path(__file__).resolve().parent.parent
EXPORT_PAGE = ROOT / "docs" / "export.md"
# The projector and predictor are larger than the backbone, so an export that kept them
# (or the optimizer's momentum, as large as the trainable weights) cannot pass the size checks.
HEADS = dict(proj_hidden_dim=512, proj_dim=256, pred_hidden_dim=64)


def page_blocks(language: str) -> list[str]:
    """The code blocks of docs/export.md in one language."""
    return re.findall(rf"```{language}\n(.*?)```", EXPORT_PAGE.read_text(), re.S)


def perturb_batch_norm(model: keras.Model, seed: int) -> None:
    """Random BN statistics and affine terms, so no residual branch is a zero-gamma no-op."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.normal(0, 0.2, n))
            layer.moving_mean.assign(rng.normal(0, 0.2, n))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n))


def query_images(size: int) -> np.ndarray:
    """Images other than the export's own parity batch."""
    return make_synthetic(num_train=8, num_test=0, image_size=size, seed=1)["x_train"].astype(np.float32)


def assert_close(reference: np.ndarray, actual: np.ndarray, tolerance: float = 1e-4) -> None:
    assert actual.shape == reference.shape
    assert np.max(np.abs(actual - reference)) <= tolerance * np.max(np.abs(reference))


def saved_model_outputs(path: Path, images: np.ndarray) -> dict:
    """The `serve` signature at batch sizes 1 and 7."""
    serve = tf.saved_model.load(str(path)).signatures["serve"]
    parts = [serve(images=tf.constant(images[:1])), serve(images=tf.constant(images[1:8]))]
    return {k: np.concatenate([p[k].numpy() for p in parts]) for k in parts[0]}


def onnx_outputs(path: Path, images: np.ndarray) -> dict:
    """ONNX Runtime at batch sizes 1 and 7."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    parts = [session.run(names, {"images": images[:1]}), session.run(names, {"images": images[1:8]})]
    return {n: np.concatenate([p[i] for p in parts]) for i, n in enumerate(names)}


def run_cli(args: list[str], cwd: Path) -> Ran:
    return run_main(export_main, *args, cwd=cwd)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A pretraining run and a linear-probe classifier in runs/simsiam, exported by the commands of docs/export.md."""
    root = tmp_path_factory.mktemp("export")
    data = make_synthetic(num_train=32, num_test=16, image_size=32, seed=0)
    np.savez(root / "tiny.npz", **data)
    run = root / "runs" / "simsiam"
    config = make_config("quickstart", dataset=f"npz:{root / 'tiny.npz'}", image_size=32, backbone_width=8, epochs=0, knn_every=0, batch_size=16,
                         output_dir=str(run), **HEADS)
    pretrain(config, load_dataset(config.dataset, image_size=32), verbose=0)
    model = keras.models.load_model(run / "model.keras")
    perturb_batch_norm(model.backbone, seed=0)
    model.save(run / "model.keras")  # still a SimSiam with both optimizers' state

    backbone = keras.models.load_model(run / "model.keras", compile=False).backbone
    backbone.trainable = False
    images = keras.Input((32, 32, 3), name="images")
    head = keras.layers.Dense(len(CLASS_NAMES), kernel_initializer=keras.initializers.RandomNormal(0, 0.1, seed=1),
                              bias_initializer="ones", name="head")
    classifier = keras.Model(images, head(backbone(images, training=False)), name="linear_classifier")
    (run / "linear").mkdir()
    classifier.save(run / "linear" / "classifier.keras")
    (run / "linear" / "classifier.json").write_text(json.dumps(
        {"class_names": list(CLASS_NAMES), "image_size": 32, "backbone": "resnet18_cifar", "top1": 0.5}
    ))

    commands = [line for block in page_blocks("bash") for line in block.splitlines()
                if line.startswith("simsiam-export ")]
    assert len(commands) == 2, "docs/export.md's export commands changed; update this fixture"
    outputs = []
    for command in commands:
        args = shlex.split(command)[1:]
        result = run_cli(args, cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout)
    return {"root": root, "run": run, "backbone": root / "exported" / "quickstart",
            "classifier": root / "exported" / "quickstart_classifier", "stdout": outputs}


def test_benchmark_times_both_formats_of_an_export(workdir, capsys):
    from simsiam_keras.cli.benchmark import main

    assert main(["export", str(workdir["backbone"]), "--batch-size", "4", "--seconds", "0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("export resnet18_cifar at 32px, batch 4")
    rates = {line.split()[0]: float(line.split()[1]) for line in lines[1:]}
    assert set(rates) == {"saved_model", "onnx"} and all(rate > 0 for rate in rates.values())


def test_backbone_export_matches_keras_at_batch_1_and_7(workdir):
    export = workdir["backbone"]
    assert sorted(os.listdir(export.parent)) == ["quickstart", "quickstart_classifier"], "temporary folders left"
    assert sorted(os.listdir(export)) == ["metadata.json", "model.onnx", "saved_model"]
    backbone = keras.models.load_model(workdir["run"] / "model.keras", compile=False).backbone
    images = query_images(32)
    reference = backbone(images, training=False).numpy()
    assert reference.std(axis=0).max() > 1e-3, "features do not depend on the image: a weak parity check"
    assert_close(reference, saved_model_outputs(export / "saved_model", images)["features"])
    assert_close(reference, onnx_outputs(export / "model.onnx", images)["features"])
    # What simsiam_keras.saved_run (kNN and linear evaluation) reads from an export folder.
    assert_close(reference, load_feature_extractor(export, kind="onnx")(images))

    meta = json.loads((export / "metadata.json").read_text())
    config = json.loads((workdir["run"] / "config.json").read_text())
    assert meta["kind"] == "backbone" and meta["backbone"] == "resnet18_cifar"
    assert meta["image_size"] == 32 and meta["feature_dim"] == reference.shape[1] == 64
    assert meta["training"]["dataset"].startswith("npz:") and meta["training"]["epochs"] == 0
    assert meta["training"]["config_hash"] == config_hash(config)
    assert meta["run_dir"] == str(workdir["run"].resolve())
    assert meta["normalisation"]["mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert meta["outputs"] == {"features": [None, 64]} and meta["onnx_opset"] == 17
    for fmt in ("saved_model", "onnx"):
        assert 0 <= meta["parity"][fmt]["features"]["max_rel_diff"] <= 1e-4
    assert {"tensorflow", "keras", "tf2onnx", "onnxruntime"} <= set(meta["versions"])
    stdout = workdir["stdout"][0]
    assert re.search(r"in \d+\.\d+s", stdout) and "model.onnx:" in stdout and "saved_model:" in stdout


def test_onnx_graph_has_named_io_dynamic_batch_and_opset_17(workdir):
    proto = onnx.load(str(workdir["backbone"] / "model.onnx"))
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["features"]
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    half = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    assert not any(i.data_type in half for i in proto.graph.initializer)


def test_export_holds_the_backbone_only(workdir):
    model = keras.models.load_model(workdir["run"] / "model.keras")
    backbone_params = model.backbone.count_params()
    heads = model.projector.count_params() + model.predictor.count_params()
    assert heads > backbone_params and len(model.optimizer.variables) > 0, "set-up: heads and optimizer must be big"
    loaded = tf.saved_model.load(str(workdir["backbone"] / "saved_model"))
    assert len(loaded.variables) == len(model.backbone.weights)
    assert sum(int(np.prod(v.shape)) for v in loaded.variables) == backbone_params
    assert not any(w in v.name for v in loaded.variables for w in ("projector", "predictor", "momentum", "iteration"))
    initializers = onnx.load(str(workdir["backbone"] / "model.onnx")).graph.initializer
    # tf2onnx folds BatchNorm into the convolutions, so the ONNX file can only be smaller.
    assert sum(int(np.prod(i.dims)) for i in initializers) <= backbone_params
    assert not any(HEADS["proj_dim"] in i.dims for i in initializers)


def test_classifier_export_gives_probabilities_logits_and_class_names(workdir):
    export = workdir["classifier"]
    classifier = keras.models.load_model(workdir["run"] / "linear" / "classifier.keras", compile=False)
    images = query_images(32)
    logits = classifier(images, training=False).numpy()
    probabilities = tf.nn.softmax(logits).numpy()
    for outputs in (saved_model_outputs(export / "saved_model", images), onnx_outputs(export / "model.onnx", images)):
        assert set(outputs) == {"probabilities", "logits"}
        assert_close(logits, outputs["logits"])
        assert_close(probabilities, outputs["probabilities"])
        np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert logits.std(axis=0).max() > 1e-2 * np.abs(logits).max(), "logits must depend on the image"
    meta = json.loads((export / "metadata.json").read_text())
    assert meta["kind"] == "classifier" and meta["class_names"] == list(CLASS_NAMES)
    assert meta["num_classes"] == 10 and meta["classifier"]["top1"] == 0.5
    assert meta["run_dir"] == str(workdir["run"].resolve()) and meta["training"]["epochs"] == 0
    assert set(meta["parity"]["onnx"]) == {"probabilities", "logits"}


def test_resnet50_trained_in_bfloat16_exports_from_a_float32_copy(tmp_path):
    with dtype_policy("bfloat16"):
        backbone = build_backbone("resnet50", 32, width=8)
    perturb_batch_norm(backbone, seed=1)
    result = export_backbone(backbone, tmp_path / "r50")
    reference = float32_copy(backbone)
    assert {layer.dtype_policy.name for layer in reference.layers} == {"float32"}
    images = query_images(32)
    expected = reference(images, training=False).numpy()
    assert expected.shape == (8, 256) and expected.std(axis=0).max() > 1e-3
    # The SavedModel was checked at export time (batches 1 and 7); ONNX again here, on other images.
    assert 0 <= result.metadata["parity"]["saved_model"]["features"]["max_rel_diff"] <= 1e-4
    assert_close(expected, onnx_outputs(tmp_path / "r50" / "model.onnx", images)["features"])
    # The float32 copy computes what the bf16 model approximates.
    bf16 = np.asarray(backbone(images, training=False), np.float32)
    assert np.max(np.abs(bf16 - expected)) < 0.05 * np.max(np.abs(expected))
    assert result.metadata["source_dtype_policy"] == "mixed_bfloat16" and result.metadata["feature_dim"] == 256
    assert result.metadata["training"] is None and result.sizes["model.onnx"] > 0


def test_existing_export_is_refused_without_overwrite(workdir):
    target = workdir["backbone"]
    before = (target / "metadata.json").read_text()
    result = run_cli(["--checkpoint", "runs/simsiam/model.keras", "--output", "exported/quickstart"], workdir["root"])
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "--overwrite" in last_line, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert (target / "metadata.json").read_text() == before


def test_an_export_a_live_process_is_writing_is_refused_and_a_dead_ones_lock_is_taken_over(workdir, tmp_path):
    """The export's lock is OUTPUT.lock beside OUTPUT; the checkpoint's run folder, only read, may be locked."""
    target = tmp_path / "exported" / "locked"
    lock = tmp_path / "exported" / "locked.lock"
    lock.parent.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    holder = subprocess.Popen(["sleep", "60"])
    held = lambda pid: json.dumps({"host": socket.gethostname(), "pid": pid, "started": "then"})  # noqa: E731
    argv = ["--checkpoint", workdir["run"], "--output", target, "--formats", "saved_model"]
    try:
        lock.write_text(held(holder.pid))
        before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}
        refused = run_cli(argv, tmp_path)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert refused.stderr.count("\n") == 1, refused.stderr[-2000:]
        assert refused.stderr.startswith(f"error: --output {target} is being written by process {holder.pid} on "), \
            refused.stderr
        assert "--force-unlock" in refused.stderr
        assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")} == before

        # A dead exporter's lock is taken over; a live pretraining in the checkpoint's folder only gets a warning.
        lock.write_text(held(gone.pid))
        (workdir["run"] / "run.lock").write_text(held(holder.pid))
        taken = run_cli(argv, tmp_path)
    finally:
        (workdir["run"] / "run.lock").unlink(missing_ok=True)
        holder.kill()
        holder.wait()
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert f"warning: taking over the lock of {target} from process {gone.pid}" in taken.stderr
    assert f"warning: {workdir['run']} is being written by process {holder.pid}" in taken.stderr
    assert sorted(os.listdir(tmp_path / "exported")) == ["locked"]  # the lock went with the export's end
    assert json.loads((target / "metadata.json").read_text())["formats"] == {"saved_model": "saved_model"}


@pytest.fixture
def small_backbone():
    backbone = build_backbone("resnet18_cifar", 16, width=4)
    perturb_batch_norm(backbone, seed=2)
    return backbone


def test_failure_mid_export_leaves_nothing_behind(small_backbone, tmp_path, monkeypatch):
    def broken_onnx(saved_model, path):
        path.write_bytes(b"half an onnx file")
        raise RuntimeError("simulated converter crash")

    monkeypatch.setattr(export_folder, "write_onnx", broken_onnx)
    with pytest.raises(RuntimeError, match="simulated"):
        export_backbone(small_backbone, tmp_path / "new")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_previous_export(workdir, small_backbone, tmp_path, monkeypatch):
    previous = tmp_path / "quickstart"
    shutil.copytree(workdir["backbone"], previous)
    before = {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()}

    def drifting_onnx(path, images):  # an ONNX model that disagrees with Keras
        outputs = run_onnx(path, images)
        return {k: v + 1e-3 * np.max(np.abs(v)) for k, v in outputs.items()}

    monkeypatch.setattr(export_folder, "run_onnx", drifting_onnx)
    with pytest.raises(ParityError, match="tolerance"):
        export_backbone(small_backbone, previous, overwrite=True)
    assert os.listdir(tmp_path) == ["quickstart"]
    assert {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()} == before


def test_formats_onnx_writes_only_the_onnx_model(small_backbone, tmp_path):
    result = export_backbone(small_backbone, tmp_path / "onnx_only", formats="onnx")
    assert sorted(os.listdir(tmp_path)) == ["onnx_only"]
    assert sorted(os.listdir(tmp_path / "onnx_only")) == ["metadata.json", "model.onnx"]
    assert set(result.metadata["formats"]) == {"onnx"} and "saved_model" not in result.metadata["parity"]
    with pytest.raises(ValueError, match="formats takes"):
        export_backbone(small_backbone, tmp_path / "other", formats="onnx,tflite")


def test_parity_check_uses_the_output_scale():
    reference = {"features": np.array([[100.0, -50.0]])}
    figures = compare_outputs(reference, {"features": np.array([[100.005, -50.0]])})
    assert figures["features"]["max_rel_diff"] == pytest.approx(5e-5)
    with pytest.raises(ParityError):
        compare_outputs(reference, {"features": np.array([[100.02, -50.0]])})
    with pytest.raises(ParityError):
        compare_outputs(reference, {"features": np.array([[np.nan, -50.0]])})
    with pytest.raises(ParityError):
        compare_outputs(reference, {"other": np.array([[100.0, -50.0]])})


@pytest.mark.parametrize("index", range(3))
def test_export_page_python_snippets_run_against_an_export(workdir, index, monkeypatch):
    blocks = page_blocks("python")
    assert len(blocks) == 3, "docs/export.md's snippets changed; update this test"
    monkeypatch.chdir(workdir["root"])
    namespace: dict = {}
    exec(compile(blocks[index], f"docs/export.md snippet {index}", "exec"), namespace)
    if "features" in namespace:
        features = np.asarray(namespace["features"])
        assert features.shape == (4, 64) and np.all(np.isfinite(features))
    if "backbone" in namespace:  # the fine-tuning snippet: the backbone's weights must have moved
        saved = tf.saved_model.load("exported/quickstart/saved_model").trainable_variables
        tuned = namespace["backbone"].trainable_weights
        assert len(tuned) == len(saved) > 0
        assert any(not np.allclose(t.numpy(), s.numpy()) for t, s in zip(tuned, saved))


def test_embed_runs_an_onnx_export_through_onnx_runtime_with_the_keras_features(workdir, tmp_path):
    from simsiam_keras.evaluate.embed import FEATURES_FILE, embed

    dataset = f"npz:{workdir['root'] / 'tiny.npz'}"
    cheap = dict(projector_points=0, neighbour_queries=0, batch_size=16)
    onnx_run = embed(str(workdir["backbone"] / "model.onnx"), dataset, str(tmp_path / "onnx"), **cheap)
    keras_run = embed(str(workdir["run"]), dataset, str(tmp_path / "keras"), **cheap)
    assert onnx_run.summary["model_kind"] == "onnx" and keras_run.summary["model_kind"] == "keras"
    assert onnx_run.summary["eval_resize_ratio"] == keras_run.summary["eval_resize_ratio"]
    from_onnx, from_keras = (np.load(tmp_path / name / FEATURES_FILE) for name in ("onnx", "keras"))
    assert from_onnx["features"].shape == (48, 64) and list(from_onnx["ids"]) == list(from_keras["ids"])
    assert_close(from_keras["features"], from_onnx["features"])
    assert onnx_run.knn_top1 == pytest.approx(keras_run.knn_top1, abs=1 / 16)
