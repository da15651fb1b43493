"""Learning-rate schedules, as ``keras.optimizers.schedules``: ``schedule(step) -> learning rate``.

Each schedule is a plain Python callable of the 0-based optimizer step (the number of
batches trained so far) with Keras 3's formulas, computed in double precision.
"""
from __future__ import annotations

import inspect
import math
from numbers import Real
from typing import Any, Sequence

from ..errors import KdslError, did_you_mean

__all__ = ["LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay", "from_spec"]


def _real(owner: str, name: str, value, positive: bool = False, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise KdslError(f"Argument `{name}` of {owner} must be a finite number. Received: {name}={value!r}")
    if positive and value <= 0:
        raise KdslError(f"Argument `{name}` must be > 0, received: {name}={value!r}")
    if non_negative and value < 0:
        raise KdslError(f"Argument `{name}` must be >= 0, received: {name}={value!r}")
    return value


def _step(step) -> float:
    return float(step)


class LearningRateSchedule:
    """Base class: a serializable ``step -> learning rate`` function."""

    def __call__(self, step) -> float:
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override `__call__`.")

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LearningRateSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ExponentialDecay(LearningRateSchedule):
    """A learning rate decayed by ``decay_rate`` every ``decay_steps`` steps::

        initial_learning_rate * decay_rate ** (step / decay_steps)

    With ``staircase=True`` the exponent is ``floor(step / decay_steps)`` (a step function).

    Args:
        initial_learning_rate: the learning rate at step 0.
        decay_steps: must be positive.
        decay_rate: the decay factor per ``decay_steps`` steps.
        staircase: decay at discrete intervals.
        name: defaults to ``"ExponentialDecay"``.

    Example:

    >>> lr = ExponentialDecay(1e-2, decay_steps=10000, decay_rate=0.9)
    >>> round(lr(20000), 6)   # 1e-2 * 0.9**2
    0.0081
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False,
                 name: str = "ExponentialDecay") -> None:
        owner = "ExponentialDecay"
        self.initial_learning_rate = _real(owner, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _real(owner, "decay_steps", decay_steps, positive=True)
        self.decay_rate = _real(owner, "decay_rate", decay_rate)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step) -> float:
        p = _step(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return float(self.initial_learning_rate * self.decay_rate ** p)

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """A piecewise-constant learning rate.

    ``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, and ``values[-1]`` after the last boundary.

    Args:
        boundaries: increasing step numbers.
        values: one more value than boundaries.
        name: defaults to ``"PiecewiseConstant"``.

    Example:

    >>> lr = PiecewiseConstantDecay([100000, 110000], [1.0, 0.5, 0.1])
    >>> lr(100000), lr(100001), lr(110001)
    (1.0, 0.5, 0.1)
    """

    def __init__(self, boundaries: Sequence[float], values: Sequence[float],
                 name: str = "PiecewiseConstant") -> None:
        owner = "PiecewiseConstantDecay"
        if not isinstance(boundaries, (list, tuple)) or not isinstance(values, (list, tuple)):
            raise KdslError("PiecewiseConstantDecay expects lists of boundaries and values. Received: "
                            f"boundaries={boundaries!r}, values={values!r}")
        if len(boundaries) != len(values) - 1:
            raise KdslError("The length of boundaries should be 1 less than the length of values. Received: "
                            f"boundaries={list(boundaries)} of length {len(boundaries)}, and "
                            f"values={list(values)} of length {len(values)}.")
        self.boundaries = [_real(owner, "boundaries", b) for b in boundaries]
        self.values = [_real(owner, "values", v) for v in values]
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise KdslError(f"PiecewiseConstantDecay boundaries must be increasing. Received: "
                            f"boundaries={self.boundaries}")
        self.name = name

    def __call__(self, step) -> float:
        step = _step(step)
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return float(value)
        return float(self.values[-1])

    def get_config(self) -> dict[str, Any]:
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay, with an optional linear warmup (Loshchilov & Hutter, SGDR, 2017).

    Without warmup (``warmup_target=None``)::

        step = min(step, decay_steps)
        decayed = (1 - alpha) * 0.5 * (1 + cos(pi * step / decay_steps)) + alpha
        lr = initial_learning_rate * decayed

    With warmup, the rate rises linearly from ``initial_learning_rate`` to ``warmup_target``
    over ``warmup_steps`` steps, then decays from ``warmup_target`` as above over
    ``decay_steps`` more steps (and stays at ``alpha * warmup_target``).

    Args:
        initial_learning_rate: the learning rate at step 0.
        decay_steps: number of steps to decay over; must be positive.
        alpha: the minimum learning rate, as a fraction of the decayed-from rate.
        name: defaults to ``"CosineDecay"``.
        warmup_target: the learning rate reached at the end of warmup; ``None``: no warmup.
        warmup_steps: number of warmup steps.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0,
                 name: str = "CosineDecay", warmup_target: float | None = None, warmup_steps: int = 0) -> None:
        owner = "CosineDecay"
        self.initial_learning_rate = _real(owner, "initial_learning_rate", initial_learning_rate)
        self.decay_steps = _real(owner, "decay_steps", decay_steps, positive=True)
        self.alpha = _real(owner, "alpha", alpha)
        self.name = name
        self.warmup_target = None if warmup_target is None else _real(owner, "warmup_target", warmup_target)
        self.warmup_steps = _real(owner, "warmup_steps", warmup_steps, non_negative=True)

    def _decay(self, step: float, decay_from: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return decay_from * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step) -> float:
        step = _step(step)
        if self.warmup_target is None:
            return float(self._decay(min(step, self.decay_steps), self.initial_learning_rate))
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            delta = self.warmup_target - self.initial_learning_rate
            return float(delta * (step / self.warmup_steps) + self.initial_learning_rate)
        return float(self._decay(step - self.warmup_steps, self.warmup_target))

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


_SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, CosineDecay)}


def from_spec(spec) -> LearningRateSchedule:
    """Build a schedule from a :class:`kdsl.train.specs.Spec` such as
    ``ExponentialDecay(1e-2, decay_steps=1000, decay_rate=0.9)``.

    Positional arguments follow the constructor's order; errors point at ``spec.span``.
    """
    cls = _SCHEDULES.get(spec.name)
    if cls is None:
        raise KdslError(f"Unknown learning-rate schedule '{spec.name}'. Expected one of {sorted(_SCHEDULES)}.",
                        spec.span, did_you_mean(spec.name, _SCHEDULES))
    params = inspect.signature(cls).parameters
    names = list(params)
    if len(spec.args) > len(names):
        raise KdslError(f"{spec.name} takes at most {len(names)} positional arguments. "
                        f"Received: {len(spec.args)}.", spec.span)
    kwargs = dict(zip(names, spec.args))
    for key, value in spec.kwargs.items():
        if key not in params:
            raise KdslError(f"Unknown argument '{key}' for learning-rate schedule '{spec.name}'. Expected one of "
                            f"{names}.", spec.span, did_you_mean(key, names))
        if key in kwargs:
            raise KdslError(f"{spec.name} got two values for argument '{key}'.", spec.span)
        kwargs[key] = value
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise KdslError(f"{spec.name} is missing required argument{'s' if len(missing) > 1 else ''} "
                        + ", ".join(f"'{m}'" for m in missing) + ".", spec.span)
    try:
        return cls(**kwargs)
    except KdslError as e:
        raise e.with_span(spec.span)
