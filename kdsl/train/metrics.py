"""Keras metrics as partial sums computed in the graph and aggregated on the host.

Each step's graph outputs a metric's parts (e.g. ``total`` and ``count``); the runtime adds
them up over an epoch and :meth:`Metric.result` turns the sums into the number Keras reports:

* mean metrics (accuracies, ``mean_squared_error``...), Keras's ``MeanMetricWrapper``: each
  sample's values are averaged over the non-batch axes, then
  ``total = sum(value * sample_weight)``, ``count = sum(sample_weight)``, result
  ``total / count`` (0 when ``count`` is 0);
* ``precision`` / ``recall``: weighted ``tp``, ``fp`` / ``tp``, ``fn`` per threshold
  (a prediction is positive when ``y_pred > threshold``; a target when it is non-zero);
* ``auc``: weighted ``tp``, ``fp``, ``tn``, ``fn`` vectors over Keras's ``num_thresholds``
  thresholds ``[-eps, 1/(n-1), ..., (n-2)/(n-1), 1+eps]`` (predictions clipped to [0, 1] and
  bucketed as Keras's evenly-distributed fast path), result by Keras's summation formulas.
"""
from __future__ import annotations

import inspect

import numpy as np

from ..errors import KdslError, did_you_mean
from ..ir import TensorType
from ..lower.emitter import Emitter

__all__ = ["Metric", "MeanMetric", "METRIC_CLASSES", "get_metric", "weighted_sums",
           "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy", "TopKCategoricalAccuracy",
           "SparseTopKCategoricalAccuracy", "Precision", "Recall", "AUC", "MeanSquaredError",
           "MeanAbsoluteError"]

EPSILON = 1e-7


class Metric:
    """Base class. ``parts`` names the sums the graph emits."""

    #: the Keras function name, e.g. "binary_accuracy" (the key in METRIC_CLASSES)
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

    def get_config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _divide_no_nan(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


# -- shape helpers ----------------------------------------------------------------------------------------
def _align(e: Emitter, y_pred: str, y_true: str, out: TensorType, tt: TensorType) -> tuple[str, str, int]:
    """Keras's ``squeeze_or_expand_to_same_rank(y_true, y_pred)``: returns both and their rank."""
    pr, tr = out.rank, tt.rank
    if pr == tr:
        return y_pred, y_true, pr
    if pr == tr + 1 and out.shape[-1] == 1:
        if tr == 1:
            return y_pred, e.unsqueeze(y_true, [-1]), pr
        return e.squeeze(y_pred, [-1]), y_true, tr
    if tr == pr + 1 and tt.shape[-1] == 1:
        if pr == 1:
            return e.unsqueeze(y_pred, [-1]), y_true, tr
        return y_pred, e.squeeze(y_true, [-1]), pr
    raise KdslError(f"Targets of type {tt} do not match the output {out} (the ranks must match, up to a "
                    "trailing axis of size 1).")


def _float(e: Emitter, x: str, dtype: str) -> str:
    return x if dtype == "float32" else e.cast(x, "float32")


def _labels(e: Emitter, y_true: str, out: TensorType, tt: TensorType) -> str:
    """Integer class labels (int64) with the output's shape minus the class axis."""
    label = y_true
    if tt.rank == out.rank and tt.shape[-1] == 1:
        label = e.squeeze(label, [-1])
    elif tt.rank != out.rank - 1:
        raise KdslError(f"Integer targets of type {tt} do not match the output {out}: expected the output's "
                        "shape without its last axis.")
    if tt.dtype != "int64":
        label = e.cast(label, "int64")
    return label


def _in_top_k(e: Emitter, y_pred: str, labels: str, num_classes: int, k: int) -> str:
    """float32 ``in_top_k``: the target's score has fewer than ``k`` scores strictly above it
    (ties straddling the boundary count as in), False for labels outside ``[0, classes)``."""
    classes = e.const(np.arange(num_classes, dtype=np.int64), hint="classes")
    hot = e.op("Equal", [e.unsqueeze(labels, [-1]), classes])
    at_label = e.reduce("ReduceMax", e.op("Where", [hot, y_pred, e.scalar(-np.inf)]), [-1], keepdims=True)
    above = e.reduce("ReduceSum", e.cast(e.op("Greater", [y_pred, at_label]), "float32"), [-1], keepdims=False)
    in_range = e.reduce("ReduceMax", e.cast(hot, "float32"), [-1], keepdims=False)
    ok = e.op("And", [e.op("Less", [above, e.scalar(float(k))]), e.op("Greater", [in_range, e.scalar(0.5)])])
    return e.cast(ok, "float32")


def weighted_sums(e: Emitter, values: str, sample_weight: str) -> dict[str, str]:
    """Keras's ``Mean.update_state(values, sample_weight)`` as partial sums: each sample's values
    are averaged over their non-batch axes, then ``total = sum(values * w)``, ``count = sum(w)``."""
    v = e.reduce("ReduceMean", e.op("Flatten", [values], axis=1), [1], keepdims=False)    # [batch]
    total = e.reduce("ReduceSum", e.op("Mul", [v, sample_weight]), [0], keepdims=False)
    count = e.reduce("ReduceSum", sample_weight, [0], keepdims=False)
    return {"total": total, "count": count}


class MeanMetric(Metric):
    """A Keras ``MeanMetricWrapper``: per-sample values, weighted mean over the epoch."""

    def values(self, e: Emitter, y_pred: str, y_true: str, out: TensorType, y_true_type: TensorType) -> str:
        """Per-sample values (``[batch]`` or ``[batch, ...]``)."""
        raise NotImplementedError

    def emit(self, e, y_pred, y_true, sample_weight, out, y_true_type):
        v = self.values(e, y_pred, y_true, out, y_true_type)
        return weighted_sums(e, v, sample_weight)

    def result(self, sums):
        return float(_divide_no_nan(np.sum(sums["total"]), np.sum(sums["count"])))


# -- accuracies -----------------------------------------------------------------------------------------
class BinaryAccuracy(MeanMetric):
    """``mean(y_true == (y_pred > threshold), axis=-1)``."""

    fn_name = "binary_accuracy"

    def __init__(self, name: str | None = "binary_accuracy", threshold: float = 0.5):
        super().__init__(name)
        if threshold is not None and not 0 < float(threshold) < 1:
            raise KdslError("Invalid value for argument `threshold`. Expected a value in interval (0, 1). "
                            f"Received: threshold={threshold}")
        self.threshold = 0.5 if threshold is None else float(threshold)

    def get_config(self):
        return super().get_config() | {"threshold": self.threshold}

    def values(self, e, y_pred, y_true, out, tt):
        p, t, r = _align(e, y_pred, y_true, out, tt)
        pred = e.cast(e.op("Greater", [p, e.scalar(self.threshold)]), tt.dtype)
        eq = e.cast(e.op("Equal", [t, pred]), "float32")
        return e.reduce("ReduceMean", eq, [-1], keepdims=False) if r > 1 else eq


class CategoricalAccuracy(MeanMetric):
    """``argmax(y_true, -1) == argmax(y_pred, -1)`` (one-hot targets)."""

    fn_name = "categorical_accuracy"

    def __init__(self, name: str | None = "categorical_accuracy"):
        super().__init__(name)

    def values(self, e, y_pred, y_true, out, tt):
        if tt.rank != out.rank:
            raise KdslError(f"{self.name} expects one-hot targets shaped like the output {out}; received {tt}. "
                            "For integer labels use sparse_categorical_accuracy.")
        a = e.op("ArgMax", [y_true], axis=-1, keepdims=0)
        b = e.op("ArgMax", [y_pred], axis=-1, keepdims=0)
        return e.cast(e.op("Equal", [a, b]), "float32")


class SparseCategoricalAccuracy(MeanMetric):
    """``y_true == argmax(y_pred, -1)`` (integer targets, ``[batch]`` or ``[batch, 1]``)."""

    fn_name = "sparse_categorical_accuracy"

    def __init__(self, name: str | None = "sparse_categorical_accuracy"):
        super().__init__(name)

    def values(self, e, y_pred, y_true, out, tt):
        pred = e.op("ArgMax", [y_pred], axis=-1, keepdims=0)
        label = y_true
        if tt.rank == out.rank and tt.shape[-1] == 1:
            label = e.squeeze(label, [-1])
        elif tt.rank != out.rank - 1:
            raise KdslError(f"Integer targets of type {tt} do not match the output {out}.")
        if tt.dtype == "int64":
            return e.cast(e.op("Equal", [pred, label]), "float32")
        # float labels compare with the predicted index cast to their type, as Keras
        return e.cast(e.op("Equal", [e.cast(pred, tt.dtype), label]), "float32")


class TopKCategoricalAccuracy(MeanMetric):
    """Whether ``argmax(y_true)`` is among the ``k`` highest predictions."""

    fn_name = "top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: str | None = "top_k_categorical_accuracy"):
        super().__init__(name)
        self.k = int(k)

    def get_config(self):
        return super().get_config() | {"k": self.k}

    def values(self, e, y_pred, y_true, out, tt):
        if tt.rank != out.rank:
            raise KdslError(f"{self.name} expects one-hot targets shaped like the output {out}; received {tt}. "
                            "For integer labels use sparse_top_k_categorical_accuracy.")
        labels = e.op("ArgMax", [y_true], axis=-1, keepdims=0)
        return _in_top_k(e, y_pred, labels, _classes(out, self.name), self.k)


class SparseTopKCategoricalAccuracy(MeanMetric):
    """Whether the integer target is among the ``k`` highest predictions."""

    fn_name = "sparse_top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: str | None = "sparse_top_k_categorical_accuracy"):
        super().__init__(name)
        self.k = int(k)

    def get_config(self):
        return super().get_config() | {"k": self.k}

    def values(self, e, y_pred, y_true, out, tt):
        return _in_top_k(e, y_pred, _labels(e, y_true, out, tt), _classes(out, self.name), self.k)


def _classes(out: TensorType, what: str) -> int:
    c = out.shape[-1]
    if not isinstance(c, int):
        raise KdslError(f"{what} needs a static number of classes. Received: {out}")
    return c


# -- regression ---------------------------------------------------------------------------------------
class MeanSquaredError(MeanMetric):
    """``mean(square(y_true - y_pred), axis=-1)``."""

    fn_name = "mean_squared_error"

    def __init__(self, name: str | None = "mean_squared_error"):
        super().__init__(name)

    def values(self, e, y_pred, y_true, out, tt):
        p, t, r = _align(e, y_pred, y_true, out, tt)
        d = e.op("Sub", [_float(e, t, tt.dtype), p])
        sq = e.op("Mul", [d, d])
        return e.reduce("ReduceMean", sq, [-1], keepdims=False) if r > 1 else sq


class MeanAbsoluteError(MeanMetric):
    """``mean(abs(y_true - y_pred), axis=-1)``."""

    fn_name = "mean_absolute_error"

    def __init__(self, name: str | None = "mean_absolute_error"):
        super().__init__(name)

    def values(self, e, y_pred, y_true, out, tt):
        p, t, r = _align(e, y_pred, y_true, out, tt)
        a = e.op("Abs", [e.op("Sub", [_float(e, t, tt.dtype), p])])
        return e.reduce("ReduceMean", a, [-1], keepdims=False) if r > 1 else a


# -- confusion-matrix metrics ------------------------------------------------------------------------------
def _confusion_inputs(e: Emitter, y_pred: str, y_true: str, sample_weight: str, out: TensorType,
                      tt: TensorType) -> tuple[str, str, str]:
    """Flattened ``[batch, k]`` predictions, 0/1 labels (non-zero targets are positive) and
    ``[batch, 1]`` weights."""
    p, t, _ = _align(e, y_pred, y_true, out, tt)
    label = e.cast(e.cast(t, "bool"), "float32")
    p = e.op("Flatten", [p], axis=1)
    label = e.op("Flatten", [label], axis=1)
    w = e.unsqueeze(sample_weight, [1])
    return p, label, w


def _thresholds(thresholds, default: float = 0.5) -> list[float]:
    ts = [default] if thresholds is None else (list(thresholds) if isinstance(thresholds, (list, tuple))
                                               else [thresholds])
    bad = [t for t in ts if t is None or isinstance(t, bool) or not 0 <= float(t) <= 1]
    if bad:
        raise KdslError(f"Threshold values must be in [0, 1]. Received: {bad}")
    return [float(t) for t in ts]


class _ThresholdMetric(Metric):
    """tp / fp / fn per threshold with ``y_pred > threshold`` (Keras's exact comparison path)."""

    def __init__(self, thresholds=None, name: str | None = None):
        super().__init__(name)
        self.thresholds = thresholds
        self._ts = _thresholds(thresholds)

    def get_config(self):
        return super().get_config() | {"thresholds": self.thresholds}

    def emit(self, e, y_pred, y_true, sample_weight, out, tt):
        p, label, w = _confusion_inputs(e, y_pred, y_true, sample_weight, out, tt)
        ts = e.const(np.asarray(self._ts, np.float32), hint="thresholds")
        pos = e.cast(e.op("Greater", [e.unsqueeze(p, [-1]), ts]), "float32")          # [batch, k, n]
        lw = e.unsqueeze(e.op("Mul", [label, w]), [-1])                                 # [batch, k, 1]
        res = {}
        if "tp" in self.parts:
            res["tp"] = e.reduce("ReduceSum", e.op("Mul", [pos, lw]), [0, 1], keepdims=False)
        if "fp" in self.parts:
            nw = e.unsqueeze(e.op("Mul", [e.op("Sub", [e.scalar(1.0), label]), w]), [-1])
            res["fp"] = e.reduce("ReduceSum", e.op("Mul", [pos, nw]), [0, 1], keepdims=False)
        if "fn" in self.parts:
            neg = e.op("Sub", [e.scalar(1.0), pos])
            res["fn"] = e.reduce("ReduceSum", e.op("Mul", [neg, lw]), [0, 1], keepdims=False)
        return res

    def _finish(self, r: np.ndarray):
        r = np.asarray(r, dtype=np.float64).reshape(-1)
        return float(r[0]) if len(self._ts) == 1 else [float(x) for x in r]


class Precision(_ThresholdMetric):
    """``tp / (tp + fp)`` with ``y_pred > thresholds`` (default 0.5)."""

    fn_name = "precision"
    parts = ("tp", "fp")

    def __init__(self, thresholds=None, name: str | None = "precision"):
        super().__init__(thresholds, name)

    def result(self, sums):
        return self._finish(_divide_no_nan(sums["tp"], np.asarray(sums["tp"]) + sums["fp"]))


class Recall(_ThresholdMetric):
    """``tp / (tp + fn)`` with ``y_pred > thresholds`` (default 0.5)."""

    fn_name = "recall"
    parts = ("tp", "fn")

    def __init__(self, thresholds=None, name: str | None = "recall"):
        super().__init__(thresholds, name)

    def result(self, sums):
        return self._finish(_divide_no_nan(sums["tp"], np.asarray(sums["tp"]) + sums["fn"]))


class AUC(Metric):
    """Area under the ROC or PR curve (Keras's ``AUC``, single-label: every prediction of the
    output is one data point).

    Thresholds: ``[-eps] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1 + eps]`` with
    ``n = num_thresholds``; a prediction (clipped to [0, 1]; through a sigmoid first when
    ``from_logits``) counts as positive at threshold ``t`` when ``y_pred > t``. The result uses
    ``summation_method`` ("interpolation": mid-point rule for ROC, Davis & Goadrich
    interpolation for PR; or "minoring" / "majoring").
    """

    fn_name = "auc"
    parts = ("tp", "fp", "tn", "fn")

    def __init__(self, num_thresholds: int = 200, curve: str = "ROC", summation_method: str = "interpolation",
                 name: str | None = "auc", from_logits: bool = False):
        super().__init__(name)
        if isinstance(num_thresholds, bool) or int(num_thresholds) <= 1:
            raise KdslError(f"Argument `num_thresholds` must be an integer > 1. Received: "
                            f"num_thresholds={num_thresholds}")
        curve_u = str(curve).upper()
        if curve_u not in ("ROC", "PR"):
            raise KdslError(f'Invalid AUC curve value: "{curve}". Expected values are ["PR", "ROC"]',
                            hint=did_you_mean(str(curve), ["ROC", "PR"]))
        sm = str(summation_method).lower()
        if sm not in ("interpolation", "minoring", "majoring"):
            raise KdslError(f'Invalid AUC summation method value: "{summation_method}". Expected values are '
                            '["interpolation", "majoring", "minoring"]')
        self.num_thresholds = int(num_thresholds)
        self.curve = curve_u
        self.summation_method = sm
        self.from_logits = bool(from_logits)

    @property
    def thresholds(self) -> list[float]:
        n = self.num_thresholds
        return [0.0 - EPSILON] + [(i + 1) * 1.0 / (n - 1) for i in range(n - 2)] + [1.0 + EPSILON]

    def get_config(self):
        return super().get_config() | {"num_thresholds": self.num_thresholds, "curve": self.curve,
                                       "summation_method": self.summation_method, "from_logits": self.from_logits}

    def emit(self, e, y_pred, y_true, sample_weight, out, tt):
        p, label, w = _confusion_inputs(e, y_pred, y_true, sample_weight, out, tt)
        if self.from_logits:
            p = e.op("Sigmoid", [p])
        n = self.num_thresholds
        p = e.op("Clip", [p, e.scalar(0.0), e.scalar(1.0)])
        # Keras's evenly-distributed path: bucket = max(ceil(p * (n - 1)) - 1, 0); the count at
        # threshold i is the sum of the buckets >= i
        bucket = e.op("Relu", [e.op("Sub", [e.op("Ceil", [e.op("Mul", [p, e.scalar(float(n - 1))])]),
                                            e.scalar(1.0)])])
        bucket = e.reshape(e.cast(bucket, "int64"), [-1])
        true_w = e.reshape(e.op("Mul", [label, w]), [-1])
        false_w = e.reshape(e.op("Mul", [e.op("Sub", [e.scalar(1.0), label]), w]), [-1])
        zeros = e.const(np.zeros(n, np.float32), hint="auc_zeros")
        axis0 = e.const(np.asarray(0, np.int64), hint="axis")

        def counts(weights: str) -> str:
            per_bucket = e.op("ScatterElements", [zeros, bucket, weights], axis=0, reduction="add")
            return e.op("CumSum", [per_bucket, axis0], reverse=1)

        tp = counts(true_w)
        fp = counts(false_w)
        pos_total = e.reduce("ReduceSum", true_w, [0], keepdims=False)
        neg_total = e.reduce("ReduceSum", false_w, [0], keepdims=False)
        return {"tp": tp, "fp": fp, "tn": e.op("Sub", [neg_total, fp]), "fn": e.op("Sub", [pos_total, tp])}

    def result(self, sums):
        tp, fp, tn, fn = (np.asarray(sums[k], dtype=np.float64).reshape(-1) for k in ("tp", "fp", "tn", "fn"))
        return auc_from_counts(tp, fp, tn, fn, self.curve, self.summation_method)


def auc_from_counts(tp, fp, tn, fn, curve: str = "ROC", summation_method: str = "interpolation") -> float:
    """Keras's ``AUC.result()`` from accumulated confusion counts per threshold."""
    if curve == "PR" and summation_method == "interpolation":
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        prec_slope = _divide_no_nan(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - prec_slope * p[1:]
        ok = (p[:-1] > 0) & (p[1:] > 0)
        safe_p_ratio = np.where(ok, _divide_no_nan(p[:-1], np.maximum(p[1:], 0)), 1.0)
        with np.errstate(divide="ignore"):
            log_ratio = np.log(np.where(safe_p_ratio > 0, safe_p_ratio, 1.0))
        inc = _divide_no_nan(prec_slope * (dtp + intercept * log_ratio), np.maximum(tp[1:] + fn[1:], 0))
        return float(np.sum(inc))
    recall = _divide_no_nan(tp, tp + fn)
    if curve == "ROC":
        x, y = _divide_no_nan(fp, fp + tn), recall
    else:
        x, y = recall, _divide_no_nan(tp, tp + fp)
    if summation_method == "interpolation":
        heights = (y[:-1] + y[1:]) / 2.0
    elif summation_method == "minoring":
        heights = np.minimum(y[:-1], y[1:])
    else:
        heights = np.maximum(y[:-1], y[1:])
    return float(np.sum((x[:-1] - x[1:]) * heights))


METRIC_CLASSES: dict[str, type[Metric]] = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "precision": Precision,
    "recall": Recall,
    "auc": AUC,
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
}


def _accuracy_class(loss, out: TensorType | None) -> str:
    """Keras's ``compile_utils.get_metric`` choice for "accuracy": from the shapes of the
    targets (the loss's target type) and the output; without an output type, from the loss."""
    if out is not None:
        tt = loss.target_type(out) if loss is not None and hasattr(loss, "target_type") else out
        p_last = out.shape[-1]
        t_last = tt.shape[-1] if tt.rank else None
        if p_last == 1:
            return "binary_accuracy"
        if tt.rank < out.rank or (t_last == 1 and p_last != 1):
            return "sparse_categorical_accuracy"
        return "categorical_accuracy"
    loss_name = getattr(loss, "fn_name", "")
    if loss_name == "binary_crossentropy":
        return "binary_accuracy"
    if loss_name == "sparse_categorical_crossentropy":
        return "sparse_categorical_accuracy"
    return "categorical_accuracy"


def get_metric(identifier, loss=None, out: TensorType | None = None) -> Metric:
    """Resolve a metric like Keras's ``compile``.

    ``"accuracy"`` / ``"acc"`` picks binary, sparse categorical or categorical accuracy from the
    output's shape and the loss's target type. A name given as a string (or a bare Spec) is also
    the metric's log name, as Keras (``"mae"`` logs as ``mae``); a Spec with arguments keeps the
    class's default name unless it passes ``name``.
    """
    from .specs import METRIC_ALIASES, METRIC_ARGS, Spec, canonical_metric

    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    span = None
    if isinstance(identifier, str):
        raw, args, kwargs = identifier, [], {}
    elif isinstance(identifier, Spec):
        raw, args, span = identifier.name, list(identifier.args), identifier.span
        kwargs = {k: v for k, v in identifier.kwargs.items() if v is not None}
    else:
        raise KdslError(f"Could not interpret metric. Received: {identifier!r}")
    log_name = raw if not args and not kwargs else None

    low = raw.lower()
    by_class = {c.__name__.lower(): n for n, c in METRIC_CLASSES.items()}
    key = METRIC_ALIASES.get(low, low)
    key = by_class.get(raw.replace("_", "").lower(), key)
    if key not in METRIC_CLASSES and key != "accuracy":
        canonical_metric(Spec(raw, [], {}, span))        # raises the helpful error
        raise KdslError(f"Metric '{raw}' is not available yet.", span)
    real = _accuracy_class(loss, out) if key == "accuracy" else key
    cls = METRIC_CLASSES[real]
    params = [p for p in inspect.signature(cls).parameters if p != "name"]
    if args:
        if len(args) > len(params):
            raise KdslError(f"Metric '{raw}' takes at most {len(params)} positional argument(s) {params}. "
                            f"Received: {len(args)}.", span)
        for p, v in zip(params, args):
            if p in kwargs:
                raise KdslError(f"Metric '{raw}' got two values for argument '{p}'.", span)
            kwargs[p] = v
    # arguments the .kd train section accepts are checked by specs; a few more Keras ones
    # (e.g. binary_accuracy's threshold, auc's summation_method) are accepted from Python
    allowed = METRIC_ARGS.get(key, {"name": str})
    canonical_metric(Spec(key, [], {k: v for k, v in kwargs.items() if k in allowed}, span))
    extra = [k for k in kwargs if k not in allowed and k not in params]
    if extra:
        raise KdslError(f"Unknown argument '{extra[0]}' for metric '{raw}'. Expected one of "
                        f"{sorted(set(allowed) | set(params) | {'name'})}.", span,
                        did_you_mean(extra[0], list(allowed) + params))
    try:
        m = cls(**kwargs)
    except TypeError as err:
        raise KdslError(f"Invalid arguments for metric '{raw}': {err}", span) from None
    if "name" not in kwargs and (log_name is not None or key == "accuracy"):
        m.name = log_name if log_name is not None else "accuracy"
    return m
