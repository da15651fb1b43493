"""Merge layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate.

Each is called on a list of tensors, e.g. ``Add()([a, b])``. The elementwise
merges follow Keras: inputs of one rank must have broadcast-compatible shapes
(each axis equal, or 1); a lower-rank input gets size-1 axes inserted after
the batch axis (Keras's ``expand_dims(x, axis=1)``). They are layout-agnostic:
on channels-first inputs they stay channels-first.
"""
from __future__ import annotations

from ..ir import TensorType, broadcast_shapes
from ..lower.context import CF, CL
from .args import ArgError
from .base import Layer, ShapeError, register
from .reshaping import sum_dims

__all__ = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"]


def _shapes(types) -> str:
    return "[" + ", ".join(t.shape_str() for t in types) + "]"


def _expand(shape: tuple, rank: int) -> tuple:
    """Keras's rank alignment: size-1 axes inserted after the batch axis."""
    return shape[:1] + (1,) * (rank - len(shape)) + shape[1:]


class _Merge(Layer):
    """Base of the elementwise merges: shape rule and layout-preserving lowering."""

    arity = "list"
    onnx_op = ""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def _check_count(self, n: int) -> None:
        """Keras 3 merges take one input or more (``Layer.__call__`` refuses an empty list)."""

    def compute_output_types(self, input_types):
        cls = type(self).__name__
        self._check_count(len(input_types))
        dtypes = [t.dtype for t in input_types]
        if len(set(dtypes)) > 1:
            raise ShapeError(f"Inputs of {cls} '{self.display_name()}' must have the same dtype. "
                             f"Received: dtypes {dtypes}")
        rank = max(t.rank for t in input_types)
        shapes = [_expand(t.shape, rank) for t in input_types]
        out = shapes[0]
        for i, s in enumerate(shapes[1:], 1):
            out = broadcast_shapes(out, s)
            if out is None:
                j = next(j for j in range(i) if broadcast_shapes(shapes[j], s) is None)
                raise ShapeError(f"Inputs of {cls} '{self.display_name()}' have incompatible shapes. "
                                 f"Received: shapes {input_types[j].shape_str()} and "
                                 f"{input_types[i].shape_str()}",
                                 hint="shapes must be equal, or 1 where they differ")
        return [TensorType(self._out_dtype(dtypes[0]), out)]

    def _out_dtype(self, dtype: str) -> str:
        return dtype

    def lower(self, ctx, node):
        vs = node.inputs
        rank = max(v.type.rank for v in vs)
        if all(v.type.rank == rank for v in vs):
            xs, layout = ctx.get_same(vs)
        else:
            xs, layout = [], CL
            for v in vs:
                x = ctx.get(v, CL)
                if v.type.rank < rank:
                    x = ctx.e.unsqueeze(x, range(1, 1 + rank - v.type.rank))
                xs.append(x)
        return [(self._merge(ctx.e, xs, node.inputs[0].type.dtype), layout)]

    def _merge(self, e, xs: list[str], dtype: str) -> str:
        y = xs[0]
        for x in xs[1:]:
            y = e.op(self.onnx_op, [y, x])
        return y


@register
class Add(_Merge):
    """Adds a list of inputs elementwise.

    Input shape: a list of tensors of compatible shapes. Output shape: their
    broadcast shape, e.g. ``Add()([a, b])`` for ``a, b`` of shape ``(batch, 16)``
    has shape ``(batch, 16)``.
    """

    onnx_op = "Add"


@register
class Subtract(_Merge):
    """Subtracts two inputs elementwise: ``inputs[0] - inputs[1]``.

    Input shape: a list of exactly 2 tensors of compatible shapes. Output shape:
    their broadcast shape.
    """

    onnx_op = "Sub"

    def _check_count(self, n: int) -> None:
        if n != 2:
            raise ShapeError(f"A `Subtract` layer should be called on exactly 2 inputs. Received: {n} inputs")


@register
class Multiply(_Merge):
    """Multiplies a list of inputs elementwise.

    Input shape: a list of tensors of compatible shapes. Output shape: their broadcast shape.
    """

    onnx_op = "Mul"


@register
class Average(_Merge):
    """Averages a list of inputs elementwise: their sum divided by their number.

    Input shape: a list of tensors of compatible shapes. Output shape: their
    broadcast shape (float32 for integer inputs).
    """

    def _out_dtype(self, dtype):
        return dtype if dtype.startswith("float") else "float32"

    def _merge(self, e, xs, dtype):
        if not dtype.startswith("float"):
            xs, dtype = [e.cast(x, "float32") for x in xs], "float32"
        y = xs[0]
        for x in xs[1:]:
            y = e.op("Add", [y, x])
        return e.op("Div", [y, e.scalar(len(xs), dtype)])


@register
class Maximum(_Merge):
    """The elementwise maximum of a list of inputs.

    Input shape: a list of tensors of compatible shapes. Output shape: their broadcast shape.
    """

    def _merge(self, e, xs, dtype):
        return e.op("Max", xs) if len(xs) > 1 else xs[0]


@register
class Minimum(_Merge):
    """The elementwise minimum of a list of inputs.

    Input shape: a list of tensors of compatible shapes. Output shape: their broadcast shape.
    """

    def _merge(self, e, xs, dtype):
        return e.op("Min", xs) if len(xs) > 1 else xs[0]


@register
class Concatenate(Layer):
    """Concatenates a list of inputs along an axis.

    Args:
        axis: the axis to concatenate along (default -1, the last axis; the
            batch axis 0 cannot be concatenated).

    Input shape: a list of tensors of one rank and dtype whose shapes are equal
    except along ``axis``. Output shape: the same, with the sizes along ``axis``
    added up.
    """

    arity = "list"

    def __init__(self, axis: int = -1, name: str | None = None):
        super().__init__(name=name)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ArgError(f"The `axis` argument must be an int. Received: axis={axis!r}", "axis")
        self.axis = axis

    def _axis(self, rank: int) -> int:
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ArgError(f"Concatenate `axis` must be a non-batch axis of inputs of rank {rank}, "
                           f"an int in [{-(rank - 1)}, -1] or [1, {rank - 1}]. Received: axis={self.axis}",
                           "axis")
        return self.axis % rank

    def compute_output_types(self, input_types):
        ranks = {t.rank for t in input_types}
        dtypes = [t.dtype for t in input_types]
        if len(set(dtypes)) > 1:
            raise ShapeError(f"Inputs of Concatenate '{self.display_name()}' must have the same dtype. "
                             f"Received: dtypes {dtypes}")
        rank = input_types[0].rank
        a = self._axis(rank) if len(ranks) == 1 else None
        if a is None or any(len({t.shape[i] for t in input_types}) > 1 for i in range(rank) if i != a):
            raise ShapeError("A `Concatenate` layer requires inputs with matching shapes except for the "
                             f"concatenation axis (axis={self.axis}). Received: input shapes "
                             f"{_shapes(input_types)}")
        shape = list(input_types[0].shape)
        shape[a] = sum_dims(t.shape[a] for t in input_types)
        return [TensorType(dtypes[0], tuple(shape))]

    def lower(self, ctx, node):
        rank = node.inputs[0].type.rank
        a = self._axis(rank)
        xs, layout = ctx.get_same(node.inputs)
        if layout == CF:   # channels-last axis a lives at 1 (if last) or a + 1 channels-first
            a = 1 if a == rank - 1 else a + 1
        return [(ctx.e.op("Concat", xs, axis=a), layout)]
