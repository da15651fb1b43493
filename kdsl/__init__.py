"""kdsl: a Keras-flavoured model language and builder that compiles to ONNX."""
__version__ = "0.1.0"

from . import callbacks, layers, train, utils
from .errors import KdslError, Span
from .model import Input, Model, Sequential

__all__ = ["__version__", "KdslError", "Span", "Input", "Model", "Sequential", "callbacks", "layers", "train",
           "utils"]
from .frontend.api import load, loads
from .runtime.checkpoint import load_model

__all__ += ["load", "loads", "load_model"]
