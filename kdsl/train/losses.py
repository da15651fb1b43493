"""Keras losses, written as ONNX by the training-graph builder.

A :class:`Loss` computes Keras's per-sample values (``per_sample``), then Keras's
reduction with sample weights (``emit``, :func:`reduce_weighted`): for the default
``"sum_over_batch_size"``, ``sum(values * sample_weight) / number_of_values``.

The formulas are Keras 3's (``keras.losses`` and the backends' ``ops.*_crossentropy``):

* crossentropies on probabilities (``from_logits=False``) rescale / clip ``y_pred`` to
  ``[eps, 1 - eps]`` (``eps = 1e-7``) and take ``log``; the gradient flows through the clip
  and the log exactly as in Keras (no fused softmax/sigmoid shortcut);
* on logits they use ``log_softmax`` / the stable ``sigmoid_cross_entropy_with_logits``.

Per-sample values have the output's rank minus one (the last axis, or ``axis``, is reduced).
A ``[batch]`` sample weight multiplies every value of its sample.
"""
from __future__ import annotations

import numpy as np

from ..errors import KdslError, did_you_mean
from ..ir import TensorType
from ..lower.emitter import Emitter

__all__ = ["Loss", "LOSS_CLASSES", "get_loss", "EPSILON", "REDUCTIONS", "reduce_weighted",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "MeanAbsoluteError", "Huber", "KLDivergence", "Hinge"]

EPSILON = 1e-7          # keras.config.epsilon()
#: Keras 3's reductions that give a scalar ("mean" is the same as "sum_over_batch_size";
#: "mean_with_sample_weight" divides by the sum of the sample weights).
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight")


class Loss:
    """Base class: Keras's loss arguments (``reduction``, ``name``)."""

    #: the Keras function name, e.g. "mean_squared_error" (the key in LOSS_CLASSES)
    fn_name = "loss"

    def __init__(self, reduction: str = "sum_over_batch_size", name: str | None = None):
        if reduction not in REDUCTIONS:
            raise KdslError(f"Invalid value for argument `reduction`. Expected one of {list(REDUCTIONS)}. "
                            f"Received: reduction={reduction!r}",
                            hint=did_you_mean(str(reduction), REDUCTIONS))
        self.reduction = reduction
        self.name = name or self.fn_name

    def get_config(self) -> dict:
        return {"reduction": self.reduction, "name": self.name}

    def target_type(self, out: TensorType) -> TensorType:
        """The type of the targets this loss expects for an output of type ``out``."""
        return TensorType("float32", out.shape)

    def per_sample(self, e: Emitter, y_pred: str, y_true: str, out: TensorType) -> str:
        """Keras's unreduced loss values (usually reduced over the last axis)."""
        raise NotImplementedError

    def emit(self, e: Emitter, y_pred: str, y_true: str, sample_weight: str, out: TensorType) -> str:
        """The reduced, weighted scalar loss of a batch."""
        values = self.per_sample(e, y_pred, y_true, out)
        return reduce_weighted(e, values, sample_weight, self.reduction, out.rank - 1)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


# -- reduction ----------------------------------------------------------------------------------
def _divide_no_nan(e: Emitter, num: str, den: str) -> str:
    """``num / den``, 0 where ``den == 0`` (gradient-safe: no 0/0 on either branch)."""
    zero = e.scalar(0.0)
    is_zero = e.op("Equal", [den, zero])
    safe = e.op("Where", [is_zero, e.scalar(1.0), den])
    return e.op("Where", [is_zero, zero, e.op("Div", [num, safe])])


def reduce_weighted(e: Emitter, values: str, sample_weight: str, reduction: str, values_rank: int,
                    mask: str | None = None) -> str:
    """Keras's ``reduce_weighted_values`` for values of rank ``values_rank`` (batch axis first).

    ``sample_weight`` is ``[batch]`` and weights every value of its sample. ``mask`` (float,
    the values' shape, e.g. from ``ignore_class``) is merged into the weights as Keras's
    ``apply_mask``: for ``"sum_over_batch_size"``/``"mean"`` it is scaled by
    ``numel / sum(mask)``, so the result is ``sum(values * w * mask) / sum(mask)``.
    ``"mean_with_sample_weight"`` divides by the sum of the weights broadcast to the values.
    """
    if reduction not in REDUCTIONS:
        raise KdslError(f"Unsupported reduction {reduction!r}; expected one of {list(REDUCTIONS)}.")
    axes = list(range(max(values_rank, 1)))     # values of rank 0 times [batch] weights: rank 1
    sw = sample_weight
    if values_rank > 1:
        sw = e.unsqueeze(sw, list(range(1, values_rank)))
    if mask is not None:
        if reduction in ("sum_over_batch_size", "mean"):
            total = e.cast(e.op("Size", [mask]), "float32")
            valid = e.reduce("ReduceSum", mask, axes, keepdims=False)
            mask = e.op("Mul", [mask, _divide_no_nan(e, total, valid)])
        sw = e.op("Mul", [sw, mask])
    weighted = e.op("Mul", [values, sw])
    if reduction in ("sum_over_batch_size", "mean"):
        return e.reduce("ReduceMean", weighted, axes, keepdims=False)
    total = e.reduce("ReduceSum", weighted, axes, keepdims=False)
    if reduction == "sum":
        return total
    # "mean_with_sample_weight"
    if mask is None and values_rank > 1:
        sw = e.op("Expand", [sw, e.op("Shape", [weighted])])
    wsum = e.reduce("ReduceSum", sw, axes, keepdims=False)
    return _divide_no_nan(e, total, wsum)


# -- helpers ---------------------------------------------------------------------------------------
def _clip(e: Emitter, x: str, lo: float, hi: float) -> str:
    return e.op("Clip", [x, e.scalar(lo), e.scalar(hi)])


def _num_classes(e: Emitter, x: str, out: TensorType, axis: int = -1) -> str:
    """``shape(x)[axis]`` as a float32 scalar (a constant when the dim is static)."""
    d = out.shape[axis]
    if isinstance(d, int):
        return e.scalar(float(d))
    return e.cast(e.op("Gather", [e.op("Shape", [x]), e.const(np.asarray(axis, np.int64))], axis=0), "float32")


def _norm_axis(axis: int, rank: int, what: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise KdslError(f"`axis` must be of type `int`. Received: axis={axis!r} of type {type(axis).__name__}")
    a = int(axis)
    if not -rank <= a < rank:
        raise KdslError(f"{what}: axis={axis} is out of range for an output of rank {rank}.")
    if a % rank == 0:
        raise KdslError(f"{what}: axis={axis} is the batch axis.")
    return a % rank


def _is_last(axis: int, rank: int) -> bool:
    return int(axis) % rank == rank - 1


def _one_hot(e: Emitter, labels: str, num_classes: int) -> str:
    """float32 one-hot of int64 ``labels`` along a new last axis; labels outside
    ``[0, num_classes)`` give an all-zero row (as Keras's ``one_hot``)."""
    classes = e.const(np.arange(num_classes, dtype=np.int64), hint="classes")
    return e.cast(e.op("Equal", [e.unsqueeze(labels, [-1]), classes]), "float32")


def _categorical_ce(e: Emitter, target: str, y_pred: str, from_logits: bool, axis: int) -> str:
    """``ops.categorical_crossentropy``: ``-sum(target * log_prob, axis)``."""
    if from_logits:
        log_prob = e.op("LogSoftmax", [y_pred], axis=axis)
    else:
        # scale preds so that the class probabilities of each sample sum to 1, then clip
        p = e.op("Div", [y_pred, e.reduce("ReduceSum", y_pred, [axis], keepdims=True)])
        log_prob = e.op("Log", [_clip(e, p, EPSILON, 1.0 - EPSILON)])
    return e.op("Neg", [e.reduce("ReduceSum", e.op("Mul", [target, log_prob]), [axis], keepdims=False)])


# -- the losses -----------------------------------------------------------------------------------
class _SmoothedCrossentropy(Loss):
    """Shared arguments of the categorical and binary cross-entropies (Keras's)."""

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str = "sum_over_batch_size", name: str | None = None):
        super().__init__(reduction, name)
        if isinstance(axis, bool):
            raise KdslError(f"`axis` must be of type `int`. Received: axis={axis} of type {type(axis).__name__}")
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.axis = int(axis)

    def get_config(self):
        return super().get_config() | {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing,
                                       "axis": self.axis}


class CategoricalCrossentropy(_SmoothedCrossentropy):
    """``-sum(y_true * log(y_pred), axis)`` for one-hot (or soft) targets.

    ``label_smoothing``: ``y_true * (1 - ls) + ls / num_classes`` (``num_classes`` is the
    size of the last axis, as in Keras). On probabilities ``y_pred`` is rescaled to sum to 1
    along ``axis`` and clipped to ``[eps, 1 - eps]``; on logits ``log_softmax`` is used.
    """

    fn_name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str = "sum_over_batch_size", name: str | None = "categorical_crossentropy"):
        super().__init__(from_logits, label_smoothing, axis, reduction, name)

    def per_sample(self, e, y_pred, y_true, out):
        axis = _norm_axis(self.axis, out.rank, self.name)
        t = y_true
        if self.label_smoothing:
            ls = self.label_smoothing
            t = e.op("Add", [e.op("Mul", [t, e.scalar(1.0 - ls)]),
                             e.op("Div", [e.scalar(ls), _num_classes(e, y_pred, out, -1)])])
        return _categorical_ce(e, t, y_pred, self.from_logits, axis)


class SparseCategoricalCrossentropy(Loss):
    """Categorical crossentropy with integer class targets.

    Targets are int64 with the output's shape minus the class axis (``[batch]`` for an output
    ``[batch, classes]``; the runtime reshapes ``[N, 1]`` to ``[N]``). On probabilities
    ``y_pred`` is rescaled to sum to 1 and clipped to ``[eps, 1 - eps]`` (Keras's one-hot
    formulation); labels outside ``[0, classes)`` contribute 0.

    ``ignore_class``: targets equal to it give loss 0 and are masked out of the reduction
    (``"sum_over_batch_size"`` then divides by the number of kept targets), as Keras.
    """

    fn_name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False, ignore_class: int | None = None, axis: int = -1,
                 reduction: str = "sum_over_batch_size", name: str | None = "sparse_categorical_crossentropy"):
        super().__init__(reduction, name)
        if isinstance(axis, bool):
            raise KdslError(f"`axis` must be of type `int`. Received: axis={axis} of type {type(axis).__name__}")
        self.from_logits = bool(from_logits)
        self.ignore_class = None if ignore_class is None else int(ignore_class)
        self.axis = int(axis)

    def get_config(self):
        return super().get_config() | {"from_logits": self.from_logits, "ignore_class": self.ignore_class,
                                       "axis": self.axis}

    def _check(self, out: TensorType) -> int:
        if out.rank < 2:
            raise KdslError(f"{self.name} needs an output of rank >= 2 (batch, ..., classes). "
                            f"Received: {out}")
        if not _is_last(self.axis, out.rank):
            raise KdslError(f"Only axis=-1 is currently supported. Received: axis={self.axis}")
        c = out.shape[-1]
        if not isinstance(c, int):
            raise KdslError(f"{self.name} needs a static number of classes. Received: {out}")
        return c

    def target_type(self, out):
        self._check(out)
        return TensorType("int64", tuple(out.shape[:-1]))

    def _valid(self, e: Emitter, labels: str) -> str | None:
        if self.ignore_class is None:
            return None
        return e.op("Not", [e.op("Equal", [labels, e.const(np.asarray(self.ignore_class, np.int64))])])

    def per_sample(self, e, y_pred, y_true, out):
        values, _ = self._values_and_mask(e, y_pred, y_true, out)
        return values

    def _values_and_mask(self, e, y_pred, y_true, out):
        c = self._check(out)
        labels = y_true                              # int64, the output's shape without the class axis
        valid = self._valid(e, labels)
        pred = y_pred
        if valid is not None:
            # Keras zeroes the ignored targets and predictions; we give ignored rows a harmless
            # uniform prediction instead (same values, no 0/0 in the gradient)
            labels = e.op("Where", [valid, labels, e.const(np.asarray(0, np.int64))])
            pred = e.op("Where", [e.unsqueeze(valid, [-1]), y_pred, e.scalar(1.0)])
        values = _categorical_ce(e, _one_hot(e, labels, c), pred, self.from_logits, out.rank - 1)
        if valid is None:
            return values, None
        return e.op("Where", [valid, values, e.scalar(0.0)]), e.cast(valid, "float32")

    def emit(self, e, y_pred, y_true, sample_weight, out):
        values, mask = self._values_and_mask(e, y_pred, y_true, out)
        return reduce_weighted(e, values, sample_weight, self.reduction, out.rank - 1, mask=mask)


class BinaryCrossentropy(_SmoothedCrossentropy):
    """``mean(bce(y_true, y_pred), axis)``.

    On probabilities: ``p = clip(y_pred, eps, 1 - eps)``,
    ``bce = -(y * log(p) + (1 - y) * log(1 - p))`` (Keras 3's backends);
    on logits: ``max(x, 0) - x * y + log(1 + exp(-|x|))``.
    ``label_smoothing``: ``y_true * (1 - ls) + 0.5 * ls``.
    """

    fn_name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str = "sum_over_batch_size", name: str | None = "binary_crossentropy"):
        super().__init__(from_logits, label_smoothing, axis, reduction, name)

    def per_sample(self, e, y_pred, y_true, out):
        axis = _norm_axis(self.axis, out.rank, self.name)
        y = y_true
        if self.label_smoothing:
            ls = self.label_smoothing
            y = e.op("Add", [e.op("Mul", [y, e.scalar(1.0 - ls)]), e.scalar(0.5 * ls)])
        if self.from_logits:
            x = y_pred
            pos = e.op("GreaterOrEqual", [x, e.scalar(0.0)])
            relu = e.op("Where", [pos, x, e.scalar(0.0)])
            neg_abs = e.op("Where", [pos, e.op("Neg", [x]), x])
            bce = e.op("Add", [e.op("Sub", [relu, e.op("Mul", [x, y])]), e.op("Softplus", [neg_abs])])
        else:
            p = _clip(e, y_pred, EPSILON, 1.0 - EPSILON)
            one = e.scalar(1.0)
            pos_term = e.op("Mul", [y, e.op("Log", [p])])
            neg_term = e.op("Mul", [e.op("Sub", [one, y]), e.op("Log", [e.op("Sub", [one, p])])])
            bce = e.op("Neg", [e.op("Add", [pos_term, neg_term])])
        return e.reduce("ReduceMean", bce, [axis], keepdims=False)


class MeanSquaredError(Loss):
    """``mean(square(y_true - y_pred), axis=-1)``."""

    fn_name = "mean_squared_error"

    def __init__(self, reduction: str = "sum_over_batch_size", name: str | None = "mean_squared_error"):
        super().__init__(reduction, name)

    def per_sample(self, e, y_pred, y_true, out):
        d = e.op("Sub", [y_true, y_pred])
        return e.reduce("ReduceMean", e.op("Mul", [d, d]), [-1], keepdims=False)


class MeanAbsoluteError(Loss):
    """``mean(abs(y_true - y_pred), axis=-1)``."""

    fn_name = "mean_absolute_error"

    def __init__(self, reduction: str = "sum_over_batch_size", name: str | None = "mean_absolute_error"):
        super().__init__(reduction, name)

    def per_sample(self, e, y_pred, y_true, out):
        return e.reduce("ReduceMean", e.op("Abs", [e.op("Sub", [y_true, y_pred])]), [-1], keepdims=False)


class Huber(Loss):
    """``mean(where(|d| <= delta, 0.5 * d^2, delta * |d| - 0.5 * delta^2), axis=-1)``,
    ``d = y_pred - y_true``."""

    fn_name = "huber"

    def __init__(self, delta: float = 1.0, reduction: str = "sum_over_batch_size", name: str | None = "huber_loss"):
        super().__init__(reduction, name)
        self.delta = float(delta)

    def get_config(self):
        return super().get_config() | {"delta": self.delta}

    def per_sample(self, e, y_pred, y_true, out):
        d = e.op("Sub", [y_pred, y_true])
        a = e.op("Abs", [d])
        delta = e.scalar(self.delta)
        quad = e.op("Mul", [e.scalar(0.5), e.op("Mul", [d, d])])
        lin = e.op("Sub", [e.op("Mul", [delta, a]), e.scalar(0.5 * self.delta * self.delta)])
        v = e.op("Where", [e.op("LessOrEqual", [a, delta]), quad, lin])
        return e.reduce("ReduceMean", v, [-1], keepdims=False)


class KLDivergence(Loss):
    """``sum(y_true * log(y_true / y_pred), axis=-1)`` with both clipped to ``[eps, 1]``."""

    fn_name = "kl_divergence"

    def __init__(self, reduction: str = "sum_over_batch_size", name: str | None = "kl_divergence"):
        super().__init__(reduction, name)

    def per_sample(self, e, y_pred, y_true, out):
        t = _clip(e, y_true, EPSILON, 1.0)
        p = _clip(e, y_pred, EPSILON, 1.0)
        v = e.op("Mul", [t, e.op("Log", [e.op("Div", [t, p])])])
        return e.reduce("ReduceSum", v, [-1], keepdims=False)


class Hinge(Loss):
    """``mean(maximum(1 - y_true * y_pred, 0), axis=-1)``; when every target of the batch is
    0 or 1 they are first converted to -1/1 (``2 * y - 1``), as Keras."""

    fn_name = "hinge"

    def __init__(self, reduction: str = "sum_over_batch_size", name: str | None = "hinge"):
        super().__init__(reduction, name)

    def per_sample(self, e, y_pred, y_true, out):
        is01 = e.op("Or", [e.op("Equal", [y_true, e.scalar(0.0)]), e.op("Equal", [y_true, e.scalar(1.0)])])
        all01 = e.reduce("ReduceMin", e.cast(is01, "float32"), list(range(out.rank)), keepdims=False)
        converted = e.op("Sub", [e.op("Mul", [y_true, e.scalar(2.0)]), e.scalar(1.0)])
        y = e.op("Where", [e.op("Greater", [all01, e.scalar(0.5)]), converted, y_true])
        m = e.op("Max", [e.op("Sub", [e.scalar(1.0), e.op("Mul", [y, y_pred])]), e.scalar(0.0)])
        return e.reduce("ReduceMean", m, [-1], keepdims=False)


LOSS_CLASSES: dict[str, type[Loss]] = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "kl_divergence": KLDivergence,
    "hinge": Hinge,
}


def get_loss(identifier, **kwargs) -> Loss:
    """Resolve a loss: a :class:`Loss`, a Keras name ("mse", "categorical_crossentropy"),
    a class name ("MeanSquaredError"), or a :class:`~kdsl.train.specs.Spec`
    (positional arguments follow the class's signature; ``None`` arguments mean the default)."""
    from .specs import LOSS_ALIASES, Spec, canonical_loss

    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier(**kwargs)
    by_class = {c.__name__: n for n, c in LOSS_CLASSES.items()}
    if isinstance(identifier, str):
        key = by_class.get(identifier) or LOSS_ALIASES.get(identifier.lower(), identifier.lower())
        if key in LOSS_CLASSES:
            return LOSS_CLASSES[key](**kwargs)
        identifier = Spec(identifier, [], dict(kwargs))    # let canonical_loss explain
    if isinstance(identifier, Spec):
        name = by_class.get(identifier.name, identifier.name)
        spec = canonical_loss(Spec(name, list(identifier.args),
                                   {k: v for k, v in identifier.kwargs.items() if v is not None}, identifier.span))
        try:
            return LOSS_CLASSES[spec.name](*spec.args, **spec.kwargs)
        except TypeError as err:
            raise KdslError(f"Invalid arguments for loss '{spec.name}': {err}", spec.span) from None
    raise KdslError(f"Could not interpret loss. Received: {identifier!r}")
