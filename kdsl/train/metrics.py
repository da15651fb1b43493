"""Keras metrics as partial sums computed in the graph and aggregated on the host.

Each step's graph outputs a metric's parts (e.g. ``total`` and ``count``); the runtime adds
them up over an epoch and :meth:`Metric.result` turns the sums into the number Keras reports
(for mean metrics: ``sum(values * sample_weight) / sum(sample_weight)``).
"""
from __future__ import annotations

import numpy as np

from ..errors import KdslError, did_you_mean
from ..ir import TensorType
from ..lower.emitter import Emitter

__all__ = ["Metric", "MeanMetric", "METRIC_CLASSES", "get_metric"]


class Metric:
    """Base class. ``parts`` names the sums the graph emits."""

    fn_name = "metric"
    parts: tuple[str, ...] = ("total", "count")

    def __init__(self, name: str | None = None):
        self.name = name or self.fn_name

    def emit(self, e: Emitter, y_pred: str, y_true: str, sample_weight: str, out: TensorType,
             y_true_type: TensorType) -> dict[str, str]:
        """ONNX names of this batch's partial sums, one per entry of ``parts``."""
        raise NotImplementedError

    def result(self, sums: dict[str, np.ndarray]) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class MeanMetric(Metric):
    """A Keras ``MeanMetricWrapper``: per-sample values, weighted mean over the epoch."""

    def values(self, e: Emitter, y_pred: str, y_true: str, out: TensorType, y_true_type: TensorType) -> str:
        raise NotImplementedError

    def emit(self, e, y_pred, y_true, sample_weight, out, y_true_type):
        v = self.values(e, y_pred, y_true, out, y_true_type)       # [batch] or [batch, ...]
        return weighted_sums(e, v, sample_weight)

    def result(self, sums):
        c = float(sums["count"])
        return float(sums["total"]) / c if c else 0.0


def weighted_sums(e: Emitter, values: str, sample_weight: str) -> dict[str, str]:
    """``total = sum(values * w)``, ``count = sum(w)`` with ``w`` broadcast to the values."""
    flat_v = e.op("Flatten", [values], axis=1)                         # [batch, k]
    w = e.unsqueeze(sample_weight, [1])                                # [batch, 1]
    weighted = e.op("Mul", [flat_v, w])
    total = e.reduce("ReduceSum", weighted, [0, 1], keepdims=False)
    count = e.reduce("ReduceSum", e.op("Expand", [w, e.op("Shape", [flat_v])]), [0, 1], keepdims=False)
    return {"total": total, "count": count}


class SparseCategoricalAccuracy(MeanMetric):
    fn_name = "sparse_categorical_accuracy"

    def values(self, e, y_pred, y_true, out, y_true_type):
        pred = e.op("ArgMax", [y_pred], axis=-1, keepdims=0)
        label = y_true if y_true_type.rank == out.rank - 1 else e.squeeze(y_true, [-1])
        if y_true_type.dtype != "int64":
            label = e.cast(label, "int64")
        return e.cast(e.op("Equal", [pred, label]), "float32")


METRIC_CLASSES: dict[str, type[Metric]] = {
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
}


def get_metric(identifier, loss=None, out: TensorType | None = None) -> Metric:
    """Resolve a metric like Keras: ``"accuracy"`` picks binary / sparse / categorical accuracy
    from the loss and the output's shape."""
    from .specs import METRIC_ALIASES, Spec, canonical_metric

    if isinstance(identifier, Metric):
        return identifier
    kwargs = {}
    if isinstance(identifier, Spec):
        spec = canonical_metric(Spec(identifier.name, list(identifier.args), dict(identifier.kwargs)))
        identifier, kwargs = spec.name, spec.kwargs
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if not isinstance(identifier, str):
        raise KdslError(f"Could not interpret metric. Received: {identifier!r}")
    key = METRIC_ALIASES.get(identifier.lower(), identifier.lower())
    by_class = {c.__name__.lower(): n for n, c in METRIC_CLASSES.items()}
    key = by_class.get(key.replace("_", ""), key)
    if key == "accuracy":
        loss_name = getattr(loss, "fn_name", "")
        if out is not None and out.shape[-1] == 1 or loss_name == "binary_crossentropy":
            real = "binary_accuracy"
        elif loss_name == "sparse_categorical_crossentropy":
            real = "sparse_categorical_accuracy"
        else:
            real = "categorical_accuracy"
        m = METRIC_CLASSES[real](**kwargs)
        m.name = kwargs.get("name", "accuracy")
        return m
    if key not in METRIC_CLASSES:
        raise KdslError(f"Unknown metric. Received: {identifier!r}; expected one of "
                        f"{sorted(METRIC_CLASSES) + ['accuracy']}.",
                        hint=did_you_mean(identifier, list(METRIC_CLASSES) + ["accuracy"]))
    m = METRIC_CLASSES[key](**kwargs)
    if identifier.lower() in METRIC_ALIASES and "name" not in kwargs:
        m.name = identifier.lower()
    return m
