"""Keras 3 weight initializers, seeded and deterministic.

Each initializer is a function ``(rng, shape, dtype) -> np.ndarray`` registered
under its Keras name. Fans follow Keras: for a kernel of shape
``[*receptive_field, fan_in_axis, fan_out_axis]`` the receptive field size
multiplies both fans.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..errors import KdslError, did_you_mean

__all__ = ["INITIALIZERS", "get_initializer", "compute_fans"]

Init = Callable[[np.random.Generator, tuple, str], np.ndarray]


def compute_fans(shape: tuple) -> tuple[int, int]:
    """Keras's fan computation (``keras.src.initializers.random_initializers.compute_fans``)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _variance_scaling(scale: float, mode: str, distribution: str) -> Init:
    def init(rng, shape, dtype):
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        s = scale / max(1.0, n)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * s)
            return rng.uniform(-limit, limit, size=shape).astype(dtype)
        # truncated normal at two standard deviations, corrected as in Keras
        stddev = math.sqrt(s) / 0.87962566103423978
        return _truncated(rng, shape, stddev).astype(dtype)

    return init


def _truncated(rng: np.random.Generator, shape, stddev: float, mean: float = 0.0) -> np.ndarray:
    out = rng.normal(0.0, 1.0, size=shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.normal(0.0, 1.0, size=int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * stddev + mean


def _orthogonal(rng, shape, dtype):
    if len(shape) < 2:
        return rng.normal(size=shape).astype(dtype)
    rows = math.prod(shape[:-1])
    cols = shape[-1]
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q[:rows, :cols].reshape(shape).astype(dtype)


INITIALIZERS: dict[str, Init] = {
    "zeros": lambda rng, shape, dtype: np.zeros(shape, dtype),
    "ones": lambda rng, shape, dtype: np.ones(shape, dtype),
    "glorot_uniform": _variance_scaling(1.0, "fan_avg", "uniform"),
    "glorot_normal": _variance_scaling(1.0, "fan_avg", "truncated_normal"),
    "he_uniform": _variance_scaling(2.0, "fan_in", "uniform"),
    "he_normal": _variance_scaling(2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": _variance_scaling(1.0, "fan_in", "uniform"),
    "lecun_normal": _variance_scaling(1.0, "fan_in", "truncated_normal"),
    # Keras 3 defaults: RandomUniform(-0.05, 0.05), RandomNormal(0, 0.05), TruncatedNormal(0, 0.05)
    "uniform": lambda rng, shape, dtype: rng.uniform(-0.05, 0.05, size=shape).astype(dtype),
    "random_uniform": lambda rng, shape, dtype: rng.uniform(-0.05, 0.05, size=shape).astype(dtype),
    "normal": lambda rng, shape, dtype: rng.normal(0.0, 0.05, size=shape).astype(dtype),
    "random_normal": lambda rng, shape, dtype: rng.normal(0.0, 0.05, size=shape).astype(dtype),
    "truncated_normal": lambda rng, shape, dtype: _truncated(rng, shape, 0.05).astype(dtype),
    "orthogonal": _orthogonal,
}


def get_initializer(name: str) -> Init:
    """Resolve an initializer by Keras name (case-insensitive, CamelCase accepted)."""
    key = _snake(name)
    if key not in INITIALIZERS:
        raise KdslError(f"Unknown initializer. Received: '{name}'; expected one of "
                        f"{sorted(INITIALIZERS)}.", hint=did_you_mean(key, INITIALIZERS))
    return INITIALIZERS[key]


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
