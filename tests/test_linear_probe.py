"""Linear probe: pretrained beats random init, the backbone stays bitwise frozen, the CLI and its files."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import simsiam_keras  # noqa: F401  (registers the classes model.keras needs)
from simsiam_keras.augment.crop import eval_view
from simsiam_keras.config import make_config, make_linear_eval_config
from simsiam_keras.data.eval_splits import eval_data
from simsiam_keras.data.images import from_arrays
from simsiam_keras.data.synthetic import make_synthetic
from simsiam_keras.evaluate.linear_probe import backbone_unchanged, linear_eval, save_classifier, top_k_accuracy
from simsiam_keras.export.load import load_backbone
from simsiam_keras.method.model import build_simsiam

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "linear_eval.py")


def pretrain_config(output_dir):
    # About 100 SimSiam steps at 32 px: the smallest run that reliably lifts the linear probe
    # clearly above random init (~0.25 vs ~0.15 top-1 here; the 390-step quickstart reaches ~0.55).
    return make_config("quickstart", backbone_width=8, batch_size=64, base_lr=0.8, epochs=1,
                       steps_per_epoch=100, knn_every=0, output_dir=str(output_dir))


@pytest.fixture(scope="module")
def source():
    return from_arrays("synthetic", **make_synthetic(num_train=2048, num_test=500, image_size=32, seed=0))


@pytest.fixture(scope="module")
def pretrained_run(source, tmp_path_factory):
    from simsiam_keras.train.pretrain import pretrain

    run = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(0)
    pretrain(pretrain_config(run), source=source, verbose=0)
    keras.backend.clear_session()
    return run


def test_pretrained_encoder_beats_random_init(source, pretrained_run):
    probe = make_linear_eval_config("sgd", epochs=10, cache_features=True, eval_resize_ratio=256 / 224)
    data = eval_data(source)
    classifier, pretrained = linear_eval(load_backbone(pretrained_run / "model.keras"), data, probe)
    config = pretrain_config(pretrained_run)
    keras.utils.set_random_seed(config.seed)  # the initialisation the pretrained run started from
    _, random_init = linear_eval(build_simsiam(config).backbone, data, probe)
    print(f"linear probe top-1: pretrained {pretrained['top1']:.3f}, random init {random_init['top1']:.3f}")
    assert pretrained["top1"] > random_init["top1"] + 0.06, (pretrained["top1"], random_init["top1"])
    # The reported figures are the returned classifier's on the evaluation views of the test images.
    logits = classifier.predict(eval_view(source.x_test, 32, 256 / 224).numpy(), verbose=0)
    for k in (1, 5):
        expected = np.mean([label in np.argsort(-row)[:k] for row, label in zip(logits, source.y_test)])
        assert pretrained[f"top{k}"] == pytest.approx(expected, abs=1e-9), k
    assert pretrained["top5"] > pretrained["top1"]


def test_augmented_probe_leaves_backbone_bitwise_unchanged_and_saves_a_working_classifier(
    source, pretrained_run, tmp_path
):
    backbone = load_backbone(pretrained_run / "model.keras")
    small = from_arrays("synthetic", source.x_train[:512], source.y_train[:512], source.x_test[:64], source.y_test[:64])
    # A large lr on augmented views: BN in training mode would move its moving statistics at once.
    probe = make_linear_eval_config("sgd", epochs=1, batch_size=128, eval_resize_ratio=1.0)
    classifier, result = linear_eval(backbone, eval_data(small), probe)
    assert result["backbone_unchanged"] and result["steps"] == 4

    reference = load_backbone(pretrained_run / "model.keras")
    assert len(reference.weights) == len(backbone.weights) > 0
    moving = [w for w in backbone.weights if "moving_mean" in w.path]
    assert moving, "the check must cover the BN moving statistics"
    for before, after in zip(reference.weights, backbone.weights):
        np.testing.assert_array_equal(before.numpy(), after.numpy(), err_msg=after.path)
    head = classifier.get_layer("head")
    assert np.abs(head.kernel.numpy()).max() > 0.05, "the head did not train (init std is 0.01)"

    snapshot = [w.numpy().copy() for w in reference.weights]
    reference.weights[3].assign(reference.weights[3].numpy() + 1e-6)
    assert not backbone_unchanged(snapshot, reference), "the check must see a tiny change"

    save_classifier(classifier, str(tmp_path), [str(i) for i in range(10)], "ckpt", "resnet18_cifar", {"name": "sgd"})
    loaded = keras.models.load_model(tmp_path / "classifier.keras", safe_mode=True)
    images = small.x_test[:8].astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), classifier.predict(images, verbose=0), atol=1e-5)
    assert loaded.input_shape == (None, 32, 32, 3) and loaded.output_shape == (None, 10)
    info = json.loads((tmp_path / "classifier.json").read_text())
    assert info["image_size"] == 32 and info["feature_dim"] == 64 and len(info["class_names"]) == 10
    # load.py finds the backbone inside the classifier.
    features = load_backbone(tmp_path / "classifier.keras").predict(images, verbose=0)
    np.testing.assert_allclose(features, backbone.predict(images, verbose=0), atol=1e-5)


def test_eval_view_resizes_the_shorter_side_to_256_224_then_takes_the_centre():
    # A horizontal ramp: after Resize(36) + CenterCrop(32) of a 36x54 image, the crop keeps the
    # central 32/54 of its width and the whole height minus 2 px each side.
    height, width = 36, 54
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.float32)[None, :, None], (height, 1, 3))
    view = eval_view(tf.constant(ramp), 32, 256 / 224).numpy()
    assert view.shape == (32, 32, 3)
    columns = view[0, :, 0]
    np.testing.assert_allclose(columns.mean(), 127.5, atol=1.0)  # centred
    np.testing.assert_allclose(columns[-1] - columns[0], 255 * 31 / 53, rtol=0.02)


def test_top_k_accuracy():
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 2.0, 0.0]])
    labels = np.array([0, 1, 0])
    assert top_k_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(logits, labels, 3) == pytest.approx(1.0)
    assert top_k_accuracy(logits, labels, 10) == 1.0  # k beyond the class count


def test_recipes():
    assert make_linear_eval_config("paper").lr == pytest.approx(0.02 * 4096 / 256)
    assert make_linear_eval_config("sgd").lr == 30.0
    assert make_linear_eval_config("sgd", batch_size=128).lr == 15.0
    assert make_linear_eval_config("sgd_scaled").optimizer == "sgd"
    with pytest.raises(ValueError, match="recipe 'adam' is unknown"):
        make_linear_eval_config("adam")
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        make_linear_eval_config("paper", epochs=0)


def run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=600)


def test_cli_cached_probe_writes_classifier_result_and_run_records(source, pretrained_run, tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, x_train=source.x_train[:512], y_train=source.y_train[:512],
             x_test=source.x_test[:200], y_test=source.y_test[:200])
    out = tmp_path / "probe"
    result = run_cli("--checkpoint", str(pretrained_run / "model.keras"), "--dataset", f"npz:{data}",
                     "--recipe", "sgd", "--epochs", "3", "--cache-features", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "top-1" in result.stdout and "top-5" in result.stdout
    assert {"classifier.keras", "classifier.json", "linear_eval.json"} <= set(os.listdir(out))
    record = json.loads((out / "linear_eval.json").read_text())
    assert record["backbone_unchanged"] is True and record["recipe"]["cache_features"] is True
    assert record["steps"] == 3 * 2 and 0 <= record["top1"] <= record["top5"] <= 1
    runs = json.loads((pretrained_run / "results.json").read_text())
    probes = [r for r in runs if r["protocol"] == "linear_probe" and r["dataset"] == f"npz:{data}"]
    assert {r["metric"]: r["value"] for r in probes} == {"top1": record["top1"], "top5": record["top5"]}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "/nonexistent/model.keras"], "no such file"),
        (["--dataset", "npz:{unlabelled}"], "evaluation needs labelled x_train/y_train and x_test/y_test"),
    ],
)
def test_cli_mistakes_get_one_clear_line(pretrained_run, tmp_path, args, message):
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, x_train=np.zeros((8, 32, 32, 3), np.uint8))
    args = [a.format(unlabelled=unlabelled) for a in args]
    if "--checkpoint" not in args:
        args = ["--checkpoint", str(pretrained_run / "model.keras"), *args]
    result = run_cli(*args, "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()
