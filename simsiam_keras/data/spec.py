"""What `dataset` strings mean: the one parser every entry point uses.

    synthetic          the embedded dataset (ten shape classes, generated in code)
    npz:PATH           arrays in the keras.datasets convention (x_train, y_train, x_test, y_test)
    folder:PATH        image files: PATH/<split>/<label>/*, PATH/<label>/* or a flat folder
    NAME               a prepared TFDS dataset, e.g. cifar10 or imagenet2012:5.1.0
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

KINDS = ("synthetic", "npz", "folder", "tfds")
# The labelled split evaluation queries, by name, in order of preference (the bank is `train`).
TEST_SPLITS = ("test", "val", "validation")
_TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[\w.-]+)?(:[\w.*-]+)?")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset string: its kind and where it is (a path, or a TFDS name)."""

    kind: str
    location: str

    def __str__(self) -> str:
        return self.location if self.kind in ("synthetic", "tfds") else f"{self.kind}:{self.location}"

    @property
    def slug(self) -> str:
        """A file-name-safe short name: `npz:/a/b.npz` -> `b`, `folder:/data/pets/` -> `pets`."""
        name = Path(self.location).stem if self.kind in ("npz", "folder") else self.location
        return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "dataset"


def parse_dataset(dataset: str | DatasetSpec) -> DatasetSpec:
    """The spec a dataset string names; ValueError (naming `dataset`) for one that names nothing."""
    if isinstance(dataset, DatasetSpec):
        return dataset
    if not isinstance(dataset, str) or not dataset.strip():
        raise ValueError(f"dataset {dataset!r}: expected synthetic, npz:PATH, folder:PATH or a TFDS name")
    if dataset == "synthetic":
        return DatasetSpec("synthetic", "synthetic")
    prefix, colon, rest = dataset.partition(":")
    if colon and prefix in ("npz", "folder"):
        if not rest:
            raise ValueError(f"dataset {dataset!r}: {prefix}: needs a path, e.g. {prefix}:/data/images")
        return DatasetSpec(prefix, rest)
    if not _TFDS_NAME.fullmatch(dataset):
        raise ValueError(
            f"dataset {dataset!r}: not synthetic, npz:PATH, folder:PATH or a TFDS name (lower case, e.g. cifar10)"
        )
    return DatasetSpec("tfds", dataset)


def test_split(splits: Iterable[str]) -> str | None:
    """The split evaluation queries among `splits`: the first of TEST_SPLITS there, else None."""
    available = set(splits)
    return next((name for name in TEST_SPLITS if name in available), None)
