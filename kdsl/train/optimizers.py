"""Keras optimizers: host-side state (learning rate, schedule, iterations) and their update
rules written into the training graph as ONNX.

The graph receives the learning rate ``lr`` and the 1-based step ``step`` as float32 scalars
each step; each weight ``w`` has slots (``w:m``, ``w:v``...) carried from step to step like
the weights. Order of operations follows Keras 3 (``BaseOptimizer.apply``): clip the
gradients (only one of ``clipnorm``, ``global_clipnorm``, ``clipvalue`` may be set), apply
weight decay (``w = w - w * weight_decay * lr``), then the update rule with the decayed weight.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ..errors import KdslError, did_you_mean
from ..lower.emitter import Emitter

#: weights of at most this many elements are updated together (see Optimizer.emit_updates): below
#: it, a dozen onnxruntime nodes per weight (~3 us each) cost more than the copies into and out of
#: the concatenation (~7 passes)
GROUP_MAX = 8192

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "Lion",
           "Ftrl", "OPTIMIZER_CLASSES", "get_optimizer"]


def _opt_float(value, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise KdslError(f"`{what}` must be a float. Received: {what}={value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise KdslError(f"`{what}` must be a float. Received: {what}={value!r}") from None


class Optimizer:
    """Base class with Keras's common arguments.

    Args:
        learning_rate: a float or a schedule (``kdsl.optimizers.schedules``), i.e. a callable of
            the 0-based iteration.
        weight_decay: decoupled weight decay, applied as ``w -= w * weight_decay * lr`` before
            the update.
        clipnorm: clip each gradient to this L2 norm.
        clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]``.
        global_clipnorm: clip all gradients together to this global L2 norm.
        use_ema: keep an exponential moving average of each trained weight (a slot ``w:ema``,
            updated after every step: ``ema = m * ema + (1 - m) * w`` with ``m = ema_momentum``,
            0 at the first step); at the end of ``fit`` the weights are replaced by their
            averages (Keras's ``finalize_variable_values``).
        ema_momentum: the momentum ``m`` of the average.
        ema_overwrite_frequency: if set, the weights are also replaced by their averages every
            this many steps.
        name: the optimizer's name.
    """

    default_learning_rate = 0.001
    default_name = "optimizer"
    #: slot names and their initial values (set per instance by subclasses)
    slots: tuple[tuple[str, float], ...] = ()

    def __init__(self, learning_rate: Any = None, weight_decay: float | None = None,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: int | None = None, name: str | None = None):
        n_clip = sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm))
        if n_clip > 1:
            raise KdslError("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                            f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                            f"global_clipnorm={global_clipnorm}")
        lr = self.default_learning_rate if learning_rate is None else learning_rate
        if not callable(lr):
            lr = _opt_float(lr, "learning_rate")
        self._learning_rate = lr
        self.weight_decay = _opt_float(weight_decay, "weight_decay")
        self.clipnorm = _opt_float(clipnorm, "clipnorm")
        self.clipvalue = _opt_float(clipvalue, "clipvalue")
        self.global_clipnorm = _opt_float(global_clipnorm, "global_clipnorm")
        self.name = name or self.default_name
        self.iterations = 0
        self.use_ema = bool(use_ema)
        if isinstance(ema_momentum, bool) or not 0.0 <= float(ema_momentum) <= 1.0:
            raise KdslError(f"`ema_momentum` must be a float between [0, 1]. Received: ema_momentum={ema_momentum}")
        self.ema_momentum = float(ema_momentum)
        if ema_overwrite_frequency is not None and (isinstance(ema_overwrite_frequency, bool) or
                                                    int(ema_overwrite_frequency) != ema_overwrite_frequency or
                                                    int(ema_overwrite_frequency) < 1):
            raise KdslError("`ema_overwrite_frequency` must be a positive integer or None. Received: "
                            f"ema_overwrite_frequency={ema_overwrite_frequency}")
        self.ema_overwrite_frequency = None if ema_overwrite_frequency is None else int(ema_overwrite_frequency)

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
        cfg = {k: getattr(self, k) for k in ("name", "weight_decay", "clipnorm", "global_clipnorm", "clipvalue",
                                             "use_ema", "ema_momentum", "ema_overwrite_frequency")}
        lr = self._learning_rate
        cfg["learning_rate"] = lr.get_config() | {"class_name": type(lr).__name__} if hasattr(lr, "get_config") \
            else float(lr)
        return cfg

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- graph side ------------------------------------------------------------------------------
    def emit_updates(self, e: Emitter, params: list[tuple[str, str, dict[str, str]]], lr: str,
                     step: str, shapes: dict[str, tuple] | None = None) -> list[tuple[str, dict[str, str]]]:
        """For each ``(weight, gradient, slots)`` emit and return ``(new_weight, new_slots)``.

        ``lr`` and ``step`` are float32 scalars (``step`` is 1-based: Keras's ``iterations + 1``).
        With the weights' ``shapes``, the weights of at most ``GROUP_MAX`` elements are updated
        together: flattened and concatenated (weight, gradient, each slot), one update, split back.
        The rules are element-wise, so the values are those of separate updates, and a model's
        biases and small kernels then cost one set of a dozen nodes instead of one per weight
        (onnxruntime's per-node cost dominates the work on them).
        """
        if not params:
            return []
        grads = self._clip(e, [g for _, g, _ in params])
        size = {w: int(np.prod(shapes[w])) for w, _, _ in params} if shapes else {}
        small = [k for k, (w, _, _) in enumerate(params) if 0 < size.get(w, 0) <= GROUP_MAX]
        small = small if len(small) >= 2 else []
        out: list = [None if k in small else self._update_one(e, w, g, slots, lr, step)
                     for k, ((w, _, slots), g) in enumerate(zip(params, grads))]
        if small:
            shape_of = [shapes[params[k][0]] for k in small]

            def cat(names):
                return e.op("Concat", [n if len(sh) == 1 else e.reshape(n, [-1]) for n, sh in zip(names, shape_of)],
                            axis=0)

            def uncat(name):
                parts = e.op("Split", [name, e.ints([int(np.prod(sh)) for sh in shape_of])], n_out=len(small), axis=0)
                return [p if len(sh) == 1 else e.reshape(p, list(sh)) for p, sh in zip(parts, shape_of)]

            new_w, new_slots = self._update_one(
                e, cat([params[k][0] for k in small]), cat([grads[k] for k in small]),
                {s: cat([params[k][2][s] for k in small]) for s in params[small[0]][2]}, lr, step)
            ws, per_slot = uncat(new_w), {s: uncat(v) for s, v in new_slots.items()}
            for i, k in enumerate(small):
                out[k] = (ws[i], {s: v[i] for s, v in per_slot.items()})
        return out

    def _update_one(self, e: Emitter, w: str, g: str, slots: dict[str, str], lr: str, step: str):
        """Weight decay, the optimizer's rule and the EMA for one weight (or a concatenation)."""
        if self.weight_decay is not None:
            decay = e.op("Mul", [e.op("Mul", [w, e.scalar(self.weight_decay)]), lr])
            w = e.op("Sub", [w, decay])
        new_w, new_slots = self.update(e, w, g, slots, lr, step)
        if self.use_ema:
            new_w, new_slots["ema"] = self._ema(e, new_w, slots["ema"], step)
        return new_w, new_slots

    def _ema(self, e: Emitter, new_w: str, ema: str, step: str) -> tuple[str, str]:
        """Keras's ``_update_model_variables_moving_average`` (momentum 0 at the first step, so the
        average starts at the weight) and the overwrite every ``ema_overwrite_frequency`` steps."""
        first = e.op("Equal", [step, e.scalar(1.0)])
        m = e.op("Where", [first, e.scalar(0.0), e.scalar(self.ema_momentum)])
        new_ema = e.op("Add", [e.op("Mul", [ema, m]), e.op("Mul", [new_w, e.op("Sub", [e.scalar(1.0), m])])])
        if self.ema_overwrite_frequency:
            f = e.scalar(float(self.ema_overwrite_frequency))
            due = e.op("Equal", [e.op("Mul", [e.op("Floor", [e.op("Div", [step, f])]), f]), step])
            new_w = e.op("Where", [due, new_ema, new_w])
        return new_w, new_ema

    def _clip(self, e: Emitter, grads: list[str]) -> list[str]:
        """Keras's ``_clip_gradients``: clipnorm, else global_clipnorm, else clipvalue (if > 0)."""
        if self.clipnorm and self.clipnorm > 0:
            return [_clip_by_norm(e, g, self.clipnorm) for g in grads]
        if self.global_clipnorm and self.global_clipnorm > 0:
            return _clip_by_global_norm(e, grads, self.global_clipnorm)
        if self.clipvalue and self.clipvalue > 0:
            v = self.clipvalue
            return [e.op("Clip", [g, e.scalar(-v), e.scalar(v)]) for g in grads]
        return grads

    def update(self, e: Emitter, w: str, g: str, slots: dict[str, str], lr: str, step: str):
        """The update rule for one weight: ``(new_weight, {slot: new_value})``."""
        raise NotImplementedError

    def initial_slots(self, shape: tuple[int, ...], dtype=np.float32) -> dict[str, np.ndarray]:
        slots = self.slots + ((("ema", 0.0),) if self.use_ema else ())
        return {name: np.full(shape, value, dtype=dtype) for name, value in slots}


def _sum_all(e: Emitter, x: str) -> str:
    """Sum over every axis (ReduceSum without axes reduces all of them)."""
    return e.op("ReduceSum", [x], keepdims=0)


def _average_in(e: Emitter, avg: str, x: str, beta: float) -> str:
    """A moment's update, Keras's form: ``avg + (x - avg) * (1 - beta)``."""
    return e.op("Add", [avg, e.op("Mul", [e.op("Sub", [x, avg]), e.scalar(1 - beta)])])


def _clip_by_norm(e: Emitter, g: str, clip: float) -> str:
    """Keras ``_clip_by_norm``: ``g * clip / max(||g||, clip)``."""
    norm = e.op("Sqrt", [_sum_all(e, e.op("Mul", [g, g]))])
    c = e.scalar(clip)
    return e.op("Div", [e.op("Mul", [g, c]), e.op("Max", [norm, c])])


def _clip_by_global_norm(e: Emitter, grads: list[str], clip: float) -> list[str]:
    """Keras ``clip_by_global_norm``: ``scale = clip * min(1 / norm, 1 / clip)``
    (+ ``norm - norm``, NaN for a non-finite norm), every gradient times ``scale``."""
    sq = [_sum_all(e, e.op("Mul", [g, g])) for g in grads]
    norm = e.op("Sqrt", [e.op("Sum", sq) if len(sq) > 1 else sq[0]])
    one = e.scalar(1.0)
    scale = e.op("Mul", [e.scalar(clip), e.op("Min", [e.op("Div", [one, norm]), e.scalar(1.0 / clip)])])
    scale = e.op("Add", [scale, e.op("Sub", [norm, norm])])
    return [e.op("Mul", [g, scale]) for g in grads]


class SGD(Optimizer):
    """Gradient descent with momentum (Keras 3).

    ``w -= lr * g`` without momentum; with momentum ``m = momentum * m - lr * g`` and
    ``w += m`` (nesterov: ``w += momentum * m - lr * g``, with the new ``m``).
    Default learning rate 0.01.
    """

    default_learning_rate = 0.01
    default_name = "SGD"

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float | None = None, clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: int | None = None, name: str | None = "SGD"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, name)
        if isinstance(momentum, bool) or not 0.0 <= float(momentum) <= 1.0:
            raise KdslError(f"`momentum` must be a float between [0, 1]. Received: momentum={momentum}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.slots = (("momentum", 0.0),) if self.momentum != 0 else ()

    def get_config(self):
        return super().get_config() | {"momentum": self.momentum, "nesterov": self.nesterov}

    def update(self, e, w, g, slots, lr, step):
        step_g = e.op("Mul", [g, lr])
        if self.momentum == 0:
            return e.op("Sub", [w, step_g]), {}
        mom = e.scalar(self.momentum)
        m = e.op("Sub", [e.op("Mul", [slots["momentum"], mom]), step_g])
        if self.nesterov:
            new_w = e.op("Add", [w, e.op("Sub", [e.op("Mul", [m, mom]), step_g])])
        else:
            new_w = e.op("Add", [w, m])
        return new_w, {"momentum": m}


class Adam(Optimizer):
    """Adam (Keras 3), with ``t = step``::

        alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
        m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
        amsgrad: vhat = max(vhat, v), used instead of v
        w -= m * alpha / (sqrt(v) + epsilon)

    Slots ``m``, ``v`` (and ``vhat``), zero-initialised.
    """

    default_name = "adam"

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, weight_decay: float | None = None,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: int | None = None, name: str | None = "adam"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, name)
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)
        self.epsilon, self.amsgrad = float(epsilon), bool(amsgrad)
        self.slots = (("m", 0.0), ("v", 0.0)) + ((("vhat", 0.0),) if self.amsgrad else ())

    def get_config(self):
        return super().get_config() | {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                                       "amsgrad": self.amsgrad}

    def update(self, e, w, g, slots, lr, step):
        b1, b2 = self.beta_1, self.beta_2
        one = e.scalar(1.0)
        p1 = e.op("Pow", [e.scalar(b1), step])
        p2 = e.op("Pow", [e.scalar(b2), step])
        alpha = e.op("Div", [e.op("Mul", [lr, e.op("Sqrt", [e.op("Sub", [one, p2])])]), e.op("Sub", [one, p1])])
        m = _average_in(e, slots["m"], g, b1)
        v = _average_in(e, slots["v"], e.op("Mul", [g, g]), b2)
        new = {"m": m, "v": v}
        denom_v = v
        if self.amsgrad:
            denom_v = e.op("Max", [slots["vhat"], v])
            new["vhat"] = denom_v
        upd = e.op("Div", [e.op("Mul", [m, alpha]), e.op("Add", [e.op("Sqrt", [denom_v]), e.scalar(self.epsilon)])])
        return e.op("Sub", [w, upd]), new


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras 3's ``AdamW``: the base optimizer's
    ``w -= w * weight_decay * lr`` before the Adam update). ``weight_decay`` defaults to 0.004."""

    default_name = "adamw"

    def __init__(self, learning_rate: Any = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: int | None = None, name: str | None = "adamw"):
        if weight_decay is None:
            raise KdslError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue,
                         global_clipnorm, use_ema, ema_momentum, ema_overwrite_frequency, name)


class RMSprop(Optimizer):
    """RMSprop (Keras 3)::

        velocity = rho * velocity + (1 - rho) * g^2
        centered: average_gradient = rho * average_gradient + (1 - rho) * g
                  denominator = velocity - average_gradient^2 + epsilon
        else:     denominator = velocity + epsilon
        increment = lr * g / sqrt(denominator)
        momentum > 0: momentum_slot = momentum * momentum_slot + increment; w -= momentum_slot
        else:         w -= increment

    Slots ``velocity`` (and ``momentum``, ``average_gradient``), zero-initialised.
    """

    default_name = "rmsprop"

    def __init__(self, learning_rate: Any = 0.001, rho: float = 0.9, momentum: float = 0.0, epsilon: float = 1e-7,
                 centered: bool = False, weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None, use_ema: bool = False,
                 ema_momentum: float = 0.99, ema_overwrite_frequency: int | None = None,
                 name: str | None = "rmsprop"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, name)
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        self.centered = bool(centered)
        self.slots = (("velocity", 0.0),) + ((("momentum", 0.0),) if self.momentum > 0 else ()) \
            + ((("average_gradient", 0.0),) if self.centered else ())

    def get_config(self):
        return super().get_config() | {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                                       "centered": self.centered}

    def update(self, e, w, g, slots, lr, step):
        rho = self.rho
        vel = e.op("Add", [e.op("Mul", [e.scalar(rho), slots["velocity"]]),
                           e.op("Mul", [e.scalar(1 - rho), e.op("Mul", [g, g])])])
        new = {"velocity": vel}
        if self.centered:
            avg = e.op("Add", [e.op("Mul", [e.scalar(rho), slots["average_gradient"]]),
                               e.op("Mul", [e.scalar(1 - rho), g])])
            new["average_gradient"] = avg
            denom = e.op("Add", [e.op("Sub", [vel, e.op("Mul", [avg, avg])]), e.scalar(self.epsilon)])
        else:
            denom = e.op("Add", [vel, e.scalar(self.epsilon)])
        increment = e.op("Div", [e.op("Mul", [lr, g]), e.op("Sqrt", [denom])])
        if self.momentum > 0:
            mom = e.op("Add", [e.op("Mul", [e.scalar(self.momentum), slots["momentum"]]), increment])
            new["momentum"] = mom
            return e.op("Sub", [w, mom]), new
        return e.op("Sub", [w, increment]), new


class Adagrad(Optimizer):
    """Adagrad (Keras 3): ``accumulator += g^2``; ``w -= lr * g / sqrt(accumulator + epsilon)``.
    The ``accumulator`` slot starts at ``initial_accumulator_value``."""

    default_name = "adagrad"

    def __init__(self, learning_rate: Any = 0.001, initial_accumulator_value: float = 0.1, epsilon: float = 1e-7,
                 weight_decay: float | None = None, clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: int | None = None, name: str | None = "adagrad"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, name)
        if float(initial_accumulator_value) < 0:
            raise KdslError("`initial_accumulator_value` must be non-negative. Received: "
                            f"initial_accumulator_value={initial_accumulator_value}")
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)
        self.slots = (("accumulator", self.initial_accumulator_value),)

    def get_config(self):
        return super().get_config() | {"initial_accumulator_value": self.initial_accumulator_value,
                                       "epsilon": self.epsilon}

    def update(self, e, w, g, slots, lr, step):
        acc = e.op("Add", [slots["accumulator"], e.op("Mul", [g, g])])
        upd = e.op("Div", [e.op("Mul", [lr, g]), e.op("Sqrt", [e.op("Add", [acc, e.scalar(self.epsilon)])])])
        return e.op("Sub", [w, upd]), {"accumulator": acc}


def _float_between(value, what: str, lo: float = 0.0, hi: float = 1.0) -> float:
    """``value`` as a float in ``[lo, hi]``, else a Keras-style error naming what was received."""
    v = _opt_float(value, what)
    if v is None or not lo <= v <= hi:
        raise KdslError(f"`{what}` must be a float between [{lo:g}, {hi:g}]. Received: {what}={value!r}")
    return v


def _non_negative(value, what: str) -> float:
    v = _opt_float(value, what)
    if v is None or v < 0:
        raise KdslError(f"`{what}` must be a non-negative float. Received: {what}={value!r}")
    return v


class Adadelta(Optimizer):
    """Adadelta (Keras 3), with ``rms(x) = sqrt(x + epsilon)``::

        accumulated_grad = rho * accumulated_grad + (1 - rho) * g^2
        delta = -rms(accumulated_delta_var) * g / rms(accumulated_grad)
        accumulated_delta_var = rho * accumulated_delta_var + (1 - rho) * delta^2
        w += lr * delta

    Slots ``accumulated_grad``, ``accumulated_delta_var``, zero-initialised. Keras's default
    learning rate is 0.001; the original paper's form is ``learning_rate=1.0``.
    """

    default_name = "adadelta"

    def __init__(self, learning_rate: Any = 0.001, rho: float = 0.95, epsilon: float = 1e-7,
                 weight_decay: float | None = None, clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: int | None = None, name: str | None = "adadelta"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, name)
        self.rho = _float_between(rho, "rho")
        self.epsilon = _non_negative(epsilon, "epsilon")
        self.slots = (("accumulated_grad", 0.0), ("accumulated_delta_var", 0.0))

    def get_config(self):
        return super().get_config() | {"rho": self.rho, "epsilon": self.epsilon}

    def update(self, e, w, g, slots, lr, step):
        rho, eps = e.scalar(self.rho), e.scalar(self.epsilon)
        one_minus_rho = e.scalar(1 - self.rho)

        def rms(x):
            return e.op("Sqrt", [e.op("Add", [x, eps])])

        acc_g = e.op("Add", [e.op("Mul", [rho, slots["accumulated_grad"]]),
                             e.op("Mul", [one_minus_rho, e.op("Mul", [g, g])])])
        delta = e.op("Neg", [e.op("Div", [e.op("Mul", [rms(slots["accumulated_delta_var"]), g]), rms(acc_g)])])
        acc_d = e.op("Add", [e.op("Mul", [rho, slots["accumulated_delta_var"]]),
                             e.op("Mul", [one_minus_rho, e.op("Mul", [delta, delta])])])
        new_w = e.op("Add", [w, e.op("Mul", [lr, delta])])
        return new_w, {"accumulated_grad": acc_g, "accumulated_delta_var": acc_d}


class Adamax(Optimizer):
    """Adamax (Keras 3), Adam with the infinity norm, ``t = step``::

        m += (g - m) * (1 - beta_1)
        u = max(beta_2 * u, |g|)
        w -= lr * m / ((1 - beta_1^t) * (u + epsilon))

    Slots ``m`` (the first moment) and ``u`` (the weighted infinity norm), zero-initialised.
    """

    default_name = "adamax"

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None, use_ema: bool = False,
                 ema_momentum: float = 0.99, ema_overwrite_frequency: int | None = None,
                 name: str | None = "adamax"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, name)
        self.beta_1, self.beta_2 = _float_between(beta_1, "beta_1"), _float_between(beta_2, "beta_2")
        self.epsilon = _non_negative(epsilon, "epsilon")
        self.slots = (("m", 0.0), ("u", 0.0))

    def get_config(self):
        return super().get_config() | {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def update(self, e, w, g, slots, lr, step):
        p1 = e.op("Pow", [e.scalar(self.beta_1), step])
        alpha = e.op("Div", [lr, e.op("Sub", [e.scalar(1.0), p1])])
        m = _average_in(e, slots["m"], g, self.beta_1)
        u = e.op("Max", [e.op("Mul", [e.scalar(self.beta_2), slots["u"]]), e.op("Abs", [g])])
        upd = e.op("Div", [e.op("Mul", [m, alpha]), e.op("Add", [u, e.scalar(self.epsilon)])])
        return e.op("Sub", [w, upd]), {"m": m, "u": u}


#: Nadam's momentum schedule ``u_s = beta_1 * (1 - 0.5 * 0.96^s)``: the products
#: ``prod_{s<=t} (1 - 0.5 * 0.96^s)`` for t = 0..NADAM_TABLE (taken in float64 with Keras's float32
#: 0.96, then rounded to float32); beyond it the remaining factors differ from 1 by less than
#: 12.5 * 0.96^NADAM_TABLE ~ 3e-10, below float32's resolution
NADAM_TABLE = 600
_NADAM_PRODUCTS = np.concatenate([[1.0], np.cumprod(
    1.0 - 0.5 * float(np.float32(0.96)) ** np.arange(1, NADAM_TABLE + 1))])


class Nadam(Optimizer):
    """Nadam (Keras 3): Adam with Nesterov momentum, ``t = step``::

        u_t = beta_1 * (1 - 0.5 * 0.96^t);  u_{t+1} = beta_1 * (1 - 0.5 * 0.96^(t+1))
        u_product_t = u_1 * ... * u_t;  u_product_{t+1} = u_product_t * u_{t+1}
        m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
        m_hat = u_{t+1} * m / (1 - u_product_{t+1}) + (1 - u_t) * g / (1 - u_product_t)
        v_hat = v / (1 - beta_2^t)
        w -= lr * m_hat / (sqrt(v_hat) + epsilon)

    Slots ``m``, ``v``, zero-initialised. Keras keeps ``u_product`` as one scalar variable
    multiplied by ``u_t`` every step; here it is computed from the step:
    ``beta_1^t * prod_{s<=t} (1 - 0.5 * 0.96^s)``, the product read from a table
    (:data:`NADAM_TABLE` entries, constant past it to float32 precision).
    """

    default_name = "nadam"

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None, use_ema: bool = False,
                 ema_momentum: float = 0.99, ema_overwrite_frequency: int | None = None,
                 name: str | None = "nadam"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, name)
        self.beta_1, self.beta_2 = _float_between(beta_1, "beta_1"), _float_between(beta_2, "beta_2")
        self.epsilon = _non_negative(epsilon, "epsilon")
        self.slots = (("m", 0.0), ("v", 0.0))

    def get_config(self):
        return super().get_config() | {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def _momentum_schedule(self, e: Emitter, step: str) -> tuple[str, str, str, str]:
        """Scalars ``u_t``, ``u_{t+1}``, ``u_product_t``, ``u_product_{t+1}``."""
        b1, one, half = e.scalar(self.beta_1), e.scalar(1.0), e.scalar(0.5)
        decay = e.scalar(0.96)
        next_step = e.op("Add", [step, one])
        u_t = e.op("Mul", [b1, e.op("Sub", [one, e.op("Mul", [half, e.op("Pow", [decay, step])])])])
        u_next = e.op("Mul", [b1, e.op("Sub", [one, e.op("Mul", [half, e.op("Pow", [decay, next_step])])])])
        index = e.cast(e.op("Min", [step, e.scalar(float(NADAM_TABLE))]), "int64")
        product = e.op("Gather", [e.const(_NADAM_PRODUCTS.astype(np.float32), hint="nadam_products"), index],
                       axis=0)
        u_product = e.op("Mul", [e.op("Pow", [b1, step]), product])
        return u_t, u_next, u_product, e.op("Mul", [u_product, u_next])

    def update(self, e, w, g, slots, lr, step):
        b1, b2 = self.beta_1, self.beta_2
        one = e.scalar(1.0)
        u_t, u_next, u_product, u_product_next = self._momentum_schedule(e, step)
        c_m = e.op("Div", [u_next, e.op("Sub", [one, u_product_next])])
        c_g = e.op("Div", [e.op("Sub", [one, u_t]), e.op("Sub", [one, u_product])])
        m = _average_in(e, slots["m"], g, b1)
        v = _average_in(e, slots["v"], e.op("Mul", [g, g]), b2)
        m_hat = e.op("Add", [e.op("Mul", [m, c_m]), e.op("Mul", [g, c_g])])
        v_hat = e.op("Div", [v, e.op("Sub", [one, e.op("Pow", [e.scalar(b2), step])])])
        upd = e.op("Div", [e.op("Mul", [m_hat, lr]), e.op("Add", [e.op("Sqrt", [v_hat]), e.scalar(self.epsilon)])])
        return e.op("Sub", [w, upd]), {"m": m, "v": v}


class Lion(Optimizer):
    """Lion (Keras 3)::

        w -= lr * sign(beta_1 * momentum + (1 - beta_1) * g)
        momentum = beta_2 * momentum + (1 - beta_2) * g

    Slot ``momentum``, zero-initialised. ``beta_1`` must be in (0, 1] (0 is SignSGD).
    """

    default_name = "lion"

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.99,
                 weight_decay: float | None = None, clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: int | None = None, name: str | None = "lion"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, name)
        b1 = _opt_float(beta_1, "beta_1")
        if b1 is None or not 0.0 < b1 <= 1.0:
            raise KdslError("`beta_1` must be a float in the range (0, 1]; with beta_1=0 Lion degenerates to "
                            f"SignSGD. Received: beta_1={beta_1!r}")
        self.beta_1, self.beta_2 = b1, _float_between(beta_2, "beta_2")
        self.slots = (("momentum", 0.0),)

    def get_config(self):
        return super().get_config() | {"beta_1": self.beta_1, "beta_2": self.beta_2}

    def update(self, e, w, g, slots, lr, step):
        b1, b2 = self.beta_1, self.beta_2
        mom = slots["momentum"]
        c = e.op("Add", [e.op("Mul", [mom, e.scalar(b1)]), e.op("Mul", [g, e.scalar(1.0 - b1)])])
        new_w = e.op("Sub", [w, e.op("Mul", [lr, e.op("Sign", [c])])])
        new_mom = e.op("Add", [e.op("Mul", [mom, e.scalar(b2)]), e.op("Mul", [g, e.scalar(1.0 - b2)])])
        return new_w, {"momentum": new_mom}


class Ftrl(Optimizer):
    """FTRL (Keras 3), with ``p = learning_rate_power``, ``n`` the ``accumulator`` and ``z`` the
    ``linear`` slot::

        l2 = l2_regularization_strength + beta / (2 * lr)
        g_s = g + 2 * l2_shrinkage_regularization_strength * w
        n_new = n + g^2
        z += g_s - (n_new^(-p) - n^(-p)) / lr * w
        quadratic = n_new^(-p) / lr + 2 * l2
        w = (clip(z, -l1, l1) - z) / quadratic;  n = n_new

    The ``accumulator`` starts at ``initial_accumulator_value``, ``linear`` at 0.
    """

    default_name = "ftrl"

    def __init__(self, learning_rate: Any = 0.001, learning_rate_power: float = -0.5,
                 initial_accumulator_value: float = 0.1, l1_regularization_strength: float = 0.0,
                 l2_regularization_strength: float = 0.0, l2_shrinkage_regularization_strength: float = 0.0,
                 beta: float = 0.0, weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None, use_ema: bool = False,
                 ema_momentum: float = 0.99, ema_overwrite_frequency: int | None = None,
                 name: str | None = "ftrl"):
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
                         ema_overwrite_frequency, name)
        power = _opt_float(learning_rate_power, "learning_rate_power")
        if power is None or power > 0:
            raise KdslError("`learning_rate_power` must be a float less than or equal to 0. Received: "
                            f"learning_rate_power={learning_rate_power!r}")
        self.learning_rate_power = power
        self.initial_accumulator_value = _non_negative(initial_accumulator_value, "initial_accumulator_value")
        self.l1_regularization_strength = _non_negative(l1_regularization_strength, "l1_regularization_strength")
        self.l2_regularization_strength = _non_negative(l2_regularization_strength, "l2_regularization_strength")
        self.l2_shrinkage_regularization_strength = _non_negative(l2_shrinkage_regularization_strength,
                                                                  "l2_shrinkage_regularization_strength")
        self.beta = _opt_float(beta, "beta") or 0.0
        self.slots = (("accumulator", self.initial_accumulator_value), ("linear", 0.0))

    def get_config(self):
        return super().get_config() | {
            "learning_rate_power": self.learning_rate_power,
            "initial_accumulator_value": self.initial_accumulator_value,
            "l1_regularization_strength": self.l1_regularization_strength,
            "l2_regularization_strength": self.l2_regularization_strength,
            "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
            "beta": self.beta}

    def update(self, e, w, g, slots, lr, step):
        neg_power = e.scalar(-self.learning_rate_power)
        l2 = e.op("Add", [e.scalar(self.l2_regularization_strength),
                          e.op("Div", [e.scalar(self.beta), e.op("Mul", [e.scalar(2.0), lr])])])
        g_s = g
        if self.l2_shrinkage_regularization_strength:
            g_s = e.op("Add", [g, e.op("Mul", [e.scalar(2 * self.l2_shrinkage_regularization_strength), w])])
        n, z = slots["accumulator"], slots["linear"]
        n_new = e.op("Add", [n, e.op("Mul", [g, g])])
        n_new_pow = e.op("Pow", [n_new, neg_power])
        sigma = e.op("Div", [e.op("Sub", [n_new_pow, e.op("Pow", [n, neg_power])]), lr])
        z_new = e.op("Add", [z, e.op("Sub", [g_s, e.op("Mul", [sigma, w])])])
        quadratic = e.op("Add", [e.op("Div", [n_new_pow, lr]), e.op("Mul", [e.scalar(2.0), l2])])
        l1 = self.l1_regularization_strength
        clipped = e.op("Clip", [z_new, e.scalar(-l1), e.scalar(l1)])
        new_w = e.op("Div", [e.op("Sub", [clipped, z_new]), quadratic])
        return new_w, {"accumulator": n_new, "linear": z_new}


OPTIMIZER_CLASSES: dict[str, type[Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad, "adadelta": Adadelta,
    "adamax": Adamax, "nadam": Nadam, "lion": Lion, "ftrl": Ftrl,
}


def get_optimizer(identifier) -> Optimizer:
    """Resolve an optimizer: an :class:`Optimizer` (or class), a name ("adam", "RMSprop"), or a
    train-section Spec (``Adam(1e-3, beta_1=0.8)``; a learning-rate schedule Spec is built with
    :func:`kdsl.optimizers.schedules.from_spec`; ``None`` arguments mean the default)."""
    from .specs import Spec, canonical_optimizer

    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str):
        identifier = Spec(identifier)
    if isinstance(identifier, Spec):
        spec = canonical_optimizer(Spec(identifier.name, list(identifier.args),
                                        {k: v for k, v in identifier.kwargs.items() if v is not None},
                                        identifier.span))
        kwargs = dict(spec.kwargs)
        lr = kwargs.get("learning_rate")
        if isinstance(lr, Spec):
            from ..optimizers.schedules import from_spec
            kwargs["learning_rate"] = from_spec(lr)
        if spec.name not in OPTIMIZER_CLASSES:
            raise KdslError(f"Optimizer '{spec.name}' is not available yet.", spec.span,
                            did_you_mean(spec.name, OPTIMIZER_CLASSES))
        cls = OPTIMIZER_CLASSES[spec.name]
        unknown = [k for k in kwargs if k not in inspect.signature(cls).parameters]
        if unknown:
            raise KdslError(f"Unknown argument '{unknown[0]}' for optimizer '{spec.name}'.", spec.span)
        return cls(**kwargs)
    raise KdslError(f"Could not interpret optimizer. Received: {identifier!r}")
