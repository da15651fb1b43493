"""Tensor types of the IR: a dtype and a shape of ints and named symbolic dims."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

__all__ = ["Dim", "DTYPES", "TensorType", "BATCH", "numel", "format_dim", "broadcast_shapes"]

Dim = Union[int, str]
"""A dimension: a non-negative int, or a symbol name shared by every use."""

BATCH = "batch"
"""The name of the implicit, symbolic batch axis (axis 0 of every tensor)."""

DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("float32"),
    "float16": np.dtype("float16"),
    "float64": np.dtype("float64"),
    "int32": np.dtype("int32"),
    "int64": np.dtype("int64"),
    "bool": np.dtype("bool"),
    "string": np.dtype(object),      # Python str objects (raw text for TextVectorization)
}
FLOAT_DTYPES = ("float16", "float32", "float64")
INT_DTYPES = ("int32", "int64")


@dataclass(frozen=True)
class TensorType:
    """A tensor's dtype and full shape, batch axis included (``shape[0]``)."""

    dtype: str
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_int(self) -> bool:
        return self.dtype in INT_DTYPES

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(dtype, self.shape)

    def keras_shape(self) -> tuple:
        """The shape as Keras prints it: ``None`` for the batch axis."""
        return tuple(None if d == BATCH else d for d in self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(format_dim(d) for d in self.shape)}]"

    def shape_str(self) -> str:
        return "(" + ", ".join(format_dim(d) for d in self.shape) + ("," if self.rank == 1 else "") + ")"


def format_dim(d: Dim) -> str:
    return "None" if d == BATCH else str(d)


def numel(shape) -> int | None:
    """Number of elements, or ``None`` if a dim is symbolic."""
    n = 1
    for d in shape:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def broadcast_shapes(a: tuple, b: tuple) -> tuple | None:
    """NumPy broadcasting of two shapes with symbols; ``None`` if incompatible."""
    out = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            return None
    return tuple(reversed(out))
