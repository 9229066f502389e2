"""Where the images come from: a dataset spec resolved into the DataSource pretraining reads.

Every source is checked on load, so a mistake is one clear error before a model is built.
"""

from __future__ import annotations

from typing import Any

from simsiam_keras.data.folders import load_folder
from simsiam_keras.data.images import DataSource, from_arrays
from simsiam_keras.data.npz import load_npz
from simsiam_keras.data.spec import DatasetSpec, parse_dataset
from simsiam_keras.data.synthetic import make_synthetic
from simsiam_keras.data.tfds import load_tfds


def load_dataset(
    dataset: str | DatasetSpec, image_size: int = 32, seed: int = 0, data_dir: str | None = None
) -> DataSource:
    """The images of `dataset` (`synthetic`, `npz:PATH`, `folder:PATH` or a prepared TFDS name).

    The synthetic dataset is generated at `image_size` with `seed`; TFDS datasets are read from
    `data_dir` (TFDS's default when None).
    """
    spec = parse_dataset(dataset)
    if spec.kind == "synthetic":
        return from_arrays("synthetic", **make_synthetic(image_size=image_size, seed=seed))
    if spec.kind == "npz":
        return load_npz(spec.location)
    if spec.kind == "folder":
        return load_folder(spec.location)
    return load_tfds(spec.location, data_dir)


def describe(source: DataSource) -> dict[str, Any]:
    """A short summary for logs and config.json."""
    return {
        "name": source.name,
        "train_images": len(source.pretrain_images),
        "test_images": int(len(source.x_test)) if source.x_test is not None else 0,
        "image_shape": list(source.x_train.shape[1:]) if source.train_stream is None else None,
        "streamed": source.train_stream is not None,
        "num_classes": source.num_classes,
    }
