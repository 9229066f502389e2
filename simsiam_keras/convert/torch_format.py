"""PyTorch's checkpoint files, read and written without PyTorch and without unpickling arbitrary objects.

`torch.save` writes one of two formats (torch/serialization.py):

* zip (the default since PyTorch 1.6): `PREFIX/data.pkl`, a pickle whose tensors name their
  storage by a persistent id `("storage", <torch.FloatStorage>, key, location, numel)`, the raw
  little- or big-endian storage bytes in `PREFIX/data/<key>`, and `PREFIX/byteorder`;
* legacy (`_use_new_zipfile_serialization=False`, and every file before 1.6): five pickles in a
  row (a magic number, the protocol version 1001, system info, the object with persistent ids
  `("storage", type, key, location, numel, view)`, the list of storage keys), then each storage
  as an int64 element count followed by its bytes.

The reader's unpickler resolves only the globals in `ALLOWED_GLOBALS`; any other global (a
class, `os.system`, ...) stops it with `UnsafeCheckpointError` naming it, before it is called.
Tensors come back as numpy arrays. `torch.load(weights_only=True)` is not used even when torch is
installed, so the same reader, with the same allowlist, runs everywhere.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# Where the zip writer starts each storage's bytes (PyTorch aligns them to 64 for mmap loading).
ALIGNMENT = 64

# PyTorch's storage classes and their element types.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_, "BFloat16Storage": "bfloat16",
}
_STORAGE_NAMES = {np.dtype(v): k for k, v in STORAGE_DTYPES.items() if v != "bfloat16"}


# What a truncated or malformed pickle raises while it is read.
_MALFORMED = (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, struct.error, KeyError, IndexError,
              TypeError, AttributeError)


class UnsafeCheckpointError(ValueError):
    """The file's pickle names a global outside the allowlist: it is not loaded."""


class _StorageType:
    """Stands for `torch.FloatStorage` and its kind: only its element type is kept."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    """One storage's flat array, filled when its bytes are read."""

    def __init__(self, dtype: Any, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.array: np.ndarray | None = None


class _TensorRef:
    """A tensor named by the pickle, materialised once every storage has been read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        if not isinstance(storage, _Storage):
            raise ValueError("a tensor in the pickle does not refer to a storage")
        for name, values in (("size", size), ("stride", stride)):
            if not (isinstance(values, tuple) and all(isinstance(v, int) and v >= 0 for v in values)):
                raise ValueError(f"a tensor in the pickle has an invalid {name} {values!r}")
        if len(size) != len(stride) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"a tensor in the pickle has an invalid layout ({size}, {stride}, offset {offset})")
        # Every element the view can reach must lie inside its storage.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
        if last >= storage.numel:
            raise ValueError(f"a tensor of size {size} reaches past the end of its storage ({storage.numel} elements)")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> np.ndarray:
        flat = self.storage.array
        if not all(self.size):
            return np.zeros(self.size, flat.dtype)
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False
        )
        return np.array(view, order="C")


def _rebuild_tensor(storage, offset, size, stride, *_unused) -> _TensorRef:
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_unused):
    return data


def _encode(text: str, encoding: str = "latin1") -> bytes:
    # Pickle protocol 2 writes a bytes value as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode in the pickle is only read for latin1 text")
    return text.encode("latin1")


# What a SimSiam checkpoint's pickle may name, and what stands for it here:
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    # state_dicts are OrderedDicts; every tensor's (empty) backward-hook argument is one too.
    ("collections", "OrderedDict"): collections.OrderedDict,
    # How torch.save writes a tensor and a Parameter (torch/_utils.py); _rebuild_tensor is the
    # pre-1.0 form. Here they only record the layout, checked against the storage's size.
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    # The storage classes name the element type in the persistent ids.
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
    # A torch.Size is a tuple of ints.
    ("torch", "Size"): tuple,
    # Protocol 2 (torch.save's) writes bytes, sets and frozensets through these constructors;
    # optimizer and Lightning states may hold them.
    ("_codecs", "encode"): _encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, load_storage: Callable[[tuple], _Storage] | None = None):
        super().__init__(file, encoding="latin1")
        self._path = path
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 names builtins by their Python 2 module.
        module = "builtins" if module == "__builtin__" else module
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(
                f"{self._path}: refused to load: its pickle names {module}.{name}, which is not a tensor, "
                "a storage or a plain container (only those are read, nothing else is run)"
            )
        return found

    def persistent_load(self, pid: Any) -> _Storage:
        if self._load_storage is None or not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise ValueError(f"{self._path}: unexpected persistent id {pid!r:.80} in the pickle")
        return self._load_storage(pid)


def _materialise(obj: Any, memo: dict[int, Any]) -> Any:
    """`obj` with every tensor reference replaced by its numpy array (containers rebuilt, order kept)."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _TensorRef):
        out = obj.materialise()
    elif isinstance(obj, (_Storage, _StorageType)):
        raise ValueError("the pickle holds a bare storage, not a tensor")
    elif isinstance(obj, dict):
        out = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
        memo[id(obj)] = out
        for key, value in obj.items():
            out[key] = _materialise(value, memo)
        return out
    elif isinstance(obj, list):
        out = []
        memo[id(obj)] = out
        out.extend(_materialise(v, memo) for v in obj)
        return out
    elif isinstance(obj, tuple):
        out = tuple(_materialise(v, memo) for v in obj)
    elif isinstance(obj, (set, frozenset)):
        out = type(obj)(_materialise(v, memo) for v in obj)
    else:
        out = obj
    memo[id(obj)] = out
    return out


def _flat_array(data: bytes, dtype: Any, numel: int, little_endian: bool) -> np.ndarray:
    if dtype == "bfloat16":
        # numpy has no bfloat16: its bits are the upper half of a float32.
        raw = np.frombuffer(data, ("<" if little_endian else ">") + "u2", numel).astype(np.uint32)
        return (raw << 16).view(np.float32)
    dt = np.dtype(dtype).newbyteorder("<" if little_endian else ">")
    return np.frombuffer(data, dt, numel).astype(np.dtype(dtype).newbyteorder("="))


def _read_zip(path: Path) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path}: not a complete PyTorch zip file (truncated or corrupt: {error})") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path}: a zip file but not PyTorch's format (no PREFIX/data.pkl record)")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        order = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
        if order not in ("little", "big"):
            raise ValueError(f"{path}: unknown byteorder {order!r}")
        storages: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> _Storage:
            if len(pid) != 5 or not isinstance(pid[1], _StorageType):
                raise ValueError(f"{path}: unexpected storage id {pid!r:.80}")
            _, kind, key, _location, numel = pid
            if key not in storages:
                record = f"{prefix}data/{key}"
                if record not in names:
                    raise ValueError(f"{path}: the zip has no record {record} (truncated file?)")
                data = archive.read(record)
                size = numel * (2 if kind.dtype == "bfloat16" else np.dtype(kind.dtype).itemsize)
                if len(data) < size:
                    raise ValueError(f"{path}: record {record} holds {len(data)} bytes, {size} expected (truncated file?)")
                storage = _Storage(kind.dtype, numel)
                storage.array = _flat_array(data[:size], kind.dtype, numel, order == "little")
                storages[key] = storage
            return storages[key]

        try:
            obj = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path, load_storage).load()
        except _MALFORMED as error:
            raise ValueError(f"{path}: cannot be read (truncated or corrupt: {error})") from None
    return _materialise(obj, {})


def _read_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        try:
            header = [_RestrictedUnpickler(f, path).load() for _ in range(3)]
        except _MALFORMED:
            raise ValueError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor the legacy format)") from None
        if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL or not isinstance(header[2], dict):
            raise ValueError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor the legacy format)")
        # torch/csrc/serialization.cpp writes sizes and data little-endian on every machine.
        little = True
        storages: dict[str, _Storage] = {}
        views: dict[str, tuple[str, int, int]] = {}

        def load_storage(pid: tuple) -> _Storage:
            if len(pid) != 6 or not isinstance(pid[1], _StorageType):
                raise ValueError(f"{path}: unexpected storage id {pid!r:.80}")
            _, kind, key, _location, numel, view = pid
            storages.setdefault(key, _Storage(kind.dtype, numel))
            if view is None:
                return storages[key]
            view_key, offset, view_size = view
            views[view_key] = (key, offset, view_size)
            storages.setdefault(view_key, _Storage(kind.dtype, view_size))
            return storages[view_key]

        try:
            obj = _RestrictedUnpickler(f, path, load_storage).load()
            keys = _RestrictedUnpickler(f, path).load()
            for key in keys:
                storage = storages[key]
                (numel,) = struct.unpack("<q" if little else ">q", f.read(8))
                itemsize = 2 if storage.dtype == "bfloat16" else np.dtype(storage.dtype).itemsize
                data = f.read(numel * itemsize)
                if numel != storage.numel or len(data) != numel * itemsize:
                    raise ValueError(f"{path}: storage {key} is truncated or does not match its tensors")
                storage.array = _flat_array(data, storage.dtype, numel, little)
        except _MALFORMED as error:
            raise ValueError(f"{path}: cannot be read (truncated or corrupt: {error})") from None
    for view_key, (root, offset, size) in views.items():
        storages[view_key].array = storages[root].array[offset : offset + size]
    missing = [key for key, storage in storages.items() if storage.array is None]
    if missing:
        raise ValueError(f"{path}: storage {missing[0]} has no data (truncated file?)")
    return _materialise(obj, {})


def read_torch_file(path: str | Path) -> Any:
    """The object a `torch.save` file holds, tensors as numpy arrays, read without torch.

    Raises FileNotFoundError, UnsafeCheckpointError (a ValueError) for a pickle naming any
    global outside ALLOWED_GLOBALS, or ValueError for a truncated or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return _read_zip(path)
    return _read_legacy(path)


# -- writing -------------------------------------------------------------------------------


class _PickleWriter:
    """Emits pickle opcodes for plain values, so a written file names only the globals chosen here."""

    def __init__(self, protocol: int):
        self.out = io.BytesIO()
        self.out.write(pickle.PROTO + bytes([protocol]))

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def global_(self, module: str, name: str) -> None:
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())

    def value(self, obj: Any, array: Callable[[np.ndarray], None]) -> None:
        """Writes `obj` (None, bool, int, float, str, bytes, tuple, list, dict); numpy arrays via `array`."""
        if obj is None:
            self.write(pickle.NONE)
        elif isinstance(obj, (bool, np.bool_)):
            self.write(pickle.NEWTRUE if obj else pickle.NEWFALSE)
        elif isinstance(obj, (int, np.integer)):
            obj = int(obj)
            if -(2**31) <= obj < 2**31:
                self.write(pickle.BININT + struct.pack("<i", obj))
            else:
                encoded = pickle.encode_long(obj)
                self.write(pickle.LONG1 + bytes([len(encoded)]) + encoded)
        elif isinstance(obj, float):
            self.write(pickle.BINFLOAT + struct.pack(">d", obj))
        elif isinstance(obj, str):
            encoded = obj.encode("utf-8")
            self.write(pickle.BINUNICODE + struct.pack("<I", len(encoded)) + encoded)
        elif isinstance(obj, bytes):
            self.write(pickle.BINBYTES + struct.pack("<I", len(obj)) + obj)
        elif isinstance(obj, tuple):
            self.write(pickle.MARK)
            for item in obj:
                self.value(item, array)
            self.write(pickle.TUPLE)
        elif isinstance(obj, list):
            self.write(pickle.EMPTY_LIST + pickle.MARK)
            for item in obj:
                self.value(item, array)
            self.write(pickle.APPENDS)
        elif isinstance(obj, collections.OrderedDict):
            self.ordered_dict(obj.items(), array)
        elif isinstance(obj, dict):
            self.write(pickle.EMPTY_DICT + pickle.MARK)
            for key, item in obj.items():
                self.value(key, array)
                self.value(item, array)
            self.write(pickle.SETITEMS)
        elif isinstance(obj, np.ndarray):
            array(obj)
        else:
            raise TypeError(f"cannot write a {type(obj).__name__} into a checkpoint")

    def ordered_dict(self, items, array: Callable[[np.ndarray], None]) -> None:
        self.global_("collections", "OrderedDict")
        self.write(pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.MARK)
        for key, item in items:
            self.value(key, array)
            self.value(item, array)
        self.write(pickle.SETITEMS)

    def finish(self) -> bytes:
        self.write(pickle.STOP)
        return self.out.getvalue()


def _padding_extra(offset: int, name: str) -> bytes:
    """A zip extra field ("FB", as PyTorch's writer uses) that makes the record's data start aligned."""
    start = offset + 30 + len(name.encode()) + 4
    return b"FB" + struct.pack("<H", -start % ALIGNMENT) + b"Z" * (-start % ALIGNMENT)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Writes through a temporary file beside `path`, renamed into place only once it is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        # mkstemp creates the file private (0600); give it the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def torch_file_bytes(obj: Mapping[str, Any], file) -> None:
    """Writes `obj` (a mapping whose leaves are numpy arrays or plain values) to `file` in PyTorch's zip format.

    Arrays become tensors (`torch._utils._rebuild_tensor_v2` on a storage of their dtype), each
    with its own storage; an OrderedDict stays one, so a `state_dict` loads as PyTorch's own.
    """
    storages: list[np.ndarray] = []
    writer = _PickleWriter(protocol=2)

    def tensor(array: np.ndarray) -> None:
        array = np.asarray(array, order="C")
        if array.dtype not in _STORAGE_NAMES:
            raise TypeError(f"no PyTorch storage holds {array.dtype} arrays")
        strides = tuple(s // array.itemsize for s in array.strides)
        writer.global_("torch._utils", "_rebuild_tensor_v2")
        writer.write(pickle.MARK + pickle.MARK)
        writer.value("storage", tensor)
        writer.global_("torch", _STORAGE_NAMES[array.dtype])
        for item in (str(len(storages)), "cpu", int(array.size)):
            writer.value(item, tensor)
        writer.write(pickle.TUPLE + pickle.BINPERSID)
        for item in (0, tuple(int(n) for n in array.shape), strides, False):
            writer.value(item, tensor)
        writer.ordered_dict([], tensor)
        writer.write(pickle.TUPLE + pickle.REDUCE)
        storages.append(array)

    writer.value(obj, tensor)
    records = [("data.pkl", writer.finish()), ("byteorder", b"little")]
    records += [(f"data/{i}", a.astype(a.dtype.newbyteorder("<")).tobytes()) for i, a in enumerate(storages)]
    records += [("version", b"3\n")]
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        offset = 0
        for name, data in records:
            info = zipfile.ZipInfo(f"archive/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.extra = _padding_extra(offset, info.filename)
            archive.writestr(info, data)
            offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + len(data)


def write_torch_file(obj: Mapping[str, Any], path: str | Path) -> Path:
    """`obj` as a `.pth` file that `torch.load` reads (PyTorch's zip format), written atomically without torch."""
    path = Path(path)
    _atomic_write(path, lambda f: torch_file_bytes(obj, f))
    return path


def write_numpy_pickle(obj: Mapping[str, Any], path: str | Path) -> Path:
    """`obj` as a plain pickle whose arrays load under numpy 1.x and 2.x (detectron2's `.pkl`), written atomically.

    Arrays are written as numpy 1.x does (`numpy.core.multiarray._reconstruct`), which numpy 2
    still reads, rather than as numpy 2's `numpy._core`, which numpy 1.x cannot import.
    """
    writer = _PickleWriter(protocol=3)

    def array(value: np.ndarray) -> None:
        value = np.asarray(value, order="C")
        dtype = value.dtype.newbyteorder("<") if value.dtype.itemsize > 1 else value.dtype
        writer.global_("numpy.core.multiarray", "_reconstruct")
        writer.global_("numpy", "ndarray")
        writer.value((0,), array)
        writer.value(b"b", array)
        writer.write(pickle.TUPLE3 + pickle.REDUCE)
        writer.write(pickle.MARK)
        writer.value(1, array)
        writer.value(tuple(int(n) for n in value.shape), array)
        writer.global_("numpy", "dtype")
        writer.value((dtype.kind + str(dtype.itemsize), False, True), array)
        writer.write(pickle.REDUCE)
        writer.value((3, "<" if dtype.itemsize > 1 else "|", None, None, None, -1, -1, 0), array)
        writer.write(pickle.BUILD)
        writer.value(False, array)
        writer.value(value.astype(dtype).tobytes(), array)
        writer.write(pickle.TUPLE + pickle.BUILD)

    writer.value(obj, array)
    data = writer.finish()
    path = Path(path)
    _atomic_write(path, lambda f: f.write(data))
    return path
