"""PyTorch's file formats without torch: the restricted reader and the writers.

The reader must give exactly what `torch.load(weights_only=True)` gives, for the zip and the
legacy format, with torch hidden from it; it must refuse any pickle naming another global
before calling it; and what the writers write must load in torch and in plain pickle.
"""

import collections
import io
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch

from simsiam_keras.convert import torch_format
from simsiam_keras.convert.torch_format import (
    UnsafeCheckpointError,
    read_torch_file,
    write_numpy_pickle,
    write_torch_file,
)


class Marker:
    """A class no checkpoint reader may construct."""


def tensors() -> collections.OrderedDict:
    torch.manual_seed(0)
    base = torch.randn(4, 5)
    return collections.OrderedDict(
        weight=base, transposed=base.t(), window=base[1:3, 2:], scalar=torch.tensor(7),
        half=torch.randn(3).half(), double=torch.randn(2, 2).double(), flags=torch.tensor([True, False]),
        bytes_=torch.arange(5, dtype=torch.uint8), empty=torch.zeros(0, 3), parameter=torch.nn.Parameter(torch.randn(2)),
    )


def as_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, dict):
        return type(value)((k, as_numpy(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(as_numpy(v) for v in value)
    return value


def assert_same(expected, actual):
    assert type(actual) is type(expected) or isinstance(expected, np.ndarray)
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        assert actual.tobytes() == np.ascontiguousarray(expected).tobytes()
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(expected[key], actual[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for e, a in zip(expected, actual):
            assert_same(e, a)
    else:
        assert actual == expected


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reads_what_torch_reads_without_torch(tmp_path, monkeypatch, zip_format):
    """A checkpoint dict (state_dict, optimizer state, plain values) reads as torch.load(weights_only=True) reads it."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    checkpoint = {"epoch": 3, "arch": "resnet50", "state_dict": tensors(), "model": model.state_dict(),
                  "optimizer": optimizer.state_dict(), "best_acc1": torch.tensor(68.1), "tags": {1, 2}, "raw": b"\x00\xff"}
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    expected = as_numpy(torch.load(path, weights_only=True))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails: the reader must not need it
    actual = read_torch_file(path)
    assert_same(expected, actual)
    assert isinstance(actual["state_dict"], collections.OrderedDict)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_refuses_any_other_global_before_calling_it(tmp_path, zip_format):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hook": Exploit()}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError) as error:
        read_torch_file(path)
    message = str(error.value)
    assert "\n" not in message and f"{os.system.__module__}.system" in message
    assert not marker.exists()

    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": Marker()}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError, match="test_convert_format.Marker"):
        read_torch_file(path)


def test_refuses_a_plain_pickle_of_os_system(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(os.system, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_torch_file(path)


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path):
    """A crafted size or stride must not read memory outside the storage (as_strided would)."""
    storage = torch.arange(6, dtype=torch.float32).untyped_storage()

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, (1000,), (1,), False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 6) if obj is storage else None

    data = io.BytesIO()
    Pickler(data, protocol=2).dump({"w": Tensor()})
    path = tmp_path / "crafted.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data.getvalue())
        archive.writestr("archive/data/0", np.arange(6, dtype=np.float32).tobytes())
    with pytest.raises(ValueError, match="past the end of its storage"):
        read_torch_file(path)


def test_truncated_files_are_one_line_errors(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.randn(64, 64)}, path)
    data = path.read_bytes()
    for name, size in (("zip", len(data) // 2), ("zip_head", 40)):
        cut = tmp_path / f"{name}.pth"
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match="truncated") as error:
            read_torch_file(cut)
        assert "\n" not in str(error.value)
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=False)
    cut = tmp_path / "legacy.pth"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_torch_file(cut)


def test_written_state_dict_loads_in_torch(tmp_path):
    state = collections.OrderedDict((k, v.detach().numpy()) for k, v in tensors().items())
    path = write_torch_file(state, tmp_path / "out.pth")
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not left private by the temporary file
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert isinstance(loaded, collections.OrderedDict) and list(loaded) == list(state)
        for key, value in state.items():
            assert loaded[key].numpy().dtype == value.dtype and tuple(loaded[key].shape) == value.shape
            assert loaded[key].numpy().tobytes() == np.ascontiguousarray(value).tobytes()
    assert_same(state, read_torch_file(path))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_numpy_pickle_names_numpy_1_paths(tmp_path):
    """detectron2 reads its .pkl with plain pickle; numpy 1.x cannot import numpy 2's `numpy._core`."""
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(5, np.int64), "b": np.array([True, False])}
    path = write_numpy_pickle({"model": arrays, "__author__": "test", "matching_heuristics": True}, tmp_path / "d2.pkl")
    raw = path.read_bytes()
    assert b"numpy._core" not in raw and b"numpy.core.multiarray\n_reconstruct" in raw
    with open(path, "rb") as f:
        loaded = pickle.load(f, encoding="latin1")
    assert loaded["__author__"] == "test" and loaded["matching_heuristics"] is True
    assert_same(arrays, loaded["model"])


def test_unknown_dtype_is_refused_by_the_writer(tmp_path):
    with pytest.raises(TypeError, match="complex64"):
        write_torch_file({"c": np.zeros(2, np.complex64)}, tmp_path / "c.pth")
    assert not list(tmp_path.iterdir())
    assert torch_format.ALIGNMENT == 64
