"""Losses, as ``keras.losses`` (Keras 3 semantics; computed inside the training graph)."""
from .train.losses import (BinaryCrossentropy, CategoricalCrossentropy, Hinge, Huber, KLDivergence, Loss,
                           MeanAbsoluteError, MeanSquaredError, SparseCategoricalCrossentropy)
from .train.losses import get_loss as get

__all__ = ["Loss", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "MeanAbsoluteError", "Huber", "KLDivergence", "Hinge", "get"]
