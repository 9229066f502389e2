"""Tests for simsiam_keras.data.decode: every file type decodes like PIL, bad files give ok=False
inside tf.data without raising, and crop-before-decode draws the same crops as decode-then-crop.

All files are generated on the spot with PIL and numpy.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simsiam_keras.augment.crop import sample_crop_box
from simsiam_keras.data.decode import decode_and_random_crop, decode_image, is_jpeg

SCALE = (0.2, 1.0)
RATIO = (3 / 4, 4 / 3)
HEIGHT, WIDTH = 45, 61  # small, odd and non-square, so a swapped axis cannot pass


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like uint8 RGB image: low-frequency waves plus a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [
        128 + 80 * np.sin(2 * np.pi * (f1 * x + f2 * y) + phase)
        for f1, f2, phase in rng.uniform([0.5, 0.5, 0], [3, 3, 2 * np.pi], (3, 3))
    ]
    image = np.stack(channels, axis=-1) + rng.normal(0, 3, (height, width, 3))
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _good_files() -> dict[str, tuple[bytes, np.ndarray, str]]:
    """name -> (file bytes, expected RGB pixels, tolerance: "exact", "jpeg" or "one")."""
    rgb = _photo(HEIGHT, WIDTH)
    pil = Image.fromarray(rgb)
    gray = Image.fromarray(rgb[..., 1])
    files: dict[str, tuple[bytes, np.ndarray, str]] = {}

    def add(name: str, data: bytes, tolerance: str = "exact", expected: np.ndarray | None = None):
        files[name] = (data, _pil_rgb(data) if expected is None else expected, tolerance)

    add("rgb.jpg", _encode(pil, "JPEG", quality=90), tolerance="jpeg")
    add("progressive.jpg", _encode(pil, "JPEG", quality=90, progressive=True), tolerance="jpeg")
    add("gray.jpg", _encode(gray, "JPEG", quality=90), tolerance="jpeg")
    add("cmyk.jpg", _encode(pil.convert("CMYK"), "JPEG", quality=90), tolerance="jpeg")
    # Bytes after the EOI marker (camera trailers, padding) are legal and ignored.
    add("trailer.jpg", files["rgb.jpg"][0] + b"\0" * 64, tolerance="jpeg", expected=files["rgb.jpg"][1])
    add("rgb.png", _encode(pil, "PNG"))
    add("gray.png", _encode(gray, "PNG"))
    alpha = np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    add("rgba.png", _encode(Image.fromarray(np.dstack([rgb, alpha])), "PNG"), expected=rgb)
    # 16-bit values that are not multiples of 257, so clipping or taking the low byte shows;
    # TF keeps the high byte, one below the rounded value at most.
    gray16 = rgb[..., 0].astype(np.uint16) * 256 + rgb[..., 2]
    expected16 = np.repeat(np.round(gray16 / 257.0).astype(np.uint8)[..., None], 3, axis=-1)
    add("gray16.png", _encode(Image.fromarray(gray16), "PNG"), "one", expected=expected16)
    palette = pil.quantize(32)
    add("palette.png", _encode(palette, "PNG"))
    add("rgb.bmp", _encode(pil, "BMP"))
    add("rgba.bmp", _encode(Image.fromarray(np.dstack([rgb, alpha])), "BMP"), expected=rgb)
    add("palette.bmp", _encode(palette, "BMP"))
    add("palette.gif", _encode(palette, "GIF"))
    second = Image.fromarray(255 - rgb).quantize(32)
    add("animated.gif", _encode(palette, "GIF", save_all=True, append_images=[second]))
    return files


def _bad_files(good: dict[str, tuple[bytes, np.ndarray, str]]) -> dict[str, bytes]:
    rng = np.random.default_rng(2)
    jpeg = good["rgb.jpg"][0]
    png = good["rgb.png"][0]
    return {
        "random.bin": rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "truncated.jpg": jpeg[: int(0.3 * len(jpeg))],
        "truncated.png": png[: len(png) // 2],
        "empty.jpg": b"",
        "notes.txt": b"not an image\nat all\n",
        # JPEG magic and a plausible APP0 header, then noise.
        "garbage.jpg": jpeg[:20] + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
    }


GOOD = _good_files()
BAD = _bad_files(GOOD)


def _jpeg_tolerance(actual: np.ndarray, expected: np.ndarray) -> None:
    # The accurate integer DCT matches PIL; TF's default fast DCT is off by several levels.
    diff = np.abs(actual.astype(int) - expected.astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 3, (diff.mean(), diff.max())


def _assert_pixels(actual: np.ndarray, expected: np.ndarray, tolerance: str) -> None:
    assert actual.shape == expected.shape
    if tolerance == "jpeg":
        _jpeg_tolerance(actual, expected)
    else:
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1 if tolerance == "one" else 0)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> dict[str, tuple[np.ndarray, bool, np.ndarray, bool]]:
    """Every file read and decoded in one tf.data pipeline, as the training input will be:
    name -> (image, ok, crop, crop_ok)."""
    folder: Path = tmp_path_factory.mktemp("images")
    names = sorted([*GOOD, *BAD])
    for name in names:
        (folder / name).write_bytes(GOOD[name][0] if name in GOOD else BAD[name])

    def load(path: tf.Tensor, index: tf.Tensor):
        data = tf.io.read_file(path)
        image, ok = decode_image(data)
        crop, crop_ok = decode_and_random_crop(data, SCALE, RATIO, tf.stack([index, index]))
        return image, ok, crop, crop_ok

    paths = [str(folder / name) for name in names]
    ds = tf.data.Dataset.from_tensor_slices(paths).enumerate().map(
        lambda i, p: load(p, i), num_parallel_calls=2, deterministic=True
    )
    results = [tuple(t.numpy() for t in element) for element in ds]  # must not raise
    assert len(results) == len(names)
    return dict(zip(names, results))


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_file_decodes_like_pil(decoded, name):
    image, ok, crop, crop_ok = decoded[name]
    _, expected, tolerance = GOOD[name]
    assert ok and crop_ok
    assert image.dtype == np.uint8 and crop.dtype == np.uint8
    assert image.shape == (HEIGHT, WIDTH, 3)
    _assert_pixels(image, expected, tolerance)
    assert crop.ndim == 3 and crop.shape[-1] == 3 and crop.size > 3


def test_animated_gif_gives_first_frame(decoded):
    gif = Image.open(io.BytesIO(GOOD["animated.gif"][0]))
    frames = []
    for index in range(gif.n_frames):
        gif.seek(index)
        frames.append(np.asarray(gif.convert("RGB")).astype(int))
    assert len(frames) == 2
    image = decoded["animated.gif"][0].astype(int)
    np.testing.assert_array_equal(image, frames[0])
    assert np.abs(image - frames[1]).mean() > 50


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_flagged_not_raised(decoded, name):
    image, ok, crop, crop_ok = decoded[name]
    assert not ok and not crop_ok
    for placeholder in (image, crop):
        assert placeholder.shape == (1, 1, 3) and placeholder.dtype == np.uint8 and not placeholder.any()


def test_decode_image_works_eagerly():
    image, ok = decode_image(GOOD["rgb.png"][0])
    assert bool(ok)
    np.testing.assert_array_equal(image.numpy(), GOOD["rgb.png"][1])
    image, ok = decode_image(BAD["truncated.jpg"])
    assert not bool(ok) and image.shape == (1, 1, 3)


def test_is_jpeg():
    names = sorted([*GOOD, *BAD])
    blobs = tf.constant([GOOD[n][0] if n in GOOD else BAD[n] for n in names])
    expected = [n.endswith(".jpg") and n != "empty.jpg" for n in names]
    assert is_jpeg(blobs).numpy().tolist() == expected
    assert not bool(is_jpeg(b"\xff"))


def test_unsupported_bmp_is_flagged():
    # 4-bit BMPs and RLE-compressed BMPs, which TF's decoder would misread or reject.
    four_bit = bytearray(GOOD["palette.bmp"][0])
    four_bit[28:30] = (4).to_bytes(2, "little")
    rle = bytearray(GOOD["palette.bmp"][0])
    rle[30:34] = (1).to_bytes(4, "little")
    for data in (bytes(four_bit), bytes(rle)):
        assert not bool(decode_image(data)[1])


# ------------------------------------------------------------ random crops


def _crop_run(data: bytes, seeds: np.ndarray, crop_before_decode: bool = True):
    """decode_and_random_crop for each [2] seed, through tf.data: list of (crop, ok)."""
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: decode_and_random_crop(data, SCALE, RATIO, s, crop_before_decode=crop_before_decode),
        num_parallel_calls=2,
        deterministic=True,
    )
    return [(crop.numpy(), bool(ok)) for crop, ok in ds]


def _boxes(height: int, width: int, seeds: np.ndarray, scale=SCALE) -> np.ndarray:
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: tf.stack(sample_crop_box(height, width, scale, RATIO, s))
    )
    return next(iter(ds.batch(len(seeds)))).numpy()


def _seeds(n: int, salt: int) -> np.ndarray:
    return np.stack([np.arange(n), np.full(n, salt)], axis=1).astype(np.int64)


@pytest.mark.parametrize("name", ["rgb.jpg", "progressive.jpg", "cmyk.jpg", "trailer.jpg", "rgb.png", "palette.bmp"])
def test_crop_is_the_sampled_box_of_the_full_image(name):
    data, _, tolerance = GOOD[name]
    full = decode_image(data)[0].numpy()
    seeds = _seeds(24, salt=7)
    boxes = _boxes(HEIGHT, WIDTH, seeds)
    assert len({tuple(b) for b in boxes}) > 20  # the seeds draw different boxes
    for (crop, ok), (y, x, h, w) in zip(_crop_run(data, seeds), boxes):
        assert ok
        expected = full[y : y + h, x : x + w]
        if tolerance == "exact":
            np.testing.assert_array_equal(crop, expected)
            continue
        # libjpeg-turbo's partial decode upsamples chroma at the crop's left and right edges
        # as at an image edge, so only those two columns may differ from a full decode.
        assert crop.shape == expected.shape
        np.testing.assert_array_equal(crop[:, 1:-1], expected[:, 1:-1])
        assert np.abs(crop.astype(int) - expected).mean() < 0.5


def _ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def test_crop_before_decode_has_the_decode_then_crop_distribution():
    height, width, n = 375, 500, 2000
    data = _encode(Image.fromarray(_photo(height, width)), "JPEG", quality=90)

    def scale_and_ratio(crops):
        shapes = np.array([crop.shape[:2] for crop, ok in crops if ok], dtype=float)
        assert len(shapes) == n
        return shapes.prod(axis=1) / (height * width), shapes[:, 1] / shapes[:, 0]

    # Independent seed streams: equal distributions, not equal draws.
    fast = scale_and_ratio(_crop_run(data, _seeds(n, salt=0)))
    slow = scale_and_ratio(_crop_run(data, _seeds(n, salt=1), crop_before_decode=False))
    # 5% critical value of the two-sample KS test for n = m = 2000 is 1.36 * sqrt(2 / n) = 0.043.
    threshold = 1.36 * math.sqrt(2 / n)
    for fast_values, slow_values in zip(fast, slow):
        assert _ks_statistic(fast_values, slow_values) < threshold

    def box_scale(boxes):
        return boxes[:, 2] * boxes[:, 3] / (height * width)

    # Both match the sampler itself, without decoding anything.
    reference = _boxes(height, width, _seeds(n, salt=2))
    assert _ks_statistic(fast[0], box_scale(reference)) < threshold
    assert _ks_statistic(slow[0], box_scale(reference)) < threshold
    # The test has power: torchvision's default scale range (0.08, 1) is clearly detected.
    other = _boxes(height, width, _seeds(n, salt=3), scale=(0.08, 1.0))
    assert _ks_statistic(fast[0], box_scale(other)) > 2 * threshold


def test_truncated_jpeg_is_rejected_for_every_crop():
    # Cut off the last tenth: many boxes lie wholly in the intact rows, and decoding just
    # those rows would succeed, but the file is truncated and must be bad for every view.
    height, width = 200, 160
    complete = _encode(Image.fromarray(_photo(height, width)), "JPEG", quality=90)
    data = complete[: int(0.9 * len(complete))]
    seeds = _seeds(32, salt=3)
    decodable = 0
    for y, x, h, w in _boxes(height, width, seeds):
        try:
            tf.image.decode_and_crop_jpeg(data, [y, x, h, w], channels=3)
            decodable += 1
        except tf.errors.InvalidArgumentError:
            pass
    assert decodable > 0  # the naive crop-before-decode would have accepted these
    assert not any(ok for _, ok in _crop_run(data, seeds))
