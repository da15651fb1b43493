"""Convolution layers: Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D.

The language is channels-last like Keras; ONNX convolutions are channels-first.
Each layer asks the lowering context for its input channels-first (one
``Transpose`` per value at most) and leaves its output channels-first, so a
convolutional stack needs a transpose only where it meets a channels-last layer.
Weights are kept in Keras's layout and order; :meth:`onnx_weight` gives the
layout stored in the ONNX initializer.

Keras/TF ``"same"`` padding puts the extra cell at the end (ONNX ``SAME_UPPER``);
explicit pads are emitted whenever they do not depend on the input size (known
spatial dims, or stride 1), and ``auto_pad="SAME_UPPER"`` otherwise.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np

from ..ir import Dim, TensorType
from ..lower.context import CF
from .activations import canonical_activation
from .args import ArgError, check_choice, check_int, standardize_tuple
from .base import Layer, ShapeError, register
from .core import activate

__all__ = ["Conv1D", "Conv2D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D",
           "check_data_format", "window_geometry", "sym_add", "sym_mul"]


# -- shared helpers (also used by pooling and spatial layers) ------------------------------
def check_data_format(value) -> str | None:
    """Only channels-last is accepted (``None`` means Keras's default, channels-last)."""
    if value is None or (isinstance(value, str) and value.lower() == "channels_last"):
        return value if value is None else "channels_last"
    raise ArgError("Only data_format='channels_last' is supported: kdsl models are channels-last like "
                   "Keras's default, and the ONNX export picks the layout of each operation itself. "
                   f"Received: data_format={value!r}", "data_format")


def _wrap(d: str) -> str:
    return d if d.isidentifier() else f"({d})"


def sym_add(d: Dim, n: int) -> Dim:
    """``d + n`` for an int or a symbolic dim (a symbol becomes an expression such as ``h-2``)."""
    if isinstance(d, int):
        return d + n
    return d if n == 0 else f"{_wrap(d)}{n:+d}"


def sym_mul(d: Dim, n: int) -> Dim:
    if isinstance(d, int):
        return d * n
    return d if n == 1 else f"{_wrap(d)}*{n}"


def window_geometry(layer: Layer, t: TensorType, kernel: Sequence[int], strides: Sequence[int],
                    dilations: Sequence[int], what: str) -> tuple[tuple[Dim, ...], dict]:
    """Output spatial dims and the ONNX padding attribute of ``layer``'s sliding window (conv or pool)
    on input type ``t`` (channels-last); ``what`` describes the window in error messages.

    ``layer.padding``: ``"valid"``, ``"same"`` (Keras/TF: ``out = ceil(in / stride)``, the odd
    pad cell at the end) or ``"causal"`` (all padding at the start). Returns
    ``(out_dims, {"pads": [...]})``, or ``{"auto_pad": "SAME_UPPER"}`` when a "same" pad
    depends on a symbolic dim (stride > 1 and a window wider than 2).
    """
    padding = layer.padding
    dims = t.shape[1:-1]
    out, begin, end, auto = [], [], [], False
    for d, k, s, r in zip(dims, kernel, strides, dilations):
        keff = (k - 1) * r + 1
        ceil = -(-d // s) if isinstance(d, int) else (d if s == 1 else f"ceil({_wrap(d)}/{s})")
        if padding == "valid":
            total = 0
            if isinstance(d, int):
                o = (d - keff) // s + 1
            else:
                o = sym_add(d, 1 - keff) if s == 1 else f"({_wrap(d)}-{keff})//{s}+1"
        elif padding == "causal" or not isinstance(d, int) and (s == 1 or keff <= 2):
            # the pad does not depend on the size: keff - 1 cells (for keff <= 2 the TF split
            # puts them all at the end, and a last window never reaches beyond the TF pad)
            o, total = ceil, keff - 1
        elif isinstance(d, int):
            o, total = ceil, max((ceil - 1) * s + keff - d, 0)
        else:
            o, total, auto = ceil, 0, True
        lead = total if padding == "causal" else total // 2
        begin.append(lead)
        end.append(total - lead)
        out.append(o)
    if any(isinstance(o, int) and o <= 0 for o in out):
        raise ShapeError(f"{type(layer).__name__} '{layer.display_name()}' with {what} and "
                         f"padding='{padding}' does not fit the input's spatial dims: the output "
                         f"would have spatial shape {tuple(out)}. Use a smaller window, padding='same', "
                         f"or a larger input. Received: input shape {t.shape_str()}")
    if not auto:
        return tuple(out), {"pads": begin + end}
    # ONNX SAME_UPPER pads (out - 1) * s + keff - in cells, which is negative (and TF's pad 0)
    # on some sizes when a window is narrower than its stride.
    for d, k, s in zip(dims, kernel, strides):
        if k < s and (not isinstance(d, int) or (-(-d // s) - 1) * s + k < d):
            raise ShapeError(f"{type(layer).__name__} '{layer.display_name()}' with {what}, "
                             f"strides={tuple(strides)} and padding='same' on a symbolic spatial size needs "
                             "every window axis to be at least as wide as its stride (or stride 1, or width "
                             "<= 2): ONNX's SAME_UPPER cannot express TF's padding otherwise. Give the input "
                             f"fixed spatial sizes. Received: input shape {t.shape_str()}")
    return tuple(out), {"auto_pad": "SAME_UPPER"}


# -- the convolution family -----------------------------------------------------------------
class _BaseConv(Layer):
    """Arguments, shape rule and ONNX emission shared by the convolution layers."""

    rank: ClassVar[int] = 2
    paddings: ClassVar[tuple[str, ...]] = ("valid", "same")

    def _init_conv(self, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias):
        n = self.rank
        self.kernel_size = standardize_tuple(kernel_size, n, "kernel_size")
        self.strides = standardize_tuple(strides, n, "strides")
        self.padding = check_choice(padding, self.paddings, "padding")
        self.data_format = check_data_format(data_format)
        self.dilation_rate = standardize_tuple(dilation_rate, n, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ArgError("`strides > 1` is not supported in conjunction with `dilation_rate > 1`. "
                           f"Received: strides={self.strides} and dilation_rate={self.dilation_rate}",
                           "dilation_rate")
        self.activation = canonical_activation(activation)
        self.use_bias = bool(use_bias)

    # shape rule ------------------------------------------------------------------------
    def _channels(self, t: TensorType) -> int:
        """Check the input's rank and return its (known) channel count."""
        n = self.rank
        if t.rank != n + 2 or not isinstance(t.shape[-1], int):
            want = "(batch, " + ", ".join(["spatial"] * n) + ", channels)"
            raise ShapeError(f"{type(self).__name__} '{self.display_name()}' expects an input of rank {n + 2} "
                             f"{want} with a known number of channels. Received: input shape {t.shape_str()}")
        return t.shape[-1]

    def _check_in_channels(self, t: TensorType, expected: int) -> None:
        c = self._channels(t)
        if c != expected:
            raise ShapeError(f"{type(self).__name__} '{self.display_name()}' was built for inputs with "
                             f"{expected} channels (last axis). Received: input shape {t.shape_str()}")

    def _window(self, t: TensorType):
        """Output spatial dims and padding attribute for input type ``t`` (checked)."""
        return window_geometry(self, t, self.kernel_size, self.strides, self.dilation_rate,
                               f"kernel_size={self.kernel_size}, dilation_rate={self.dilation_rate}")

    def compute_output_types(self, input_types):
        t = input_types[0]
        self._check_in_channels(t, self._in_channels())
        out, _ = self._window(t)
        return [TensorType(self.dtype, (t.shape[0], *out, self._out_channels()))]

    def _in_channels(self) -> int:
        raise NotImplementedError

    def _out_channels(self) -> int:
        raise NotImplementedError

    # lowering ----------------------------------------------------------------------------
    def _conv(self, ctx, t: TensorType, x: str, w: str, b: str | None, group: int) -> str:
        _, pad = self._window(t)
        return ctx.e.op("Conv", [x, w] + ([b] if b else []), kernel_shape=list(self.kernel_size),
                        strides=list(self.strides), dilations=list(self.dilation_rate), group=group, **pad)

    def _finish(self, ctx, y: str):
        return activate(ctx, self.activation, y, CF), CF

    def onnx_weight(self, w):
        """Keras ``[*kernel, in, out]`` -> ONNX ``[out, in, *kernel]``; bias unchanged."""
        a = w.value
        if a.ndim == self.rank + 2:
            return np.transpose(a, (self.rank + 1, self.rank, *range(self.rank)))
        return a


class _Conv(_BaseConv):
    """Plain (grouped) convolution of any spatial rank."""

    def _init_plain(self, filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                    activation, use_bias, kernel_initializer, bias_initializer):
        self.filters = check_int(filters, "filters")
        self._init_conv(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias)
        self.groups = check_int(groups, "groups")
        if self.filters % self.groups:
            raise ArgError("The number of filters must be evenly divisible by the number of groups. "
                           f"Received: groups={self.groups}, filters={self.filters}", "groups")
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_types):
        t = input_types[0]
        c = self._channels(t)
        if c % self.groups:
            raise ShapeError(f"{type(self).__name__} '{self.display_name()}': the number of input channels "
                             f"must be evenly divisible by groups={self.groups}. Received: input shape "
                             f"{t.shape_str()}")
        self.add_weight("kernel", (*self.kernel_size, c // self.groups, self.filters), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)

    def _in_channels(self):
        return self.weights[0].shape[-2] * self.groups

    def _out_channels(self):
        return self.filters

    def lower(self, ctx, node):
        v = node.inputs[0]
        x = ctx.input_as(v, self.dtype, CF)
        b = ctx.weight(self, "bias") if self.use_bias else None
        return self._finish(ctx, self._conv(ctx, v.type, x, ctx.weight(self, "kernel"), b, self.groups))


@register
class Conv1D(_Conv):
    """1D convolution (temporal convolution): ``activation(conv1d(inputs, kernel) + bias)``.

    Args:
        filters: positive int, the number of output channels.
        kernel_size: int or tuple of 1 int, the window length.
        strides: int or tuple of 1 int, the stride of the window.
        padding: ``"valid"`` (no padding), ``"same"`` (output length ``ceil(length / strides)``,
            zeros added evenly with the odd one at the end) or ``"causal"`` (zeros added at
            the start only, so ``output[t]`` does not depend on ``input[t + 1:]``).
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).
        dilation_rate: int or tuple of 1 int, the dilation of the window; ``strides > 1``
            and ``dilation_rate > 1`` cannot be combined.
        groups: positive int dividing ``filters`` and the input channels; each group of
            ``channels / groups`` inputs is convolved with its own ``filters / groups`` filters.
        activation: activation name (default none: linear).
        use_bias: whether to add a bias vector.
        kernel_initializer, bias_initializer: initializer names.

    Input shape: ``(batch, steps, channels)``.
    Output shape: ``(batch, new_steps, filters)``.
    Weights: ``kernel [kernel_size, channels / groups, filters]``, ``bias [filters]``.
    """

    rank = 1
    paddings = ("valid", "same", "causal")

    def __init__(self, filters: int, kernel_size, strides=1, padding: str = "valid",
                 data_format: str | None = None, dilation_rate=1, groups: int = 1,
                 activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", bias_initializer: str = "zeros",
                 name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self._init_plain(filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                         activation, use_bias, kernel_initializer, bias_initializer)


@register
class Conv2D(_Conv):
    """2D convolution over images: ``activation(conv2d(inputs, kernel) + bias)``.

    Args:
        filters: positive int, the number of output channels.
        kernel_size: int or tuple of 2 ints, the window's height and width.
        strides: int or tuple of 2 ints, the strides along height and width.
        padding: ``"valid"`` (no padding) or ``"same"`` (output size ``ceil(size / strides)``,
            zeros added evenly with the odd one at the bottom/right, as in Keras/TF).
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).
        dilation_rate: int or tuple of 2 ints, the dilation of the window; ``strides > 1``
            and ``dilation_rate > 1`` cannot be combined.
        groups: positive int dividing ``filters`` and the input channels; each group of
            ``channels / groups`` inputs is convolved with its own ``filters / groups`` filters.
        activation: activation name (default none: linear).
        use_bias: whether to add a bias vector.
        kernel_initializer, bias_initializer: initializer names.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, filters)``.
    Weights: ``kernel [kh, kw, channels / groups, filters]``, ``bias [filters]``.
    """

    rank = 2

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid",
                 data_format: str | None = None, dilation_rate=(1, 1), groups: int = 1,
                 activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", bias_initializer: str = "zeros",
                 name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self._init_plain(filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
                         activation, use_bias, kernel_initializer, bias_initializer)


@register
class Conv2DTranspose(_BaseConv):
    """Transposed 2D convolution (the gradient of Conv2D), Keras/TF semantics.

    Args:
        filters: positive int, the number of output channels.
        kernel_size: int or tuple of 2 ints, the window's height and width.
        strides: int or tuple of 2 ints, the upsampling factors along height and width.
        padding: ``"valid"``: output size ``size * strides + max(kernel - strides, 0)``;
            ``"same"``: output size ``size * strides``.
        output_padding: only ``None`` (the output size follows ``padding``) is supported.
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).
        dilation_rate: int or tuple of 2 ints; ``strides > 1`` and ``dilation_rate > 1``
            cannot be combined.
        activation: activation name (default none: linear).
        use_bias: whether to add a bias vector.
        kernel_initializer, bias_initializer: initializer names.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, filters)``.
    Weights: ``kernel [kh, kw, filters, channels]``, ``bias [filters]``.
    """

    rank = 2

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid",
                 output_padding=None, data_format: str | None = None, dilation_rate=(1, 1),
                 activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", bias_initializer: str = "zeros",
                 name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self.filters = check_int(filters, "filters")
        self._init_conv(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias)
        if output_padding is not None:
            raise ArgError("Conv2DTranspose supports only output_padding=None (the output size then "
                           "follows `padding` and `strides`). Received: "
                           f"output_padding={output_padding!r}", "output_padding")
        self.output_padding = None
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_types):
        c = self._channels(input_types[0])
        self.add_weight("kernel", (*self.kernel_size, self.filters, c), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)

    def _in_channels(self):
        return self.weights[0].shape[-1]

    def _out_channels(self):
        return self.filters

    def _geometry(self, t: TensorType):
        """Output dims, ONNX pads and output_padding: TF's conv2d_transpose as an ONNX ConvTranspose.

        The full (uncropped) output has ``(size - 1) * s + keff`` cells; "same" crops the
        forward "same" pads ``max(keff - s, 0)`` (the odd one at the end) and, when
        ``keff < s``, both paddings extend the end by ``s - keff`` zero-input cells.
        """
        out, begin, end, extra = [], [], [], []
        for d, k, s, r in zip(t.shape[1:-1], self.kernel_size, self.strides, self.dilation_rate):
            keff = (k - 1) * r + 1
            total = max(keff - s, 0) if self.padding == "same" else 0
            begin.append(total // 2)
            end.append(total - total // 2)
            extra.append(max(s - keff, 0))
            out.append(sym_add(sym_mul(d, s), max(keff - s, 0) - total))
        return tuple(out), begin + end, extra

    def _window(self, t):
        return self._geometry(t)[0], None

    def lower(self, ctx, node):
        v = node.inputs[0]
        _, pads, extra = self._geometry(v.type)
        x = ctx.input_as(v, self.dtype, CF)
        ins = [x, ctx.weight(self, "kernel")] + ([ctx.weight(self, "bias")] if self.use_bias else [])
        y = ctx.e.op("ConvTranspose", ins, kernel_shape=list(self.kernel_size), strides=list(self.strides),
                     dilations=list(self.dilation_rate), pads=pads,
                     output_padding=extra if any(extra) else None)
        return self._finish(ctx, y)

    def onnx_weight(self, w):
        """Keras ``[kh, kw, filters, in]`` -> ONNX ConvTranspose ``[in, filters, kh, kw]``."""
        a = w.value
        return np.transpose(a, (3, 2, 0, 1)) if a.ndim == 4 else a


def _depthwise_onnx(a: np.ndarray) -> np.ndarray:
    """Keras depthwise ``[kh, kw, in, dm]`` -> ONNX grouped conv ``[in * dm, 1, kh, kw]``
    (output channel ``c * dm + m`` is input channel ``c`` with multiplier ``m``)."""
    kh, kw, c, m = a.shape
    return np.transpose(a.reshape(kh, kw, c * m), (2, 0, 1))[:, None]


@register
class DepthwiseConv2D(_BaseConv):
    """Depthwise 2D convolution: each input channel is convolved with its own
    ``depth_multiplier`` filters; output channel ``c * depth_multiplier + m``.

    Args:
        kernel_size: int or tuple of 2 ints, the window's height and width.
        strides: int or tuple of 2 ints.
        padding: ``"valid"`` or ``"same"`` (Keras/TF semantics, see :class:`Conv2D`).
        depth_multiplier: positive int, the number of filters per input channel.
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).
        dilation_rate: int or tuple of 2 ints; ``strides > 1`` and ``dilation_rate > 1``
            cannot be combined.
        activation: activation name (default none: linear).
        use_bias: whether to add a bias vector.
        depthwise_initializer, bias_initializer: initializer names.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, channels * depth_multiplier)``.
    Weights: ``kernel [kh, kw, channels, depth_multiplier]``, ``bias [channels * depth_multiplier]``.
    """

    rank = 2

    def __init__(self, kernel_size, strides=(1, 1), padding: str = "valid", depth_multiplier: int = 1,
                 data_format: str | None = None, dilation_rate=(1, 1), activation: str | None = None,
                 use_bias: bool = True, depthwise_initializer: str = "glorot_uniform",
                 bias_initializer: str = "zeros", name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self._init_conv(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias)
        self.depth_multiplier = check_int(depth_multiplier, "depth_multiplier")
        self.depthwise_initializer = depthwise_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_types):
        c = self._channels(input_types[0])
        self.add_weight("kernel", (*self.kernel_size, c, self.depth_multiplier), self.depthwise_initializer)
        if self.use_bias:
            self.add_weight("bias", (c * self.depth_multiplier,), self.bias_initializer)

    def _in_channels(self):
        return self.weights[0].shape[2]

    def _out_channels(self):
        return self._in_channels() * self.depth_multiplier

    def lower(self, ctx, node):
        v = node.inputs[0]
        x = ctx.input_as(v, self.dtype, CF)
        b = ctx.weight(self, "bias") if self.use_bias else None
        return self._finish(ctx, self._conv(ctx, v.type, x, ctx.weight(self, "kernel"), b, self._in_channels()))

    def onnx_weight(self, w):
        return _depthwise_onnx(w.value) if w.name == "kernel" else w.value


@register
class SeparableConv2D(_BaseConv):
    """Depthwise separable 2D convolution: a depthwise convolution (see
    :class:`DepthwiseConv2D`) followed by a 1x1 pointwise convolution to ``filters``.

    Args:
        filters: positive int, the number of output channels.
        kernel_size: int or tuple of 2 ints, the depthwise window's height and width.
        strides: int or tuple of 2 ints, the depthwise strides.
        padding: ``"valid"`` or ``"same"`` (Keras/TF semantics, see :class:`Conv2D`).
        data_format: ``None`` or ``"channels_last"`` (the only layout supported).
        dilation_rate: int or tuple of 2 ints; ``strides > 1`` and ``dilation_rate > 1``
            cannot be combined.
        depth_multiplier: positive int, the number of depthwise filters per input channel.
        activation: activation name (default none: linear).
        use_bias: whether to add a bias vector (after the pointwise convolution).
        depthwise_initializer, pointwise_initializer, bias_initializer: initializer names.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, filters)``.
    Weights: ``depthwise_kernel [kh, kw, channels, depth_multiplier]``,
    ``pointwise_kernel [1, 1, channels * depth_multiplier, filters]``, ``bias [filters]``.
    """

    rank = 2

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid",
                 data_format: str | None = None, dilation_rate=(1, 1), depth_multiplier: int = 1,
                 activation: str | None = None, use_bias: bool = True,
                 depthwise_initializer: str = "glorot_uniform", pointwise_initializer: str = "glorot_uniform",
                 bias_initializer: str = "zeros", name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self.filters = check_int(filters, "filters")
        self._init_conv(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias)
        self.depth_multiplier = check_int(depth_multiplier, "depth_multiplier")
        self.depthwise_initializer = depthwise_initializer
        self.pointwise_initializer = pointwise_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_types):
        c = self._channels(input_types[0])
        m = self.depth_multiplier
        self.add_weight("depthwise_kernel", (*self.kernel_size, c, m), self.depthwise_initializer)
        self.add_weight("pointwise_kernel", (1, 1, c * m, self.filters), self.pointwise_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)

    def _in_channels(self):
        return self.weights[0].shape[2]

    def _out_channels(self):
        return self.filters

    def lower(self, ctx, node):
        v = node.inputs[0]
        x = ctx.input_as(v, self.dtype, CF)
        y = self._conv(ctx, v.type, x, ctx.weight(self, "depthwise_kernel"), None, self._in_channels())
        ins = [y, ctx.weight(self, "pointwise_kernel")] + ([ctx.weight(self, "bias")] if self.use_bias else [])
        return self._finish(ctx, ctx.e.op("Conv", ins, kernel_shape=[1, 1]))

    def onnx_weight(self, w):
        if w.name == "depthwise_kernel":
            return _depthwise_onnx(w.value)
        return super().onnx_weight(w)
