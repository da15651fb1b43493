"""Normalization layers: BatchNormalization (inference and training), LayerNormalization."""
from __future__ import annotations

import numpy as np

from ..lower.context import CL
from .args import ArgError, check_float
from .base import Layer, ShapeError, register
from .core import float_type

__all__ = ["BatchNormalization", "LayerNormalization"]


def _int_axis(axis, layer: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ArgError(f"The `axis` argument of {layer} must be an int. Received: axis={axis!r}", "axis")
    return axis


def _norm_axis(axis: int, shape_str: str, rank: int, layer: str) -> int:
    if not -rank <= axis < rank or axis % rank == 0:
        raise ShapeError(f"{layer} `axis` must be a non-batch axis of the input, an int in "
                         f"[{-(rank - 1)}, -1] or [1, {rank - 1}]. Received: axis={axis} for an input "
                         f"of shape {shape_str}")
    return axis % rank


@register
class BatchNormalization(Layer):
    """Normalizes its inputs with the moving mean and variance (inference).

    ``gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta``,
    along the feature axis ``axis``. Training (batch statistics, moving-average
    updates with ``momentum``) is not part of the exported inference model.

    Args:
        axis: int, the feature axis (default -1, the last axis).
        momentum: momentum of the moving averages (used in training).
        epsilon: small float added to the variance to avoid dividing by zero.
        center: whether to add the offset ``beta``.
        scale: whether to multiply by ``gamma``.
        beta_initializer, gamma_initializer, moving_mean_initializer,
            moving_variance_initializer: initializer names.

    Input shape: any, rank >= 2. Output shape: as the input.
    Weights: ``gamma [C]`` (if scale), ``beta [C]`` (if center), ``moving_mean [C]``,
    ``moving_variance [C]`` (the last two non-trainable), ``C = input_shape[axis]``.
    """

    supports_masking = True

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True, beta_initializer: str = "zeros",
                 gamma_initializer: str = "ones", moving_mean_initializer: str = "zeros",
                 moving_variance_initializer: str = "ones", name: str | None = None,
                 trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self.axis = _int_axis(axis, "BatchNormalization")
        self.momentum = check_float(momentum, "momentum")
        self.epsilon = check_float(epsilon, "epsilon")
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer

    def build(self, input_types):
        t = input_types[0]
        c = t.shape[_norm_axis(self.axis, t.shape_str(), t.rank, "BatchNormalization")]
        if not isinstance(c, int):
            raise ShapeError(f"Axis {self.axis} of the input of BatchNormalization must have a known "
                             f"size. Received: input shape {t.shape_str()}")
        if self.scale:
            self.add_weight("gamma", (c,), self.gamma_initializer)
        if self.center:
            self.add_weight("beta", (c,), self.beta_initializer)
        self.add_weight("moving_mean", (c,), self.moving_mean_initializer, trainable=False)
        self.add_weight("moving_variance", (c,), self.moving_variance_initializer, trainable=False)

    def compute_output_types(self, input_types):
        t = input_types[0]
        a = _norm_axis(self.axis, t.shape_str(), t.rank, "BatchNormalization")
        c = self.weights[-1].shape[0]
        if t.shape[a] != c:
            raise ShapeError(f"BatchNormalization '{self.display_name()}' expects an input whose axis "
                             f"{self.axis} is {c}. Received: input shape {t.shape_str()}")
        return [float_type(t, self.dtype)]

    def lower(self, ctx, node):
        v, e = node.inputs[0], ctx.e
        rank = v.type.rank
        a = self.axis % rank
        x, layout = ctx.get_any(v)
        if v.type.dtype != self.dtype:
            x = e.cast(x, self.dtype)
        pos = a if layout == CL else (1 if a == rank - 1 else a + 1)   # feature axis in x
        c = self.weights[-1].shape[0]
        gamma = ctx.weight(self, "gamma") if self.scale else None
        beta = ctx.weight(self, "beta") if self.center else None
        mean, var = ctx.weight(self, "moving_mean"), ctx.weight(self, "moving_variance")
        if ctx.training:
            return [(self._lower_training(ctx, x, pos, rank, c, gamma, beta, mean, var), layout)]
        if pos == 1:   # ONNX's own layout (N, C, ...): one node
            gamma = gamma or e.const(np.ones(c, self.dtype), hint="ones")
            beta = beta or e.const(np.zeros(c, self.dtype), hint="zeros")
            return [(e.op("BatchNormalization", [x, gamma, beta, mean, var], epsilon=self.epsilon), layout)]
        # y = x * inv + shift, inv = gamma / sqrt(var + eps), shift = beta - mean * inv
        inv = e.op("Reciprocal", [e.op("Sqrt", [e.op("Add", [var, e.scalar(self.epsilon, self.dtype)])])])
        if gamma:
            inv = e.op("Mul", [inv, gamma])
        shift = e.op("Mul", [mean, inv])
        shift = e.op("Sub", [beta, shift]) if beta else e.op("Neg", [shift])
        if pos != rank - 1:   # broadcast along axis pos
            inv = e.reshape(inv, [c] + [1] * (rank - 1 - pos))
            shift = e.reshape(shift, [c] + [1] * (rank - 1 - pos))
        return [(e.op("Add", [e.op("Mul", [x, inv]), shift]), layout)]


    def _lower_training(self, ctx, x, pos, rank, c, gamma, beta, moving_mean, moving_var):
        """Batch statistics (Keras: biased variance) and moving-average updates of the state."""
        e = ctx.e
        axes = [i for i in range(rank) if i != pos]
        mean = e.reduce("ReduceMean", x, axes, keepdims=True)
        d = e.op("Sub", [x, mean])
        var = e.reduce("ReduceMean", e.op("Mul", [d, d]), axes, keepdims=True)
        inv = e.op("Reciprocal", [e.op("Sqrt", [e.op("Add", [var, e.scalar(self.epsilon, self.dtype)])])])
        bshape = [1] * rank
        bshape[pos] = c
        if gamma:
            inv = e.op("Mul", [inv, e.reshape(gamma, bshape)])
        y = e.op("Mul", [d, inv])
        if beta:
            y = e.op("Add", [y, e.reshape(beta, bshape)])
        m = self.momentum
        for wname, old, batch in (("moving_mean", moving_mean, mean), ("moving_variance", moving_var, var)):
            flat = e.reshape(batch, [c])
            new = e.op("Add", [e.op("Mul", [old, e.scalar(m)]), e.op("Mul", [flat, e.scalar(1.0 - m)])])
            ctx.update_state(self, wname, new)
        return y


@register
class LayerNormalization(Layer):
    """Normalizes each sample over its last axis (or last few axes).

    ``gamma * (x - mean) / sqrt(variance + epsilon) + beta`` with the mean and
    variance taken over ``axis`` for each sample.

    Args:
        axis: int or list of ints, the axes to normalize over; they must be the
            trailing axes of the input (e.g. ``-1`` or ``[-2, -1]``).
        epsilon: small float added to the variance to avoid dividing by zero.
        center: whether to add the offset ``beta``.
        scale: whether to multiply by ``gamma``.
        beta_initializer, gamma_initializer: initializer names.

    Input shape: any, rank >= 2. Output shape: as the input.
    Weights: ``gamma`` (if scale), ``beta`` (if center), each shaped like the
    input's sizes along ``axis`` in the order given (Keras's layout).
    """

    supports_masking = True

    def __init__(self, axis=-1, epsilon: float = 1e-3, center: bool = True, scale: bool = True,
                 beta_initializer: str = "zeros", gamma_initializer: str = "ones",
                 name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        if isinstance(axis, (list, tuple)):
            if not axis:
                raise ArgError(f"The `axis` argument of LayerNormalization must be an int or a non-empty "
                               f"list of ints. Received: axis={axis!r}", "axis")
            self.axis = [_int_axis(a, "LayerNormalization") for a in axis]
        else:
            self.axis = _int_axis(axis, "LayerNormalization")
        self.epsilon = check_float(epsilon, "epsilon")
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = beta_initializer
        self.gamma_initializer = gamma_initializer

    def _axes(self, t) -> list[int]:
        """Normalised axes, in the order given; checked to be the trailing axes."""
        given = self.axis if isinstance(self.axis, list) else [self.axis]
        axes = [_norm_axis(a, t.shape_str(), t.rank, "LayerNormalization") for a in given]
        if sorted(axes) != list(range(t.rank - len(axes), t.rank)):
            raise ArgError("LayerNormalization supports only the trailing axes of its input, e.g. "
                           f"axis=-1 or axis=[-2, -1]. Received: axis={self.axis!r} for an input of "
                           f"shape {t.shape_str()}", "axis")
        return axes

    def build(self, input_types):
        t = input_types[0]
        shape = tuple(t.shape[a] for a in self._axes(t))
        if not all(isinstance(d, int) for d in shape):
            raise ShapeError(f"The axes {self.axis} of the input of LayerNormalization must have known "
                             f"sizes. Received: input shape {t.shape_str()}")
        if self.scale:
            self.add_weight("gamma", shape, self.gamma_initializer)
        if self.center:
            self.add_weight("beta", shape, self.beta_initializer)

    def _param_shape(self, t) -> tuple:
        return tuple(t.shape[a] for a in self._axes(t))

    def compute_output_types(self, input_types):
        t = input_types[0]
        shape = self._param_shape(t)
        if self.weights and self.weights[0].shape != shape:
            raise ShapeError(f"LayerNormalization '{self.display_name()}' expects an input whose axes "
                             f"{self.axis} have sizes {self.weights[0].shape}. Received: input shape "
                             f"{t.shape_str()}")
        return [float_type(t, self.dtype)]

    def lower(self, ctx, node):
        v, e = node.inputs[0], ctx.e
        t = v.type
        x = ctx.input_as(v, self.dtype, CL)
        first = t.rank - len(self._axes(t))
        trailing = list(t.shape[first:])

        def param(wname: str, fill: float):
            if not ctx.has_weight(self, wname):
                return e.const(np.full(trailing, fill, self.dtype), hint="ones" if fill else "zeros")
            w = ctx.weight(self, wname)
            # Keras reshapes a weight given in another axis order to the input's axis order
            return w if list(self._param_shape(t)) == trailing else e.reshape(w, trailing)

        inputs = [x, param("gamma", 1.0)] + ([param("beta", 0.0)] if self.center else [])
        return e.op("LayerNormalization", inputs, axis=first, epsilon=self.epsilon)

