"""kdsl: a Keras-flavoured model language and builder that compiles to ONNX."""
__version__ = "0.1.0"

from . import callbacks, datasets, layers, losses, metrics, optimizers, train, utils
from .errors import KdslError, Span
from .frontend.api import load, loads
from .model import Input, Model, Sequential
from .runtime.checkpoint import load_model

__all__ = ["__version__", "KdslError", "Span", "Input", "Model", "Sequential", "load", "loads", "load_model",
           "callbacks", "datasets", "layers", "losses", "metrics", "optimizers", "train", "utils"]
