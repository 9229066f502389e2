"""The model: architecture as the paper and torchvision define it, gradients, two optimizers, serialisation."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.method.model import SimSiam, build_simsiam
from simsiam_keras.method.optimizers import TorchSGD, make_optimizers
from simsiam_keras.nets.backbone import build_backbone
from simsiam_keras.nets.heads import predictor, projector


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_backbones_match_torchvision_parameter_counts():
    # torchvision resnet50 / resnet18 without their fc layer; the CIFAR stem is 3x3x3x64
    # instead of 7x7x3x64.
    assert trainable_count(build_backbone("resnet50", 64)) == 25_557_032 - 2_049_000
    assert trainable_count(build_backbone("resnet18_cifar", 32)) == 11_689_512 - 513_000 - 9408 + 1728


def test_backbone_feature_dims_scale_with_width():
    assert build_backbone("resnet50", 32, width=16).output_shape == (None, 16 * 8 * 4)
    assert build_backbone("resnet18_cifar", 16, width=8).output_shape == (None, 8 * 8)


def test_backbone_bn_init_and_hyperparameters():
    net = build_backbone("resnet18_cifar", 16, width=8)
    bns = [l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert all(l.momentum == 0.9 and l.epsilon == 1e-5 for l in bns)
    last = [l for l in bns if l.name.endswith("_bn2")]
    assert len(last) == 8  # one per residual block
    assert all(np.all(l.gamma.numpy() == 0) for l in last)
    assert all(np.all(l.gamma.numpy() == 1) for l in bns if l not in last)


def test_conv_init_is_kaiming_fan_out():
    net = build_backbone("resnet50", 64, width=64)
    kernel = net.get_layer("stage2_block1_conv2").kernel.numpy()  # 3x3, 128 -> 128
    expected = math.sqrt(2.0 / (3 * 3 * 128))
    assert abs(kernel.std() - expected) / expected < 0.02


def test_dense_init_is_pytorch_uniform():
    head = projector(512, hidden_dim=2048, output_dim=2048, num_layers=2)
    kernel = head.get_layer("fc1").kernel.numpy()
    bound = 1 / math.sqrt(512)
    assert np.abs(kernel).max() <= bound
    assert abs(kernel.std() - bound / math.sqrt(3)) / (bound / math.sqrt(3)) < 0.02
    pred = predictor(2048, 512)
    bias = pred.get_layer("fc2").bias.numpy()
    assert np.abs(bias).max() <= 1 / math.sqrt(512) and bias.std() > 0.5 / math.sqrt(3) / math.sqrt(512)


def test_heads_follow_table_3():
    proj = projector(64, 128, 32, num_layers=3)
    kinds = [type(l).__name__ for l in proj.layers]
    assert kinds == ["Dense", "BatchNormalization", "ReLU"] * 2 + ["Dense", "BatchNormalization"]
    assert not any(l.use_bias for l in proj.layers if isinstance(l, keras.layers.Dense))
    pred = predictor(32, 8)
    kinds = [type(l).__name__ for l in pred.layers]
    assert kinds == ["Dense", "BatchNormalization", "ReLU", "Dense"]
    assert [l.use_bias for l in pred.layers if isinstance(l, keras.layers.Dense)] == [False, True]
    assert pred.output_shape == (None, 32) and pred.get_layer("fc1").units == 8


def test_image_too_small_for_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="too small for resnet50"):
        build_backbone("resnet50", 16)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_target_branch_gets_no_gradient_through_z(tiny_config, stop_gradient):
    tiny_config.stop_gradient = stop_gradient
    model = build_simsiam(tiny_config)
    z1, z2, p1, p2 = (tf.Variable(tf.random.normal((8, 64))) for _ in range(4))
    with tf.GradientTape() as tape:
        loss = model.compute_simsiam_loss(p1, p2, z1, z2)
    g_z1, g_z2, g_p1, g_p2 = tape.gradient(loss, [z1, z2, p1, p2])
    assert g_p1 is not None and g_p2 is not None
    if stop_gradient:
        assert g_z1 is None and g_z2 is None
    else:
        assert float(tf.norm(g_z1)) > 0 and float(tf.norm(g_z2)) > 0


def random_views(n=64, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, x[:, ::-1])).batch(32, drop_remainder=True)


def test_predictor_lr_fixed_encoder_lr_decays(tiny_config):
    model = build_simsiam(tiny_config)
    model.compile(*make_optimizers(tiny_config, steps_per_epoch=2))
    history = model.fit(random_views(), epochs=2, verbose=0).history
    assert history["lr_predictor"] == [pytest.approx(tiny_config.lr)] * 2
    # The logged lr is the one the epoch's last step applied: steps 1 and 3 of a 4-step cosine.
    cosine = [tiny_config.lr * 0.5 * (1 + math.cos(math.pi * step / 4)) for step in (1, 3)]
    assert history["lr_encoder"] == [pytest.approx(c, rel=1e-5) for c in cosine]
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-7)  # cosine reached its end


def test_both_optimizers_survive_save_and_load(tiny_config, tmp_path):
    model = build_simsiam(tiny_config)
    model.compile(*make_optimizers(tiny_config, steps_per_epoch=2))
    model.fit(random_views(), epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, SimSiam)
    for opt, restored in ((model.optimizer, loaded.optimizer), (model.predictor_optimizer, loaded.predictor_optimizer)):
        assert int(restored.iterations) == 2
        assert isinstance(restored, TorchSGD) and restored.l2 == tiny_config.weight_decay
        assert len(restored.variables) == len(opt.variables) > 2
        for a, b in zip(opt.variables, restored.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Training continues from the restored state, schedule included.
    loaded.fit(random_views(), epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 4 and int(loaded.predictor_optimizer.iterations) == 4


def test_torch_sgd_matches_pytorch_update_rule():
    lr, mu, wd = 0.1, 0.9, 0.01
    schedule = [lr, lr / 2]  # a changing lr is where PyTorch's and Keras' momentum differ
    w0, grads = np.array([1.0, -2.0]), [np.array([0.5, 0.5]), np.array([-1.0, 0.25])]
    var = keras.Variable(w0.astype("float32"))
    opt_lr = keras.Variable(lr, trainable=False)
    opt = TorchSGD(learning_rate=lambda: opt_lr.value, momentum=mu, l2=wd)
    w, buf = w0.copy(), np.zeros(2)
    for step_lr, g in zip(schedule, grads):
        opt_lr.assign(step_lr)
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
        d = g + wd * w
        buf = mu * buf + d
        w = w - step_lr * buf
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)


def test_no_predictor_ablation_trains_with_one_optimizer(tiny_config):
    tiny_config.use_predictor = False
    model = build_simsiam(tiny_config)
    assert model.predictor is None
    # Both optimizers, as pretraining passes them: the predictor's has nothing to update.
    model.compile(*make_optimizers(tiny_config, steps_per_epoch=2))
    assert model.predictor_optimizer is None
    assert "lr_predictor" not in model.fit(random_views(), epochs=1, verbose=0).history
    assert int(model.optimizer.iterations) == 2


def test_keras_applications_backbone_by_name():
    net = build_backbone("MobileNetV2", 32)
    assert net.output_shape == (None, 1280)
    assert net.get_layer("normalize") is not None  # callers feed pixels in [0, 255]
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("NoSuchNet", 32)


def test_test_step_reports_the_loss_without_updating(tiny_config):
    model = build_simsiam(tiny_config)
    model.compile(*make_optimizers(tiny_config, steps_per_epoch=2))
    before = [w.numpy().copy() for w in model.weights]
    logs = model.evaluate(random_views(), verbose=0, return_dict=True)
    assert -1 <= logs["loss"] <= 1 and "z_std" in logs
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    assert int(model.optimizer.iterations) == 0


def test_uncompiled_model_round_trips(tiny_config, tmp_path):
    model = build_simsiam(tiny_config)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert not loaded.compiled and loaded.predictor_optimizer is None
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
