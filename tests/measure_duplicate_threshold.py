"""Measures where `--duplicate-threshold` should sit: near-duplicate copies vs the nearest distinct image.

    python -m tests.measure_duplicate_threshold [RUN_DIR]

Pretrains the encoder of tests/test_finetune.py's `digits_run` on scikit-learn's digits (32x32; 120
steps of 128, width 8) unless RUN_DIR holds one, then embeds all 1,797 digits and copies of 300 of
them (JPEG at quality 50/70/90; JPEG at 75 resized to 24/48/64 px; cropped by 2 or 4 px off two
sides and half that off the others, then resized back), each read back through the evaluation view
as `simsiam-embed` reads files. Prints the cosine similarity of each copy to its original, of each
image to its nearest distinct image, and, per threshold, the share of copies found and the distinct
pairs above it; then the same for the features minus their mean.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits

from simsiam_keras.data.decode import decode_eval_view
from simsiam_keras.evaluate.embed import load_extractor

COPIES = 300


def digits() -> tuple[np.ndarray, np.ndarray]:
    loaded = load_digits()
    images = np.round(loaded.images * (255 / 16)).astype(np.uint8)
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)[..., None].repeat(3, axis=3)
    return images, loaded.target


def pretrain_digits(run: str, images: np.ndarray, labels: np.ndarray) -> None:
    import keras

    from simsiam_keras.config import make_config
    from simsiam_keras.data.images import from_arrays
    from simsiam_keras.train.pretrain import pretrain

    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1437], order[1437:]
    source = from_arrays("digits", images[train], labels[train], images[test], labels[test])
    config = make_config("quickstart", backbone_width=8, base_lr=0.8, epochs=4, steps_per_epoch=30, knn_every=4,
                         eval_resize_ratio=1.0, output_dir=run)
    keras.utils.set_random_seed(config.seed)
    pretrain(config, source=source, verbose=0)


def encode(image: Image.Image, fmt: str = "PNG", quality: int = 95) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, quality=quality)
    return out.getvalue()


def copies(image: np.ndarray) -> dict[str, bytes]:
    """Near-duplicate files of one image, by the edit that made them."""
    pil = Image.fromarray(image)
    made = {f"jpeg q{q}": encode(pil, "JPEG", q) for q in (50, 70, 90)}
    for side in (24, 48, 64):
        jpeg = Image.open(io.BytesIO(encode(pil, "JPEG", 75)))
        made[f"jpeg q75 + resize {side}"] = encode(jpeg.resize((side, side), Image.BILINEAR))
    for cut in (2, 4):
        cropped = pil.crop((cut, cut // 2, 32 - cut // 2, 32 - cut))
        made[f"crop {cut}px + resize"] = encode(cropped.resize((32, 32), Image.BILINEAR))
    return made


def features(extractor, files: list[bytes]) -> np.ndarray:
    views = tf.data.Dataset.from_tensor_slices(files).map(lambda f: decode_eval_view(f, extractor.image_size, 1.0)[0])
    return np.concatenate([extractor(tf.cast(batch, tf.float32)) for batch in views.batch(256)])


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def report(title: str, originals: np.ndarray, picked: np.ndarray, by_edit: dict[str, np.ndarray],
           thresholds: tuple[float, ...]) -> None:
    """Percentiles of copy-to-original and nearest-distinct cosines of unit rows, and the count above each threshold."""
    sims = originals @ originals.T
    np.fill_diagonal(sims, -1)
    nearest = sims.max(1)
    upper = sims[np.triu_indices(len(sims), 1)]
    copy_sims = {edit: np.sum(f * originals[picked], 1) for edit, f in by_edit.items()}
    every = np.concatenate(list(copy_sims.values()))
    q = lambda a: " ".join(f"{v:.4f}" for v in np.percentile(a, [0, 5, 50, 95, 100]))  # noqa: E731
    print(f"{title}: cosine percentiles (min p5 median p95 max)")
    for edit, s in copy_sims.items():
        print(f"  copy vs original, {edit:22s} {q(s)}")
    print(f"  copy vs original, all edits             {q(every)}")
    print(f"  nearest distinct digit                  {q(nearest)}")
    group = lambda edit: "resized" if "resize " in edit else edit.split()[0]  # noqa: E731
    kinds = {kind: np.concatenate([s for e, s in copy_sims.items() if group(e) == kind])
             for kind in ("jpeg", "resized", "crop")}
    print("threshold | copies found: re-encoded, resized, cropped, all | images with a distinct one above | "
          "distinct pairs above")
    for t in thresholds:
        found = ", ".join(f"{np.mean(s >= t):.1%}" for s in kinds.values())
        above = int(np.sum(upper >= t))
        print(f"  {t:.3f} | {found}, {np.mean(every >= t):.1%} | {np.mean(nearest >= t):.1%} | {above:,}")


def main(argv: list[str]) -> None:
    images, labels = digits()
    run = argv[0] if argv else tempfile.mkdtemp(prefix="digits_run-")
    if not os.path.exists(os.path.join(run, "model.keras")):
        pretrain_digits(run, images, labels)
    extractor = load_extractor(run)
    originals = features(extractor, [encode(Image.fromarray(i)) for i in images])
    picked = np.random.default_rng(0).choice(len(images), COPIES, replace=False)
    made = [copies(images[i]) for i in picked]
    by_edit = {edit: features(extractor, [m[edit] for m in made]) for edit in made[0]}
    print(f"run {run}; {len(images)} digits, {COPIES} copies per edit")
    report("features", unit(originals), picked, {e: unit(f) for e, f in by_edit.items()},
           (0.98, 0.985, 0.99, 0.993, 0.995, 0.997, 0.998, 0.999))
    mean = originals.mean(0)
    report("features minus their mean", unit(originals - mean), picked, {e: unit(f - mean) for e, f in by_edit.items()},
           (0.9, 0.95, 0.97, 0.98, 0.99, 0.995))


if __name__ == "__main__":
    main(sys.argv[1:])
