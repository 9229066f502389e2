"""`--augment-on device`: the appearance half of the recipe on whole batches, with the host path's draws.

The batched draws must equal TensorFlow's per-seed stateless ops bit for bit, the batched ops the
per-image ones up to float rounding, and the two paths' views the same distributions.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.augment import batch_appearance, colour, seeds
from simsiam_keras.augment.blur import gaussian_blur, gaussian_kernel
from simsiam_keras.augment.recipe import SimSiamAugment
from simsiam_keras.config import AugmentConfig, make_config
from simsiam_keras.data.pipeline import two_view_dataset
from simsiam_keras.train import backup

RECIPE = make_config("imagenet").augment


def _seeds(n: int, salt: int = 0) -> np.ndarray:
    rng = np.random.default_rng(salt)
    out = rng.integers(-(2**62), 2**62, (n, 2))
    out[:4] = [[0, 0], [1, 0], [-1, -1], [2**40, 7]]
    return out


def _per_seed(fn, seed_rows: np.ndarray) -> np.ndarray:
    """fn(seed) for each [2] seed, one at a time in graph mode (tf.data), as the host pipeline runs it."""
    ds = tf.data.Dataset.from_tensor_slices(seed_rows).map(fn)
    return next(iter(ds.batch(len(seed_rows)))).numpy()


def _host_views(augment: SimSiamAugment, crops: np.ndarray, seed_rows: np.ndarray) -> np.ndarray:
    ds = tf.data.Dataset.from_tensor_slices((crops, seed_rows)).map(
        lambda crop, seed: augment.appearance(tf.cast(crop, tf.float32), seed)
    )
    return next(iter(ds.batch(len(seed_rows)))).numpy()


# ------------------------------------------------------------------------ the draws


@pytest.mark.parametrize("jit", [False, True])
def test_batched_draws_equal_tensorflow_stateless_ops_bit_for_bit(jit):
    rows = _seeds(200)
    draws = tf.function(
        lambda s: (tf.stack(seeds.split_seeds(s, 6), 1), seeds.uniform_rows(s, 7), seeds.uniform_rows(s, 1, 0.1, 2.0)),
        jit_compile=jit,
    )
    split, uniform, ranged = [x.numpy() for x in draws(tf.constant(rows))]
    np.testing.assert_array_equal(split, _per_seed(lambda s: tf.random.experimental.stateless_split(s, 6), rows))
    np.testing.assert_array_equal(uniform, _per_seed(lambda s: tf.random.stateless_uniform([7], s), rows))
    # XLA fuses the multiply and add that move a draw to [0.1, 2): one rounding instead of two.
    np.testing.assert_allclose(ranged, _per_seed(lambda s: tf.random.stateless_uniform([1], s, 0.1, 2.0), rows),
                               rtol=2e-7 if jit else 0)


def test_batched_draws_take_any_leading_shape_and_int32_seeds():
    rows = _seeds(12).reshape(4, 3, 2).astype(np.int32)
    first, second = seeds.split_seeds(tf.constant(rows), 2)
    flat = rows.reshape(-1, 2)
    expected = _per_seed(lambda s: seeds.split_seed(s, 2)[1], flat)
    np.testing.assert_array_equal(second.numpy().reshape(-1, 2), expected)
    assert first.shape == (4, 3, 2) and first.dtype == tf.int64


def test_sample_appearance_draws_what_appearance_draws():
    rows = _seeds(500, salt=1)
    params = {k: v.numpy() for k, v in batch_appearance.sample_appearance(RECIPE, tf.constant(rows)).items()}

    def host_params(seed):
        # The seed splits and draws of SimSiamAugment.appearance and the per-image ops it calls.
        _, flip, jitter_apply, jitter, gray, blur = seeds.split_seed(seed, 6)
        blur_apply, sigma = seeds.split_seed(blur, 2)
        order, factors = colour.sample_color_jitter_params(RECIPE.brightness, RECIPE.contrast, RECIPE.saturation,
                                                           RECIPE.hue, jitter)
        applies = tf.stack([tf.random.stateless_uniform([], s) for s in (flip, jitter_apply, gray, blur_apply)])
        applies = applies < [RECIPE.flip_prob, RECIPE.jitter_prob, RECIPE.grayscale_prob, RECIPE.blur_prob]
        sigma = tf.random.stateless_uniform([], sigma, RECIPE.blur_sigma[0], RECIPE.blur_sigma[1])
        return tf.concat([tf.cast(applies, tf.float32), tf.cast(order, tf.float32), factors, [sigma]], 0)

    host = _per_seed(host_params, rows)
    device = np.concatenate([np.stack([params[k] for k in ("flip", "jitter", "grayscale", "blur")], 1),
                             params["order"], params["factors"], params["sigma"][:, None]], 1)
    np.testing.assert_array_equal(device, host)


# ------------------------------------------------------------------------- the views


@pytest.mark.parametrize("preset, size", [("imagenet", 40), ("cifar", 16)])
def test_the_same_seed_gives_the_same_view_on_host_and_device(preset, size):
    augment = SimSiamAugment(size, make_config(preset).augment)
    rows = _seeds(256, salt=2)
    crops = np.random.default_rng(3).integers(0, 256, (len(rows), size, size, 3), dtype=np.uint8)
    host = _host_views(augment, crops, rows)
    device = augment.appearance_batch(tf.constant(crops), tf.constant(rows)).numpy()
    assert device.shape == host.shape and device.dtype == np.float32
    assert 0 <= device.min() and device.max() <= 255
    # Float rounding only (0..255 scale), though every op of the recipe ran on some of the views.
    np.testing.assert_allclose(device, host, atol=2e-3)
    if augment.config.blur_prob > 0:  # XLA, as the train step runs it (compiling takes a while: once)
        compiled = tf.function(augment.appearance_batch, jit_compile=True)(tf.constant(crops), tf.constant(rows))
        np.testing.assert_allclose(compiled.numpy(), host, atol=2e-3)


def test_batched_ops_equal_the_per_image_ops():
    images = np.random.default_rng(4).uniform(0, 1, (24, 12, 12, 3)).astype(np.float32)
    params = batch_appearance.sample_appearance(RECIPE, tf.constant(_seeds(24, salt=5)))
    order, factors = params["order"].numpy(), params["factors"].numpy()
    applies = np.arange(24) % 3 != 0
    jittered = batch_appearance.apply_color_jitter(tf.constant(images), order, factors, tf.constant(applies)).numpy()
    sigma = np.linspace(0.1, 2.0, 24, dtype=np.float32)
    blurred = batch_appearance.gaussian_blur(tf.constant(images), sigma, 7).numpy()
    hued = batch_appearance.rotate_hue(tf.constant(images), factors[:, colour.HUE]).numpy()
    for i, image in enumerate(images):
        want = colour.apply_color_jitter(tf.constant(image), tf.constant(order[i]), factors[i]) if applies[i] else image
        np.testing.assert_allclose(jittered[i], want, atol=1e-5)
        np.testing.assert_allclose(blurred[i], gaussian_blur(tf.constant(image), sigma[i], 7).numpy(), atol=1e-5)
        np.testing.assert_allclose(hued[i], colour.adjust_hue(image, factors[i, colour.HUE]).numpy(), atol=1e-5)


# ---------------------------------------------------------------- the distributions


def _both_paths(config: AugmentConfig, crops: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n views of `crops[0]` from each path, with independent seeds: host, then device (0..1 scale)."""
    augment = SimSiamAugment(crops.shape[1], config)
    repeated = np.repeat(crops, n, axis=0)
    host = _host_views(augment, repeated, _seeds(n, salt=10))
    device = augment.appearance_batch(tf.constant(repeated), tf.constant(_seeds(n, salt=11))).numpy()
    return host / 255.0, device / 255.0


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    return float(np.abs(np.searchsorted(np.sort(a), grid, "right") / len(a)
                        - np.searchsorted(np.sort(b), grid, "right") / len(b)).max())


# With 2,000 draws per path the KS statistic of two samples of one distribution exceeds 0.06
# with probability about 1e-3.
DRAWS, KS_LIMIT = 2000, 0.06


def test_jitter_and_grayscale_views_have_the_host_distributions():
    config = dataclasses.replace(RECIPE, flip_prob=0.0, blur_prob=0.0)
    colours = np.array([[[200, 60, 40], [40, 160, 90]], [[60, 80, 200], [128, 128, 128]]], np.uint8)
    host, device = _both_paths(config, colours[np.newaxis], DRAWS)
    for views in (host, device):
        gray = np.all(np.abs(views - views[..., :1]) < 1e-6, axis=(1, 2, 3))
        assert abs(gray.mean() - RECIPE.grayscale_prob) < 0.03, gray.mean()
        unchanged = np.all(np.abs(views * 255 - colours) < 1e-3, axis=(1, 2, 3))
        assert abs(unchanged.mean() - (1 - RECIPE.jitter_prob) * (1 - RECIPE.grayscale_prob)) < 0.03
    # Per-view brightness, contrast, saturation and hue of the four pixels.
    def stats(views):
        hsv = tf.image.rgb_to_hsv(views).numpy()
        return {"mean": views.mean(axis=(1, 2, 3)), "contrast": views.std(axis=(1, 2, 3)),
                "saturation": hsv[..., 1].mean(axis=(1, 2)), "hue": hsv[:, 0, 0, 0]}
    host_stats, device_stats = stats(host), stats(device)
    for name in host_stats:
        assert _ks(host_stats[name], device_stats[name]) < KS_LIMIT, name


def test_jitter_factors_and_order_have_torchvision_distributions_on_both_paths():
    params = batch_appearance.sample_appearance(RECIPE, tf.constant(_seeds(DRAWS, salt=12)))
    host = _per_seed(lambda s: tf.concat([tf.cast(p, tf.float32) for p in colour.sample_color_jitter_params(
        RECIPE.brightness, RECIPE.contrast, RECIPE.saturation, RECIPE.hue, seeds.split_seed(s, 6)[3])], 0),
        _seeds(DRAWS, salt=13))
    factors = params["factors"].numpy()
    for i in range(4):
        assert _ks(factors[:, i], host[:, 4 + i]) < KS_LIMIT
    lows, highs = [0.6, 0.6, 0.6, -0.1], [1.4, 1.4, 1.4, 0.1]
    assert (factors.min(0) >= lows).all() and (factors.max(0) <= highs).all()
    counts = {p: 0 for p in itertools.permutations(range(4))}
    for row in params["order"].numpy():
        counts[tuple(row)] += 1
    assert min(counts.values()) > 40 and max(counts.values()) < 130  # 83 expected each


def test_blur_rate_and_sigma_range_match_the_host_path():
    # A dot on a flat field: a blurred view's spread is its kernel's, so each view tells its sigma.
    size = 41
    config = AugmentConfig(flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_kernel_fraction=0.6)
    dot = np.full((1, size, size, 3), 50, np.uint8)
    dot[0, size // 2, size // 2] = 250
    host, device = _both_paths(config, dot, DRAWS)
    kernel_size = SimSiamAugment(size, config).blur_kernel_size
    sigmas = np.linspace(0.1, 2.0, 400)
    offsets = np.arange(kernel_size) - kernel_size // 2
    variances = (gaussian_kernel(tf.constant(sigmas, tf.float32), kernel_size).numpy() * offsets**2).sum(1)
    # Below sigma ~0.22 the blur moves less than 1e-4 of the dot to its neighbours: not counted.
    visible = variances > 1e-4
    expected_rate, expected_mean = RECIPE.blur_prob * visible.mean(), sigmas[visible].mean()

    def blur_sigmas(views):
        profile = views[:, size // 2, :, 0] - views[:, :1, 0, 0]
        variance = (profile * (np.arange(size) - size // 2) ** 2).sum(1) / profile.sum(1)
        return np.interp(variance[variance > 1e-4], variances, sigmas)

    host_sigma, device_sigma = blur_sigmas(host), blur_sigmas(device)
    for sigma in (host_sigma, device_sigma):
        assert abs(len(sigma) / DRAWS - expected_rate) < 0.04, len(sigma) / DRAWS
        assert sigma.min() < sigmas[visible][0] + 0.05 and sigma.max() > 1.95 and sigma.max() < 2.01
        assert abs(sigma.mean() - expected_mean) < 0.06  # uniform between them
    assert _ks(host_sigma, device_sigma) < 1.5 * KS_LIMIT  # about 900 blurred views each


# ------------------------------------------------------------------ pipeline and step


def test_device_pipeline_ships_uint8_crops_and_view_seeds_that_give_the_host_views(tmp_path):
    from simsiam_keras.benchmark.input_throughput import write_jpeg_folder

    augment = SimSiamAugment(24, make_config("imagenet").augment)
    images = np.random.default_rng(6).integers(0, 256, (16, 30, 36, 3), dtype=np.uint8)
    files = write_jpeg_folder(str(tmp_path), count=16, width=36, height=30)
    for source in (images, files):
        host = next(iter(two_view_dataset(source, augment, 16, seed=1, deterministic=True)))
        (crops1, crops2), (seeds1, seeds2) = next(iter(
            two_view_dataset(source, augment, 16, seed=1, deterministic=True, augment_on="device")))
        assert crops1.dtype == tf.uint8 and crops1.shape == (16, 24, 24, 3)
        assert seeds1.dtype == tf.int64 and seeds1.shape == (16, 2)
        for view, crops, view_seeds in ((host[0], crops1, seeds1), (host[1], crops2, seeds2)):
            diff = np.abs(augment.appearance_batch(crops, view_seeds).numpy() - view.numpy())
            # Only the crop's rounding to uint8 (half a level) differs, amplified by the jitter.
            assert diff.mean() < 0.4 and diff.max() < 6, (diff.mean(), diff.max())


def test_device_mode_mistakes_are_one_line_errors():
    images = np.zeros((8, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="augment_on must be one of host, device, got 'gpu'"):
        two_view_dataset(images, SimSiamAugment(8), 4, augment_on="gpu")
    with pytest.raises(ValueError, match="augment_on device needs a SimSiamAugment"):
        two_view_dataset(images, lambda image: image, 4, augment_on="device")


def test_each_replica_augments_its_own_local_batch():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    augment = SimSiamAugment(16, make_config("cifar").augment)
    crops = np.random.default_rng(7).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    rows = _seeds(8, salt=8)
    data = tf.data.Dataset.from_tensors((crops, rows))
    dist = strategy.experimental_distribute_dataset(data.unbatch().batch(8))
    step = tf.function(augment.appearance_batch, jit_compile=True)
    per_replica = strategy.run(step, args=next(iter(dist)))
    local = [t.numpy() for t in strategy.experimental_local_results(per_replica)]
    assert [v.shape[0] for v in local] == [4, 4]
    np.testing.assert_allclose(np.concatenate(local), _host_views(augment, crops, rows), atol=2e-3)


def test_augment_on_is_a_runtime_setting_a_resumed_run_may_change():
    assert "augment_on" in backup.RUNTIME_FIELDS


def test_pretrain_command_trains_with_device_augmentation(npz_dataset, tmp_path):
    import keras

    import simsiam_keras  # noqa: F401  (registers the classes model.keras needs)
    from simsiam_keras.cli.pretrain import main

    out = tmp_path / "run"
    code = main(["--dataset", f"npz:{npz_dataset}", "--preset", "cifar", "--image-size", "16", "--backbone-width", "4",
                 "--proj-dim", "32", "--proj-hidden-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "16",
                 "--epochs", "1", "--steps-per-epoch", "2", "--knn-every", "0", "--augment-on", "device",
                 "--output-dir", str(out)])
    assert code == 0
    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    assert model.optimizer.iterations.numpy() == 2 and model.device_augment is None  # a setting of the run only
