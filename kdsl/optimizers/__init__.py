"""Optimizers, as ``keras.optimizers``. For now only the learning-rate ``schedules``;
the update rules themselves are built into the training graph."""
from . import schedules

__all__ = ["schedules"]
