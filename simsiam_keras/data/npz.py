"""`npz:PATH`: arrays in the keras.datasets convention, read without unpickling anything."""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from simsiam_keras.data.images import DataSource, from_arrays


def load_npz(path: str) -> DataSource:
    """An .npz with `x_train` (uint8 NHWC) and optionally `y_train`, `x_test`, `y_test`."""
    where = f"dataset npz:{path}"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: no such file")
    if not zipfile.is_zipfile(path):
        # np.load would read a lone .npy array, or try to unpickle any other file.
        raise ValueError(f"{where}: not an .npz archive (save one with numpy.savez)")
    try:
        # allow_pickle=False: object arrays would be unpickled, which can run arbitrary code.
        with np.load(path, allow_pickle=False) as f:
            if "x_train" not in f.files:
                raise ValueError(f"has no 'x_train' array (found: {', '.join(f.files) or 'nothing'})")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        if "pickle" in str(error).lower():
            error = "holds object arrays, which are never unpickled: save plain numeric arrays"
        raise ValueError(f"{where}: {error}") from None
    try:
        return from_arrays(f"npz:{path}", **arrays)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
