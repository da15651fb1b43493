"""Reading training data files into ``{name: array}`` dicts for a model's inputs and outputs.

Formats (chosen by file name; ``.gz`` allowed for IDX and CSV/TSV):

* ``.npz`` -- arrays named after the model's inputs and outputs, or ``x``/``y`` for a
  single-input/single-output model. Loaded with ``allow_pickle=False``: object arrays
  are refused, never unpickled. An archive with one array that matches no name fills
  the next slot, like a ``.npy`` file.
* ``.npy`` -- one array (no pickles either).
* IDX (``.idx``, ``.idx3``, ``*-ubyte``; MNIST's format) -- one array, parsed from its
  big-endian header here; MNIST images come back as uint8 ``[N, 28, 28]``.
* ``.csv``/``.tsv`` -- a header row; columns named after an output are targets and all
  other columns are the features of the model's single input. Quotes are not special.

Files that hold one unnamed array (IDX, ``.npy``) fill the inputs, then the outputs, in order.
Inputs are reshaped to the declared shape when the number of values per sample matches
(MNIST ``[N, 28, 28]`` -> ``[N, 28, 28, 1]``) and cast to the declared dtype (values are not
rescaled). Targets are reshaped/cast the same way when they match the output's shape;
integer class labels that do not (sparse labels for a softmax output) are returned as
int64 ``[N]``. Anything else is refused with a :class:`~kdsl.errors.KdslError`.
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import os
import re
import struct
import zipfile
import zlib
from typing import Sequence

import numpy as np

from ..errors import KdslError, Span
from ..ir import DTYPES, TensorType

__all__ = ["load_data", "parse_rows", "read_idx", "MAX_ARRAY_BYTES"]

MAX_ARRAY_BYTES = 8 * 1024 ** 3
"""The largest array one data file may hold (refused before it is decompressed or read)."""

_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error)


def parse_rows(text: str) -> slice:
    """Parse a row range such as ``"0:8000"``, ``"8000:"``, ``"-2000:"`` or ``"::2"`` into a slice."""
    m = re.fullmatch(r"\s*([+-]?\d+)?\s*:\s*([+-]?\d+)?\s*(?::\s*([+-]?\d+)?\s*)?", str(text))
    if not m:
        raise KdslError(f"Expected a row range like '0:8000' (start:stop[:step]). Received: rows={text!r}")
    start, stop, step = (None if g is None else int(g) for g in m.groups())
    if step == 0:
        raise KdslError(f"The step of a row range cannot be 0. Received: rows={text!r}")
    return slice(start, stop, step)


# -- readers --------------------------------------------------------------------------------

def _open_binary(path: str):
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise KdslError(f"No such data file: {path}") from None
    except OSError as e:
        raise KdslError(f"Cannot open data file {path}: {e.strerror or e}") from None
    if f.read(2) == b"\x1f\x8b":
        f.seek(0)
        return gzip.GzipFile(fileobj=f, mode="rb")
    f.seek(0)
    return f


def _read_exact(f, n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = f.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array of its native dtype.

    The header is ``0x00 0x00 <type> <ndim>`` then ``ndim`` big-endian uint32 dims; type
    0x08 is uint8 (MNIST), 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
    Truncated, corrupt or oversized files are refused.
    """
    path = os.fspath(path)
    f = _open_binary(path)
    try:
        with f:
            head = _read_exact(f, 4)
            if len(head) < 4:
                raise KdslError(f"{path} is not an IDX file: it is only {len(head)} bytes long.")
            if head[0] or head[1] or head[2] not in _IDX_DTYPES or head[3] == 0:
                raise KdslError(f"{path} is not an IDX file: magic number 0x{head.hex()}; expected "
                                "0x000008NN (uint8 data, NN dimensions) or another IDX type code.")
            ndim = head[3]
            raw_dims = _read_exact(f, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise KdslError(f"{path} is truncated: its IDX header promises {ndim} dimensions "
                                f"but the file ends after {len(raw_dims) // 4}.")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            nbytes = math.prod(dims) * dtype.itemsize
            shape = " x ".join(map(str, dims))
            if nbytes > MAX_ARRAY_BYTES:
                raise KdslError(f"{path}: its IDX header declares a {shape} array ({nbytes:,} bytes); the limit "
                                f"is {MAX_ARRAY_BYTES:,} bytes.")
            data = _read_exact(f, nbytes)
            if len(data) < nbytes:
                raise KdslError(f"{path} is truncated: its IDX header declares a {shape} {dtype.name} array "
                                f"({nbytes:,} bytes of data) but only {len(data):,} bytes follow the header.")
            if f.read(1):
                raise KdslError(f"{path} is not a valid IDX file: there are bytes after the {shape} array "
                                "its header declares.")
    except _DECOMPRESS_ERRORS as e:
        raise KdslError(f"Cannot read {path}: corrupt or truncated gzip data ({e}).") from None
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _check_npy_header(f, size: int, where: str) -> None:
    """Read a .npy header (never its data) and refuse object, oversized or truncated arrays."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise KdslError(f"{where} uses .npy format version {version}; kdsl reads versions 1.0 and 2.0.")
    except ValueError as e:
        raise KdslError(f"{where} is not a valid .npy array: {e}") from None
    if dtype.hasobject:
        raise KdslError(f"{where} has dtype object (pickled Python objects); kdsl never unpickles data files.",
                        hint="save plain numeric arrays with np.save / np.savez")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise KdslError(f"{where} declares a {shape} {dtype} array ({nbytes:,} bytes); the limit is "
                        f"{MAX_ARRAY_BYTES:,} bytes.")
    available = size - f.tell()
    if nbytes > available:
        raise KdslError(f"{where} is truncated: its header declares a {shape} {dtype} array ({nbytes:,} bytes) "
                        f"but only {max(available, 0):,} bytes follow.")


def _load_npy(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            _check_npy_header(f, os.fstat(f.fileno()).st_size, path)
        arr = np.load(path, allow_pickle=False)
    except KdslError:
        raise
    except FileNotFoundError:
        raise KdslError(f"No such data file: {path}") from None
    except (ValueError, OSError, EOFError) as e:
        raise KdslError(f"Cannot read {path} as a .npy file: {e}") from None
    return arr


class _Npz:
    """An .npz archive opened without pickles; arrays are read (and checked) only when used."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.npz = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise KdslError(f"No such data file: {path}") from None
        except ValueError as e:
            if "pickle" in str(e).lower():
                raise KdslError(f"{path} is a pickle, not an .npz archive; kdsl never unpickles data files.") \
                    from None
            raise KdslError(f"Cannot read {path} as an .npz archive: {e}") from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise KdslError(f"Cannot read {path} as an .npz archive: {e}") from None
        if not isinstance(self.npz, np.lib.npyio.NpzFile):
            raise KdslError(f"{path} is not an .npz archive (it holds a single array); name it .npy.")
        self.names = list(self.npz.files)

    def __getitem__(self, name: str) -> np.ndarray:
        where = f"array '{name}' in {self.path}"
        try:
            member = name + ".npy"
            with self.npz.zip.open(member) as f:
                _check_npy_header(f, self.npz.zip.getinfo(member).file_size, where)
            return self.npz[name]
        except KdslError:
            raise
        except ValueError as e:
            raise KdslError(f"Cannot read {where}: {e}") from None
        except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise KdslError(f"Cannot read {where}: corrupt archive ({e}).") from None

    def close(self) -> None:
        self.npz.close()


def _read_table(path: str) -> tuple[list[str], np.ndarray]:
    """Header and float64 values of a CSV/TSV file (quotes are ordinary characters)."""
    base = path[:-3] if path.endswith(".gz") else path
    delimiter = "\t" if base.lower().endswith(".tsv") else ","
    f = _open_binary(path)
    try:
        with f, io.TextIOWrapper(f, encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text, delimiter=delimiter, quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            while header == []:
                header = next(reader, None)
            if header is None:
                raise KdslError(f"{path} is empty; expected a header row naming the columns.")
            header = [h.strip() for h in header]
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup or "" in header:
                raise KdslError(f"The header of {path} must name every column once. Received: {header}.",
                                Span(path, reader.line_num, 1))
            rows = []
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise KdslError(f"Expected {len(header)} fields, as in the header. Received: {len(row)}.",
                                    Span(path, reader.line_num, 1))
                try:
                    rows.append([float(v) for v in row])
                except ValueError:
                    rows.append(_parse_row_slowly(row, header, path, reader.line_num))
    except UnicodeDecodeError as e:
        raise KdslError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    except csv.Error as e:
        raise KdslError(f"Cannot read {path} as CSV: {e}") from None
    except _DECOMPRESS_ERRORS as e:
        raise KdslError(f"Cannot read {path}: corrupt or truncated gzip data ({e}).") from None
    values = np.array(rows, dtype=np.float64).reshape(len(rows), len(header))
    return header, values


def _parse_row_slowly(row: list[str], header: list[str], path: str, line: int) -> list[float]:
    col = 1
    out = []
    for i, v in enumerate(row):
        try:
            out.append(float(v))
        except ValueError:
            what = "an empty value" if not v.strip() else repr(v)
            raise KdslError(f"Cannot parse {what} as a number in column {i + 1} ('{header[i]}').",
                            Span(path, line, col, line, col + max(len(v), 1))) from None
        col += len(v) + 1
    return out


# -- fitting arrays to the model -----------------------------------------------------------

def _kind(path: str) -> str:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".npy"):
        return "npy"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if name.endswith("-ubyte") or re.search(r"\.idx\d*$", name):
        return "idx"
    raise KdslError(f"Unknown data file type: {path}. Expected .npz, .npy, .csv, .tsv or IDX "
                    "(.idx, *-ubyte, optionally .gz).")


def _describe(t: TensorType) -> str:
    return f"{t.dtype} {t.shape_str().replace('batch', 'None')}"


def _fit(arr: np.ndarray, name: str, t: TensorType, role: str, where: str) -> np.ndarray:
    """Reshape/cast ``arr`` to the declared type ``t`` of input/output ``name``."""
    expected = f"{role} '{name}' expects {_describe(t)}"
    if arr.dtype.kind not in "biuf":
        raise KdslError(f"Cannot use {where} for {role} '{name}': it has dtype {arr.dtype}, not numbers. "
                        f"The {expected}.")
    if arr.ndim == 0:
        raise KdslError(f"Cannot use {where} for {role} '{name}': it is a scalar, not one value per sample.")
    n, want = arr.shape[0], t.shape[1:]
    per_sample = math.prod(arr.shape[1:])
    if all(isinstance(d, int) for d in want):
        if tuple(arr.shape[1:]) != tuple(want) and per_sample == math.prod(want):
            arr = arr.reshape((n,) + tuple(want))
    elif arr.ndim == len(t.shape) - 1 and want[-1] == 1:
        arr = arr[..., None]
    fits = arr.ndim == len(t.shape) and all(not isinstance(d, int) or d == g for d, g in zip(want, arr.shape[1:]))
    if not fits:
        if role == "output" and per_sample == 1 and _integral(arr):
            return _cast(arr.reshape(n), "int64", where, f"class labels for {role} '{name}'")
        raise KdslError(f"Cannot use {where} for {role} '{name}': its shape is {tuple(arr.shape)} "
                        f"({per_sample} values per sample). The {expected}"
                        f" ({_per_sample(want)} values per sample).")
    return _cast(arr, t.dtype, where, f"{role} '{name}'")


def _per_sample(dims) -> str:
    return str(math.prod(dims)) if all(isinstance(d, int) for d in dims) else "a matching number of"


def _integral(arr: np.ndarray) -> bool:
    if arr.dtype.kind in "biu":
        return True
    return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))


def _cast(arr: np.ndarray, dtype: str, where: str, what: str) -> np.ndarray:
    target = DTYPES[dtype]
    if arr.dtype == target:
        return np.ascontiguousarray(arr)
    if target.kind == "f" or arr.size == 0:
        return np.ascontiguousarray(arr.astype(target))
    if target.kind == "b":
        if arr.dtype.kind != "b" and not np.all((arr == 0) | (arr == 1)):
            raise KdslError(f"Cannot use {where} for {what} (bool): it has values other than 0 and 1.")
        return np.ascontiguousarray(arr.astype(target))
    if arr.dtype.kind == "f" and not _integral(arr):
        raise KdslError(f"Cannot use {where} for {what} ({dtype}): it has non-integer values.")
    info = np.iinfo(target)
    lo, hi = arr.min(), arr.max()
    if lo < info.min or hi > info.max:
        raise KdslError(f"Cannot use {where} for {what} ({dtype}): its values ({lo} to {hi}) do not fit.")
    return np.ascontiguousarray(arr.astype(target))


def load_data(paths: Sequence[str] | str, inputs: Sequence[tuple[str, TensorType]],
              outputs: Sequence[tuple[str, TensorType]], rows: slice | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read data files into ``(x, y)``: dicts of arrays by input name and by output name.

    Args:
        paths: data files (see the module docstring for formats). Files holding one
            unnamed array (IDX, ``.npy``) fill the inputs then the outputs in order,
            e.g. ``["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]``.
        inputs: the model's ``(name, TensorType)`` inputs.
        outputs: the model's ``(name, TensorType)`` outputs; pass ``[]`` to read inputs only.
        rows: keep only these samples (see :func:`parse_rows`), e.g. ``slice(0, 8000)``.

    Returns:
        ``(x, y)`` with every array's first axis the sample axis. Every input must be
        given; outputs the files give no data for are left out of ``y`` (the caller
        decides whether they need targets).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise KdslError("No data files given.")
    slots = [(n, t, "input") for n, t in inputs] + [(n, t, "output") for n, t in outputs]
    found: dict[str, tuple[np.ndarray, str]] = {}

    def put(slot_name: str, arr: np.ndarray, where: str) -> None:
        if slot_name in found:
            raise KdslError(f"Two data sources fill '{slot_name}': {found[slot_name][1]} and {where}.")
        found[slot_name] = (arr, where)

    def put_next(arr: np.ndarray, where: str) -> None:
        free = [n for n, _, _ in slots if n not in found]
        if not free:
            names = [n for n, _, _ in slots]
            raise KdslError(f"More data than the model takes: {where} is left over once its inputs and outputs "
                            f"{names} are filled.")
        put(free[0], arr, where)

    for path in paths:
        kind = _kind(path)
        if kind in ("idx", "npy"):
            put_next(read_idx(path) if kind == "idx" else _load_npy(path), path)
        elif kind == "npz":
            _take_npz(_Npz(path), inputs, outputs, put, put_next)
        else:
            _take_table(path, inputs, outputs, put)

    missing = [f"input '{n}'" for n, _, role in slots if role == "input" and n not in found]
    if missing:
        raise KdslError(f"The data files {paths} give no data for {', '.join(missing)}.",
                        hint="name .npz arrays and CSV columns after the model's inputs and outputs, or pass "
                             "one single-array file per input, then per output, in order")
    slots = [s for s in slots if s[0] in found]
    counts = {found[n][1]: found[n][0].shape[0] if found[n][0].ndim else 1 for n, _, _ in slots}
    if len(set(counts.values())) > 1:
        raise KdslError("All data must have the same number of samples. Received: "
                        + ", ".join(f"{c} in {w}" for w, c in counts.items()) + ".")
    x: dict[str, np.ndarray] = {}
    y: dict[str, np.ndarray] = {}
    for name, t, role in slots:
        arr, where = found[name]
        if rows is not None and arr.ndim:
            arr = arr[rows]
            if arr.shape[0] == 0:
                raise KdslError(f"rows={_slice_text(rows)} selects no samples of {where} "
                                f"({found[name][0].shape[0]} samples).")
        (x if role == "input" else y)[name] = _fit(arr, name, t, role, where)
    return x, y


def _slice_text(s: slice) -> str:
    text = f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}"
    return text + (f":{s.step}" if s.step is not None else "")


def _take_npz(npz: _Npz, inputs, outputs, put, put_next) -> None:
    try:
        matched = False
        for group, alias in ((inputs, "x"), (outputs, "y")):
            for name, _ in group:
                key = name if name in npz.names else (alias if len(group) == 1 and alias in npz.names else None)
                if key is not None:
                    put(name, npz[key], f"array '{key}' in {npz.path}")
                    matched = True
        if not matched:
            if len(npz.names) != 1:
                wanted = [n for n, _ in list(inputs) + list(outputs)]
                raise KdslError(f"No array in {npz.path} is named after the model's inputs or outputs {wanted}. "
                                f"Received arrays: {npz.names}.",
                                hint="name them after the inputs and outputs (or 'x' and 'y' for a "
                                     "single-input, single-output model)")
            key = npz.names[0]
            put_next(npz[key], f"array '{key}' in {npz.path}")
    finally:
        npz.close()


def _take_table(path: str, inputs, outputs, put) -> None:
    header, values = _read_table(path)
    targets = {}
    for name, _ in outputs:
        if name in header:
            targets[name] = name
        elif len(outputs) == 1 and "y" in header:
            targets[name] = "y"
    for name, column in targets.items():
        col = values[:, header.index(column)]
        if _integral(col):
            col = col.astype(np.int64)
        put(name, col, f"column '{column}' of {path}")
    features = [h for h in header if h not in targets.values()]
    if not features:
        return
    if len(inputs) != 1:
        raise KdslError(f"The feature columns of {path} can only fill a model with one input. This model has "
                        f"{len(inputs)}: {[n for n, _ in inputs]}.")
    idx = [header.index(h) for h in features]
    put(inputs[0][0], values[:, idx], f"the {len(idx)} feature column{'s' if len(idx) > 1 else ''} of {path}")
