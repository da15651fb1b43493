"""Graph functions of the language: ``a + b``, ``a @ b``, ``relu(x)``, ``concat``, ``mean``...

Each is an op: a :class:`Layer` without weights (``is_op = True``), so it lives
in the same IR as layers, is shape-checked the same way and lowers the same way.
``FUNCTIONS`` maps the language's function names to Python callables that take
tensors and compile-time arguments and return tensors.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..errors import KdslError
from ..ir import BATCH, TensorType, Value, broadcast_shapes
from ..lower.context import CF, CL
from .activations import ACTIVATIONS, ALIASES, AXIS_ACTIVATIONS, canonical_activation
from .args import ArgError, check_int
from .base import Layer, ShapeError
from .core import activate

__all__ = ["binary_op", "FUNCTIONS", "Binary", "ActivationOp", "Mean", "function_names"]

_ONNX_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div"}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@"}


def _norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank:
        raise ArgError(f"`{what}` must be an int in [{-rank}, {rank - 1}] for a tensor of rank {rank}. "
                       f"Received: {what}={axis!r}", what)
    return axis % rank


class Binary(Layer):
    """Elementwise ``+ - * /`` with NumPy broadcasting, or ``@`` (matmul). A Python number
    operand becomes a scalar constant of the tensor's dtype."""

    supports_masking = True

    is_op = True
    arity = "list"

    def __init__(self, op: str, constant: float | None = None, const_first: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self.op = op
        self.constant = constant
        self.const_first = const_first

    def display_name(self):
        return self.name or self.op

    def type_name(self):
        return self.op

    def compute_output_types(self, input_types):
        if self.constant is not None:
            return [input_types[0]]
        a, b = input_types
        sym = _SYMBOL[self.op]
        if a.dtype != b.dtype:
            raise ShapeError(f"Operands of '{sym}' must have the same dtype. Received: {a} {sym} {b}")
        if self.op == "matmul":
            if a.rank < 2 or b.rank < 2:
                raise ShapeError(f"Operands of '@' need rank >= 2. Received: {a} @ {b}")
            if a.shape[-1] != b.shape[-2]:
                raise ShapeError(f"'@' needs the last axis of the left operand to equal the second-to-last "
                                 f"axis of the right one. Received: shapes {a.shape_str()} @ {b.shape_str()}")
            batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
            if batch is None:
                raise ShapeError(f"'@' cannot broadcast the leading axes. Received: shapes "
                                 f"{a.shape_str()} @ {b.shape_str()}")
            return [TensorType(a.dtype, batch + (a.shape[-2], b.shape[-1]))]
        shape = broadcast_shapes(a.shape, b.shape)
        if shape is None:
            raise ShapeError(f"Operands of '{sym}' have incompatible shapes. Received: {a.shape_str()} "
                             f"{sym} {b.shape_str()}",
                             hint="shapes broadcast like NumPy's: axes must be equal or 1")
        return [TensorType(a.dtype, shape)]

    def lower(self, ctx, node):
        e = ctx.e
        if self.constant is not None:
            x, layout = ctx.get_any(node.inputs[0])
            # of the tensor's rank: much faster broadcasting in onnxruntime than a rank-0 scalar
            c = e.const(np.full([1] * node.inputs[0].type.rank, self.constant, dtype=node.inputs[0].type.dtype),
                        hint="scalar")
            args = [c, x] if self.const_first else [x, c]
            return e.op(_ONNX_BINARY[self.op], args), layout
        if self.op == "matmul":
            a, b = (ctx.get(v, CL) for v in node.inputs)
            return e.op("MatMul", [a, b])
        (a, b), layout = ctx.get_same(node.inputs)
        return e.op(_ONNX_BINARY[self.op], [a, b]), layout


class NotZero(Layer):
    """The mask of ``Embedding(mask_zero=True)``: ``ids != 0`` as bool, same shape as the ids."""

    is_op = True

    def type_name(self):
        return "mask"

    def compute_output_types(self, input_types):
        return [input_types[0].with_dtype("bool")]

    def lower(self, ctx, node):
        v = node.inputs[0]
        x = ctx.get(v, CL)
        zero = ctx.e.const(np.asarray(0, dtype=v.type.dtype), hint="zero")
        return ctx.e.op("Not", [ctx.e.op("Equal", [x, zero])])


def binary_op(op: str, a: Any, b: Any, span=None) -> Value:
    """``a <op> b`` where at least one side is a tensor and the other may be a number."""
    from .base import python_call_site

    span = span or python_call_site()
    if isinstance(a, Value) and isinstance(b, Value):
        return Binary(op)([a, b], span=span)
    if op == "matmul":
        raise KdslError("'@' needs two tensors. Received: a tensor and a number.", span)
    if isinstance(a, Value) and _is_number(b):
        return Binary(op, constant=_constant_for(a, b, op, span))([a], span=span)
    if isinstance(b, Value) and _is_number(a):
        return Binary(op, constant=_constant_for(b, a, op, span), const_first=True)([b], span=span)
    other = b if isinstance(a, Value) else a
    raise KdslError(f"Unsupported operand for '{_SYMBOL.get(op, op)}': expected a tensor or a number. "
                    f"Received: {type(other).__name__} {other!r:.40}", span)


def _constant_for(t: Value, c, op: str, span):
    """A number as a constant of the tensor's dtype; refuse what would silently truncate."""
    if t.type.is_float:
        return float(c)
    if op == "div":
        raise KdslError(f"'/' on an integer tensor ({t.type}) would truncate; cast it to float first, "
                        "e.g. with a float32 input.", span)
    if float(c) != int(c):
        raise KdslError(f"Cannot combine the integer tensor {t.type} with the non-integer number {c!r}; "
                        "it would be truncated.", span)
    return int(c)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class ActivationOp(Layer):
    """``relu(x)``, ``softmax(x, axis=-1)``...: an activation as a function."""

    supports_masking = True

    is_op = True

    def __init__(self, activation: str, axis: int = -1, name: str | None = None):
        super().__init__(name=name)
        self.activation = canonical_activation(activation)
        self.axis = axis

    def display_name(self):
        return self.name or self.activation

    def type_name(self):
        return self.activation

    def compute_output_types(self, input_types):
        t = input_types[0]
        if not t.is_float:
            raise ShapeError(f"{self.activation}() needs a floating-point tensor. Received: {t}")
        if self.activation in AXIS_ACTIVATIONS:
            self._axis = _norm_axis(self.axis, t.rank)
        return [t]

    def lower(self, ctx, node):
        v = node.inputs[0]
        if self.activation in AXIS_ACTIVATIONS:
            return ctx.e.op("Softmax" if self.activation == "softmax" else "LogSoftmax",
                            [ctx.get(v, CL)], axis=self._axis)
        x, layout = ctx.get_any(v)
        return activate(ctx, self.activation, x, layout), layout


class Mean(Layer):
    """``mean(x, axis=1, keepdims=false)``: the mean over one or more axes (batch is axis 0)."""

    is_op = True

    def __init__(self, axis: Any = -1, keepdims: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.axis = axis
        self.keepdims = bool(keepdims)

    def type_name(self):
        return "mean"

    def compute_output_types(self, input_types):
        t = input_types[0]
        axes = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        self._axes = sorted({_norm_axis(a, t.rank) for a in axes})
        if 0 in self._axes:
            raise ArgError("mean() cannot reduce the batch axis (axis 0). Received: "
                           f"axis={self.axis!r}", "axis")
        if self.keepdims:
            shape = tuple(1 if i in self._axes else d for i, d in enumerate(t.shape))
        else:
            shape = tuple(d for i, d in enumerate(t.shape) if i not in self._axes)
        return [t.with_shape(shape)]

    def lower(self, ctx, node):
        return ctx.e.reduce("ReduceMean", ctx.get(node.inputs[0], CL), self._axes, self.keepdims)


def _activation_fn(name: str) -> Callable:
    def fn(x, axis: int = -1, span=None):
        _need_tensor(x, name, span)
        if name not in AXIS_ACTIVATIONS and axis != -1:
            raise ArgError(f"{name}() takes no `axis` argument. Received: axis={axis!r}", "axis")
        return ActivationOp(name, axis=axis)(x, span=span)
    fn.__name__ = name
    return fn


def _need_tensor(x, fname: str, span) -> None:
    if not isinstance(x, Value):
        raise KdslError(f"{fname}() needs a tensor argument. Received: {type(x).__name__} {x!r:.40}", span)


def _need_tensors(xs, fname: str, span) -> list:
    if not isinstance(xs, (list, tuple)) or not xs or not all(isinstance(x, Value) for x in xs):
        raise KdslError(f"{fname}() needs a list of tensors, e.g. {fname}([a, b]). "
                        f"Received: {xs!r:.60}", span)
    return list(xs)


def _concat(tensors, axis: int = -1, span=None):
    from .merge import Concatenate

    return Concatenate(axis=axis)(_need_tensors(tensors, "concat", span), span=span)


def _add(tensors, span=None):
    from .merge import Add

    return Add()(_need_tensors(tensors, "add", span), span=span)


def _reshape(x, shape, span=None):
    from .reshaping import Reshape

    _need_tensor(x, "reshape", span)
    return Reshape(shape)(x, span=span)


def _flatten(x, span=None):
    from .reshaping import Flatten

    _need_tensor(x, "flatten", span)
    return Flatten()(x, span=span)


def _transpose(x, perm, span=None):
    from .reshaping import Permute

    _need_tensor(x, "transpose", span)
    if isinstance(perm, (list, tuple)) and len(perm) == x.type.rank and perm and perm[0] == 0:
        perm = [p for p in perm[1:]]  # full permutation with batch first: drop it
    return Permute(perm)(x, span=span)


def _mean(x, axis=-1, keepdims: bool = False, span=None):
    _need_tensor(x, "mean", span)
    return Mean(axis=axis, keepdims=keepdims)(x, span=span)


FUNCTIONS: dict[str, Callable] = {
    **{name: _activation_fn(name) for name in list(ACTIVATIONS) + list(ALIASES) if name not in ("linear", "none")},
    "concat": _concat,
    "add": _add,
    "reshape": _reshape,
    "flatten": _flatten,
    "transpose": _transpose,
    "mean": _mean,
}


def function_names() -> list[str]:
    return sorted(FUNCTIONS)
