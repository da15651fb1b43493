"""Utilities mirroring ``keras.utils``: seeding and label encoding."""
from __future__ import annotations

import numpy as np

from .errors import KdslError

__all__ = ["set_random_seed", "get_random_seed", "to_categorical"]

_SEED = 0


def set_random_seed(seed: int) -> None:
    """Seed weight initialisation (and training randomness) for models built after this call.

    Same seed -> identical initial weights, in the builder API and in ``.kd`` files alike.
    """
    global _SEED
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise KdslError(f"The seed must be a non-negative int. Received: seed={seed!r}")
    _SEED = seed


def get_random_seed() -> int:
    return _SEED


def to_categorical(y, num_classes: int | None = None, dtype: str = "float32") -> np.ndarray:
    """One-hot encode integer class labels, as ``keras.utils.to_categorical``."""
    y = np.asarray(y)
    if y.size and (not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0)):
        raise KdslError(f"to_categorical expects integer class labels. Received dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y.reshape(y.shape[:-1])
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise KdslError(f"Labels must be in [0, {num_classes}). Received: min {y.min()}, max {y.max()}.")
    out = np.zeros(y.shape + (num_classes,), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out
