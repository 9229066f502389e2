"""LARS against a hand (numpy) computation of apex LARC + PyTorch momentum SGD."""

import keras
import numpy as np
import pytest

from simsiam_keras.evaluate.lars import LARS


def reference_step(w, g, buf, lr, momentum, wd, eta, eps, adapt):
    """One step of the rule in simsiam_keras/lars.py's docstring, written out in numpy."""
    w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
    if adapt and w_norm > 0 and g_norm > 0:
        g = (g + wd * w) * eta * w_norm / (g_norm + wd * w_norm + eps)
    buf = momentum * buf + g
    return w - lr * buf, buf


def least_squares_grads(x, y, kernel, bias):
    """Gradients of 0.5 * mean ||x @ kernel + bias - y||^2."""
    residual = x @ kernel + bias - y
    return x.T @ residual / len(x), residual.mean(axis=0)


@pytest.mark.parametrize("exclude_1d", [False, True])
def test_lars_matches_hand_computation_over_several_steps(exclude_1d):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 3))
    kernel0 = rng.normal(scale=0.5, size=(4, 3))
    # The bias starts at 0, like the linear head's: LARC leaves a zero-norm variable unscaled.
    bias0 = np.zeros(3)
    lrs = [0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    hp = dict(momentum=0.9, wd=0.01, eta=0.02, eps=1e-8)

    kernel = keras.Variable(kernel0, dtype="float64")
    bias = keras.Variable(bias0, dtype="float64")
    # Step i (from 0) gets lrs[i]: a decaying schedule, as the cosine one is.
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(list(range(len(lrs) - 1)), lrs)
    opt = LARS(schedule, momentum=hp["momentum"], l2=hp["wd"], trust_coefficient=hp["eta"], exclude_1d=exclude_1d)

    ref_k, ref_b = kernel0.copy(), bias0.copy()
    buf_k, buf_b = np.zeros_like(ref_k), np.zeros_like(ref_b)
    for lr in lrs:
        gk, gb = least_squares_grads(x, y, kernel.numpy(), bias.numpy())
        opt.apply_gradients([(keras.ops.convert_to_tensor(gk), kernel), (keras.ops.convert_to_tensor(gb), bias)])
        rgk, rgb = least_squares_grads(x, y, ref_k, ref_b)
        ref_k, buf_k = reference_step(ref_k, rgk, buf_k, lr, **hp, adapt=True)
        ref_b, buf_b = reference_step(ref_b, rgb, buf_b, lr, **hp, adapt=not exclude_1d)
        np.testing.assert_allclose(kernel.numpy(), ref_k, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(bias.numpy(), ref_b, rtol=1e-6, atol=1e-9)

    # The bias under the other convention ends elsewhere: the test tells them apart.
    other_b, buf = bias0.copy(), np.zeros_like(bias0)
    ref_k2, buf_k2 = kernel0.copy(), np.zeros_like(kernel0)
    for lr in lrs:
        gk, gb = least_squares_grads(x, y, ref_k2, other_b)
        ref_k2, buf_k2 = reference_step(ref_k2, gk, buf_k2, lr, **hp, adapt=True)
        other_b, buf = reference_step(other_b, gb, buf, lr, **hp, adapt=exclude_1d)
    assert np.abs(other_b - ref_b).max() > 1e-3


def test_lars_zero_gradient_leaves_weights_alone_and_config_round_trips():
    w = keras.Variable(np.ones((2, 2)), dtype="float32")
    opt = LARS(0.1, momentum=0.8, l2=1e-4, trust_coefficient=0.002, eps=1e-7, exclude_1d=True)
    opt.apply_gradients([(keras.ops.zeros((2, 2)), w)])
    # LARC adds no weight decay when the gradient is zero.
    np.testing.assert_array_equal(w.numpy(), np.ones((2, 2)))

    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(restored, LARS)
    for key in ("momentum", "l2", "trust_coefficient", "eps", "exclude_1d", "learning_rate"):
        assert restored.get_config()[key] == opt.get_config()[key], key
    with pytest.raises(ValueError):
        LARS(0.1, weight_decay=1e-4)
