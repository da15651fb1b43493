"""The only place that builds ONNX nodes: a small, opset-aware graph writer.

Layers never call ``onnx.helper`` themselves; they call :meth:`Emitter.op` and
the helpers below, which pick the right form for the target opset (e.g. axes
as an attribute or an input) and give every node a readable, unique name and a
``doc_string`` pointing at the user's source line.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Emitter", "ONNX_DTYPE", "MIN_OPSET", "MAX_OPSET", "DEFAULT_OPSET"]

MIN_OPSET = 17
MAX_OPSET = 21
DEFAULT_OPSET = 17

ONNX_DTYPE = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "float64": TensorProto.DOUBLE,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "bool": TensorProto.BOOL,
    "string": TensorProto.STRING,
}


class Emitter:
    """Accumulates nodes, initializers and constants for one ONNX graph."""

    def __init__(self, opset: int = DEFAULT_OPSET):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self._names: set[str] = set()
        self._node_names: set[str] = set()
        self._consts: dict[tuple, str] = {}
        self._const_values: dict[str, np.ndarray] = {}
        self._prefix = ""
        self._doc = ""

    # -- naming ---------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A value or node name not used yet in this graph, derived from ``base``."""
        name, i = base, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def _node_name(self, base: str) -> str:
        name, i = base, 1
        while name in self._node_names:
            name = f"{base}_{i}"
            i += 1
        self._node_names.add(name)
        return name

    def reserve(self, name: str) -> None:
        self._names.add(name)

    @contextmanager
    def scope(self, prefix: str, doc: str = ""):
        """Name the nodes emitted inside after ``prefix``; ``doc`` is the source span."""
        old = self._prefix, self._doc
        self._prefix, self._doc = prefix, doc
        try:
            yield
        finally:
            self._prefix, self._doc = old

    # -- nodes ------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, out: str | None = None,
           **attrs: Any):
        """Emit one node; returns its output name (or names if ``n_out > 1``)."""
        base = f"{self._prefix}/{op_type}" if self._prefix else op_type
        outs = [out or self.fresh(base if n_out == 1 else f"{base}:{i}") for i in range(n_out)]
        if out:
            self._names.add(out)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(op_type, list(inputs), outs, name=self._node_name(base), **attrs)
        if self._doc:
            node.doc_string = self._doc
        self.nodes.append(node)
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype: str | None = None, hint: str = "const") -> str:
        """A constant tensor (deduplicated), emitted as a ``Constant`` node."""
        arr = np.asarray(value, dtype=dtype) if dtype else np.asarray(value)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key in self._consts:
            return self._consts[key]
        name = self.fresh(f"{hint}")
        node = helper.make_node("Constant", [], [name], name=self._node_name(f"{hint}/Constant"),
                                value=numpy_helper.from_array(arr, name))
        self.nodes.append(node)
        self._consts[key] = name
        self._const_values[name] = arr
        return name

    def constant_value(self, name: str) -> np.ndarray | None:
        """The value of a constant emitted by :meth:`const` (``None`` for other values)."""
        return self._const_values.get(name)

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Store a weight as an initializer under exactly ``name`` (once)."""
        if name not in self.initializers:
            self._names.add(name)
            self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    # -- opset-aware helpers -----------------------------------------------------
    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), hint="shape")

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool = False) -> str:
        """ReduceMean/Max/Sum...: axes became an input in opset 18 (13 for ReduceSum)."""
        axes_as_input = op_type == "ReduceSum" or self.opset >= 18
        if axes_as_input:
            return self.op(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=list(axes), keepdims=int(keepdims))

    def split_equal(self, x: str, n: int, axis: int = 0) -> list[str]:
        """``x`` split into ``n`` equal parts along ``axis`` (whose size need not be known):
        ``Split`` without sizes, ``num_outputs`` from opset 18."""
        if n == 1:
            return [x]
        attrs = {"num_outputs": n} if self.opset >= 18 else {}
        return self.op("Split", [x], n_out=n, axis=axis, **attrs)

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.op("Transpose", [x], perm=list(perm))

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.ints(shape)])

    def cast(self, x: str, dtype: str) -> str:
        return self.op("Cast", [x], to=ONNX_DTYPE[dtype])

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", [x, self.ints(axes)])

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Squeeze", [x, self.ints(axes)])

    def scalar(self, v: float, dtype: str = "float32") -> str:
        return self.const(np.asarray(v, dtype=dtype), hint="scalar")
