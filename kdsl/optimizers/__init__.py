"""Optimizers, as ``keras.optimizers``: Keras's update rules, written into the training graph,
and the learning-rate ``schedules``."""
from ..train.optimizers import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Ftrl, Lion, Nadam, Optimizer, RMSprop
from ..train.optimizers import get_optimizer as get
from . import schedules

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "Lion", "Ftrl",
           "get", "schedules"]
