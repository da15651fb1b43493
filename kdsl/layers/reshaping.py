"""Reshaping layers: Flatten, Reshape, Permute.

All three work on the channels-last (Keras) form of their input: the order of
the values in a flattened or reshaped tensor is the channels-last order.
"""
from __future__ import annotations

from ..ir import Dim, numel
from ..lower.context import CF, CL, cf_to_cl
from .args import ArgError, check_choice
from .base import Layer, ShapeError, register

__all__ = ["Flatten", "Reshape", "Permute", "prod_dims", "sum_dims"]


def _atom(d: Dim) -> str:
    """``d`` as a factor of a product: parenthesised unless a symbol or a product of symbols."""
    s = str(d)
    return s if all(p.isidentifier() or p.isdigit() for p in s.split("*")) else f"({s})"


def prod_dims(dims) -> Dim:
    """The product of ``dims``: an int when all are ints, else a symbolic expression
    such as ``"h*w*3"`` (deterministic, and equal for equal products of the same symbols)."""
    n, syms = 1, []
    for d in dims:
        if isinstance(d, int):
            n *= d
        else:
            syms.append(_atom(d))
    if not syms or n == 0:
        return n
    return "*".join(syms + ([str(n)] if n != 1 else []))


def sum_dims(dims) -> Dim:
    """The sum of ``dims``: an int when all are ints, else a symbolic ``"a+b+3"``."""
    n, syms = 0, []
    for d in dims:
        if isinstance(d, int):
            n += d
        else:
            syms.append(str(d))
    if not syms:
        return n
    return "+".join(syms + ([str(n)] if n else []))


def _div_dim(total: Dim, k: int) -> Dim:
    """``total / k`` for a symbolic ``total`` (a product expression) and a positive int ``k``."""
    if k == 1:
        return total
    head, _, tail = str(total).rpartition("*")
    if head and tail.isdigit() and int(tail) % k == 0:
        return head if int(tail) == k else f"{head}*{int(tail) // k}"
    return f"{_atom(total)}/{k}"


@register
class Flatten(Layer):
    """Flattens the input. Does not affect the batch size.

    The values are flattened in channels-last order, as in Keras: a tensor of
    shape ``(batch, h, w, c)`` becomes ``(batch, h * w * c)``.

    Args:
        data_format: ``"channels_last"`` (default) or ``"channels_first"``. With
            ``"channels_first"`` the input's axis 1 is taken as its channel axis
            and moved last before flattening, as Keras does.

    Input shape: ``(batch, ...)``. Output shape: ``(batch, prod(...))``;
    ``(batch, 1)`` for an input of shape ``(batch,)``.
    """

    def __init__(self, data_format: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.data_format = check_choice(data_format or "channels_last",
                                        ("channels_last", "channels_first"), "data_format")

    def compute_output_types(self, input_types):
        t = input_types[0]
        return [t.with_shape((t.shape[0], prod_dims(t.shape[1:])))]

    def lower(self, ctx, node):
        v = node.inputs[0]
        x = ctx.get(v, CL)
        if self.data_format == "channels_first" and v.type.rank > 2:
            x = ctx.e.transpose(x, cf_to_cl(v.type.rank))
        n = node.outputs[0].type.shape[1]
        return ctx.e.reshape(x, [0, n if isinstance(n, int) else -1])


@register
class Reshape(Layer):
    """Reshapes an input to a given shape (the batch axis is kept).

    Args:
        target_shape: the output shape without the batch axis, a tuple of
            positive ints; one entry may be ``-1``, inferred from the input's size.

    Input shape: ``(batch, ...)``. Output shape: ``(batch, *target_shape)``.
    """

    def __init__(self, target_shape, name: str | None = None):
        super().__init__(name=name)
        if isinstance(target_shape, int) and not isinstance(target_shape, bool):
            target_shape = (target_shape,)
        ok = isinstance(target_shape, (list, tuple)) and all(
            isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in target_shape)
        if not ok or list(target_shape).count(-1) > 1:
            raise ArgError("The `target_shape` argument must be a tuple of positive ints (without the "
                           "batch axis), at most one of which may be -1. "
                           f"Received: target_shape={target_shape!r}", "target_shape")
        self.target_shape = tuple(target_shape)

    def compute_output_types(self, input_types):
        t = input_types[0]
        total = numel(t.shape[1:])
        known = numel(d for d in self.target_shape if d != -1)
        if -1 not in self.target_shape:
            if total is not None and total != known:
                self._mismatch(t, f"{total} values per sample, the target shape {known}")
            return [t.with_shape((t.shape[0],) + self.target_shape)]
        if total is None:
            missing: Dim = _div_dim(prod_dims(t.shape[1:]), known)
        elif total % known:
            self._mismatch(t, f"{total} values per sample cannot be split into blocks of {known}")
        else:
            missing = total // known
        return [t.with_shape((t.shape[0],) + tuple(missing if d == -1 else d for d in self.target_shape))]

    def _mismatch(self, t, why: str):
        raise ShapeError(f"Reshape '{self.display_name()}' cannot reshape the input into "
                         f"target_shape={self.target_shape}: {why}. Received: input shape "
                         f"{t.shape_str()} and target_shape={self.target_shape}")

    def lower(self, ctx, node):
        x = ctx.get(node.inputs[0], CL)
        dims = [d if isinstance(d, int) else -1 for d in node.outputs[0].type.shape[1:]]
        return ctx.e.reshape(x, [0, *dims])   # 0 copies the (symbolic) batch axis


@register
class Permute(Layer):
    """Permutes the axes of the input according to a given pattern (batch excluded).

    Args:
        dims: a tuple of ints, a permutation of ``1 .. rank - 1`` (indexing starts
            at 1, as in Keras). ``(2, 1)`` swaps the first and second non-batch axes.

    Input shape: ``(batch, d1, ..., dn)``. Output shape: the non-batch axes
    reordered by ``dims``.
    """

    def __init__(self, dims, name: str | None = None):
        super().__init__(name=name)
        ok = isinstance(dims, (list, tuple)) and all(
            isinstance(d, int) and not isinstance(d, bool) for d in dims)
        if not ok or sorted(dims) != list(range(1, len(dims) + 1)):
            raise ArgError("Invalid permutation argument `dims` for Permute layer: its entries must be "
                           "the ints 1..n in some order (batch axis excluded, indexing starts at 1). "
                           f"Received: dims={dims!r}", "dims")
        self.dims = tuple(dims)

    def compute_output_types(self, input_types):
        t = input_types[0]
        if t.rank - 1 != len(self.dims):
            raise ShapeError(f"Permute '{self.display_name()}' has dims={self.dims} for {len(self.dims)} "
                             f"axes, but the input has {t.rank - 1} axes besides the batch axis. "
                             f"Received: input shape {t.shape_str()}")
        return [t.with_shape((t.shape[0],) + tuple(t.shape[d] for d in self.dims))]

    def lower(self, ctx, node):
        v = node.inputs[0]
        x, layout = ctx.get_any(v)
        perm = [0, *self.dims]
        if layout == CF:   # compose with channels-first -> channels-last: still one Transpose
            to_cl = cf_to_cl(v.type.rank)
            perm = [to_cl[p] for p in perm]
        elif perm == sorted(perm):
            return x
        return ctx.e.transpose(x, perm)
