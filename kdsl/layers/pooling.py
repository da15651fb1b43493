"""Pooling layers: Max/AveragePooling1D/2D and GlobalAverage/GlobalMaxPooling1D/2D.

Window pooling runs channels-first (ONNX ``MaxPool``/``AveragePool``) and leaves
its output channels-first, like the convolutions. Global pooling reduces the
spatial axes of whichever layout its input already has, so a channels-first
feature map becomes a ``(batch, channels)`` result without any transpose.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..ir import TensorType
from ..lower.context import CF, CL
from .args import check_choice, standardize_tuple
from .base import Layer, ShapeError, register
from .conv import check_data_format, window_geometry

__all__ = ["MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
           "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D"]


def _check_rank(layer: Layer, t: TensorType, rank: int) -> None:
    if t.rank != rank + 2:
        want = "(batch, " + ", ".join(["spatial"] * rank) + ", channels)"
        raise ShapeError(f"{type(layer).__name__} '{layer.display_name()}' expects an input of rank "
                         f"{rank + 2} {want}. Received: input shape {t.shape_str()}")


class _Pooling(Layer):
    """Window pooling shared by the Max/Average pooling layers."""

    rank: ClassVar[int] = 2
    onnx_op: ClassVar[str] = "MaxPool"

    def __init__(self, pool_size, strides=None, padding: str = "valid", data_format: str | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.pool_size = standardize_tuple(pool_size, self.rank, "pool_size")
        self.strides = None if strides is None else standardize_tuple(strides, self.rank, "strides")
        self.padding = check_choice(padding, ("valid", "same"), "padding")
        self.data_format = check_data_format(data_format)

    def _window(self, t: TensorType):
        _check_rank(self, t, self.rank)
        strides = self.strides or self.pool_size
        return window_geometry(self, t, self.pool_size, strides, (1,) * self.rank, f"pool_size={self.pool_size}")

    def compute_output_types(self, input_types):
        t = input_types[0]
        out, _ = self._window(t)
        return [TensorType(self.dtype, (t.shape[0], *out, t.shape[-1]))]

    def lower(self, ctx, node):
        v = node.inputs[0]
        _, pad = self._window(v.type)
        attrs = {"count_include_pad": 0} if self.onnx_op == "AveragePool" else {}
        y = ctx.e.op(self.onnx_op, [ctx.input_as(v, self.dtype, CF)], kernel_shape=list(self.pool_size),
                     strides=list(self.strides or self.pool_size), **pad, **attrs)
        return y, CF


_POOL_DOC = """{kind} pooling over {what} windows.

    Args:
        pool_size: int or tuple of {n} int(s), the window size.
        strides: int or tuple of {n} int(s), or ``None`` (the default) for ``pool_size``.
        padding: ``"valid"`` (no padding) or ``"same"`` (output size ``ceil(size / strides)``,
            padded evenly with the odd cell at the end, as in Keras/TF).{avg_note}
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).

    Input shape: ``(batch, {dims}, channels)``.
    Output shape: ``(batch, {new_dims}, channels)``.
    """
_AVG_NOTE = "\n            Padded cells are excluded from the average."


@register
class MaxPooling1D(_Pooling):
    rank, onnx_op = 1, "MaxPool"
    __doc__ = _POOL_DOC.format(kind="Max", what="1D (temporal)", n=1, avg_note="", dims="steps",
                               new_dims="new_steps")

    def __init__(self, pool_size=2, strides=None, padding: str = "valid", data_format: str | None = None,
                 name: str | None = None):
        super().__init__(pool_size, strides, padding, data_format, name)


@register
class MaxPooling2D(_Pooling):
    rank, onnx_op = 2, "MaxPool"
    __doc__ = _POOL_DOC.format(kind="Max", what="2D (spatial)", n=2, avg_note="", dims="height, width",
                               new_dims="new_height, new_width")

    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid", data_format: str | None = None,
                 name: str | None = None):
        super().__init__(pool_size, strides, padding, data_format, name)


@register
class AveragePooling1D(_Pooling):
    rank, onnx_op = 1, "AveragePool"
    __doc__ = _POOL_DOC.format(kind="Average", what="1D (temporal)", n=1, avg_note=_AVG_NOTE, dims="steps",
                               new_dims="new_steps")

    def __init__(self, pool_size=2, strides=None, padding: str = "valid", data_format: str | None = None,
                 name: str | None = None):
        super().__init__(pool_size, strides, padding, data_format, name)


@register
class AveragePooling2D(_Pooling):
    rank, onnx_op = 2, "AveragePool"
    __doc__ = _POOL_DOC.format(kind="Average", what="2D (spatial)", n=2, avg_note=_AVG_NOTE,
                               dims="height, width", new_dims="new_height, new_width")

    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid", data_format: str | None = None,
                 name: str | None = None):
        super().__init__(pool_size, strides, padding, data_format, name)


class _GlobalPooling(Layer):
    """Reduction over all spatial axes, in whichever layout the input already has."""

    rank: ClassVar[int] = 2
    onnx_op: ClassVar[str] = "ReduceMean"
    uses_mask = True

    def __init__(self, data_format: str | None = None, keepdims: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.data_format = check_data_format(data_format)
        self.keepdims = bool(keepdims)

    def compute_output_types(self, input_types):
        t = input_types[0]
        _check_rank(self, t, self.rank)
        spatial = (1,) * self.rank if self.keepdims else ()
        return [TensorType(self.dtype, (t.shape[0], *spatial, t.shape[-1]))]

    def lower(self, ctx, node):
        v = node.inputs[0]
        if node.mask is not None and self.rank == 1:
            return self._lower_masked(ctx, node)
        x, layout = ctx.get_any(v)
        if v.type.dtype != self.dtype:
            x = ctx.e.cast(x, self.dtype)
        first = 2 if layout == CF else 1
        y = ctx.e.reduce(self.onnx_op, x, list(range(first, first + self.rank)), self.keepdims)
        return (y, layout) if self.keepdims else y   # (batch, channels): the same in both layouts

    def _lower_masked(self, ctx, node):
        """Pool over the unmasked steps only (mask from ``Embedding(mask_zero=True)``)."""
        e = ctx.e
        x = ctx.input_as(node.inputs[0], self.dtype, CL)             # [batch, steps, channels]
        m = e.unsqueeze(ctx.get(node.mask, CL), [2])                 # [batch, steps, 1] bool
        if self.onnx_op == "ReduceMean":
            mf = e.cast(m, self.dtype)
            total = e.reduce("ReduceSum", e.op("Mul", [x, mf]), [1], self.keepdims)
            count = e.reduce("ReduceSum", mf, [1], self.keepdims)
            # an all-masked row (an empty text) pools to 0 (Keras divides 0 by 0: NaN)
            return e.op("Div", [total, e.op("Max", [count, e.scalar(1.0, self.dtype)])])
        lowest = e.const(np.asarray(np.finfo(np.float32).min, np.float32), hint="lowest")
        pooled = e.reduce("ReduceMax", e.op("Where", [m, x, lowest]), [1], self.keepdims)
        # a row whose steps are all masked (an empty text) pools to 0, not to float32's minimum
        any_step = e.op("Cast", [e.reduce("ReduceMax", e.cast(m, "float32"), [1], self.keepdims)], to=9)
        return e.op("Where", [any_step, pooled, e.scalar(0.0)])


_GLOBAL_DOC = """Global {kind} pooling over the {what} axes.

    Args:
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).
        keepdims: whether to keep the pooled axes with size 1.

    Input shape: ``(batch, {dims}, channels)``.
    Output shape: ``(batch, channels)``, or ``(batch, {ones}, channels)`` with ``keepdims=True``.{mask}
    """

_MASK_DOC = """

    Masking: with a mask from ``Embedding(mask_zero=True)``, only the unmasked steps are pooled;
    a row whose steps are all masked (an empty text) pools to 0 (Keras's average gives NaN)."""


@register
class GlobalAveragePooling1D(_GlobalPooling):
    rank, onnx_op = 1, "ReduceMean"
    __doc__ = _GLOBAL_DOC.format(kind="average", what="steps", dims="steps", ones="1", mask=_MASK_DOC)


@register
class GlobalAveragePooling2D(_GlobalPooling):
    rank, onnx_op = 2, "ReduceMean"
    __doc__ = _GLOBAL_DOC.format(kind="average", what="height and width", dims="height, width", ones="1, 1",
                                 mask="")


@register
class GlobalMaxPooling1D(_GlobalPooling):
    rank, onnx_op = 1, "ReduceMax"
    __doc__ = _GLOBAL_DOC.format(kind="max", what="steps", dims="steps", ones="1", mask=_MASK_DOC)


@register
class GlobalMaxPooling2D(_GlobalPooling):
    rank, onnx_op = 2, "ReduceMax"
    __doc__ = _GLOBAL_DOC.format(kind="max", what="height and width", dims="height, width", ones="1, 1",
                                 mask="")
