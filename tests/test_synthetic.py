"""The embedded synthetic dataset: contract, determinism, and that only shape carries the class."""

from __future__ import annotations

import numpy as np
import pytest

from simsiam_keras.data.synthetic import CLASS_NAMES, make_synthetic, render

NUM_CLASSES = len(CLASS_NAMES)
FIXED_POSE = dict(scale_range=(0.7, 0.7), rotation_range=(0.3, 0.3), position_jitter=0.0)


@pytest.fixture(scope="module")
def small():
    return make_synthetic(num_train=300, num_test=100, seed=0)


@pytest.fixture(scope="module")
def rendered():
    """2,000 fully randomised images with their shape coverage, classes interleaved."""
    labels = np.arange(2000) % NUM_CLASSES
    images, alpha = render(labels, np.random.default_rng(123), 32, random_colours=True, return_alpha=True)
    return labels, images, alpha


def nearest_class_mean_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Fit class means on the first half, score the second half."""
    half = len(features) // 2
    f_fit, y_fit, f_eval, y_eval = features[:half], labels[:half], features[half:], labels[half:]
    means = np.stack([f_fit[y_fit == k].mean(0) for k in range(NUM_CLASSES)])
    pred = np.argmin(((f_eval[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return float((pred == y_eval).mean())


def radial_profile(alpha: np.ndarray, bins: int = 12) -> np.ndarray:
    """Mean coverage in rings around the shape's centroid, radius in units of sqrt(area).

    Invariant to position, rotation and scale, so it sees nothing but the shape."""
    n, s, _ = alpha.shape
    c = np.arange(s) + 0.5
    area = alpha.sum((1, 2))
    cy = (alpha.sum(2) * c).sum(1) / area
    cx = (alpha.sum(1) * c).sum(1) / area
    r = np.hypot(c[None, None, :] - cx[:, None, None], c[None, :, None] - cy[:, None, None])
    r /= np.sqrt(area)[:, None, None]
    ring = np.minimum((r / 1.2 * bins).astype(np.int64), bins)  # bin `bins` = farther out
    flat = (ring + (bins + 1) * np.arange(n)[:, None, None]).ravel()
    mass = np.bincount(flat, weights=alpha.ravel(), minlength=n * (bins + 1))
    count = np.bincount(flat, minlength=n * (bins + 1))
    return (mass / np.maximum(count, 1)).reshape(n, bins + 1)[:, :bins]


def test_shapes_dtypes_and_range(small):
    assert set(small) == {"x_train", "y_train", "x_test", "y_test"}
    assert small["x_train"].shape == (300, 32, 32, 3) and small["x_train"].dtype == np.uint8
    assert small["x_test"].shape == (100, 32, 32, 3) and small["x_test"].dtype == np.uint8
    assert small["y_train"].shape == (300,) and small["y_train"].dtype == np.int64
    assert small["y_test"].shape == (100,) and small["y_test"].dtype == np.int64
    assert set(np.unique(small["y_train"])) == set(range(NUM_CLASSES))
    # Real images, not a constant or saturated buffer.
    assert small["x_train"].min() < 30 and small["x_train"].max() > 225
    assert small["x_train"].reshape(300, -1).std(axis=1).min() > 3


@pytest.mark.parametrize("size", [24, 64])
def test_image_size(size):
    data = make_synthetic(num_train=20, num_test=10, image_size=size, seed=1)
    assert data["x_train"].shape == (20, size, size, 3)
    assert data["x_test"].shape == (10, size, size, 3)


def test_deterministic_by_seed(small):
    again = make_synthetic(num_train=300, num_test=100, seed=0)
    for key in small:
        np.testing.assert_array_equal(small[key], again[key])
    other = make_synthetic(num_train=300, num_test=100, seed=1)
    assert not np.array_equal(small["x_train"], other["x_train"])
    assert not np.array_equal(small["y_train"], other["y_train"])
    assert not np.array_equal(small["x_test"], other["x_test"])


def test_labels_balanced_and_shuffled():
    data = make_synthetic(num_train=1000, num_test=205, seed=0)
    np.testing.assert_array_equal(np.bincount(data["y_train"], minlength=NUM_CLASSES), [100] * NUM_CLASSES)
    test_counts = np.bincount(data["y_test"], minlength=NUM_CLASSES)
    assert test_counts.sum() == 205 and test_counts.max() - test_counts.min() <= 1
    # Not in class order (a sorted dataset would wreck unshuffled batching).
    assert (np.diff(data["y_train"]) != 0).mean() > 0.5


def test_train_independent_of_num_test(small):
    more_test = make_synthetic(num_train=300, num_test=500, seed=0)
    np.testing.assert_array_equal(small["x_train"], more_test["x_train"])
    np.testing.assert_array_equal(small["y_train"], more_test["y_train"])
    # Train and test are different streams: equal sizes must not give copies, and no test
    # image duplicates a train image.
    same_size = make_synthetic(num_train=100, num_test=100, seed=0)
    train = same_size["x_train"].reshape(100, -1).astype(np.int32)
    test = same_size["x_test"].reshape(100, -1).astype(np.int32)
    assert np.abs(train[:, None, :] - test[None, :, :]).sum(-1).min() > 0


def test_zero_sized_splits():
    data = make_synthetic(num_train=0, num_test=5, seed=0)
    assert data["x_train"].shape == (0, 32, 32, 3) and data["y_train"].shape == (0,)
    assert data["x_test"].shape == (5, 32, 32, 3)


def test_render_validates_labels():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        render(np.array([0, NUM_CLASSES]), rng)
    with pytest.raises(ValueError):
        render(np.array([-1]), rng)


def test_fixed_pose_masks_identical_within_class_distinct_across():
    labels = np.repeat(np.arange(NUM_CLASSES), 3)
    images, alpha = render(labels, np.random.default_rng(7), 32, return_alpha=True, **FIXED_POSE)
    masks = alpha.reshape(NUM_CLASSES, 3, 32, 32)
    for k in range(NUM_CLASSES):
        np.testing.assert_array_equal(masks[k, 0], masks[k, 1])
        np.testing.assert_array_equal(masks[k, 0], masks[k, 2])
        # Same mask, but colours and background still vary.
        assert not np.array_equal(images[3 * k], images[3 * k + 1])
    reps = masks[:, 0].reshape(NUM_CLASSES, -1)
    pairwise_l1 = np.abs(reps[:, None] - reps[None]).sum(-1)
    off_diagonal = pairwise_l1[~np.eye(NUM_CLASSES, dtype=bool)]
    # Every pair of classes differs by at least ~25 pixels of coverage at this size.
    assert off_diagonal.min() > 25, off_diagonal.min()


def test_edges_are_anti_aliased_and_shapes_visible(rendered):
    labels, _, alpha = rendered
    assert alpha.dtype == np.float32 and alpha.min() >= 0.0 and alpha.max() <= 1.0
    fractional = (alpha > 0.02) & (alpha < 0.98)
    # Every image has a soft edge (a hard-thresholded mask would have none).
    assert fractional.reshape(len(alpha), -1).sum(1).min() >= 10
    area = alpha.sum((1, 2))
    assert area.min() > 0.04 * 32 * 32 and area.max() < 0.6 * 32 * 32


def test_shapes_stay_in_frame():
    labels = np.repeat(np.arange(NUM_CLASSES), 50)
    pose = dict(scale_range=(0.8, 0.8), rotation_range=(0.0, 0.0))
    _, centred = render(labels, np.random.default_rng(0), 32, position_jitter=0.0, return_alpha=True, **pose)
    _, moved = render(labels, np.random.default_rng(0), 32, position_jitter=1.0, return_alpha=True, **pose)
    ratio = moved.sum((1, 2)) / centred.sum((1, 2))
    assert ratio.min() > 0.95, ratio.min()
    # And position really is random: centroids spread over the frame.
    c = np.arange(32) + 0.5
    cx = (moved.sum(1) * c).sum(1) / moved.sum((1, 2))
    assert cx.max() - cx.min() > 8


def test_colour_carries_no_class_information(rendered):
    labels, images, alpha = rendered
    mean_rgb = images.reshape(len(images), -1, 3).mean(1)
    assert nearest_class_mean_accuracy(mean_rgb, labels) < 0.25
    # The foreground colour itself (coverage-weighted), not only the image mean.
    fg_rgb = (images * alpha[..., None]).sum((1, 2)) / alpha.sum((1, 2))[:, None]
    assert nearest_class_mean_accuracy(fg_rgb, labels) < 0.25
    # Same for the background: colour of the pixels the shape does not cover.
    bg_rgb = (images * (1.0 - alpha[..., None])).sum((1, 2)) / (1.0 - alpha).sum((1, 2))[:, None]
    assert nearest_class_mean_accuracy(bg_rgb, labels) < 0.25


def test_shape_identifies_the_class_under_random_pose(rendered):
    labels, _, alpha = rendered
    # A pose-invariant description of the mask alone nearly determines the class ...
    assert nearest_class_mean_accuracy(radial_profile(alpha), labels) > 0.85
    # ... and the same classifier is blind when the labels are scrambled (no leak in the helper).
    scrambled = np.random.default_rng(0).permutation(labels)
    assert nearest_class_mean_accuracy(radial_profile(alpha), scrambled) < 0.2


@pytest.mark.parametrize("random_colours, low, high", [(False, 0.3, 0.85), (True, 0.13, 0.5)])
def test_raw_pixels_are_above_chance_but_far_from_solved(random_colours, low, high):
    """Labels match images in make_synthetic, yet pose (and colour) defeat a pixel-space 1-NN."""
    data = make_synthetic(num_train=3000, num_test=1000, seed=0, random_colours=random_colours)
    bank = data["x_train"].reshape(3000, -1).astype(np.float32)
    query = data["x_test"].reshape(1000, -1).astype(np.float32)
    mean = bank.mean(0)
    bank, query = bank - mean, query - mean
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    pred = data["y_train"][(query @ bank.T).argmax(1)]
    accuracy = float((pred == data["y_test"]).mean())
    assert low < accuracy < high, accuracy


def test_default_colours_are_fixed_grey_levels():
    """The quickstart's data: light shapes on a dark ground, the same for every image and class."""
    labels = np.arange(200) % NUM_CLASSES
    images, alpha = render(labels, np.random.default_rng(5), 32, return_alpha=True)
    inside = images[alpha > 0.99].astype(np.float32) / 255
    outside = images[alpha < 0.01].astype(np.float32) / 255
    assert abs(np.median(inside) - 0.8) < 0.05 and abs(np.median(outside) - 0.2) < 0.05
    assert np.abs(inside - inside.mean(-1, keepdims=True)).max() < 0.25  # grey, up to noise
