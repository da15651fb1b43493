"""Keras activations: names, aliases, and how each is written in ONNX.

``lower_activation(ctx, name, x, axis)`` emits the activation of ONNX value
``x``; ``axis`` is where the feature axis is in ``x``'s current layout (only
softmax-like activations care), so activations work on either layout.
"""
from __future__ import annotations

import math
from typing import Callable

from ..errors import KdslError, did_you_mean
from ..lower.emitter import Emitter

__all__ = ["ACTIVATIONS", "ALIASES", "canonical_activation", "lower_activation", "AXIS_ACTIVATIONS"]


def _gelu(e: Emitter, x: str, axis: int) -> str:
    if e.opset >= 20:
        return e.op("Gelu", [x], approximate="none")
    half = e.op("Mul", [x, e.scalar(0.5)])
    erf = e.op("Erf", [e.op("Mul", [x, e.scalar(1.0 / math.sqrt(2.0))])])
    return e.op("Mul", [half, e.op("Add", [erf, e.scalar(1.0)])])


def _silu(e: Emitter, x: str, axis: int) -> str:
    return e.op("Mul", [x, e.op("Sigmoid", [x])])


def _hard_silu(e: Emitter, x: str, axis: int) -> str:
    return e.op("Mul", [x, e.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)])


def _mish(e: Emitter, x: str, axis: int) -> str:
    return e.op("Mul", [x, e.op("Tanh", [e.op("Softplus", [x])])])


ACTIVATIONS: dict[str, Callable[[Emitter, str, int], str]] = {
    "linear": lambda e, x, axis: x,
    "relu": lambda e, x, axis: e.op("Relu", [x]),
    "relu6": lambda e, x, axis: e.op("Clip", [x, e.scalar(0.0), e.scalar(6.0)]),
    "sigmoid": lambda e, x, axis: e.op("Sigmoid", [x]),
    "tanh": lambda e, x, axis: e.op("Tanh", [x]),
    "softmax": lambda e, x, axis: e.op("Softmax", [x], axis=axis),
    "log_softmax": lambda e, x, axis: e.op("LogSoftmax", [x], axis=axis),
    "gelu": _gelu,
    "elu": lambda e, x, axis: e.op("Elu", [x], alpha=1.0),
    "selu": lambda e, x, axis: e.op("Selu", [x]),
    # Keras 3: keras.activations.leaky_relu(x, negative_slope=0.2)
    "leaky_relu": lambda e, x, axis: e.op("LeakyRelu", [x], alpha=0.2),
    "silu": _silu,
    "softplus": lambda e, x, axis: e.op("Softplus", [x]),
    "softsign": lambda e, x, axis: e.op("Softsign", [x]),
    # Keras 3: hard_sigmoid(x) = relu6(x + 3) / 6
    "hard_sigmoid": lambda e, x, axis: e.op("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5),
    "hard_silu": _hard_silu,
    "exponential": lambda e, x, axis: e.op("Exp", [x]),
    "mish": _mish,
}
ALIASES = {"swish": "silu", "hard_swish": "hard_silu", "none": "linear"}
AXIS_ACTIVATIONS = {"softmax", "log_softmax"}


def canonical_activation(name, arg: str = "activation") -> str:
    """Validate an activation name (or ``None``) and return its canonical form."""
    from .args import ArgError

    if name is None:
        return "linear"
    if not isinstance(name, str):
        raise ArgError(f"The `{arg}` argument must be the name of an activation. "
                       f"Received: {arg}={name!r}", arg)
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ACTIVATIONS:
        raise ArgError(f"Unknown activation. Received: {arg}='{name}'; expected one of "
                       f"{sorted(ACTIVATIONS) + sorted(ALIASES)}.", arg,
                       hint=did_you_mean(name, list(ACTIVATIONS) + list(ALIASES)))
    return key


def lower_activation(e: Emitter, name: str, x: str, axis: int = -1) -> str:
    return ACTIVATIONS[name](e, x, axis)


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise KdslError(f"Unknown activation '{name}'.")
