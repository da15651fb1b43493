"""Training: train-section specs, losses, metrics, optimizers (as ONNX) and the fit API."""
from . import losses, metrics, optimizers, specs

__all__ = ["losses", "metrics", "optimizers", "specs"]
