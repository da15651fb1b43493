"""Core layers: Dense, Activation, Dropout."""
from __future__ import annotations

import math

import numpy as np

from ..ir import TensorType
from ..lower.context import CF, CL
from .activations import AXIS_ACTIVATIONS, canonical_activation, lower_activation
from .args import check_int, check_rate
from .base import Layer, ShapeError, register


def float_type(t: TensorType, dtype: str = "float32") -> TensorType:
    return TensorType(dtype, t.shape)


def activate(ctx, name: str, x: str, layout: str = CL) -> str:
    """Apply a (canonical) activation to ONNX value ``x`` held in ``layout``."""
    return lower_activation(ctx.e, name, x, 1 if layout == CF else -1)


@register
class Dense(Layer):
    """Densely-connected layer: ``activation(dot(inputs, kernel) + bias)``.

    Args:
        units: positive int, size of the output's last axis.
        activation: activation name (default none: linear).
        use_bias: whether to add a bias vector.
        kernel_initializer, bias_initializer: initializer names.

    Input shape: ``(batch, ..., input_dim)``. Output shape: ``(batch, ..., units)``.
    Weights: ``kernel [input_dim, units]``, ``bias [units]``.
    """

    supports_masking = True

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", bias_initializer: str = "zeros",
                 name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self.units = check_int(units, "units")
        self.activation = canonical_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer

    def build(self, input_types):
        t = input_types[0]
        if t.rank < 2 or not isinstance(t.shape[-1], int):
            raise ShapeError(f"Dense needs an input whose last axis has a known size. "
                             f"Received: input shape {t.shape_str()}")
        self.add_weight("kernel", (t.shape[-1], self.units), self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.units,), self.bias_initializer)

    def compute_output_types(self, input_types):
        t = input_types[0]
        k = self.weights[0].shape[0]
        if t.rank < 2 or t.shape[-1] != k:
            raise ShapeError(f"Dense '{self.display_name()}' expects an input whose last axis is {k}. "
                             f"Received: input shape {t.shape_str()}")
        return [TensorType(self.dtype, t.shape[:-1] + (self.units,))]

    def lower(self, ctx, node):
        v = node.inputs[0]
        x = ctx.input_as(v, self.dtype, CL)
        e = ctx.e
        kernel = ctx.weight(self, "kernel")
        if v.type.rank == 2 and self.use_bias:
            y = e.op("Gemm", [x, kernel, ctx.weight(self, "bias")])
        else:
            y = e.op("MatMul", [x, kernel])
            if self.use_bias:
                y = e.op("Add", [y, ctx.weight(self, "bias")])
        return activate(ctx, self.activation, y)


@register
class Activation(Layer):
    """Applies an activation function to its input.

    Args:
        activation: the activation's name, e.g. ``"relu"``.

    Input shape: any. Output shape: as the input.
    """

    supports_masking = True

    def __init__(self, activation: str, name: str | None = None):
        super().__init__(name=name)
        self.activation = canonical_activation(activation)

    def compute_output_types(self, input_types):
        return [float_type(input_types[0])]

    def lower(self, ctx, node):
        v = node.inputs[0]
        if self.activation in AXIS_ACTIVATIONS:
            x, layout = ctx.get(v, CL), CL
        else:
            x, layout = ctx.get_any(v)
        if v.type.dtype != self.dtype:
            x = ctx.e.cast(x, self.dtype)
        return activate(ctx, self.activation, x, layout), layout


@register
class Dropout(Layer):
    """Randomly sets input units to 0 with frequency ``rate`` during training.

    Units not set to 0 are scaled by ``1 / (1 - rate)``. In inference (export,
    predict, evaluate) the layer is the identity.

    Args:
        rate: float in [0, 1), the fraction of the units to drop.
        noise_shape: optional shape (without batch) of the binary mask.
        seed: optional int seed.
    """

    supports_masking = True

    def __init__(self, rate: float, noise_shape: list | None = None, seed: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.rate = check_rate(rate)
        self.noise_shape = noise_shape
        self.seed = seed

    def compute_output_types(self, input_types):
        return [input_types[0]]

    def lower(self, ctx, node):
        v = node.inputs[0]
        x, layout = ctx.get_any(v)
        if not ctx.training or self.rate == 0.0:
            return x, layout
        e = ctx.e
        if self.noise_shape is not None:
            if layout != CL:
                x, layout = ctx.get(v, CL), CL
            dims = list(self.noise_shape)
            if len(dims) == v.type.rank - 1:
                dims = [None] + dims
            shape_x = e.op("Shape", [x])
            parts = [e.op("Gather", [shape_x, e.ints([i])]) if d is None else e.ints([int(d)])
                     for i, d in enumerate(dims)]
            mask_shape = e.op("Concat", parts, axis=0)
        else:
            mask_shape = e.op("Shape", [x])
        mask = dropout_mask(e, mask_shape, ctx.step, _salt(self), self.rate)
        return e.op("Mul", [x, mask]), layout


def _salt(layer: Layer) -> int:
    import zlib

    from ..utils import get_random_seed

    base = layer.seed if getattr(layer, "seed", None) is not None else get_random_seed()
    return (zlib.crc32(f"{layer.name}".encode()) + 7919 * int(base)) % 2147483647


_P = 2147483647   # 2^31 - 1, prime


def dropout_mask(e, shape: str, step: str, salt: int, rate: float) -> str:
    """A float32 keep-mask of ``shape`` scaled by ``1 / (1 - rate)``: each element is kept when a
    counter-based hash of (element index, step, salt) is at least ``rate`` of its range.

    Plain int64 ONNX ops (no RNG op), so a training step's randomness is a pure function of the
    step counter: runs are reproducible and a resumed run draws the same masks. The hash: the
    element index plus an offset drawn from (step, salt), then two rounds of the quadratic map
    ``h -> h^2 + c (mod p)``, ``p = 2^31 - 1`` (the offset is below 2^30, so ``h^2`` fits in
    int64 for tensors below 2^31 elements). Pairs and triples of neighbouring values pass a
    chi-square test of uniformity, and the masks of different steps and salts are uncorrelated;
    two int64 ``Mod``s per element (the dearest op here) and the comparison made on the integers.
    """
    n = e.op("ReduceProd", [shape], keepdims=1)
    idx = e.op("Range", [e.const(np.asarray(0, np.int64)), e.op("Squeeze", [n]), e.const(np.asarray(1, np.int64))])
    p = e.const(np.asarray(_P, np.int64))
    s = e.op("Mod", [e.op("Cast", [step], to=7), p])
    off = e.op("Mod", [e.op("Mod", [e.op("Add", [e.op("Mul", [s, e.const(np.asarray(48271, np.int64))]),
                                                 e.const(np.asarray(salt, np.int64))]), p]),
                       e.const(np.asarray(1 << 30, np.int64))])
    h = e.op("Add", [idx, off])
    for c in (1013904223, 362436069):
        h = e.op("Mod", [e.op("Add", [e.op("Mul", [h, h]), e.const(np.asarray(c, np.int64))]), p])
    keep = e.op("GreaterOrEqual", [h, e.const(np.asarray(math.ceil(rate * _P), np.int64))])
    mask = e.op("Mul", [e.op("Cast", [keep], to=1), e.scalar(1.0 / (1.0 - rate))])
    return e.op("Reshape", [mask, shape])


@register
class Rescaling(Layer):
    """Multiplies inputs by ``scale`` and adds ``offset`` (e.g. ``Rescaling(1/255)`` for images).

    Args:
        scale: float multiplier.
        offset: float added after scaling.

    Input shape: any. Output shape: as the input, float32.
    """

    supports_masking = True

    def __init__(self, scale: float, offset: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        from .args import check_float

        self.scale = check_float(scale, "scale")
        self.offset = check_float(offset, "offset")

    def compute_output_types(self, input_types):
        return [float_type(input_types[0], self.dtype)]

    def lower(self, ctx, node):
        v = node.inputs[0]
        x, layout = ctx.get_any(v)
        if v.type.dtype != self.dtype:
            x = ctx.e.cast(x, self.dtype)
        # constants of the input's rank: onnxruntime broadcasts a rank-0 scalar against a tensor
        # whose last axis is 1 (an image's channel) about 50x slower than a [1, 1, 1, 1] one
        ones = [1] * v.type.rank
        y = ctx.e.op("Mul", [x, ctx.e.const(np.full(ones, self.scale, np.float32), hint="scale")])
        if self.offset:
            y = ctx.e.op("Add", [y, ctx.e.const(np.full(ones, self.offset, np.float32), hint="offset")])
        return y, layout
