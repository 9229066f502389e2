"""Decoding image files inside ``tf.data.Dataset.map`` (graph mode) without ever raising.

Reading folders of JPEG/PNG/BMP/GIF files (or JPEG bytes from TFDS ImageNet), one bad
file must not abort an epoch, and it must not become a blank image that trains as if it
were real. So every function here returns an ``ok`` flag next to the image: ``ok=False``
comes with a 1x1x3 zero placeholder, and the caller drops and counts those elements.

How failures are caught: the decode runs in a one-element dataset with
``ignore_errors()``, followed by a placeholder element, and the first element is taken.
Whatever TF's decoders reject at run time (unknown format, empty, corrupt or truncated
data) and whatever our own checks reject (``tf.debugging.Assert``) thus becomes
``ok=False`` for that element only. This is pure TF (no ``py_function``, no PIL, which is
not a dependency); the guard adds roughly 0.2-0.3 ms per call on CPU.

Conventions:
  * Output is uint8 HxWx3 RGB: grayscale is repeated, alpha dropped (transparent GIF pixels
    come out black, as TF decodes them), 16-bit PNG reduced to 8 bits, GIFs give their
    first frame, CMYK JPEGs are converted. EXIF orientation is not applied (nor is it by
    torchvision's default PIL loader).
  * JPEGs use the accurate integer DCT, which matches PIL (and so torchvision) exactly;
    TF's default fast DCT is off by up to ~7 levels.
  * JPEGs must decode completely under TF's strict settings: a truncated JPEG is bad,
    never padded with grey. The crop-before-decode path reads only the rows it needs, so
    it is used only for JPEGs that end with an EOI marker; any other JPEG (truncated, or
    with data appended after EOI) is decoded fully, which rejects truncated files.
  * BMP: TF's decoder ignores the colour table and the compression field, so 8-bit BMPs
    get their palette applied here, and compressed BMPs are rejected instead of misread.
  * Plain TensorFlow, no Python control flow on tensors: the public functions are marked for
    AutoGraph to leave alone (tf.data would transform their source at each run's start).
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

from simsiam_keras.augment.crop import eval_view, sample_crop_box, to_uint8

__all__ = ["decode_and_random_crop", "decode_eval_view", "decode_image", "is_jpeg"]

_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_BMP_MAGIC = b"BM"
# Matches libjpeg's JDCT_ISLOW, which PIL uses.
_DCT_METHOD = "INTEGER_ACCURATE"
# BMP compression field: BI_RGB (none), and BI_BITFIELDS, which TF decodes as plain BGRA.
_BI_RGB, _BI_BITFIELDS = 0, 3


def _placeholder() -> tf.Tensor:
    return tf.zeros([1, 1, 3], tf.uint8)


def is_jpeg(data: tf.Tensor) -> tf.Tensor:
    """True where the encoded bytes start with the JPEG SOI marker (elementwise, never raises)."""
    return tf.equal(tf.strings.substr(data, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)


def _is_bmp(data: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(data, 0, len(_BMP_MAGIC)), _BMP_MAGIC)


def _ends_with_eoi(data: tf.Tensor) -> tf.Tensor:
    # substr raises for pos > len, hence the clamp for 0- and 1-byte strings.
    tail_start = tf.maximum(tf.strings.length(data) - len(_JPEG_EOI), 0)
    return tf.equal(tf.strings.substr(data, tail_start, len(_JPEG_EOI)), _JPEG_EOI)


def _guarded(fn: Callable[..., tf.Tensor], *inputs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(fn(*inputs), True), or (placeholder, False) if anything in ``fn`` fails at run time."""
    attempt = (
        tf.data.Dataset.from_tensors(inputs)
        .map(tf.autograph.experimental.do_not_convert(lambda *args: (fn(*args), tf.constant(True))))
        .ignore_errors()
    )
    fallback = tf.data.Dataset.from_tensors((_placeholder(), tf.constant(False)))
    image, ok = attempt.concatenate(fallback).take(1).get_single_element()
    return tf.ensure_shape(image, [None, None, 3]), ok


# ------------------------------------------------------------------------- BMP


def _read_le(data: tf.Tensor, pos: int | tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """A little-endian integer at byte ``pos`` (fails if the file is too short)."""
    raw = tf.strings.substr(data, pos, dtype.size)
    return tf.reshape(tf.io.decode_raw(raw, dtype, little_endian=True), [])


def _apply_bmp_palette(data: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Map 8-bit BMP colour indices (HxWx1) through the file's BGRx colour table."""
    header_size = _read_le(data, 14, tf.int32)
    colors = _read_le(data, 46, tf.int32)
    colors = tf.where(colors == 0, 256, colors)
    check = tf.debugging.Assert(
        (header_size >= 40) & (colors > 0) & (colors <= 256), ["unsupported BMP colour table"]
    )
    with tf.control_dependencies([check]):
        table = tf.io.decode_raw(tf.strings.substr(data, 14 + header_size, 4 * colors), tf.uint8)
    table = tf.reshape(table, [colors, 4])[:, 2::-1]
    # An index past the table makes gather fail, which marks the file bad.
    return tf.gather(table, tf.cast(indices[..., 0], tf.int32))


def _decode_bmp(data: tf.Tensor) -> tf.Tensor:
    bits = tf.cast(_read_le(data, 28, tf.uint16), tf.int32)
    compression = _read_le(data, 30, tf.int32)
    uncompressed = compression == _BI_RGB
    supported = (((bits == 8) | (bits == 24)) & uncompressed) | (
        (bits == 32) & (uncompressed | (compression == _BI_BITFIELDS))
    )
    check = tf.debugging.Assert(supported, ["unsupported BMP: bits", bits, "compression", compression])
    with tf.control_dependencies([check]):
        pixels = tf.io.decode_bmp(data, channels=0)
    return tf.cond(bits == 8, lambda: _apply_bmp_palette(data, pixels), lambda: pixels[..., :3])


# ---------------------------------------------------------------------- decode


def _decode_any(data: tf.Tensor) -> tf.Tensor:
    """Decode or raise: uint8 HxWx3 RGB."""
    branch = tf.where(is_jpeg(data), 0, tf.where(_is_bmp(data), 1, 2))
    image = tf.switch_case(
        branch,
        [
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method=_DCT_METHOD),
            lambda: _decode_bmp(data),
            lambda: tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False),
        ],
    )
    return tf.ensure_shape(image, [None, None, 3])


@tf.autograph.experimental.do_not_convert
def decode_image(data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Bytes of one image file -> (uint8 HxWx3 RGB image, ok).

    JPEG, PNG (8/16-bit, gray, RGBA, palette), GIF (first frame), BMP (8/24/32-bit) and
    WebP. Anything that cannot be decoded gives (1x1x3 zeros, False); never raises.
    """
    return _guarded(_decode_any, tf.convert_to_tensor(data, tf.string))


# ------------------------------------------------------------------------ crop


def _crop_jpeg(
    data: tf.Tensor, seed: tf.Tensor, scale: Sequence[float], ratio: Sequence[float]
) -> tf.Tensor:
    shape = tf.image.extract_jpeg_shape(data)
    offset_y, offset_x, crop_h, crop_w = sample_crop_box(shape[0], shape[1], scale, ratio, seed)
    window = tf.stack([offset_y, offset_x, crop_h, crop_w])
    return tf.image.decode_and_crop_jpeg(data, window, channels=3, dct_method=_DCT_METHOD)


def _decode_then_crop(
    data: tf.Tensor, seed: tf.Tensor, scale: Sequence[float], ratio: Sequence[float]
) -> tf.Tensor:
    image = _decode_any(data)
    shape = tf.shape(image)
    offset_y, offset_x, crop_h, crop_w = sample_crop_box(shape[0], shape[1], scale, ratio, seed)
    return tf.slice(image, tf.stack([offset_y, offset_x, 0]), tf.stack([crop_h, crop_w, 3]))


@tf.autograph.experimental.do_not_convert
def decode_and_random_crop(
    data: tf.Tensor,
    scale: Sequence[float],
    ratio: Sequence[float],
    seed: tf.Tensor,
    crop_before_decode: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One random-resized-crop region (not resized) of an encoded image -> (uint8 crop, ok).

    The box is ``augment.sample_crop_box(h, w, scale, ratio, seed)`` on the full image, as
    ``augment.random_resized_crop`` draws it, so a seed gives the same box either way.
    Complete JPEGs decode only the box (``decode_and_crop_jpeg``); other files, and every
    file when ``crop_before_decode`` is False, are decoded fully and then cropped.
    Bad files give (1x1x3 zeros, False); never raises.
    """
    data = tf.convert_to_tensor(data, tf.string)
    seed = tf.convert_to_tensor(seed)

    def crop_jpeg(d: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
        return _crop_jpeg(d, s, scale, ratio)

    def decode_then_crop(d: tf.Tensor, s: tf.Tensor) -> tf.Tensor:
        return _decode_then_crop(d, s, scale, ratio)

    if not crop_before_decode:
        return _guarded(decode_then_crop, data, seed)
    return tf.cond(
        is_jpeg(data) & _ends_with_eoi(data),
        lambda: _guarded(crop_jpeg, data, seed),
        lambda: _guarded(decode_then_crop, data, seed),
    )


@tf.autograph.experimental.do_not_convert
def decode_eval_view(data: tf.Tensor, image_size: int, resize_ratio: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Encoded image -> (uint8 image_size^2 x 3 evaluation view, ok); never raises.

    The view is `augment.crop.eval_view` of the decoded image, rounded to uint8 as a decoded
    image is stored: every evaluation of an image file (kNN monitor, kNN evaluation, linear
    probe) sees exactly this.
    """
    image, ok = decode_image(data)
    view = eval_view(image, image_size, resize_ratio)
    return to_uint8(view), ok
