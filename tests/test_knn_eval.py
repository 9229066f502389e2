"""kNN evaluation of saved backbones: same answer from .keras, SavedModel and ONNX; streamed data; the CLI."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.config import make_config
from simsiam_keras.data.sources import eval_data
from simsiam_keras.data.synthetic import make_synthetic
from simsiam_keras.evaluate.knn import extract_labelled_features
from simsiam_keras.evaluate.knn_eval import knn_eval
from simsiam_keras.evaluate.results import read_results
from simsiam_keras.export.backbone import export_backbone
from simsiam_keras.method.model import build_simsiam
from simsiam_keras.saved_run import load_backbone, load_feature_extractor
from tests.commands import run_main

SCRIPT = Path(__file__).parent.parent / "scripts" / "knn_eval.py"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A random-init run (model.keras + config.json) of a narrow ResNet-18 at 32 px, and its export."""
    config = make_config("quickstart", backbone_width=8, proj_dim=32, proj_hidden_dim=32, pred_hidden_dim=8)
    run = tmp_path_factory.mktemp("run")
    model = build_simsiam(config)
    model.save(run / "model.keras")
    (run / "config.json").write_text(config.to_json())
    export_backbone(model.backbone, run.parent / "exported" / "backbone", config=config, run_dir=run)
    return run


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "shapes.npz"
    np.savez(path, **make_synthetic(num_train=300, num_test=100, image_size=32, seed=1))
    return path


def test_same_knn_accuracy_from_keras_saved_model_and_onnx(run_dir, npz_data, tmp_path):
    export = run_dir.parent / "exported" / "backbone"
    checkpoints = {"keras": run_dir, "saved_model": export, "onnx": export / "model.onnx"}
    images = make_synthetic(num_train=16, num_test=0, image_size=32, seed=2)["x_train"].astype(np.float32)
    features = {kind: load_feature_extractor(path)(images) for kind, path in checkpoints.items()}
    scale = np.abs(features["keras"]).max()
    for kind in ("saved_model", "onnx"):
        np.testing.assert_allclose(features[kind], features["keras"], atol=1e-4 * scale, err_msg=kind)

    results = {
        kind: knn_eval(str(path), f"npz:{npz_data}", k=20, output=str(tmp_path / f"{kind}.json"))
        for kind, path in checkpoints.items()
    }
    assert {kind: r["model_kind"] for kind, r in results.items()} == {k: k for k in checkpoints}
    values = [r["value"] for r in results.values()]
    assert max(values) - min(values) <= 1 / 100 + 1e-9, values  # at most one of 100 queries on a near tie
    assert all(r["query_images"] == 100 and r["bank_images"] == 300 for r in results.values())
    # The export's metadata names the run, so all three land in the run's results.json.
    records = [r for r in read_results(str(run_dir)) if r["bank_images"] == 300]
    assert [r["model_kind"] for r in records[-3:]] == ["keras", "saved_model", "onnx"]
    assert all(r["metric"] == "knn_top1" and r["split"] == "test" and "k=20" in r["protocol"] for r in records)


def _write_image_folder(root: Path) -> None:
    """train/ and test/ with two classes of non-square PNGs and JPEGs, and one broken file."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 9), ("test", 5)):
        for label in ("circle", "square"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image = tf.constant(rng.integers(0, 256, (40 + 3 * i, 36 + 5 * (i % 3), 3), dtype=np.uint8))
                encoded = tf.io.encode_png(image) if i % 2 else tf.io.encode_jpeg(image, quality=90)
                (folder / f"{i}.{'png' if i % 2 else 'jpg'}").write_bytes(encoded.numpy())
    (root / "train" / "square" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")


def test_streamed_folder_features_equal_in_memory_features(run_dir, tmp_path):
    _write_image_folder(tmp_path)
    backbone = load_backbone(run_dir)
    data = eval_data(f"folder:{tmp_path}")
    assert (data.bank.name, data.query.name, data.num_classes) == ("train", "test", 2)
    ratio = 256 / 224
    streamed, labels = extract_labelled_features(load_feature_extractor(run_dir), data.bank.batches(32, ratio, 4))
    # In memory: the kNN monitor's views, decoded once, through Keras predict.
    monitor = data.in_memory(32, ratio)
    views, monitor_labels = monitor.bank.arrays(32)
    in_memory = backbone.predict(views.astype(np.float32), verbose=0)
    assert len(labels) == 18, "the broken file is dropped, every other image kept"
    np.testing.assert_array_equal(labels, monitor_labels)
    np.testing.assert_allclose(streamed, in_memory, atol=1e-5 * np.abs(in_memory).max())


def test_tfds_splits_stream_the_stored_images_and_labels(tmp_path):
    import tensorflow_datasets as tfds

    class TinyColours(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(8, 8, 3)), "label": tfds.features.ClassLabel(num_classes=3)}
            ))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(7), "test": self._generate_examples(4)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((8, 8, 3), 10 * i, np.uint8), "label": i % 3}

    TinyColours(data_dir=str(tmp_path)).download_and_prepare()
    data = eval_data("tiny_colours", data_dir=str(tmp_path))
    assert (data.num_classes, data.bank.size, data.query.name) == (3, 7, "test")
    batches = list(data.query.batches(8, 1.0, batch_size=3))
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.dtype == np.float32 and images.shape == (4, 8, 8, 3)
    order = np.argsort(images[:, 0, 0, 0])  # TFDS may store records in any order
    np.testing.assert_array_equal(images[order, 0, 0, 0], [0, 10, 20, 30])
    np.testing.assert_array_equal(labels[order], [0, 1, 2, 0])


def test_cli_prints_top1_writes_json_and_appends_to_results(run_dir, npz_data):
    before = len(read_results(str(run_dir)))
    result = run_main(_script_main(), "--checkpoint", run_dir / "model.keras", "--dataset", f"npz:{npz_data}",
                      "--k", "10", "--temperature", "0.2", "--batch-size", "64")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kNN top-1" in result.stdout
    written = json.loads((run_dir / "knn_shapes.json").read_text())
    assert (written["k"], written["temperature"], written["dataset"]) == (10, 0.2, f"npz:{npz_data}")
    records = read_results(str(run_dir))
    assert len(records) == before + 1 and records[-1]["value"] == written["value"]
    assert f"{written['value']:.4f}" in result.stdout


def _script_main():
    spec = importlib.util.spec_from_file_location("knn_eval_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "/nonexistent/run"], "no such file or directory"),
        (["--checkpoint", "{tmp}"], "found no model.keras"),
        (["--checkpoint", "{run}", "--dataset", "npz:/nonexistent.npz"], "no such file"),
        (["--checkpoint", "{run}", "--dataset", "folder:{tmp}"], "no images found"),
        (["--checkpoint", "{run}", "--k", "0"], "--k must be >= 1"),
        (["--checkpoint", "{run}", "--format", "onnx"], "found no onnx model"),
    ],
)
def test_cli_mistakes_get_one_line_before_any_model_is_loaded(run_dir, tmp_path, capsys, monkeypatch, args, message):
    import simsiam_keras.evaluate.knn_eval

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(simsiam_keras.evaluate.knn_eval, "load_feature_extractor", no_loading)
    args = [a.format(tmp=tmp_path, run=run_dir) for a in args]
    assert _script_main()(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
