"""Files written before issue 23's SimSiam split still load: a `.keras` file, and a backup that resumes.

The fixture (tests/fixtures/compat_run/, 118 KB) was written by the code of commit 598214b;
tests/fixtures/make_compat_run.py says how.
"""

import os
import shutil

import keras
import numpy as np

from simsiam_keras.method.model import SimSiam
from simsiam_keras.train.pretrain import pretrain
from tests.fixtures import make_compat_run as fixture


def test_a_keras_file_from_before_loads_with_both_optimizers():
    model = keras.saving.load_model(os.path.join(fixture.FIXTURE, "model.keras"))
    assert isinstance(model, SimSiam)
    # 2 epochs of 2 steps: both optimizers' iteration counts and momentum buffers came back.
    assert int(model.optimizer.iterations) == int(model.predictor_optimizer.iterations) == 4
    assert all(np.any(v.numpy() != 0) for v in model.optimizer.momentums[:1] + model.predictor_optimizer.momentums[:1])
    images = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype("float32")
    (z1, z2), (p1, p2) = model((images, images))
    assert z1.shape == p2.shape == (4, 8)
    np.testing.assert_allclose(z1, z2, rtol=1e-5, atol=1e-6)


def test_a_backup_from_before_resumes_and_ends_where_the_uninterrupted_run_did(tmp_path, capsys):
    run = tmp_path / "compat_run"
    shutil.copytree(fixture.FIXTURE, run)
    os.remove(run / "model.keras")
    result = pretrain(fixture.config(str(run)), fixture.source(), verbose=0)
    assert "from its backup at the epoch 2, step 1 of 2 (global step 3)" in capsys.readouterr().out
    assert int(result.model.optimizer.iterations) == int(result.model.predictor_optimizer.iterations) == 4
    uninterrupted = keras.saving.load_model(os.path.join(fixture.FIXTURE, "model.keras"))
    for resumed, expected in zip(result.model.weights, uninterrupted.weights, strict=True):
        np.testing.assert_allclose(resumed.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6, err_msg=resumed.path)
