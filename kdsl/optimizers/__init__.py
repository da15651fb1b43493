"""Optimizers, as ``keras.optimizers``: Keras's update rules, written into the training graph,
and the learning-rate ``schedules``."""
from ..train.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from ..train.optimizers import get_optimizer as get
from . import schedules

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "get", "schedules"]
