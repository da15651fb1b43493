"""Keras optimizers: host-side state (learning rate, schedule, iterations) and their update
rules written into the training graph as ONNX.

The graph receives the learning rate ``lr`` and the 1-based step ``step`` as float32 scalars
each step; each weight ``w`` has slots (``w:m``, ``w:v``...) carried from step to step like
the weights. Order of operations follows Keras 3: clip gradients (clipnorm, global_clipnorm,
clipvalue), apply weight decay (``w -= w * weight_decay * lr``), then the update rule.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import KdslError, did_you_mean
from ..lower.emitter import Emitter

__all__ = ["Optimizer", "SGD", "Adam", "OPTIMIZER_CLASSES", "get_optimizer"]


class Optimizer:
    """Base class with Keras's common arguments.

    Args:
        learning_rate: a float or a schedule (``kdsl.optimizers.schedules``).
        weight_decay: decoupled weight decay, applied as ``w -= w * weight_decay * lr``.
        clipnorm: clip each gradient to this L2 norm.
        clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]``.
        global_clipnorm: clip all gradients together to this global L2 norm.
    """

    default_learning_rate = 0.001
    #: slot names and their initial values
    slots: tuple[tuple[str, float], ...] = ()

    def __init__(self, learning_rate: Any = None, weight_decay: float | None = None,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, name: str | None = None):
        if clipnorm is not None and global_clipnorm is not None:
            raise KdslError("Only one of `clipnorm` and `global_clipnorm` can be set. "
                            f"Received: clipnorm={clipnorm}, global_clipnorm={global_clipnorm}")
        self._learning_rate = self.default_learning_rate if learning_rate is None else learning_rate
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.name = name or type(self).__name__.lower()
        self.iterations = 0

    # -- learning rate (host side) ---------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        """The learning rate for the current iteration (a schedule is evaluated at ``iterations``)."""
        lr = self._learning_rate
        return float(lr(self.iterations)) if callable(lr) else float(lr)

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        self._learning_rate = value

    def get_config(self) -> dict:
        cfg = {k: getattr(self, k) for k in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "name")}
        lr = self._learning_rate
        cfg["learning_rate"] = lr.get_config() | {"class_name": type(lr).__name__} if hasattr(lr, "get_config") \
            else float(lr)
        return cfg

    # -- graph side ------------------------------------------------------------------------------
    def emit_updates(self, e: Emitter, params: list[tuple[str, str, dict[str, str]]], lr: str,
                     step: str) -> list[tuple[str, dict[str, str]]]:
        """For each ``(weight, gradient, slots)`` emit and return ``(new_weight, new_slots)``."""
        grads = self._clip(e, [g for _, g, _ in params])
        out = []
        for (w, _, slots), g in zip(params, grads):
            if self.weight_decay:
                w_dec = e.op("Sub", [w, e.op("Mul", [w, e.op("Mul", [lr, e.scalar(self.weight_decay)])])])
            else:
                w_dec = w
            out.append(self.update(e, w_dec, g, slots, lr, step))
        return out

    def _clip(self, e: Emitter, grads: list[str]) -> list[str]:
        if self.clipnorm is not None:
            grads = [_clip_by_norm(e, g, self.clipnorm) for g in grads]
        if self.global_clipnorm is not None:
            sq = [_sum_all(e, e.op("Mul", [g, g])) for g in grads]
            norm = e.op("Sqrt", [e.op("Sum", sq) if len(sq) > 1 else sq[0]])
            c = e.scalar(self.global_clipnorm)
            scale = e.op("Div", [c, e.op("Max", [norm, c])])
            grads = [e.op("Mul", [g, scale]) for g in grads]
        if self.clipvalue is not None:
            grads = [e.op("Clip", [g, e.scalar(-self.clipvalue), e.scalar(self.clipvalue)]) for g in grads]
        return grads

    def update(self, e: Emitter, w: str, g: str, slots: dict[str, str], lr: str, step: str):
        raise NotImplementedError

    def initial_slots(self, shape: tuple[int, ...], dtype=np.float32) -> dict[str, np.ndarray]:
        return {name: np.full(shape, value, dtype=dtype) for name, value in self.slots}


def _sum_all(e: Emitter, x: str) -> str:
    """Sum over every axis (ReduceSum without axes reduces all of them)."""
    return e.op("ReduceSum", [x], keepdims=0)


def _clip_by_norm(e: Emitter, g: str, clip: float) -> str:
    """Keras ``clip_by_norm``: ``g * clip / max(||g||, clip)``."""
    norm = e.op("Sqrt", [_sum_all(e, e.op("Mul", [g, g]))])
    c = e.scalar(clip)
    return e.op("Mul", [g, e.op("Div", [c, e.op("Max", [norm, c])])])


class SGD(Optimizer):
    """Gradient descent with momentum (Keras 3).

    ``m = momentum * m - lr * g``; ``w += m`` (nesterov: ``w += momentum * m - lr * g``);
    without momentum ``w -= lr * g``. Default learning rate 0.01.
    """

    default_learning_rate = 0.01

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, nesterov: bool = False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if not 0.0 <= float(momentum) <= 1.0:
            raise KdslError(f"`momentum` must be a float between [0, 1]. Received: momentum={momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.slots = (("momentum", 0.0),) if self.momentum else ()

    def update(self, e, w, g, slots, lr, step):
        step_g = e.op("Mul", [g, lr])
        if not self.momentum:
            return e.op("Sub", [w, step_g]), {}
        m = e.op("Sub", [e.op("Mul", [slots["momentum"], e.scalar(self.momentum)]), step_g])
        if self.nesterov:
            new_w = e.op("Sub", [e.op("Add", [w, e.op("Mul", [m, e.scalar(self.momentum)])]), step_g])
        else:
            new_w = e.op("Add", [w, m])
        return new_w, {"momentum": m}


class Adam(Optimizer):
    """Adam (Keras 3): ``alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)``,
    ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``, ``w -= alpha * m / (sqrt(v) + eps)``."""

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = float(beta_1), float(beta_2), float(epsilon), bool(amsgrad)
        self.slots = (("m", 0.0), ("v", 0.0)) + ((("vhat", 0.0),) if self.amsgrad else ())

    def update(self, e, w, g, slots, lr, step):
        b1, b2 = self.beta_1, self.beta_2
        p1 = e.op("Pow", [e.scalar(b1), step])
        p2 = e.op("Pow", [e.scalar(b2), step])
        alpha = e.op("Div", [e.op("Mul", [lr, e.op("Sqrt", [e.op("Sub", [e.scalar(1.0), p2])])]),
                             e.op("Sub", [e.scalar(1.0), p1])])
        m = e.op("Add", [slots["m"], e.op("Mul", [e.op("Sub", [g, slots["m"]]), e.scalar(1 - b1)])])
        v = e.op("Add", [slots["v"], e.op("Mul", [e.op("Sub", [e.op("Mul", [g, g]), slots["v"]]), e.scalar(1 - b2)])])
        new = {"m": m, "v": v}
        denom_v = v
        if self.amsgrad:
            denom_v = e.op("Max", [slots["vhat"], v])
            new["vhat"] = denom_v
        upd = e.op("Div", [e.op("Mul", [m, alpha]), e.op("Add", [e.op("Sqrt", [denom_v]), e.scalar(self.epsilon)])])
        return e.op("Sub", [w, upd]), new


OPTIMIZER_CLASSES: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam}


def get_optimizer(identifier) -> Optimizer:
    """Resolve an optimizer: an :class:`Optimizer`, a name ("adam"), or a train-section Spec."""
    from .specs import Spec, canonical_optimizer

    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        identifier = Spec(identifier)
    if isinstance(identifier, Spec):
        spec = canonical_optimizer(Spec(identifier.name, list(identifier.args), dict(identifier.kwargs),
                                        identifier.span))
        kwargs = dict(spec.kwargs)
        lr = kwargs.get("learning_rate")
        if isinstance(lr, Spec):
            from ..optimizers.schedules import from_spec
            kwargs["learning_rate"] = from_spec(lr)
        if spec.name not in OPTIMIZER_CLASSES:
            raise KdslError(f"Optimizer '{spec.name}' is not available yet.",
                            hint=did_you_mean(spec.name, OPTIMIZER_CLASSES))
        return OPTIMIZER_CLASSES[spec.name](**kwargs)
    raise KdslError(f"Could not interpret optimizer. Received: {identifier!r}")
