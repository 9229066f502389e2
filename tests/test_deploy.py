"""Deployment exports: LiteRT (float32 and quantised) for devices, a KerasHub preset for Keras users.

The LiteRT models are run by ai-edge-litert's interpreter (what a device runs), not tf.lite's;
the KerasHub preset is loaded in a fresh process that imports keras_hub and not this package.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
from ai_edge_litert.interpreter import Interpreter

import simsiam_keras  # noqa: F401  (registers the classes model.keras needs)
from simsiam_keras.augment.crop import eval_view
from simsiam_keras.cli.convert import main as convert_main
from simsiam_keras.cli.export import main as export_main
from simsiam_keras.config import make_config
from simsiam_keras.data.sources import load_dataset
from simsiam_keras.evaluate.results import append_result
from simsiam_keras.export import litert
from simsiam_keras.train.pretrain import pretrain
from tests import torch_resnets as tr
from tests.commands import Ran, run_main
from tests.test_export import perturb_batch_norm, query_images

HEADS = dict(proj_hidden_dim=64, proj_dim=64, pred_hidden_dim=16)


def make_run(root: Path, dataset: str, backbone: str, image_size: int, width: int) -> Path:
    """A pretraining run of no epochs whose backbone has random BN statistics (so no block is an identity)."""
    run = root / "run"
    config = make_config("quickstart", dataset=dataset, image_size=image_size, backbone=backbone,
                         backbone_width=width, epochs=0, knn_every=0, batch_size=16, output_dir=str(run), **HEADS)
    pretrain(config, load_dataset(config.dataset, image_size=image_size), verbose=0)
    model = keras.models.load_model(run / "model.keras")
    perturb_batch_norm(model.backbone, seed=0)
    model.save(run / "model.keras")
    keras.backend.clear_session()
    return run


def export(*argv) -> Ran:
    return run_main(export_main, *argv)


def litert_features(path: Path, images: np.ndarray) -> np.ndarray:
    """The `.tflite` file's output on a batch, through the plain interpreter API."""
    interpreter = Interpreter(model_path=str(path))
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(source["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], images.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(target["index"])


def relative(reference: np.ndarray, actual: np.ndarray) -> float:
    return float(np.max(np.abs(actual - reference)) / np.max(np.abs(reference)))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def one_line_refusal(ran, *words: str) -> None:
    assert ran.returncode == 2 and ran.stdout == "", ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in ran.stderr
    assert all(word in lines[0] for word in words), lines[0]


# -- LiteRT ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """scikit-learn's digits (real images, 16 px RGB) and a resnet18_cifar run on them, exported to
    saved_model and LiteRT float32, dynamic and int8 by the command line."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    images = np.kron(digits.images, np.ones((2, 2))) * (255 / 16)
    images = np.repeat(images[..., None], 3, axis=-1).round().astype(np.uint8)
    np.savez(root / "digits.npz", x_train=images[:1500], y_train=digits.target[:1500],
             x_test=images[1500:], y_test=digits.target[1500:])
    np.savez(root / "small.npz", x_train=images[:64], y_train=digits.target[:64],
             x_test=images[1500:1532], y_test=digits.target[1500:1532])
    run = make_run(root, f"npz:{root / 'digits.npz'}", "resnet18_cifar", 16, 8)
    ran = export("--checkpoint", run, "--output", root / "edge", "--formats", "saved_model,litert",
                 "--quantize", "dynamic,int8")
    assert ran.returncode == 0, ran.stderr[-3000:]
    test_views = eval_view(tf.constant(images[1500:]), 16, 1.0).numpy()
    return {"root": root, "run": run, "export": root / "edge", "stdout": ran.stdout, "test_views": test_views,
            "small": f"npz:{root / 'small.npz'}"}


def test_litert_float32_matches_the_saved_model_with_builtin_ops_and_dynamic_batch(digits_run):
    export_dir = digits_run["export"]
    assert sorted(os.listdir(export_dir)) == ["metadata.json", "model.tflite", "model_dynamic.tflite",
                                               "model_int8.tflite", "saved_model"]
    images = query_images(16)
    serve = tf.saved_model.load(str(export_dir / "saved_model")).signatures["serve"]
    reference = serve(images=tf.constant(images))["features"].numpy()
    assert reference.std(axis=0).max() > 1e-3, "features do not depend on the image: a weak parity check"
    assert relative(reference, litert_features(export_dir / "model.tflite", images)) <= 1e-4
    assert relative(reference[:1], litert_features(export_dir / "model.tflite", images[:1])) <= 1e-4

    interpreter = Interpreter(model_path=str(export_dir / "model.tflite"))
    source = interpreter.get_input_details()[0]
    assert source["dtype"] == np.float32 and list(source["shape_signature"]) == [-1, 16, 16, 3]
    for name in ("model.tflite", "model_int8.tflite"):
        ops = {op["op_name"] for op in Interpreter(model_path=str(export_dir / name))._get_ops_details()}
        assert "CONV_2D" in ops and not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    int8 = Interpreter(model_path=str(export_dir / "model_int8.tflite"))
    assert int8.get_input_details()[0]["dtype"] == np.float32  # as the SavedModel's signature
    assert sum(t["dtype"] == np.int8 for t in int8.get_tensor_details()) > 20  # integer inside

    meta = json.loads((export_dir / "metadata.json").read_text())
    assert meta["formats"]["litert"] == "model.tflite" and meta["parity"]["litert"]["features"]["max_rel_diff"] <= 1e-4
    for name, figures in meta["litert"]["files"].items():
        assert figures["bytes"] == (export_dir / figures["file"]).stat().st_size
        assert figures["latency"]["wall_ms"] > 0 and figures["latency"]["batch"] == 1
    files = meta["litert"]["files"]
    assert files["dynamic"]["bytes"] < 0.5 * files["float32"]["bytes"]
    assert files["int8"]["bytes"] < 0.5 * files["float32"]["bytes"]
    assert meta["versions"]["ai-edge-litert"]


def test_quantised_models_stay_close_to_float_on_digits(digits_run):
    export_dir, views = digits_run["export"], digits_run["test_views"]
    meta = json.loads((export_dir / "metadata.json").read_text())
    assert meta["litert"]["calibration"].startswith("256 evaluation views of npz:")
    float_features = litert_features(export_dir / "model.tflite", views)
    for name in ("dynamic", "int8"):
        figures = meta["litert"]["quantized"][name]
        assert figures["within_tolerance"] and figures["bank_images"] == 1000 and figures["query_images"] == 297
        assert figures["mean_cosine"] >= litert.MIN_MEAN_COSINE
        assert abs(figures["knn_top1_change"]) <= litert.MAX_KNN_DROP
        assert figures["knn_top1_float"] > 0.3, "set-up: kNN on digits must be far above chance (0.1)"
        # Measured again here, on the test split's evaluation views.
        similarity = cosine(float_features, litert_features(export_dir / f"model_{name}.tflite", views))
        assert similarity.mean() == pytest.approx(figures["mean_cosine"], abs=1e-3)
        assert similarity.min() > 0.9
    assert "kNN top-1" in digits_run["stdout"] and "ms per image" in digits_run["stdout"]


def test_quantised_model_beyond_tolerance_is_refused_unless_allowed(digits_run, tmp_path, monkeypatch):
    monkeypatch.setattr(litert, "MIN_MEAN_COSINE", 1.5)  # no model can pass
    small = ["--dataset", digits_run["small"]]  # the check reads 64 + 32 images instead of 1000 + 297
    ran = export("--checkpoint", digits_run["run"], "--output", tmp_path / "refused", "--formats", "litert",
                 "--quantize", "dynamic", *small)
    assert ran.returncode == 1 and ran.stdout == ""
    assert len(ran.stderr.strip().splitlines()) == 1 and "--allow-drift" in ran.stderr, ran.stderr
    assert os.listdir(tmp_path) == []
    # What `--allow-drift` does with the same figures: keeps them, marked, instead of raising.
    figures = {"mean_cosine": 0.9, "min_cosine": 0.5, "knn_top1_float": 0.8, "knn_top1_quantized": 0.7,
               "knn_top1_change": -0.1}
    marked = litert.check_drift("dynamic", figures, allow=True)
    assert marked["within_tolerance"] is False and marked["mean_cosine"] == 0.9
    monkeypatch.setattr(litert, "MIN_MEAN_COSINE", 0.5)
    with pytest.raises(litert.DriftError, match="kNN top-1 0.800 -> 0.700"):
        litert.check_drift("int8", figures)
    assert litert.check_drift("int8", {**figures, "knn_top1_change": -0.01})["within_tolerance"]


# -- KerasHub --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def r50_run(tmp_path_factory):
    """The authors' layout (facebookresearch/simsiam's ResNet-50, random weights) converted by
    `simsiam-convert --from-torch` at 32 px, given a linear-probe result, and exported to LiteRT
    and a KerasHub preset by the command line: converted weights export like any run."""
    root = tmp_path_factory.mktemp("r50")
    torch.manual_seed(5)
    model = tr.randomize(tr.AuthorsSimSiam(dict(depth=50, width=64, stem_kernel=7), dim=64, pred_dim=16), 5)
    torch.save(tr.facebookresearch(model), root / "checkpoint_0099.pth.tar")
    ran = run_main(convert_main, "--from-torch", root / "checkpoint_0099.pth.tar", "--output", root / "run",
                   "--image-size", "32")
    assert ran.returncode == 0, ran.stderr[-3000:]
    append_result(str(root / "run"), dataset="npz:tiny.npz", split="test", metric="top1", value=0.4375,
                  protocol="linear")
    ran = export("--checkpoint", root / "run", "--output", root / "hub", "--formats", "litert,keras-hub")
    assert ran.returncode == 0, ran.stderr[-3000:]
    pixels = query_images(32)
    with torch.no_grad():
        torch_features = model.encoder.features(tr.torch_input(pixels)).numpy()
    return {"root": root, "run": root / "run", "export": root / "hub", "stdout": ran.stdout, "images": pixels,
            "torch_features": torch_features}


FRESH_PROCESS = textwrap.dedent("""
    import sys
    import keras, keras_hub, numpy as np

    preset, images = sys.argv[1], np.load(sys.argv[2])
    backbone = keras_hub.models.Backbone.from_preset(preset)
    converter = keras_hub.layers.ImageConverter.from_preset(preset)
    features = keras.ops.mean(backbone(converter(images)), axis=(1, 2))
    classifier = keras_hub.models.ImageClassifier.from_preset(preset, num_classes=3)
    logits = classifier.predict(images, verbose=0)
    assert not any(name.startswith("simsiam_keras") for name in sys.modules)
    np.savez(sys.argv[3], features=keras.ops.convert_to_numpy(features), logits=logits,
             backbone=type(backbone).__name__, classifier=type(classifier).__name__)
""")


def test_keras_hub_preset_loads_in_a_fresh_process_with_the_same_features(r50_run, tmp_path):
    preset = r50_run["export"] / "keras_hub"
    images = r50_run["images"]
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, preset, tmp_path / "images.npy", tmp_path / "out.npz"],
                          capture_output=True, text=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    reference = r50_run["torch_features"]  # what PyTorch computes with the authors' weights
    assert reference.shape == (8, 2048) and reference.std(axis=0).max() > 1e-3
    assert relative(reference, out["features"]) <= 1e-4
    assert relative(reference, litert_features(r50_run["export"] / "model.tflite", images)) <= 1e-4
    assert str(out["backbone"]) == "ResNetBackbone" and str(out["classifier"]) == "ResNetImageClassifier"
    assert out["logits"].shape == (8, 3)


def test_keras_hub_preset_holds_the_normalisation_and_a_model_card(r50_run):
    export_dir = r50_run["export"]
    assert sorted(os.listdir(export_dir)) == ["keras_hub", "metadata.json", "model.tflite"]
    preset = export_dir / "keras_hub"
    config = json.loads((preset / "config.json").read_text())
    assert config["class_name"] == "ResNetBackbone" and config["config"]["block_type"] == "bottleneck_block"
    assert config["config"]["stackwise_num_blocks"] == [3, 4, 6, 3]
    converter = json.loads((preset / "image_converter.json").read_text())["config"]
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(converter["scale"], 1 / std, rtol=1e-6)
    np.testing.assert_allclose(converter["offset"], -mean / std, rtol=1e-6)
    assert list(converter["image_size"]) == [32, 32]

    meta = json.loads((export_dir / "metadata.json").read_text())
    assert meta["formats"] == {"litert": "model.tflite", "keras-hub": "keras_hub"}
    assert meta["parity"]["keras-hub"]["features"]["max_rel_diff"] <= 1e-4
    assert meta["results"][0]["value"] == 0.4375 and meta["training"]["recipe"]["base_lr"] > 0
    assert meta["source"]["layout"] == "facebookresearch"
    card = (preset / "README.md").read_text()
    assert "SimSiam" in card and "- epochs: " in card and "0.4375" in card
    assert "converted from PyTorch: checkpoint_0099.pth.tar (facebookresearch layout" in card
    assert "ImageClassifier.from_preset" in card and "parity keras-hub" in r50_run["stdout"]


def test_keras_hub_refuses_the_cifar_stem_with_one_line(digits_run, tmp_path):
    ran = export("--checkpoint", digits_run["run"], "--output", tmp_path / "cifar",
                 "--formats", "saved_model,keras-hub")
    one_line_refusal(ran, "CIFAR stem", "resnet18_cifar")
    assert os.listdir(tmp_path) == []


def test_keras_hub_bad_inputs_are_one_line_exit_2_and_write_nothing(r50_run, tmp_path, monkeypatch):
    before = (r50_run["export"] / "metadata.json").read_text()
    ran = export("--checkpoint", r50_run["run"], "--output", r50_run["export"], "--formats", "keras-hub")
    one_line_refusal(ran, "already exists", "--overwrite")
    assert (r50_run["export"] / "metadata.json").read_text() == before
    ran = export("--checkpoint", r50_run["run"], "--output", tmp_path / "q", "--formats", "onnx", "--quantize", "int8")
    one_line_refusal(ran, "--quantize", "litert")
    ran = export("--checkpoint", r50_run["run"], "--output", tmp_path / "q", "--formats", "litert",
                 "--quantize", "int4")
    one_line_refusal(ran, "--quantize", "dynamic,int8")
    ran = export("--checkpoint", r50_run["run"], "--output", tmp_path / "q", "--formats", "litert",
                 "--quantize", "int8")
    one_line_refusal(ran, "does not name its dataset", "--dataset")  # converted weights: dataset "unknown"
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as if keras-hub were not installed
    ran = export("--checkpoint", r50_run["run"], "--output", tmp_path / "missing", "--formats", "keras-hub")
    one_line_refusal(ran, "keras-hub", "pip install 'simsiam-keras[keras-hub]'")
    assert os.listdir(tmp_path) == []
