"""Layers, Keras 3 names, arguments and defaults; one module per family.

``kdsl.layers.Dense(128, activation="relu")(x)`` in the builder API, or
``x -> Dense(128, activation=relu)`` in a ``.kd`` file: the same class.
"""
from .base import LAYERS, Layer, Weight
from .core import Activation, Dense, Dropout, Rescaling

from . import ops  # noqa: F401  (registers nothing; functions of the language)

_FAMILIES = ("conv", "pooling", "spatial", "reshaping", "normalization", "merge", "embedding", "recurrent",
             "attention", "text")
for _mod in _FAMILIES:
    try:
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _e:  # a family not written yet
        if _e.name != f"{__name__}.{_mod}":
            raise

globals().update(LAYERS)
__all__ = ["Layer", "Weight", "LAYERS", *sorted(LAYERS)]
