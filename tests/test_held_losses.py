"""A short seeded run gives the losses, weights and optimizer state it gave before the train step was
made faster (issue 10): a change that alters the math, not just the speed, fails here."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.config import make_config
from simsiam_keras.train.pretrain import build_compiled_model

# Recorded with the code before issue 10 (Keras' BatchNormalization, the Python-built TorchSGD
# update, oneDNN off), except the moving variance: since then it follows PyTorch (unbiased batch
# variance); it was 467.5652 with Keras' biased one. The projector's output BN is the affine one these
# values were recorded with (the authors' non-affine BN is the default since issue 12).
LOSSES = [-0.0036822203546762466, 0.002907430287450552, -0.013708497397601604, -0.031201422214508057]
Z_STD = [0.12414564937353134, 0.1246730238199234, 0.12447796016931534, 0.12449631094932556]
NORMS = {"encoder": 38.67982733251184, "predictor": 6.709673858841844, "encoder_momentum": 1.4290136521658663,
         "predictor_momentum": 0.932059279287021, "moving_mean": 5.147366287929991}
MOVING_VARIANCE_SUM = 468.3905334472656


def norm(variables) -> float:
    return float(np.sqrt(sum(np.sum(np.square(v.numpy().astype(np.float64))) for v in variables)))


def test_seeded_run_holds_its_losses_and_state():
    config = make_config("quickstart", image_size=16, backbone_width=8, proj_dim=64, proj_hidden_dim=64,
                         pred_hidden_dim=16, batch_size=32, epochs=2, knn_every=0, proj_output_affine=True,
                         base_lr=0.4)
    rng = np.random.default_rng(7)
    batches = rng.uniform(0, 255, (len(LOSSES), 32, 16, 16, 3)).astype("float32")
    views = [(x, np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype("float32")) for x in batches]
    keras.utils.set_random_seed(0)
    model = build_compiled_model(config, tf.distribute.get_strategy(), steps_per_epoch=4)
    losses, z_std = [], []
    for x1, x2 in views:
        history = model.fit(tf.data.Dataset.from_tensors((x1, x2)), epochs=1, shuffle=False, verbose=0).history
        losses.append(history["loss"][0])
        z_std.append(history["z_std"][0])
    np.testing.assert_allclose(losses, LOSSES, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(z_std, Z_STD, rtol=1e-4)
    norms = {
        "encoder": norm(model.encoder_variables), "predictor": norm(model.predictor_variables),
        "encoder_momentum": norm(model.optimizer.momentums), "predictor_momentum": norm(model.predictor_optimizer.momentums),
        "moving_mean": norm([w for w in model.weights if "moving_mean" in w.path]),
    }
    assert norms == pytest.approx(NORMS, rel=1e-4)
    moving_variance = sum(float(np.sum(w.numpy())) for w in model.weights if "moving_variance" in w.path)
    assert moving_variance == pytest.approx(MOVING_VARIANCE_SUM, rel=1e-4)
    assert int(model.optimizer.iterations) == int(model.predictor_optimizer.iterations) == len(LOSSES)
