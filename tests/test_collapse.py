"""The paper's Figure 2 in miniature: without stop-gradient SimSiam collapses, with it it does not."""

import math

import keras
import pytest

from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.config import make_config
from simsiam_keras.data.pipeline import two_view_dataset
from simsiam_keras.data.synthetic import make_synthetic
from simsiam_keras.train.distribute import make_strategy
from simsiam_keras.train.pretrain import build_compiled_model

EPOCHS, STEPS = 8, 10


@pytest.fixture(scope="module")
def images():
    return make_synthetic(num_train=1024, num_test=10, image_size=16, seed=0)["x_train"]


def short_run(images, stop_gradient):
    keras.utils.set_random_seed(0)
    # A large lr makes the collapse happen within 80 steps instead of an ImageNet epoch.
    # Figure 2 is the paper's default configuration (Sec. 4.4): a learnable affine output BN in
    # the projector. Without it, BN in training mode keeps every output dimension at unit variance
    # over the batch, so z cannot become constant: the loss still goes to -1, but the std of
    # z/||z|| stays well above 0 (0.43 of 1/sqrt(d) in this run).
    config = make_config(
        "quickstart", image_size=16, backbone_width=8, proj_dim=64, proj_hidden_dim=64, pred_hidden_dim=16,
        batch_size=64, epochs=EPOCHS, base_lr=3.0, stop_gradient=stop_gradient, proj_output_affine=True,
    )
    model = build_compiled_model(config, make_strategy("default"), STEPS)
    data = two_view_dataset(images, SimSiamAugment(16, config.augment), config.batch_size, seed=0)
    history = model.fit(data, epochs=EPOCHS, steps_per_epoch=STEPS, shuffle=False, verbose=0).history
    return history["loss"][-1], history["z_std"][-1], 1 / math.sqrt(config.proj_dim)


@pytest.mark.slow
def test_without_stop_gradient_simsiam_collapses(images):
    loss, z_std, healthy = short_run(images, stop_gradient=False)
    assert loss < -0.9, "without stop-gradient the loss should reach its minimum of -1"
    assert z_std < 0.3 * healthy, "without stop-gradient the outputs should collapse (std -> 0)"


@pytest.mark.slow
def test_with_stop_gradient_outputs_stay_spread(images):
    loss, z_std, healthy = short_run(images, stop_gradient=True)
    assert loss > -0.8
    assert z_std > 0.85 * healthy, "with stop-gradient the std should stay near 1/sqrt(d)"
