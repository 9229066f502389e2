"""Linear probe: the default recipe fits the data, pretrained beats random init, the backbone stays bitwise
frozen, kNN is the floor, the CLI and its files."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

import simsiam_keras  # noqa: F401  (registers the classes model.keras needs)
from simsiam_keras.augment.crop import eval_view
from simsiam_keras.cli.linear_eval import main
from simsiam_keras.config import (
    LARS_MIN_STEPS_PER_EPOCH,
    PAPER_PROBE_BATCH,
    SimSiamConfig,
    default_linear_probe_recipe,
    make_linear_probe_config,
)
from simsiam_keras.data.sources import eval_data
from simsiam_keras.data.images import from_arrays
from simsiam_keras.evaluate.knn import knn_top1_of_model
from simsiam_keras.evaluate.linear_probe import (
    NORMALIZE,
    backbone_unchanged,
    linear_probe,
    save_classifier,
    top_k_accuracy,
)
from simsiam_keras.evaluate.logistic import fit_logistic
from simsiam_keras.export.classifier import export_classifier
from simsiam_keras.method.model import build_simsiam
from simsiam_keras.saved_run import load_backbone
from tests.commands import run_main


@pytest.fixture(scope="module")
def source(synthetic_run):
    return synthetic_run.source


@pytest.fixture(scope="module")
def pretrained_run(synthetic_run):
    """The session's short synthetic pretraining (conftest.synthetic_run): its run directory."""
    return synthetic_run.dir


def random_init_backbone(run):
    settings = json.loads((run / "config.json").read_text())
    config = SimSiamConfig.from_dict({k: v for k, v in settings.items() if k != "data"})
    keras.utils.set_random_seed(config.seed)  # the initialisation the pretrained run started from
    return build_simsiam(config).backbone


def default_probe(data, **overrides):
    """The config a probe of `data` gets without a recipe: what the command line runs by default."""
    recipe, _ = default_linear_probe_recipe(data.bank.size)
    return make_linear_probe_config(recipe, **overrides)


@pytest.fixture(scope="module")
def separable():
    """10 classes of 8x8 images (a fixed random template per class + noise) and a linear "backbone".

    The features are a linear map of the pixels, so the classes stay linearly separable in them:
    the test checks that nearest-centroid (a linear classifier) is exact on the test split.
    """
    rng = np.random.default_rng(0)
    templates = rng.uniform(0, 255, (10, 8, 8, 3))

    def split(n):
        labels = np.arange(n) % 10
        images = templates[labels] + rng.uniform(-40, 40, (n, 8, 8, 3))
        return np.clip(np.round(images), 0, 255).astype(np.uint8), labels

    images = keras.Input((8, 8, 3), name="images")
    projection = keras.layers.Dense(32, use_bias=False, kernel_initializer=keras.initializers.RandomNormal(0, 0.01, seed=1))
    backbone = keras.Model(images, projection(keras.layers.Flatten()(images)), name="linear_features")
    return eval_data(from_arrays("separable", *split(2000), *split(500))), backbone


def test_default_probe_separates_separable_features_where_the_papers_lars_does_not(separable, capsys):
    data, backbone = separable
    bank, query = (backbone.predict(split.arrays(8)[0].astype("float32"), verbose=0) for split in (data.bank, data.query))
    centroids = np.stack([bank[data.bank.arrays(8)[1] == c].mean(axis=0) for c in range(10)])
    nearest = np.argmin(((query[:, None] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    assert np.mean(nearest == data.query.arrays(8)[1]) == 1.0, "set-up: the features must be linearly separable"

    _, default = linear_probe(backbone, data, default_probe(data, eval_resize_ratio=1.0))
    assert default["lbfgs"] is not None and default["top1"] >= 0.95, default
    # The recipe that was the default for every dataset but `synthetic` until now: LARS barely moves the head.
    _, paper = linear_probe(backbone, data, make_linear_probe_config("paper", cache_features=True, eval_resize_ratio=1.0))
    assert paper["top1"] < 0.95 and paper["knn_top1"] == default["knn_top1"] == 1.0, (paper, default)
    assert paper["below_knn"] and not default["below_knn"]
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if line.startswith("warning: ")] == [
        f"warning: the linear probe's top-1 {paper['top1']:.4f} is {100 * (1 - paper['top1']):.1f} points below the "
        "kNN top-1 1.0000 of the same features: the head is under-trained"]
    # The batch of 4096 is capped to the 2,000 training images, the lr scaled by the linear rule.
    assert paper["batch_cap"] == pytest.approx({"batch_size": 4096, "capped_to": 2000, "lr": 0.32, "capped_lr": 0.15625})
    assert paper["steps"] == 90 and paper["batch_size"] == 2000
    assert ("note: batch_size 4096 is larger than the 2,000 training images: capped to 2000, lr 0.32 -> 0.15625 "
            "(base lr 0.02 x batch / 256)") in printed


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 1,797 8x8 handwritten digits (real images), upscaled to 32x32 RGB; 1,437 train, 360 test."""
    loaded = load_digits()
    images = np.round(loaded.images * (255 / 16)).astype(np.uint8)
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)[..., None].repeat(3, axis=3)
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1437], order[1437:]
    return eval_data(from_arrays("digits", images[train], loaded.target[train], images[test], loaded.target[test]))


@pytest.fixture(scope="module")
def digits_probes(digits, pretrained_run):
    """The default probe on digits for a random-init and a briefly pretrained encoder: {name: (backbone, classifier, result)}."""
    probes = {}
    for name, backbone in (("random_init", random_init_backbone(pretrained_run)),
                           ("pretrained", load_backbone(pretrained_run / "model.keras"))):
        probes[name] = (backbone, *linear_probe(backbone, digits, default_probe(digits, eval_resize_ratio=1.0)))
    return probes


@pytest.mark.parametrize("encoder", ["random_init", "pretrained"])
def test_default_probe_on_digits_is_not_below_knn_of_the_same_features(digits, digits_probes, encoder):
    backbone, _, result = digits_probes[encoder]
    assert result["lbfgs"]["l2"] in make_linear_probe_config("lbfgs").l2_grid and result["batch_cap"] is None
    # The floor is the kNN monitor's classifier on the same features, far above chance (0.1) here.
    knn = knn_top1_of_model(backbone, digits.bank.batches(32, 1.0), digits.query.batches(32, 1.0))
    assert result["knn_top1"] == knn["top1"] > 0.3 and result["knn_bank_images"] == 1437
    print(f"digits, {encoder}: default probe {result['top1']:.3f}, kNN {result['knn_top1']:.3f}")
    assert result["top1"] >= result["knn_top1"] - 0.02, result
    assert not result["below_knn"]


def test_default_classifier_keeps_its_normalisation_through_save_load_and_export(digits, digits_probes, tmp_path):
    backbone, classifier, result = digits_probes["pretrained"]
    assert [layer.name for layer in classifier.layers][-2:] == [NORMALIZE, "head"]
    save_classifier(classifier, str(tmp_path), digits.class_names, "ckpt", "resnet18_cifar", {"name": "lbfgs"})
    loaded = keras.models.load_model(tmp_path / "classifier.keras", safe_mode=True)
    images, labels = digits.query.arrays(32)
    views = eval_view(images, 32, 1.0).numpy()
    logits = loaded.predict(views, verbose=0)
    assert top_k_accuracy(logits, labels, 1) == result["top1"]
    # Without the normalisation the same head scores the features differently.
    head = loaded.get_layer("head")
    unnormalised = head(backbone.predict(views, verbose=0)).numpy()
    assert np.abs(unnormalised - logits).max() > 1.0
    # saved_run still finds the backbone inside the classifier.
    np.testing.assert_allclose(load_backbone(tmp_path / "classifier.keras").predict(views[:8], verbose=0),
                               backbone.predict(views[:8], verbose=0), atol=1e-5)
    # The export checks SavedModel and ONNX against the Keras model at 1e-4 (it raises otherwise).
    export = export_classifier(loaded, tmp_path / "export", digits.class_names, formats="onnx")
    assert export.metadata["parity"]["onnx"]["logits"]["max_rel_diff"] <= 1e-4


def test_lbfgs_fit_matches_scikit_learn():
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 4
    features = (rng.normal(size=(300, 12)) + labels[:, None] * rng.normal(size=12) * 0.5) * rng.uniform(0.1, 3, 12) + 2
    features = features.astype(np.float32)
    l2 = 1e-2
    fit = fit_logistic(features, labels, 4, l2)
    assert fit.converged
    # scikit-learn minimises mean cross-entropy + ||W||^2 / (2 C N) (bias unpenalised): C = 1 / (l2 N),
    # on features standardised as the fit does internally.
    mean, std = features.mean(axis=0, dtype=np.float64), features.std(axis=0, dtype=np.float64)
    standardised = (features - mean) / std
    reference = LogisticRegression(C=1 / (l2 * len(labels)), tol=1e-10, max_iter=10_000).fit(standardised, labels)

    def objective(kernel, bias):  # in float64, on the standardised features
        logits = standardised @ kernel + bias
        log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
        return -log_probs[np.arange(len(labels)), labels].mean() + l2 / 2 * np.sum(kernel**2)

    ours = objective(fit.kernel * std[:, None], fit.bias + mean @ fit.kernel)  # the fit, back in standardised units
    theirs = objective(reference.coef_.T, reference.intercept_)
    assert ours == pytest.approx(fit.loss, rel=1e-6) and ours <= theirs + 1e-6, (ours, theirs)
    probabilities = tf.nn.softmax(fit.logits(features)).numpy()
    np.testing.assert_allclose(probabilities, reference.predict_proba(standardised), atol=1e-3)


def test_pretrained_encoder_beats_random_init(source, pretrained_run):
    probe = make_linear_probe_config("sgd", epochs=10, cache_features=True, eval_resize_ratio=256 / 224)
    data = eval_data(source)
    classifier, pretrained = linear_probe(load_backbone(pretrained_run / "model.keras"), data, probe)
    _, random_init = linear_probe(random_init_backbone(pretrained_run), data, probe)
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
    probe = make_linear_probe_config("sgd", epochs=1, batch_size=128, eval_resize_ratio=1.0)
    classifier, result = linear_probe(backbone, eval_data(small), probe)
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
    # saved_run finds the backbone inside the classifier.
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
    assert make_linear_probe_config("paper").lr == pytest.approx(0.02 * 4096 / 256)
    assert make_linear_probe_config("sgd").lr == 30.0
    assert make_linear_probe_config("sgd", batch_size=128).lr == 15.0
    assert make_linear_probe_config("sgd_scaled").optimizer == "sgd"
    lbfgs = make_linear_probe_config("lbfgs", seed=3)
    assert lbfgs.full_batch and lbfgs.cache_features and lbfgs.normalize_features and lbfgs.seed == 3
    with pytest.raises(ValueError, match="recipe 'adam' is unknown"):
        make_linear_probe_config("adam")
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        make_linear_probe_config("paper", epochs=0)
    with pytest.raises(ValueError, match=r"^epochs does not apply to the lbfgs recipe .*\(paper, lars_code, sgd, sgd_scaled\)"):
        make_linear_probe_config("lbfgs", epochs=100)
    with pytest.raises(ValueError, match="^cache_features: the lbfgs recipe fits the head on cached features"):
        make_linear_probe_config("lbfgs", cache_features=False)


@pytest.mark.parametrize("images, recipe", [
    (1_281_167, "paper"),  # ImageNet: 313 steps an epoch
    (LARS_MIN_STEPS_PER_EPOCH * PAPER_PROBE_BATCH, "paper"),
    ((LARS_MIN_STEPS_PER_EPOCH - 1) * PAPER_PROBE_BATCH, "lbfgs"),
    (50_000, "lbfgs"),  # CIFAR-10: 13 steps an epoch
    (5_000, "lbfgs"),
    (1, "lbfgs"),
])
def test_default_recipe_follows_the_steps_an_epoch_at_the_papers_batch(images, recipe):
    chosen, reason = default_linear_probe_recipe(images)
    steps = -(-images // PAPER_PROBE_BATCH)
    assert chosen == recipe and reason.startswith(f"{images:,} training images give {steps} step")
    assert "\n" not in reason


def run_cli(*args):
    return run_main(main, *args)


def test_cli_default_probe_records_its_recipe_choice_and_knn_floor(source, pretrained_run, tmp_path):
    data = tmp_path / "data.npz"
    np.savez(data, x_train=source.x_train[:512], y_train=source.y_train[:512],
             x_test=source.x_test[:200], y_test=source.y_test[:200])
    out = tmp_path / "probe"
    result = run_cli("--checkpoint", str(pretrained_run / "model.keras"), "--dataset", f"npz:{data}",
                     "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"classifier.keras", "classifier.json", "linear_eval.json"} <= set(os.listdir(out))
    record = json.loads((out / "linear_eval.json").read_text())
    reason = ("512 training images give 1 step an epoch at the paper's batch 4096 (< 128): too few for LARS to move "
              "the head, so full-batch L-BFGS on l2-normalised features")
    assert record["recipe_choice"] == {"recipe": "lbfgs", "reason": reason}
    assert result.stdout.splitlines()[0] == f"recipe lbfgs: {reason}"
    assert record["backbone_unchanged"] is True and record["recipe"]["cache_features"] is True
    assert record["steps"] is None and record["batch_cap"] is None and record["lbfgs"]["l2"] > 0
    assert record["knn_top1"] > 0.15 and record["top1"] >= record["knn_top1"] - 0.05 and not record["below_knn"]
    assert (f"top-1 {record['top1']:.4f}  top-5 {record['top5']:.4f}  kNN top-1 {record['knn_top1']:.4f}"
            in result.stdout)
    runs = json.loads((pretrained_run / "results.json").read_text())
    probes = [r for r in runs if r["protocol"] == "linear_probe" and r["dataset"] == f"npz:{data}"]
    assert {r["metric"]: r["value"] for r in probes} == {"top1": record["top1"], "top5": record["top5"]}
    assert all(r["knn_top1"] == record["knn_top1"] and r["recipe"] == "lbfgs" for r in probes)

    # --recipe paper: the paper's LARS on augmented views, its batch capped to the 512 images.
    out = tmp_path / "paper"
    result = run_cli("--checkpoint", str(pretrained_run / "model.keras"), "--dataset", f"npz:{data}",
                     "--recipe", "paper", "--epochs", "1", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "linear_eval.json").read_text())
    assert record["recipe_choice"] == {"recipe": "paper", "reason": "asked for with --recipe"}
    paper = make_linear_probe_config("paper")
    assert {k: record["recipe"][k] for k in ("optimizer", "base_lr", "batch_size", "momentum", "weight_decay",
                                             "trust_coefficient", "cache_features", "normalize_features")} == {
        "optimizer": "lars", "base_lr": paper.base_lr, "batch_size": 4096, "momentum": 0.9, "weight_decay": 0.0,
        "trust_coefficient": 0.001, "cache_features": False, "normalize_features": False}
    assert record["batch_cap"] == pytest.approx({"batch_size": 4096, "capped_to": 512, "lr": 0.32, "capped_lr": 0.04})
    assert record["steps"] == 1 and record["batch_size"] == 512 and record["lr"] == pytest.approx(0.04)
    assert record["backbone_unchanged"] is True and record["backbone_weights_checked"] > 0
    assert ("note: batch_size 4096 is larger than the 512 training images: capped to 512, lr 0.32 -> 0.04 "
            "(base lr 0.02 x batch / 256)") in result.stdout.splitlines()


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
