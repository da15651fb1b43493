"""Small real data sets bundled with kdsl, as ``keras.datasets`` (nothing is downloaded)."""
from . import mnist

__all__ = ["mnist"]
