"""Mixed precision and XLA: both optimizers train, the loss and metrics stay float32, exports are float32."""

import json

import keras
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

from simsiam_keras.train import pretrain
from simsiam_keras.train.distribute import make_strategy
from simsiam_keras.train.pretrain import build_compiled_model
from tests.toy import toy_simsiam

STEPS = 4


def views_dataset(config) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    shape = (config.batch_size, config.image_size, config.image_size, 3)
    views = tuple(rng.uniform(0, 255, shape).astype("float32") for _ in range(2))
    return tf.data.Dataset.from_tensors(views).repeat()


# (float16 under MirroredStrategy trains too, but tracing it takes a minute on this CPU.)
@pytest.mark.parametrize("precision, strategy", [("bfloat16", "default"), ("float16", "default")])
def test_mixed_precision_trains_both_optimizers_and_exports_float32(precision, strategy, tiny_config, tmp_path):
    from simsiam_keras.export.backbone import export_backbone

    tiny_config.mixed_precision = precision
    model = build_compiled_model(tiny_config, make_strategy(strategy), STEPS)
    assert keras.config.dtype_policy().name == "float32", "the policy leaked out of model building"
    convs = [layer for layer in model.backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == precision for layer in convs)
    assert all(v.dtype == "float32" for v in model.weights)
    optimizers = (model.optimizer, model.predictor_optimizer)
    assert all(isinstance(opt, keras.optimizers.LossScaleOptimizer) == (precision == "float16") for opt in optimizers)
    before = [v.numpy() for v in model.predictor.weights + model.projector.weights]

    history = model.fit(views_dataset(tiny_config), epochs=1, steps_per_epoch=STEPS, shuffle=False, verbose=0).history
    assert -1 <= history["loss"][0] <= 1 and np.isfinite(history["z_std"][0])
    for opt in optimizers:
        skipped = 0
        if precision == "float16":
            # A step whose scaled gradients overflow is skipped, and only then is that optimizer's scale halved.
            skipped = round(np.log2(opt.initial_scale / float(opt.dynamic_scale.numpy())))
            assert 0 <= skipped < STEPS, (opt.name, skipped)
        assert opt.iterations.numpy() == STEPS - skipped, (opt.name, opt.iterations.numpy(), skipped)
    assert all(np.all(np.isfinite(v.numpy())) for v in model.weights)
    after = [v.numpy() for v in model.predictor.weights + model.projector.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "the heads did not train"

    logs = model.train_function(iter(model.distribute_strategy.experimental_distribute_dataset(views_dataset(tiny_config))))
    assert {logs[k].dtype for k in ("loss", "z_std")} == {tf.float32}
    assert all(m.dtype == "float32" for m in model.metrics)

    result = export_backbone(model.backbone, tmp_path / "export", config=tiny_config, formats="saved_model")
    serve = tf.saved_model.load(str(tmp_path / "export" / "saved_model")).signatures["serve"]
    assert serve.structured_outputs["features"].dtype == tf.float32
    assert result.metadata["source_dtype_policy"] == f"mixed_{precision}"


def test_mixed_precision_onnx_export_is_float32(tiny_config, tmp_path):
    from simsiam_keras.export.backbone import export_backbone

    tiny_config.mixed_precision = "float16"
    model = build_compiled_model(tiny_config, tf.distribute.get_strategy(), STEPS)
    export_backbone(model.backbone, tmp_path / "export", config=tiny_config, formats="onnx")
    session = ort.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.type for o in session.get_outputs()] == ["tensor(float)"]
    assert json.loads((tmp_path / "export" / "metadata.json").read_text())["source_dtype_policy"] == "mixed_float16"


def test_jit_compile_on_one_replica_and_a_clear_error_on_several(tiny_config, monkeypatch):
    # The config's wiring, on the toy SimSiam: XLA compiles a ResNet's step in 15 s of CPU.
    monkeypatch.setattr(pretrain, "build_simsiam", lambda config, **kwargs: toy_simsiam())
    tiny_config.jit_compile = True
    model = build_compiled_model(tiny_config, tf.distribute.get_strategy(), STEPS)
    assert model.jit_compile is True
    model.fit(views_dataset(tiny_config), epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)
    assert model.optimizer.iterations.numpy() == model.predictor_optimizer.iterations.numpy() == 2
    with pytest.raises(ValueError, match="jit_compile on several replicas needs GPUs: .* 2 CPU replicas"):
        build_compiled_model(tiny_config, make_strategy("mirrored"), STEPS)
