"""simsiam-embed: a re-encoded, resized copy of an image is found as a duplicate pair; the projector files
parse with TensorBoard's own config parser and point at files that exist; RankMe; bad input."""

import csv
import io
import json

import keras
import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from sklearn.datasets import load_digits
from tensorboard.plugins.projector import projector_config_pb2

import simsiam_keras  # noqa: F401  (registers the classes model.keras needs)
from simsiam_keras.cli.embed import main
from simsiam_keras.evaluate.embed import embed
from simsiam_keras.evaluate.rankme import GramAccumulator, rankme, rankme_of_singular_values
from tests.commands import run_main

DUPLICATE = "train/3/copy_of_0003.jpg"


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """120 train and 40 test digits (real images, 32x32 PNG) in class folders, plus one train image again
    as a JPEG at quality 50, resized to 48x48."""
    root = tmp_path_factory.mktemp("digits_folder")
    loaded = load_digits()
    images = np.round(loaded.images * (255 / 16)).astype(np.uint8)
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)
    for split, rows in (("train", range(120)), ("test", range(120, 160))):
        for i in rows:
            folder = root / split / str(loaded.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).convert("RGB").save(folder / f"{i:04d}.png")
    original = root / "train" / str(loaded.target[3]) / "0003.png"
    assert loaded.target[3] == 3
    encoded = io.BytesIO()
    Image.open(original).convert("RGB").save(encoded, "JPEG", quality=50)
    Image.open(encoded).resize((48, 48), Image.BILINEAR).save(root / DUPLICATE, quality=95)
    return root


@pytest.fixture(scope="module")
def embedded(synthetic_run, digits_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("embed") / "digits"
    ran = run_main(main, "--checkpoint", synthetic_run.dir, "--dataset", f"folder:{digits_folder}", "--output", out,
                   "--projector-points", "100", "--neighbour-queries", "3", "--neighbours", "4", "--map")
    return out, ran


def test_a_reencoded_resized_copy_is_found_as_a_duplicate_pair(embedded, digits_folder):
    out, ran = embedded
    assert ran.returncode == 0, ran.stderr
    with open(out / "duplicates.csv") as f:
        rows = list(csv.DictReader(f))
    sims = [float(r["similarity"]) for r in rows]
    assert sims == sorted(sims, reverse=True)
    pair = {str(digits_folder / "train" / "3" / "0003.png"), str(digits_folder / DUPLICATE)}
    found = [r for r in rows if {r["image_a"], r["image_b"]} == pair]
    assert found and found[0]["label_a"] == found[0]["label_b"] == "3"
    assert f"{len(rows):,} near-duplicate pairs" in ran.stdout


def test_features_npz_holds_every_image_with_its_label_and_path(embedded, digits_folder):
    out, ran = embedded
    saved = np.load(out / "features.npz")
    assert saved["features"].shape == (161, 64) and len(saved["ids"]) == len(saved["labels"]) == 161
    assert sorted(set(saved["split"])) == ["test", "train"]
    row = list(saved["ids"]).index(str(digits_folder / DUPLICATE))
    assert saved["class_names"][saved["labels"][row]] == "3"
    summary = json.loads((out / "embed.json").read_text())
    assert 1 < summary["rankme"] < 64 and summary["knn_top1"] > 0.2 and summary["peak_memory_mb"] > 0
    assert "RankMe" in ran.stdout and "kNN top-1" in ran.stdout
    for picture in ("neighbours.png", "map.png"):
        assert Image.open(out / picture).size[0] > 100


def test_projector_files_parse_and_every_path_exists(embedded):
    out, _ = embedded
    config = text_format.Parse((out / "projector_config.pbtxt").read_text(), projector_config_pb2.ProjectorConfig())
    (embedding,) = config.embeddings
    for path in (embedding.tensor_path, embedding.metadata_path, embedding.sprite.image_path):
        assert (out / path).is_file(), path
    tensor = np.loadtxt(out / embedding.tensor_path, delimiter="\t")
    metadata = (out / embedding.metadata_path).read_text().splitlines()
    assert tensor.shape == (100, 64) and len(metadata) == 101 and metadata[0] == "label\tpath"
    assert all(Image.open(line.split("\t")[1]) for line in metadata[1:4])  # the paths are the image files
    side = list(embedding.sprite.single_image_dim)
    assert Image.open(out / embedding.sprite.image_path).size == (10 * side[0], 10 * side[1])


def test_rankme_is_the_dimension_for_isotropic_features_and_one_for_a_line():
    rng = np.random.default_rng(0)
    spread = np.linalg.qr(rng.normal(size=(16, 16)))[0] * 3.0  # 16 orthogonal directions of equal length
    assert rankme(spread) == pytest.approx(16, rel=1e-3)
    line = np.outer(rng.normal(size=50), rng.normal(size=8))
    assert rankme(line) == pytest.approx(1, abs=1e-3)
    gram = GramAccumulator(8)
    features = rng.normal(size=(300, 8)) * np.arange(1, 9)
    for chunk in np.split(features, 3):
        gram.add(chunk)
    assert rankme_of_singular_values(gram.singular_values()) == pytest.approx(rankme(features), rel=1e-6)


def test_bad_input_is_one_line_exit_2_and_nothing_written(synthetic_run, embedded, tmp_path):
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    other.save(tmp_path / "other.keras")
    cases = {
        "another architecture": (("--checkpoint", tmp_path / "other.keras", "--output", tmp_path / "new"),
                                 "another architecture"),
        "existing output": (("--checkpoint", synthetic_run.dir, "--output", embedded[0]), "exists"),
    }
    for case, (argv, message) in cases.items():
        ran = run_main(main, "--dataset", "synthetic", *argv)
        assert ran.returncode == 2 and ran.stderr.count("\n") == 1 and message in ran.stderr, (case, ran.stderr)
    assert not (tmp_path / "new").exists()


def test_unlabelled_images_are_embedded_without_labels_or_knn(synthetic_run, digits_folder, tmp_path):
    """A flat folder of images (and an .npz of x_train only): features, path-only projector metadata,
    neighbours, duplicates and RankMe; no label anywhere and no kNN."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted((digits_folder / "train").glob("*/*.png"), key=lambda p: p.name)[:24]:
        (flat / path.name).write_bytes(path.read_bytes())
    (flat / "copy.jpg").write_bytes((digits_folder / DUPLICATE).read_bytes())
    out = tmp_path / "embed"
    ran = run_main(main, "--checkpoint", synthetic_run.dir, "--dataset", f"folder:{flat}", "--output", out,
                   "--projector-points", "10", "--neighbour-queries", "2", "--neighbours", "3")
    assert ran.returncode == 0, ran.stderr
    saved = np.load(out / "features.npz")
    assert saved["features"].shape == (25, 64) and (saved["labels"] == -1).all() and set(saved["split"]) == {"train"}
    metadata = (out / "metadata.tsv").read_text().splitlines()
    assert len(metadata) == 10 and all((flat / line).is_file() for line in metadata)  # one column: no header
    with open(out / "duplicates.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"similarity", "image_a", "image_b"}
    assert any({r["image_a"], r["image_b"]} == {str(flat / "0003.png"), str(flat / "copy.jpg")} for r in rows)
    summary = json.loads((out / "embed.json").read_text())
    assert summary["knn_top1"] is None and 1 < summary["rankme"] < 64 and "kNN" not in ran.stdout
    assert Image.open(out / "neighbours.png").size[0] > 100

    images = np.stack([np.asarray(Image.open(flat / f"{i:04d}.png")) for i in (0, 1, 2, 3)])
    np.savez(tmp_path / "x_only.npz", x_train=images)
    result = embed(synthetic_run.dir, f"npz:{tmp_path / 'x_only.npz'}", str(tmp_path / "npz"), projector_points=0,
                   neighbour_queries=0)
    assert result.count == 4 and result.knn_top1 is None
    np.testing.assert_allclose(np.load(tmp_path / "npz" / "features.npz")["features"], saved["features"][:4], atol=1e-4)
    with pytest.raises(ValueError, match="no test split"):
        embed(synthetic_run.dir, f"npz:{tmp_path / 'x_only.npz'}", str(tmp_path / "test_split"), split="test")


def test_map_without_scikit_learn_is_one_line_exit_2_and_nothing_written(synthetic_run, tmp_path, monkeypatch):
    real_import = __import__

    def no_sklearn(name, *args, **kwargs):
        if name.split(".")[0] == "sklearn":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", no_sklearn)
    ran = run_main(main, "--checkpoint", synthetic_run.dir, "--output", tmp_path / "out", "--map")
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1, ran.stderr
    assert "scikit-learn" in ran.stderr and "pip install" in ran.stderr
    assert not (tmp_path / "out").exists()
