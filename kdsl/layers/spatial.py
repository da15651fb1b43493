"""Spatial layers: ZeroPadding2D and UpSampling2D.

Both act on the height and width axes only, so they work in whichever layout
their input already has (channels-last or channels-first) and keep it.
"""
from __future__ import annotations

import numpy as np

from ..ir import TensorType
from ..lower.context import CF
from .args import ArgError, check_choice, standardize_tuple
from .base import Layer, ShapeError, register
from .conv import check_data_format, sym_add, sym_mul

__all__ = ["ZeroPadding2D", "UpSampling2D"]


def _check_image(layer: Layer, t: TensorType) -> None:
    if t.rank != 4:
        raise ShapeError(f"{type(layer).__name__} '{layer.display_name()}' expects an input of rank 4 "
                         f"(batch, height, width, channels). Received: input shape {t.shape_str()}")


def _hw_axes(layout: str) -> tuple[int, int]:
    return (2, 3) if layout == CF else (1, 2)


@register
class ZeroPadding2D(Layer):
    """Zero-padding for 2D inputs (images): adds rows and columns of zeros around them.

    Args:
        padding: int, tuple of 2 ints or tuple of 2 tuples of 2 ints.
            An int pads all four sides by the same amount; ``(h, w)`` pads ``h`` rows at the
            top and bottom and ``w`` columns at the left and right;
            ``((top, bottom), (left, right))`` gives each side.
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, height + top + bottom, width + left + right, channels)``.
    """

    def __init__(self, padding=(1, 1), data_format: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.padding = _normalize_padding(padding)
        self.data_format = check_data_format(data_format)

    def compute_output_types(self, input_types):
        t = input_types[0]
        _check_image(self, t)
        (top, bottom), (left, right) = self.padding
        b, h, w, c = t.shape
        return [t.with_shape((b, sym_add(h, top + bottom), sym_add(w, left + right), c))]

    def lower(self, ctx, node):
        x, layout = ctx.get_any(node.inputs[0])
        begin, end = [0] * 4, [0] * 4
        for axis, (lo, hi) in zip(_hw_axes(layout), self.padding):
            begin[axis], end[axis] = lo, hi
        return ctx.e.op("Pad", [x, ctx.e.ints(begin + end)], mode="constant"), layout


def _normalize_padding(padding) -> tuple[tuple[int, int], tuple[int, int]]:
    msg = ("The `padding` argument must be an int, a tuple of 2 ints (symmetric height and width "
           "padding) or a tuple of 2 tuples of 2 ints ((top, bottom), (left, right)), all non-negative. "
           f"Received: padding={padding!r}")
    if isinstance(padding, (list, tuple)) and len(padding) == 2 and all(
            isinstance(p, (list, tuple)) for p in padding):
        try:
            return (standardize_tuple(padding[0], 2, "padding", allow_zero=True),
                    standardize_tuple(padding[1], 2, "padding", allow_zero=True))
        except ArgError:
            raise ArgError(msg, "padding") from None
    try:
        h, w = standardize_tuple(padding, 2, "padding", allow_zero=True)
    except ArgError:
        raise ArgError(msg, "padding") from None
    return (h, h), (w, w)


@register
class UpSampling2D(Layer):
    """Upsampling for 2D inputs: repeats (``"nearest"``) or interpolates (``"bilinear"``)
    rows and columns by ``size``.

    Args:
        size: int or tuple of 2 ints, the upsampling factors for rows and columns.
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).
        interpolation: ``"nearest"`` (each row and column repeated ``size`` times) or
            ``"bilinear"`` (half-pixel centers, no antialiasing, as ``keras.ops.image.resize``).

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, height * size[0], width * size[1], channels)``.
    """

    def __init__(self, size=(2, 2), data_format: str | None = None, interpolation: str = "nearest",
                 name: str | None = None):
        super().__init__(name=name)
        self.size = standardize_tuple(size, 2, "size")
        self.data_format = check_data_format(data_format)
        if isinstance(interpolation, str) and interpolation.lower() in ("bicubic", "lanczos3", "lanczos5", "area"):
            raise ArgError("UpSampling2D supports only interpolation='nearest' or 'bilinear'. "
                           f"Received: interpolation={interpolation!r}", "interpolation")
        self.interpolation = check_choice(interpolation, ("nearest", "bilinear"), "interpolation")

    def compute_output_types(self, input_types):
        t = input_types[0]
        _check_image(self, t)
        b, h, w, c = t.shape
        return [TensorType(self.dtype, (b, sym_mul(h, self.size[0]), sym_mul(w, self.size[1]), c))]

    def lower(self, ctx, node):
        v = node.inputs[0]
        x, layout = ctx.get_any(v)
        if v.type.dtype != self.dtype:
            x = ctx.e.cast(x, self.dtype)
        scales = [1.0] * 4
        for axis, s in zip(_hw_axes(layout), self.size):
            scales[axis] = float(s)
        scales = ctx.e.const(np.asarray(scales, dtype=np.float32), hint="scales")
        if self.interpolation == "nearest":   # output[i] = input[floor(i / size)]
            attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        else:
            attrs = dict(mode="linear", coordinate_transformation_mode="half_pixel")
        return ctx.e.op("Resize", [x, "", scales], **attrs), layout
