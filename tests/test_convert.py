"""The PyTorch bridge: checkpoints of every layout in, torchvision and detectron2 weights out.

Each checkpoint is built here by a torchvision-named ResNet in plain torch (tests/torch_resnets.py)
with random weights, BN statistics and fc biases, saved with torch.save as its code saves it.
Our model must then compute what torch computes (eval mode, 1e-4 relative) for the features,
the projector and the predictor; weights written back must be torch's, bit for bit.
"""

import collections
import json
import pickle
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch_resnets as tr  # noqa: E402

from simsiam_keras.cli.convert import main as convert_main  # noqa: E402
from simsiam_keras.convert import load_torch_model, to_torch  # noqa: E402
from simsiam_keras.convert.torch_format import read_torch_file  # noqa: E402
from simsiam_keras.export.parity import run_onnx  # noqa: E402
from simsiam_keras.method.model import SimSiam  # noqa: E402
from simsiam_keras.nets.backbone import build_backbone  # noqa: E402
from simsiam_keras.saved_run import METADATA, ONNX_FILE, load_backbone, load_keras_file  # noqa: E402
from tests.commands import run_main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

CIFAR = dict(depth=18, width=8, stem_kernel=3)
TOLERANCE = 1e-4


def images(size: int, count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def simsiam(backbone: dict, seed: int = 1, dim: int = 32, pred_dim: int = 8) -> tr.AuthorsSimSiam:
    torch.manual_seed(seed)
    return tr.randomize(tr.AuthorsSimSiam(backbone, dim=dim, pred_dim=pred_dim), seed)


def torch_outputs(model: tr.AuthorsSimSiam, pixels: np.ndarray, normalization=tr.IMAGENET) -> dict:
    with torch.no_grad():
        features = model.encoder.features(tr.torch_input(pixels, normalization))
        z = model.encoder.fc(features)
        return {"features": features.numpy(), "z": z.numpy(), "p": model.predictor(z).numpy()}


def keras_outputs(model: SimSiam, pixels: np.ndarray) -> dict:
    features = model.backbone(pixels, training=False)
    z = model.projector(features, training=False)
    return {"features": np.asarray(features), "z": np.asarray(z), "p": np.asarray(model.predictor(z, training=False))}


def assert_agree(reference: dict, actual: dict) -> dict:
    errors = {name: tr.relative_error(reference[name], actual[name]) for name in reference}
    assert max(errors.values()) <= TOLERANCE, errors
    return errors


def run_cli(*argv: str | Path) -> tuple[int, str, str]:
    result = run_main(convert_main, *argv)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def cifar_model():
    return simsiam(CIFAR)


# -- every layout converts, and computes what torch computes -------------------------------


def _save(obj, path: Path, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


LAYOUTS = {
    "facebookresearch": lambda m: tr.facebookresearch(m),
    "facebookresearch_single_gpu": lambda m: tr.facebookresearch(m, ddp=False),
    "mmpretrain": tr.mmpretrain,
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layouts_compute_what_torch_computes(tmp_path, monkeypatch, cifar_model, name):
    path = _save(LAYOUTS[name](cifar_model), tmp_path / "checkpoint.pth")
    with monkeypatch.context() as hidden:
        hidden.setitem(sys.modules, "torch", None)  # conversion must not need torch
        converted = load_torch_model(path)
    assert converted.info["heads"] == "converted" and converted.config.proj_output_affine is False
    assert converted.config.backbone == "resnet18_cifar" and converted.config.backbone_width == 8
    pixels = images(32)
    assert_agree(torch_outputs(cifar_model, pixels), keras_outputs(converted.model, pixels))


@pytest.mark.parametrize("prefix", ["backbone", "encoder"])
def test_solo_learn_cifar_stem_and_normalisation(tmp_path, prefix):
    """solo-learn's CIFAR ResNet pads its 3x3 stem by 2 and normalises with its CIFAR statistics.

    Older releases saved the backbone as `encoder.`; that file is written in the legacy format.
    """
    model = simsiam(dict(CIFAR, stem_padding=2), seed=2)
    path = _save(tr.solo_learn(model, backbone_prefix=prefix), tmp_path / "solo.ckpt", legacy=prefix == "encoder")
    converted = load_torch_model(path)
    assert converted.config.stem_padding == 2
    assert converted.config.input_mean == tr.SOLO_LEARN_CIFAR[0] and converted.config.input_std == tr.SOLO_LEARN_CIFAR[1]
    assert converted.info["ignored_keys"] == ["classifier.weight", "classifier.bias"]
    pixels = images(32)
    assert_agree(torch_outputs(model, pixels, tr.SOLO_LEARN_CIFAR), keras_outputs(converted.model, pixels))
    # --normalization overrides the layout's (the weights do not say which data they saw).
    override = load_torch_model(path, normalization="imagenet")
    assert override.config.input_mean == tr.IMAGENET[0]


def test_resnet50_at_224(tmp_path):
    """The ImageNet layout (7x7 stride-2 stem, max-pool, bottlenecks), at a narrow width to stay quick."""
    model = simsiam(dict(depth=50, width=8, stem_kernel=7), seed=3, dim=64, pred_dim=16)
    converted = load_torch_model(_save(tr.facebookresearch(model), tmp_path / "checkpoint_0099.pth.tar"))
    assert converted.config.backbone == "resnet50" and converted.config.image_size == 224
    assert (converted.config.proj_layers, converted.config.proj_hidden_dim, converted.config.proj_dim,
            converted.config.pred_hidden_dim) == (3, 256, 64, 16)
    pixels = images(224, count=2)
    assert_agree(torch_outputs(model, pixels), keras_outputs(converted.model, pixels))


def test_linear_eval_checkpoint_becomes_a_classifier(tmp_path):
    torch.manual_seed(4)
    backbone = tr.randomize(tr.ResNet(**CIFAR, num_classes=10), 4)
    path = _save(tr.linear_eval(backbone), tmp_path / "model_best.pth.tar")
    code, out, err = run_cli("--from-torch", path, "--output", tmp_path / "lincls")
    assert code == 0, err
    classifier = load_keras_file(tmp_path / "lincls" / "classifier.keras")
    sidecar = json.loads((tmp_path / "lincls" / "classifier.json").read_text())
    assert sidecar["class_names"] == [str(i) for i in range(10)] and sidecar["converted_from"]["layout"] == "torchvision"
    pixels = images(32)
    with torch.no_grad():
        inputs = tr.torch_input(pixels)
        logits, features = backbone(inputs).numpy(), backbone.features(inputs).numpy()
    assert tr.relative_error(logits, classifier(pixels, training=False)) <= TOLERANCE
    assert tr.relative_error(features, load_backbone(tmp_path / "lincls" / "classifier.keras")(pixels)) <= TOLERANCE
    # The backbone goes back to torchvision's layout from the classifier too, BN counters included.
    to_torch(tmp_path / "lincls" / "classifier.keras", tmp_path / "back.pth")
    written, expected = torch.load(tmp_path / "back.pth", weights_only=True), backbone.state_dict()
    assert list(written) == [k for k in expected if not k.startswith("fc.")]
    assert all(torch.equal(written[k], expected[k]) for k in written)
    converted = load_torch_model(_save(tr.mmpretrain_linear_eval(backbone), tmp_path / "mmpretrain_linear.pth"))
    assert converted.is_classifier and converted.info["layout"] == "mmpretrain"
    assert tr.relative_error(logits, converted.model(pixels, training=False)) <= TOLERANCE


# -- a run directory, and the way back ------------------------------------------------------


def test_run_directory_and_back_to_torch(tmp_path, cifar_model):
    """facebookresearch .pth -> run (both heads, both optimizers) -> .pth: the backbone's tensors bit for bit."""
    source = _save(tr.facebookresearch(cifar_model), tmp_path / "checkpoint_0099.pth.tar")
    code, out, err = run_cli("--from-torch", source, "--output", tmp_path / "run")
    assert code == 0, err
    assert "facebookresearch" in out and "module.encoder.fc.6.bias" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["proj_output_affine"] is False and config["converted_from"]["layout"] == "facebookresearch"
    model = load_keras_file(tmp_path / "run" / "model.keras", compile=True)
    assert isinstance(model, SimSiam) and model.optimizer is not None and model.predictor_optimizer is not None
    pixels = images(32)
    assert_agree(torch_outputs(cifar_model, pixels), keras_outputs(model, pixels))

    code, out, err = run_cli("--to-torch", tmp_path / "run", "--output", tmp_path / "back.pth")
    assert code == 0, err
    expected = collections.OrderedDict(
        (k[len("module.encoder."):], v.numpy()) for k, v in tr.facebookresearch(cifar_model)["state_dict"].items()
        if k.startswith("module.encoder.") and not k.startswith("module.encoder.fc.")
    )
    written = torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(written) == list(expected)
    for key, value in expected.items():
        assert written[key].numpy().dtype == value.dtype and tuple(written[key].shape) == value.shape, key
        assert written[key].numpy().tobytes() == value.tobytes(), key

    code, out, err = run_cli("--to-torch", tmp_path / "run", "--output", tmp_path / "R-18.pkl",
                             "--format", "detectron2")
    assert code == 0, err
    assert "PIXEL_MEAN [123.675, 116.280, 103.530]" in out
    with open(tmp_path / "R-18.pkl", "rb") as f:
        detectron2 = pickle.load(f, encoding="latin1")
    assert detectron2["matching_heuristics"] is True and "__author__" in detectron2
    renamed = detectron2["model"]
    assert {"stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.conv1.norm.weight", "res3.0.shortcut.weight",
            "res3.0.shortcut.norm.bias", "res5.1.conv2.norm.running_mean"} <= set(renamed)
    assert len(renamed) == len(expected)
    assert np.array_equal(renamed["res3.0.shortcut.weight"], expected["layer2.0.downsample.0.weight"])
    assert np.array_equal(renamed["stem.conv1.norm.running_var"], expected["bn1.running_var"])


def test_torchvision_state_dict_round_trip_is_bit_identical(tmp_path):
    """A torchvision ResNet-50 state_dict (legacy format, no heads) -> Keras -> .pth: same keys, dtypes, shapes, bytes."""
    torch.manual_seed(5)
    net = tr.randomize(tr.ResNet(depth=50, width=4, num_classes=None), 5)
    source = _save(net.state_dict(), tmp_path / "resnet50.pth", legacy=True)
    converted = load_torch_model(source, image_size=64)
    assert converted.info["heads"].startswith("random")
    back = to_torch(converted, tmp_path / "back.pth")
    assert back.keys == len(net.state_dict())
    expected, written = read_torch_file(source), torch.load(tmp_path / "back.pth", weights_only=True)
    assert list(written) == list(expected)
    for key, value in expected.items():
        assert written[key].numpy().dtype == value.dtype and tuple(written[key].shape) == value.shape
        assert written[key].numpy().tobytes() == value.tobytes(), key


@pytest.mark.parametrize("name,size,depth", [("resnet18_cifar", 32, 18), ("resnet50", 64, 50)])
def test_keras_backbone_loads_into_torchvision(tmp_path, name, size, depth):
    """Keras -> .pth -> torchvision's ResNet with load_state_dict(strict=False): only fc.* missing, same features."""
    backbone = build_backbone(name, size, width=8)
    rng = np.random.default_rng(6)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            for variable, value in ((layer.gamma, rng.uniform(0.5, 1.5, n)), (layer.beta, rng.normal(0, 0.2, n)),
                                    (layer.moving_mean, rng.normal(0, 0.2, n)), (layer.moving_variance, rng.uniform(0.5, 1.5, n))):
                variable.assign(value)
    to_torch(backbone, tmp_path / "backbone.pth")
    net = tr.ResNet(depth=depth, width=8, stem_kernel=3 if name.endswith("cifar") else 7, num_classes=1000)
    result = net.load_state_dict(torch.load(tmp_path / "backbone.pth", weights_only=True), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    pixels = images(size, count=2)
    with torch.no_grad():
        features = net.eval().features(tr.torch_input(pixels)).numpy()
    assert tr.relative_error(features, backbone(pixels, training=False)) <= TOLERANCE


def test_backbone_only_writes_a_checked_export(tmp_path):
    model = simsiam(dict(CIFAR, stem_padding=2), seed=7)
    source = _save(tr.solo_learn(model), tmp_path / "simsiam-cifar10.ckpt")
    code, out, err = run_cli("--from-torch", source, "--output", tmp_path / "export", "--backbone-only",
                             "--formats", "onnx")
    assert code == 0, err
    assert "parity onnx" in out
    metadata = json.loads((tmp_path / "export" / METADATA).read_text())
    assert metadata["source"]["layout"] == "solo-learn" and metadata["backbone"] == "resnet18_cifar"
    assert np.allclose(metadata["normalisation"]["mean"], [255 * m for m in tr.SOLO_LEARN_CIFAR[0]], atol=1e-4)
    pixels = images(32)
    features = torch_outputs(model, pixels, tr.SOLO_LEARN_CIFAR)["features"]
    onnx = run_onnx(tmp_path / "export" / ONNX_FILE, pixels[:8])
    assert tr.relative_error(features, onnx["features"]) <= TOLERANCE


# -- bad files: one line, exit 2, nothing written -------------------------------------------


def _bad_files(tmp_path: Path, model: tr.AuthorsSimSiam) -> dict:
    good = tr.facebookresearch(model)
    files = {}
    path = _save(good, tmp_path / "good.pth")
    (tmp_path / "truncated.pth").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    files["truncated"] = (tmp_path / "truncated.pth", "truncated")
    for name, edit, expected in (
        ("wrong_shape", lambda s: s.__setitem__("module.encoder.layer2.0.conv1.weight", torch.zeros(16, 8, 3, 1)),
         "'module.encoder.layer2.0.conv1.weight' has shape (16, 8, 3, 1), expected (16, 8, 3, 3)"),
        ("missing_key", lambda s: s.pop("module.encoder.layer3.1.bn2.running_var"),
         "missing key 'module.encoder.layer3.1.bn2.running_var'"),
        ("unknown_prefix", lambda s: s.__setitem__("module.momentum_encoder.conv1.weight", torch.zeros(1)),
         "unknown key 'module.momentum_encoder.conv1.weight'"),
        ("extra_layer", lambda s: s.__setitem__("module.encoder.layer1.0.bn3.weight", torch.zeros(1)),
         "unexpected key 'module.encoder.layer1.0.bn3.weight'"),
    ):
        state = collections.OrderedDict(good["state_dict"])
        edit(state)
        files[name] = (_save({**good, "state_dict": state}, tmp_path / f"{name}.pth"), expected)

    class Hook:
        def __reduce__(self):
            return eval, ("1",)

    files["unsafe_global"] = (_save({**good, "hook": Hook()}, tmp_path / "unsafe.pth"), "names builtins.eval")
    return files


def test_bad_files_are_refused_with_one_line(tmp_path, cifar_model):
    for name, (path, expected) in _bad_files(tmp_path, cifar_model).items():
        output = tmp_path / f"out_{name}"
        code, out, err = run_cli("--from-torch", path, "--output", output)
        assert code == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, (name, err)
        assert not output.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(f".out_{name}")]
    code, _, err = run_cli("--to-torch", tmp_path / "nothing", "--output", tmp_path / "x.pth")
    assert code == 2 and err.startswith("error: ") and not (tmp_path / "x.pth").exists()
    code, _, err = run_cli("--to-torch", tmp_path / "run", "--output", tmp_path / "x.pth", "--backbone-only")
    assert code == 2 and err.startswith("error: --backbone-only does not apply to --to-torch")
