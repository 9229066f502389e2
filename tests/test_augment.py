"""Tests for simsiam_keras.augment: torchvision semantics, per-image randomness, tf.data use."""

from __future__ import annotations

import colorsys
import itertools
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from simsiam_keras.augment import blur, colour, crop, recipe, seeds
from simsiam_keras.config import AugmentConfig

SCALE = (0.2, 1.0)
RATIO = (3 / 4, 4 / 3)
GRAY = np.array([0.299, 0.587, 0.114], np.float32)


def _seed(a: int, b: int = 0, dtype=tf.int32) -> tf.Tensor:
    return tf.constant([a, b], dtype)


def _rand_image(shape, seed=0, high=1.0) -> np.ndarray:
    return np.random.RandomState(seed).uniform(0, high, shape).astype(np.float32)


def _map_seeds(fn, n: int, salt: int = 0) -> np.ndarray:
    """fn(seed) for seeds [i, salt], i < n, run in graph mode through tf.data."""
    ds = tf.data.Dataset.range(n).map(lambda i: fn(tf.stack([i, tf.constant(salt, tf.int64)])))
    return next(iter(ds.batch(n))).numpy()


# ---------------------------------------------------------------- crop box


def _tf_boxes(height, width, n, scale=SCALE, ratio=RATIO, salt=0) -> np.ndarray:
    return _map_seeds(lambda s: tf.stack(crop.sample_crop_box(height, width, scale, ratio, s)), n, salt)


def _torchvision_boxes(height, width, n, scale=SCALE, ratio=RATIO, seed=0):
    """Vectorised numpy copy of torchvision RandomResizedCrop.get_params: (h, w, found)."""
    rng = np.random.default_rng(seed)
    area = height * width
    target = area * rng.uniform(scale[0], scale[1], (n, 10))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (n, 10)))
    w = np.round(np.sqrt(target * aspect)).astype(int)  # half-to-even, like Python round
    h = np.round(np.sqrt(target / aspect)).astype(int)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    found = fits.any(axis=1)
    first = fits.argmax(axis=1)
    h = h[np.arange(n), first]
    w = w[np.arange(n), first]
    in_ratio = width / height
    if in_ratio < min(ratio):
        fb_w, fb_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fb_w, fb_h = int(round(height * max(ratio))), height
    else:
        fb_w, fb_h = width, height
    return np.where(found, h, fb_h), np.where(found, w, fb_w), found


@pytest.mark.parametrize("height,width", [(224, 224), (32, 32), (40, 100)])
def test_crop_boxes_inside_image(height, width):
    boxes = _tf_boxes(height, width, 2000)
    oy, ox, h, w = boxes.T
    assert boxes.dtype == np.int32
    assert (oy >= 0).all() and (ox >= 0).all()
    assert (h > 0).all() and (w > 0).all()
    assert (oy + h <= height).all() and (ox + w <= width).all()


def test_crop_boxes_respect_scale_and_ratio():
    height = width = 224
    boxes = _tf_boxes(height, width, 3000)
    oy, ox, h, w = boxes.T.astype(np.float64)
    fallback = (h == height) & (w == width)  # centre crop of a square image = whole image
    area = (h * w / (height * width))[~fallback]
    aspect = (w / h)[~fallback]
    # Rounding w and h to integers moves area and ratio by at most ~1.5% at this size.
    assert area.min() >= SCALE[0] * 0.985 and area.max() <= SCALE[1]
    assert aspect.min() >= RATIO[0] * 0.985 and aspect.max() <= RATIO[1] * 1.015
    # Log-uniform aspect ratio over a symmetric range, rejection symmetric too: mean ~ 0.
    assert abs(np.log(aspect).mean()) < 0.015
    # The whole range is used.
    assert area.min() < 0.22 and area.max() > 0.97
    assert aspect.min() < 0.77 and aspect.max() > 1.30


@pytest.mark.parametrize("height,width", [(224, 224), (32, 32), (40, 100), (90, 30)])
def test_crop_box_distribution_matches_torchvision(height, width):
    n = 4000
    boxes = _tf_boxes(height, width, n, salt=1)
    h, w = boxes[:, 2].astype(np.float64), boxes[:, 3].astype(np.float64)
    ref_h, ref_w, ref_found = _torchvision_boxes(height, width, 200_000)

    area, ref_area = h * w / (height * width), ref_h * ref_w / (height * width)
    # Means over n samples: std error = std / sqrt(n); allow 5 of them.
    tol = 5 * ref_area.std() / math.sqrt(n) + 1e-3
    assert abs(area.mean() - ref_area.mean()) < tol, (area.mean(), ref_area.mean())
    log_ratio, ref_log_ratio = np.log(w / h), np.log(ref_w / ref_h)
    tol = 5 * ref_log_ratio.std() / math.sqrt(n) + 1e-3
    assert abs(log_ratio.mean() - ref_log_ratio.mean()) < tol, (log_ratio.mean(), ref_log_ratio.mean())
    # Same quantiles of the area fraction (catches shape differences a mean would miss).
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(area, q) - np.quantile(ref_area, q)) < 0.03


def test_crop_box_rejection_differs_from_naive_sampling():
    # Sanity check of the test above: without the fit test, a 40x100 image would give a
    # very different area distribution, so the comparison has power.
    ref_h, ref_w, _ = _torchvision_boxes(40, 100, 100_000)
    assert abs((ref_h * ref_w / 4000).mean() - np.mean(SCALE)) > 0.05


def test_crop_box_offsets_are_uniform_integers():
    boxes = _tf_boxes(32, 32, 4000, salt=2)
    oy, ox, h, w = boxes.T
    for offset, slack in ((oy, 32 - h), (ox, 32 - w)):
        assert (offset <= slack).all()
        has_slack = slack > 0
        # P(offset == 0) = P(offset == slack) = 1 / (slack + 1) for a uniform integer.
        expected = np.mean(1.0 / (slack[has_slack] + 1))
        tol = 5 * math.sqrt(expected * (1 - expected) / has_slack.sum())
        assert abs(np.mean(offset[has_slack] == 0) - expected) < tol
        assert abs(np.mean(offset[has_slack] == slack[has_slack]) - expected) < tol
        assert abs(np.mean(offset[has_slack] / slack[has_slack]) - 0.5) < 0.03


@pytest.mark.parametrize(
    "height,width,scale,expected",
    [
        (10, 40, (1.0, 1.0), (0, 13, 10, 13)),  # too wide: h = H, w = round(H * 4/3)
        (40, 10, (1.0, 1.0), (13, 0, 13, 10)),  # too tall: w = W, h = round(W / (3/4))
        (12, 12, (1.5, 1.5), (0, 0, 12, 12)),  # ratio in range: whole image
    ],
)
def test_crop_box_fallback_is_clamped_centre_crop(height, width, scale, expected):
    boxes = _tf_boxes(height, width, 20, scale=scale)
    np.testing.assert_array_equal(boxes, np.tile(expected, (20, 1)))


def test_sample_crop_box_same_for_int32_and_int64_seeds():
    for i in range(5):
        a = tf.stack(crop.sample_crop_box(50, 70, SCALE, RATIO, _seed(i, 3, tf.int32)))
        b = tf.stack(crop.sample_crop_box(50, 70, SCALE, RATIO, _seed(i, 3, tf.int64)))
        np.testing.assert_array_equal(a, b)


def test_crop_box_dynamic_shape_and_seed_dtypes():
    @tf.function(
        input_signature=[
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([2], tf.int64),
        ]
    )
    def box(height, width, seed):
        return tf.stack(crop.sample_crop_box(height, width, SCALE, RATIO, seed))

    graph = box(tf.constant(375), tf.constant(500), _seed(3, 4, tf.int64)).numpy()
    eager = tf.stack(crop.sample_crop_box(375, 500, SCALE, RATIO, _seed(3, 4, tf.int64))).numpy()
    np.testing.assert_array_equal(graph, eager)
    int32 = tf.stack(crop.sample_crop_box(375, 500, SCALE, RATIO, _seed(3, 4, tf.int32))).numpy()
    for b in (graph, int32):
        assert b[0] + b[2] <= 375 and b[1] + b[3] <= 500


def test_random_resized_crop_takes_the_sampled_window():
    image = _rand_image((16, 20, 3), seed=1)
    # ratio 1 and a quarter of the area: an 8x10 box can't be square, so force a square image.
    image = image[:, :16]
    for i in range(5):
        seed = _seed(i)
        oy, ox, h, w = [int(v) for v in crop.sample_crop_box(16, 16, (0.25, 0.25), (1.0, 1.0), seed)]
        assert (h, w) == (8, 8)
        out = crop.random_resized_crop(tf.constant(image), 8, (0.25, 0.25), (1.0, 1.0), seed).numpy()
        np.testing.assert_allclose(out, image[oy : oy + 8, ox : ox + 8], atol=1e-6)


def test_random_resized_crop_downscale_is_antialiased():
    image = tf.constant(_rand_image((64, 48, 3), seed=2))
    seed = _seed(5)
    oy, ox, h, w = crop.sample_crop_box(64, 48, SCALE, RATIO, seed)
    box = image[oy : oy + h, ox : ox + w]
    out = crop.random_resized_crop(image, 12, SCALE, RATIO, seed)
    expected = tf.image.resize(box, (12, 12), method="bilinear", antialias=True)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)
    # ...and an upscale equals plain bilinear (what antialias=True gives there too).
    out = crop.random_resized_crop(image, 80, SCALE, RATIO, seed)
    expected = tf.image.resize(box, (80, 80), method="bilinear", antialias=True)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)


# --------------------------------------------------------- flip, apply, gray


def test_random_apply_probability_and_identity():
    image = tf.constant(_rand_image((4, 5, 3)))
    np.testing.assert_array_equal(seeds.random_apply(lambda x: x + 1, 0.0, image, _seed(0)), image)
    np.testing.assert_array_equal(seeds.random_apply(lambda x: x + 1, 1.0, image, _seed(0)), image + 1)
    applied = _map_seeds(lambda s: seeds.random_apply(lambda x: x + 1.0, 0.3, tf.zeros([]), s), 3000)
    assert set(np.unique(applied)) <= {0.0, 1.0}
    assert abs(applied.mean() - 0.3) < 0.04


def test_random_flip():
    image = _rand_image((3, 5, 3))
    flipped = _map_seeds(lambda s: crop.random_flip(tf.constant(image), 0.5, s), 1000)
    is_flipped = np.all(flipped == image[:, ::-1], axis=(1, 2, 3))
    is_same = np.all(flipped == image, axis=(1, 2, 3))
    assert np.all(is_flipped ^ is_same)
    assert abs(is_flipped.mean() - 0.5) < 0.07


def test_to_grayscale():
    image = _rand_image((4, 6, 3))
    gray = colour.to_grayscale(tf.constant(image)).numpy()
    assert gray.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_allclose(gray[..., c], image @ GRAY, atol=1e-6)
    grays = _map_seeds(lambda s: colour.random_grayscale(tf.constant(image), 0.2, s), 1000)
    is_gray = np.all(np.abs(grays - gray) < 1e-6, axis=(1, 2, 3))
    assert np.all(is_gray | np.all(grays == image, axis=(1, 2, 3)))
    assert abs(is_gray.mean() - 0.2) < 0.05


# ------------------------------------------------------------- colour jitter


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.0, 1.3, 1.9])
def test_adjust_ops_match_torchvision_formulas(factor):
    image = _rand_image((5, 7, 3), seed=3)
    gray = image @ GRAY
    expected = {
        colour.adjust_brightness: np.clip(factor * image, 0, 1),
        colour.adjust_contrast: np.clip(factor * image + (1 - factor) * gray.mean(), 0, 1),
        colour.adjust_saturation: np.clip(factor * image + (1 - factor) * gray[..., None], 0, 1),
    }
    for op, want in expected.items():
        got = op(tf.constant(image), tf.constant(factor, tf.float32)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=op.__name__)
        assert got.min() >= 0.0 and got.max() <= 1.0


@pytest.mark.parametrize("delta", [-0.1, 0.05, 0.45])
def test_adjust_hue_matches_hsv_rotation(delta):
    image = _rand_image((4, 5, 3), seed=4)
    expected = np.array(
        [
            [colorsys.hsv_to_rgb((h + delta) % 1.0, s, v) for h, s, v in (colorsys.rgb_to_hsv(*p) for p in row)]
            for row in image
        ]
    )
    got = colour.adjust_hue(tf.constant(image), delta).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_jitter_params_ranges_and_uniform_order():
    b, c, s, h = 0.4, 1.5, 0.2, 0.1
    params = _map_seeds(
        lambda seed: tf.concat(
            [tf.cast(p, tf.float32) for p in colour.sample_color_jitter_params(b, c, s, h, seed)], 0
        ),
        2400,
    )
    order, factors = params[:, :4].astype(int), params[:, 4:]
    lows, highs = [1 - b, 0.0, 1 - s, -h], [1 + b, 1 + c, 1 + s, h]
    for i in range(4):
        assert factors[:, i].min() >= lows[i] and factors[:, i].max() <= highs[i]
        # Uniform over the whole range.
        assert abs(factors[:, i].mean() - (lows[i] + highs[i]) / 2) < 0.03 * (highs[i] - lows[i])
        assert np.quantile(factors[:, i], 0.02) < lows[i] + 0.05 * (highs[i] - lows[i])
    assert (np.sort(order, axis=1) == np.arange(4)).all()
    counts = {p: 0 for p in itertools.permutations(range(4))}
    for row in order:
        counts[tuple(row)] += 1
    # 24 permutations, 100 expected each (std ~10).
    assert min(counts.values()) > 60 and max(counts.values()) < 140


def _compose(image, order, factors):
    ops = [colour.adjust_brightness, colour.adjust_contrast, colour.adjust_saturation, colour.adjust_hue]
    out = tf.constant(image)
    for i in order:
        out = ops[i](out, factors[i])
    return out.numpy()


def test_color_jitter_applies_ops_in_sampled_order():
    # Strong factors and a bright image so that clipping makes the order matter.
    image = _rand_image((6, 6, 3), seed=5) * 0.5 + 0.5
    strengths = (0.8, 0.8, 0.8, 0.3)
    order_mattered = False
    for i in range(12):
        seed = _seed(i, 9)
        order, factors = [p.numpy() for p in colour.sample_color_jitter_params(*strengths, seed)]
        got = colour.color_jitter(tf.constant(image), *strengths, seed).numpy()
        np.testing.assert_allclose(got, _compose(image, order, factors), atol=1e-5)
        assert got.min() >= 0.0 and got.max() <= 1.0
        other = _compose(image, order[::-1], factors)
        order_mattered |= not np.allclose(got, other, atol=1e-4)
    assert order_mattered


def test_color_jitter_inactive_ops_are_skipped():
    image = _rand_image((5, 5, 3), seed=6)
    same = colour.color_jitter(tf.constant(image), 0.0, 0.0, 0.0, 0.0, _seed(1)).numpy()
    np.testing.assert_array_equal(same, image)
    for i in range(5):
        out = colour.color_jitter(tf.constant(image * 0.5), 0.4, 0.0, 0.0, 0.0, _seed(i)).numpy()
        ratio = out / (image * 0.5)
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
        assert 0.6 <= ratio.flat[0] <= 1.4


def test_color_jitter_per_image_in_tf_data_and_in_range():
    image = tf.constant(_rand_image((8, 8, 3), seed=7))
    outs = _map_seeds(lambda s: colour.color_jitter(image, 0.4, 0.4, 0.4, 0.1, s), 64)
    assert outs.min() >= 0.0 and outs.max() <= 1.0
    flat = outs.reshape(64, -1)
    assert len(np.unique(flat.round(5), axis=0)) == 64


# ---------------------------------------------------------------------- blur


def test_blur_kernel_size():
    assert blur.blur_kernel_size(224, 0.1) == 23
    assert blur.blur_kernel_size(32, 0.1) == 3
    assert blur.blur_kernel_size(8, 0.1) == 3
    for side in range(30, 300, 7):
        k = blur.blur_kernel_size(side, 0.1)
        assert k % 2 == 1 and abs(k - 0.1 * side) <= 1.5


@pytest.mark.parametrize("sigma", [0.1, 1.0, 2.0])
def test_gaussian_kernel(sigma):
    k = blur.gaussian_kernel(sigma, 7).numpy()
    assert k.shape == (7,)
    assert abs(k.sum() - 1.0) < 1e-6
    np.testing.assert_allclose(k, k[::-1], atol=1e-7)
    assert k.argmax() == 3 and np.all(np.diff(k[3:]) <= 0)
    x = np.arange(-3, 4)
    expected = np.exp(-(x**2) / (2 * sigma**2))
    np.testing.assert_allclose(k, expected / expected.sum(), rtol=1e-5, atol=1e-12)


def test_blur_constant_image_is_unchanged():
    image = np.full((9, 11, 3), 0.25, np.float32) + np.array([0.0, 0.3, 0.6], np.float32)
    out = blur.gaussian_blur(tf.constant(image), 1.7, 7).numpy()
    np.testing.assert_allclose(out, image, atol=1e-6)


def test_blur_matches_reflect_padded_2d_convolution():
    image = _rand_image((9, 11, 3), seed=8)
    sigma, size = 1.3, 5
    x = np.arange(size) - size // 2
    k1 = np.exp(-(x**2) / (2 * sigma**2))
    k2 = np.outer(k1, k1) / k1.sum() ** 2
    padded = np.pad(image, [(2, 2), (2, 2), (0, 0)], mode="reflect")
    expected = np.zeros_like(image)
    for dy in range(size):
        for dx in range(size):
            expected += k2[dy, dx] * padded[dy : dy + 9, dx : dx + 11]
    np.testing.assert_allclose(blur.gaussian_blur(tf.constant(image), sigma, size).numpy(), expected, atol=1e-5)


def _depthwise_blur(image: tf.Tensor, sigma: float, size: int) -> tf.Tensor:
    """The blur as it was before the banded matrices: reflect padding, two depthwise convolutions."""
    radius = size // 2
    kernel = tf.tile(blur.gaussian_kernel(sigma, size)[:, tf.newaxis, tf.newaxis], [1, image.shape[-1], 1])
    padded = tf.pad(image[tf.newaxis], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    out = tf.nn.depthwise_conv2d(padded, kernel[:, tf.newaxis], [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, kernel[tf.newaxis], [1, 1, 1, 1], "VALID")[0]


def test_blur_as_banded_matrices_equals_the_depthwise_convolutions():
    from sklearn.datasets import load_digits

    # Real images: digits (8x8) upscaled to 64x48, as RGB in [0, 1] with a tint per channel; and noise.
    digits = load_digits().images[:3, :, :, np.newaxis] / 16.0 * np.array([1.0, 0.7, 0.4])
    real = tf.image.resize(digits.astype(np.float32), (64, 48), method="bicubic")
    images = list(tf.clip_by_value(real, 0.0, 1.0)) + [tf.constant(_rand_image((20, 33, 3), seed=11))]
    for image, (sigma, size) in zip(images, [(0.1, 7), (0.9, 13), (2.0, 23), (1.4, 19)]):
        want = _depthwise_blur(image, sigma, size).numpy()
        assert np.abs(want - image.numpy()).max() > (0.01 if sigma > 0.5 else 0.0)
        np.testing.assert_allclose(blur.gaussian_blur(image, sigma, size).numpy(), want, atol=1e-6)
        # Unknown height and width when traced, as in a dataset of images of any size.
        dynamic = tf.function(lambda x: blur.gaussian_blur(x, sigma, size), autograph=False,
                              input_signature=[tf.TensorSpec([None, None, 3])])
        np.testing.assert_allclose(dynamic(image).numpy(), want, atol=1e-6)


def test_blur_matrix_folds_the_reflect_padding_into_a_band():
    kernels = blur.gaussian_kernel(tf.constant([0.5, 1.5]), 5).numpy()
    matrices = blur.blur_matrix(6, tf.constant(kernels)).numpy()
    for kernel, matrix in zip(kernels, matrices):
        # Row i: the kernel centred on i, the taps beyond the edge reflected (index -1 is 1, 6 is 4).
        np.testing.assert_allclose(matrix[2], [*kernel, 0], atol=1e-7)
        np.testing.assert_allclose(matrix[0], [kernel[2], kernel[1] + kernel[3], kernel[0] + kernel[4], 0, 0, 0],
                                   atol=1e-7)
        np.testing.assert_allclose(matrix[5], [0, 0, 0, kernel[0] + kernel[4], kernel[1] + kernel[3], kernel[2]],
                                   atol=1e-7)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)


def test_blur_reduces_variance_more_with_larger_sigma():
    noise = tf.constant(_rand_image((32, 32, 3), seed=9))
    variances = [float(tf.math.reduce_variance(blur.gaussian_blur(noise, s, 9))) for s in (0.3, 1.0, 2.0)]
    assert variances[0] < float(tf.math.reduce_variance(noise))
    assert variances[0] > variances[1] > variances[2]
    # Tiny sigma is (almost) the identity.
    np.testing.assert_allclose(blur.gaussian_blur(noise, 0.1, 9).numpy(), noise.numpy(), atol=1e-6)


def test_random_gaussian_blur_probability():
    image = tf.constant(_rand_image((12, 12, 3), seed=10))
    np.testing.assert_array_equal(blur.random_gaussian_blur(image, 0.0, (0.1, 2.0), 3, _seed(0)), image)
    outs = _map_seeds(lambda s: blur.random_gaussian_blur(image, 0.5, (0.5, 2.0), 3, s), 400)
    blurred = ~np.all(outs == image.numpy(), axis=(1, 2, 3))
    assert abs(blurred.mean() - 0.5) < 0.1
    # Per-image sigma: blurred outputs differ from each other.
    assert len(np.unique(outs[blurred].reshape(blurred.sum(), -1).round(5), axis=0)) == blurred.sum()


# ------------------------------------------------------------------ pipeline


@pytest.fixture(scope="module")
def aug32() -> recipe.SimSiamAugment:
    return recipe.SimSiamAugment(32, AugmentConfig())


@pytest.mark.parametrize("shape", [(20, 20, 3), (50, 90, 3), (32, 32, 3)])
def test_pipeline_shape_dtype_range(aug32, shape):
    image = tf.constant(_rand_image(shape, high=255.0))
    for i in range(3):
        out = aug32(image, _seed(i))
        assert out.shape == (32, 32, 3) and out.dtype == tf.float32
        assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    # Values stay on the 0..255 scale (not 0..1).
    assert float(tf.reduce_max(out)) > 2.0


def test_pipeline_imagenet_size_with_blur():
    aug = recipe.SimSiamAugment(64, AugmentConfig(blur_prob=1.0))
    assert aug.blur_kernel_size == 7
    out = aug(tf.constant(_rand_image((48, 80, 3), high=255.0)), _seed(1, 2, tf.int64))
    assert out.shape == (64, 64, 3)
    assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0


def test_pipeline_seeds(aug32):
    image = tf.constant(_rand_image((40, 36, 3), high=255.0))
    a = aug32(image, _seed(7, 1)).numpy()
    np.testing.assert_array_equal(a, aug32(image, _seed(7, 1)).numpy())
    np.testing.assert_array_equal(a, aug32(image, _seed(7, 1, tf.int64)).numpy())
    for other in (_seed(7, 2), _seed(8, 1)):
        assert not np.allclose(a, aug32(image, other).numpy())


def test_pipeline_with_everything_off_is_identity():
    config = AugmentConfig(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0
    )
    image = _rand_image((16, 16, 3), high=255.0)
    out = recipe.SimSiamAugment(16, config)(tf.constant(image), _seed(3)).numpy()
    np.testing.assert_allclose(out, image, atol=1e-3)


def test_pipeline_grayscale_rate():
    config = AugmentConfig(jitter_prob=0.0, blur_prob=0.0, grayscale_prob=0.2)
    aug = recipe.SimSiamAugment(8, config)
    image = tf.constant(_rand_image((8, 8, 3), high=255.0))
    outs = _map_seeds(lambda s: aug(image, s), 600)
    is_gray = np.all(np.abs(outs - outs[..., :1]) < 1e-3, axis=(1, 2, 3))
    assert abs(is_gray.mean() - 0.2) < 0.06


def test_pipeline_two_views_per_image_in_tf_data(aug32):
    batch = 8
    images = np.repeat(_rand_image((1, 40, 40, 3), seed=11, high=255.0), batch, axis=0)

    def two_views(index, image):
        seeds = tf.random.experimental.stateless_split(tf.stack([index, tf.constant(0, tf.int64)]), 2)
        return aug32(image, seeds[0]), aug32(image, seeds[1])

    def run():
        ds = tf.data.Dataset.from_tensor_slices(images).enumerate()
        ds = ds.map(two_views, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
        return [v.numpy() for v in next(iter(ds))]

    view1, view2 = run()
    assert view1.shape == view2.shape == (batch, 32, 32, 3)
    views = np.concatenate([view1, view2]).reshape(2 * batch, -1)
    distances = np.abs(views[:, None] - views[None]).mean(-1)
    off_diagonal = distances[~np.eye(2 * batch, dtype=bool)]
    assert off_diagonal.min() > 1.0  # every view differs from every other view
    # Deterministic given the seeds, including with parallel map.
    again1, again2 = run()
    np.testing.assert_array_equal(view1, again1)
    np.testing.assert_array_equal(view2, again2)


def test_pipeline_dynamic_shapes_under_tf_function(aug32):
    sizes = [(20, 30), (64, 48), (32, 32), (33, 100)]

    def gen():
        for i, (h, w) in enumerate(sizes):
            yield _rand_image((h, w, 3), seed=i, high=255.0)

    ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec([None, None, 3], tf.float32))
    ds = ds.enumerate().map(lambda i, x: aug32(x, tf.stack([i, i])), num_parallel_calls=tf.data.AUTOTUNE)
    assert ds.element_spec.shape == (32, 32, 3)
    out = next(iter(ds.batch(len(sizes)))).numpy()
    assert out.shape == (len(sizes), 32, 32, 3)
    assert out.min() >= 0.0 and out.max() <= 255.0

    fn = tf.function(aug32, input_signature=[tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([2], tf.int32)])
    image = _rand_image((27, 45, 3), high=255.0)
    np.testing.assert_allclose(fn(image, _seed(4)).numpy(), aug32(tf.constant(image), _seed(4)).numpy(), atol=1e-3)


def test_pipeline_get_config_round_trip():
    config = AugmentConfig(blur_prob=0.0, crop_scale=(0.3, 1.0))
    aug = recipe.SimSiamAugment(32, config)
    cfg = aug.get_config()
    assert cfg["image_size"] == 32 and cfg["config"]["blur_prob"] == 0.0
    restored = recipe.SimSiamAugment.from_config(json.loads(json.dumps(cfg)))
    assert restored.image_size == 32 and restored.config == config
