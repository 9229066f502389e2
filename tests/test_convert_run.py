"""simsiam-convert --to-torch of a run reads the backbone's weights and the step count only, and writes what a full load writes."""

import dataclasses
import json
import zipfile

import numpy as np

from simsiam_keras.convert import to_torch
from simsiam_keras.convert.torch_format import read_torch_file
from simsiam_keras.method.model import build_simsiam
from simsiam_keras.method.optimizers import make_optimizers
from simsiam_keras.saved_run import load_keras_file, read_simsiam_backbone


def _saved_run(config, folder, steps: int):
    """A run's model.keras: both optimizers built (their state saved), `steps` encoder steps, random BN statistics."""
    model = build_simsiam(config)
    model.compile(*make_optimizers(config, 10))
    model.optimizer.build(model.backbone.trainable_variables + model.projector.trainable_variables)
    model.predictor_optimizer.build(model.predictor.trainable_variables)
    model.optimizer.iterations.assign(steps)
    rng = np.random.default_rng(steps)
    for variable in model.backbone.weights:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(variable.dtype))
    folder.mkdir()
    model.save(folder / "model.keras")
    return folder


def test_run_to_torch_reads_weights_only_and_writes_what_a_full_load_writes(tmp_path, tiny_config):
    config = dataclasses.replace(tiny_config, backbone_width=4)
    run = _saved_run(config, tmp_path / "run", steps=5)
    backbone, steps = read_simsiam_backbone(run / "model.keras")
    assert steps == 5 and backbone.name == config.backbone
    to_torch(run, tmp_path / "fast.pth")
    to_torch(load_keras_file(run / "model.keras", compile=True), tmp_path / "full.pth")
    fast, full = read_torch_file(tmp_path / "fast.pth"), read_torch_file(tmp_path / "full.pth")
    assert list(fast) == list(full)
    for key, value in full.items():
        if key.endswith("num_batches_tracked"):
            assert int(fast[key]) == 10, key  # two views per step
        else:
            assert fast[key].dtype == value.dtype and fast[key].tobytes() == value.tobytes(), key
    # Not a run, or a run whose LossScaleOptimizer keeps its step count elsewhere: None (to_torch loads it whole).
    backbone.save(tmp_path / "backbone.keras")
    assert read_simsiam_backbone(tmp_path / "backbone.keras") is None
    with zipfile.ZipFile(run / "model.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["compile_config"]["optimizer"] = {"class_name": "LossScaleOptimizer",
                                             "config": {"inner_optimizer": config["compile_config"]["optimizer"]}}
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "scaled.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert read_simsiam_backbone(tmp_path / "scaled.keras") is None
