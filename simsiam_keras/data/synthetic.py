"""An embedded, offline dataset: ten shape classes on textured backgrounds.

Each image is one anti-aliased shape at a random position, scale and rotation over a
background of faint oriented sinusoidal stripes (random frequency, orientation, phase
and amplitude) with pixel noise and a mild shading of the shape. Only the *shape*
identifies the class; pose and texture are nuisances that a good representation must
be invariant to, which is what SimSiam's augmentations teach.

By default the shape is light grey on a dark grey ground. With ``random_colours`` the
foreground, background and stripe colours are drawn at random (independently of the
class): measured on this dataset, a short SimSiam run then encodes the colours, which
both views of an image share, and its kNN accuracy stays at chance, so the quickstart
uses fixed colours; random colours are the harder variant for longer runs.

Everything is vectorised numpy over all images at once (per-class loops over ten
signed-distance functions, never per-image or per-pixel Python loops) and
deterministic by seed. Shapes are drawn from signed distance functions
(negative inside, in "shape units" where a shape fits in the unit disk) and the
edge is a one-pixel linear ramp of the distance in pixels, i.e. anti-aliased at any
``image_size``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["CLASS_NAMES", "make_synthetic", "render"]

CLASS_NAMES: tuple[str, ...] = (
    "disk",
    "square",
    "triangle",
    "ring",
    "plus",
    "rhombus",
    "star",
    "crescent",
    "hollow_square",
    "two_bars",
)

# Default nuisance ranges, see ``render``.
SCALE_RANGE = (0.45, 0.8)
ROTATION_RANGE = (0.0, 2.0 * np.pi)
# Background and foreground texture, each uniform in its range.
TEXTURE_RANGES: dict[str, tuple[float, float]] = {
    "stripe_amp": (0.0, 0.6),  # 0: plain base colour, 1: full stripe colour at the crests
    "stripe_freq": (1.0, 6.0),  # cycles per image side
    "stripe_angle": (0.0, np.pi),
    "stripe_phase": (0.0, 2.0 * np.pi),
    "noise_std": (0.0, 0.06),  # i.i.d. Gaussian pixel noise, [0, 1] units
    "shade_amp": (0.0, 0.25),  # linear shading across the foreground
    "shade_angle": (0.0, 2.0 * np.pi),
}
# Default colours (grey levels in [0, 1]) and the stripe amplitude without random colours.
FIXED_COLOURS = {"fg": 0.8, "bg": 0.2, "stripe_colour": 0.35}
FIXED_COLOUR_STRIPE_AMP = (0.0, 0.18)
# Minimum Euclidean RGB distance and luminance difference (both in [0, 1] units)
# between the foreground colour and the background base colour, so the shape stays
# visible, also after a grayscale augmentation.
_MIN_COLOUR_DIST = 0.35
_MIN_LUMA_DIFF = 0.12
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Pixels (images x side^2) per vectorised chunk: cache-sized, and bounds memory at any size.
_CHUNK_PIXELS = 1 << 20

Array = np.ndarray


# --------------------------------------------------------------------------- SDFs
def _length(x: Array, y: Array) -> Array:
    return np.sqrt(x * x + y * y)


def _box(x: Array, y: Array, bx: float, by: float) -> Array:
    qx, qy = np.abs(x) - bx, np.abs(y) - by
    outside = _length(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _polygon(x: Array, y: Array, vertices: Array) -> Array:
    """Exact signed distance to a simple polygon (loop over its few vertices only)."""
    vx, vy = vertices[:, 0], vertices[:, 1]
    d = (x - vx[0]) ** 2 + (y - vy[0]) ** 2
    sign = np.ones_like(x)
    n = len(vertices)
    for i in range(n):
        j = i - 1  # previous vertex (wraps to n - 1)
        ex, ey = vx[j] - vx[i], vy[j] - vy[i]
        wx, wy = x - vx[i], y - vy[i]
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        bx, by = wx - ex * t, wy - ey * t
        d = np.minimum(d, bx * bx + by * by)
        c1 = y >= vy[i]
        c2 = y < vy[j]
        c3 = ex * wy > ey * wx
        flip = (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
        sign = np.where(flip, -sign, sign)
    return sign * np.sqrt(d)


def _regular(n: int, radius: float, phase: float = np.pi / 2) -> Array:
    a = phase + 2.0 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star_vertices(points: int, outer: float, inner: float) -> Array:
    a = np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


_TRIANGLE = _regular(3, 0.92).astype(np.float32)
_RHOMBUS = np.array([[0.0, 0.92], [-0.45, 0.0], [0.0, -0.92], [0.45, 0.0]], np.float32)
_STAR = _star_vertices(5, 0.95, 0.42).astype(np.float32)


def _sdf_disk(x: Array, y: Array) -> Array:
    return _length(x, y) - 0.72


def _sdf_square(x: Array, y: Array) -> Array:
    return _box(x, y, 0.62, 0.62)


def _sdf_triangle(x: Array, y: Array) -> Array:
    return _polygon(x, y, _TRIANGLE)


def _sdf_ring(x: Array, y: Array) -> Array:
    return np.abs(_length(x, y) - 0.68) - 0.2


def _sdf_plus(x: Array, y: Array) -> Array:
    return np.minimum(_box(x, y, 0.85, 0.24), _box(x, y, 0.24, 0.85))


def _sdf_rhombus(x: Array, y: Array) -> Array:
    return _polygon(x, y, _RHOMBUS)


def _sdf_star(x: Array, y: Array) -> Array:
    return _polygon(x, y, _STAR)


def _sdf_crescent(x: Array, y: Array) -> Array:
    # A disk minus an offset disk, shifted so the crescent is roughly centred.
    x = x - 0.2
    return np.maximum(_length(x, y) - 0.78, -(_length(x + 0.5, y) - 0.68))


def _sdf_hollow_square(x: Array, y: Array) -> Array:
    return np.abs(_box(x, y, 0.56, 0.56)) - 0.16


def _sdf_two_bars(x: Array, y: Array) -> Array:
    return np.minimum(_box(x, y - 0.42, 0.82, 0.2), _box(x, y + 0.42, 0.82, 0.2))


_SDFS: tuple[Callable[[Array, Array], Array], ...] = (
    _sdf_disk,
    _sdf_square,
    _sdf_triangle,
    _sdf_ring,
    _sdf_plus,
    _sdf_rhombus,
    _sdf_star,
    _sdf_crescent,
    _sdf_hollow_square,
    _sdf_two_bars,
)
assert len(_SDFS) == len(CLASS_NAMES)


# ------------------------------------------------------------------------ sampling
def _sample_params(
    labels: Array, rng: np.random.Generator, scale_range, rotation_range, position_jitter, random_colours: bool
) -> dict:
    """Every per-image random quantity, drawn up front in a fixed order."""
    n = len(labels)
    u = lambda lo, hi, *shape: rng.uniform(lo, hi, size=(n, *shape)).astype(np.float32)  # noqa: E731
    scale = u(*scale_range)
    p = {
        "scale": scale,
        "angle": u(*rotation_range),
        # Centre offset, in units of the half image side; the shape (radius <~ 0.95
        # shape units) stays essentially inside the frame.
        "offset": u(-1.0, 1.0, 2) * (position_jitter * np.maximum(1.0 - 0.9 * scale, 0.0))[:, None],
        "bg": u(0.0, 1.0, 3),
        "stripe_colour": u(0.0, 1.0, 3),
        **{name: u(*TEXTURE_RANGES[name]) for name in sorted(TEXTURE_RANGES)},
    }
    if not random_colours:
        for name, grey in FIXED_COLOURS.items():
            p[name] = np.full((n, 3), grey, np.float32)
        p["stripe_amp"] = u(*FIXED_COLOUR_STRIPE_AMP)
        return p
    # Foreground colour: uniform, redrawn (vectorised rejection) until it contrasts
    # with the background base colour. Depends only on the background, never on the class.
    fg = u(0.0, 1.0, 3)
    for _ in range(100):
        bad = (np.linalg.norm(fg - p["bg"], axis=1) < _MIN_COLOUR_DIST) | (
            np.abs((fg - p["bg"]) @ _LUMA) < _MIN_LUMA_DIFF
        )
        if not bad.any():
            break
        fg[bad] = rng.uniform(0.0, 1.0, size=(int(bad.sum()), 3)).astype(np.float32)
    p["fg"] = fg
    return p


def _render_chunk(labels: Array, p: dict, noise: Array, image_size: int) -> tuple[Array, Array]:
    n, s = len(labels), image_size
    coords = ((np.arange(s, dtype=np.float32) + 0.5) / s) * 2.0 - 1.0  # pixel centres in [-1, 1]
    X = np.broadcast_to(coords[None, None, :], (n, s, s))  # x: columns
    Y = np.broadcast_to(-coords[None, :, None], (n, s, s))  # y: up
    col = lambda a: a[:, None, None]  # noqa: E731

    # Shape: image -> shape coordinates (translate, rotate by -angle, scale).
    dx, dy = X - col(p["offset"][:, 0]), Y - col(p["offset"][:, 1])
    cos, sin = col(np.cos(p["angle"])), col(np.sin(p["angle"]))
    sc = col(p["scale"])
    sx, sy = (cos * dx + sin * dy) / sc, (-sin * dx + cos * dy) / sc
    dist = np.empty((n, s, s), np.float32)
    for k, sdf in enumerate(_SDFS):
        idx = np.flatnonzero(labels == k)
        if idx.size:
            dist[idx] = sdf(sx[idx], sy[idx])
    # Shape units -> pixels (one shape unit = scale * s / 2 pixels), 1-pixel ramp.
    alpha = np.clip(0.5 - dist * sc * (s / 2.0), 0.0, 1.0).astype(np.float32)

    # Background: base colour + oriented stripes in a second colour. The compositing
    # below works in place on one (n, s, s, 3) buffer: this is memory-bound work.
    phi = col(p["stripe_angle"])
    t = np.sin(np.pi * col(p["stripe_freq"]) * (np.cos(phi) * X + np.sin(phi) * Y) + col(p["stripe_phase"]))
    mix = (col(p["stripe_amp"]) * (0.5 + 0.5 * t))[..., None]
    base = p["bg"][:, None, None, :]
    bg = mix * (p["stripe_colour"][:, None, None, :] - base)
    bg += base

    # Foreground: flat colour with a mild linear shading.
    psi = col(p["shade_angle"])
    shade = 1.0 + col(p["shade_amp"]) * 0.5 * (np.cos(psi) * X + np.sin(psi) * Y)
    img = shade[..., None] * p["fg"][:, None, None, :]

    # img = alpha * fg + (1 - alpha) * bg + noise_std * noise, then quantised.
    img -= bg
    img *= alpha[..., None]
    img += bg
    noise *= col(p["noise_std"])[..., None]
    img += noise
    img *= 255.0
    img += 0.5  # round half up once clipped to be non-negative
    np.clip(img, 0.0, 255.0, out=img)
    img = img.astype(np.uint8)
    return img, alpha


def render(
    labels: Array,
    rng: np.random.Generator,
    image_size: int = 32,
    *,
    scale_range: tuple[float, float] = SCALE_RANGE,
    rotation_range: tuple[float, float] = ROTATION_RANGE,
    position_jitter: float = 1.0,
    random_colours: bool = False,
    return_alpha: bool = False,
) -> Array | tuple[Array, Array]:
    """Render one image per entry of ``labels`` (ints in ``range(len(CLASS_NAMES))``).

    ``scale_range``: shape radius as a fraction of the half image side (uniform);
    ``rotation_range``: radians (uniform); ``position_jitter``: 0 centres every shape,
    1 moves it anywhere it still fits. Pass a degenerate range, e.g. ``(0.6, 0.6)``,
    or 0 to switch a nuisance off; ``random_colours`` draws the colours per image instead of
    the fixed grey levels. Returns uint8 ``(N, S, S, 3)`` images, and with
    ``return_alpha`` also the float32 ``(N, S, S)`` anti-aliased shape coverage.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError(f"labels must be in [0, {len(CLASS_NAMES)})")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    params = _sample_params(labels, rng, scale_range, rotation_range, position_jitter, random_colours)
    n, s = len(labels), image_size
    images = np.empty((n, s, s, 3), np.uint8)
    alphas = np.empty((n, s, s), np.float32) if return_alpha else None
    chunk = max(1, _CHUNK_PIXELS // (s * s))
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        noise = rng.standard_normal((sl.stop - sl.start, s, s, 3), dtype=np.float32)
        img, alpha = _render_chunk(labels[sl], {k: v[sl] for k, v in params.items()}, noise, s)
        images[sl] = img
        if alphas is not None:
            alphas[sl] = alpha
    return (images, alphas) if return_alpha else images


def _balanced_labels(n: int, rng: np.random.Generator) -> Array:
    """``n`` labels, each class ``n // 10`` or ``n // 10 + 1`` times, shuffled."""
    return rng.permutation(np.arange(n, dtype=np.int64) % len(CLASS_NAMES))


def make_synthetic(
    num_train: int = 10000, num_test: int = 2000, image_size: int = 32, seed: int = 0, random_colours: bool = False
) -> dict[str, np.ndarray]:
    """The embedded dataset, in the ``keras.datasets`` convention.

    Returns ``x_train`` / ``x_test`` uint8 ``(N, S, S, 3)`` and ``y_train`` / ``y_test``
    int64 ``(N,)`` with balanced classes (counts differ by at most one). Train and test
    come from independent random streams of the same distribution, so ``x_train``
    depends only on ``(num_train, image_size, seed)``.
    """
    if num_train < 0 or num_test < 0:
        raise ValueError("num_train and num_test must be non-negative")
    out: dict[str, np.ndarray] = {}
    for stream, (split, n) in enumerate((("train", num_train), ("test", num_test))):
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
        labels = _balanced_labels(n, rng)
        out[f"x_{split}"] = render(labels, rng, image_size, random_colours=random_colours)
        out[f"y_{split}"] = labels
    return out
