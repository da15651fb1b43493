"""Small real data sets bundled with kdsl, as ``keras.datasets`` (nothing is downloaded)."""
from . import mnist, sentiment

__all__ = ["mnist", "sentiment"]
