"""Keras losses, written as ONNX by the training-graph builder.

A :class:`Loss` computes Keras's per-sample values (``per_sample``), then Keras's
reduction with sample weights (``emit``): for the default ``"sum_over_batch_size"``,
``sum(values * sample_weight) / number_of_values``.
"""
from __future__ import annotations

from ..errors import KdslError, did_you_mean
from ..ir import BATCH, TensorType
from ..lower.emitter import Emitter

__all__ = ["Loss", "LOSS_CLASSES", "get_loss", "EPSILON"]

EPSILON = 1e-7          # keras.config.epsilon()
REDUCTIONS = ("sum_over_batch_size", "sum", "mean")


class Loss:
    """Base class: Keras's loss arguments (``reduction``, ``name``)."""

    #: the Keras function name, e.g. "mean_squared_error"
    fn_name = "loss"

    def __init__(self, reduction: str = "sum_over_batch_size", name: str | None = None):
        if reduction not in REDUCTIONS:
            raise KdslError(f"Unsupported reduction. Received: reduction={reduction!r}; expected one of "
                            f"{list(REDUCTIONS)}.")
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


def reduce_weighted(e: Emitter, values: str, sample_weight: str, reduction: str, values_rank: int) -> str:
    """Keras's ``reduce_weighted_values`` for values of rank ``values_rank`` (batch axis first)."""
    sw = sample_weight
    if values_rank > 1:
        sw = e.unsqueeze(sw, list(range(1, values_rank)))
    weighted = e.op("Mul", [values, sw])
    if reduction == "sum_over_batch_size":
        return e.reduce("ReduceMean", weighted, list(range(values_rank)), keepdims=False)
    total = e.reduce("ReduceSum", weighted, list(range(values_rank)), keepdims=False)
    if reduction == "sum":
        return total
    # "mean": divided by the sum of the (broadcast) weights
    wsum = e.reduce("ReduceSum", e.op("Expand", [sw, e.op("Shape", [values])]), list(range(values_rank)),
                    keepdims=False)
    return e.op("Div", [total, e.op("Max", [wsum, e.scalar(EPSILON)])])


class MeanSquaredError(Loss):
    """``mean(square(y_true - y_pred), axis=-1)``."""

    fn_name = "mean_squared_error"

    def per_sample(self, e, y_pred, y_true, out):
        d = e.op("Sub", [y_true, y_pred])
        return e.reduce("ReduceMean", e.op("Mul", [d, d]), [-1], keepdims=False)


LOSS_CLASSES: dict[str, type[Loss]] = {
    "mean_squared_error": MeanSquaredError,
}


def get_loss(identifier, **kwargs) -> Loss:
    """Resolve a loss: a :class:`Loss`, a Keras name ("mse", "categorical_crossentropy"),
    a class name ("MeanSquaredError"), or a :class:`~kdsl.train.specs.Spec`."""
    from .specs import LOSS_ALIASES, Spec, canonical_loss

    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier(**kwargs)
    if isinstance(identifier, Spec):
        spec = canonical_loss(Spec(identifier.name, list(identifier.args), dict(identifier.kwargs), identifier.span))
        return LOSS_CLASSES[spec.name](*spec.args, **spec.kwargs)
    if isinstance(identifier, str):
        by_class = {c.__name__: n for n, c in LOSS_CLASSES.items()}
        key = by_class.get(identifier) or LOSS_ALIASES.get(identifier.lower(), identifier.lower())
        if key in LOSS_CLASSES:
            return LOSS_CLASSES[key](**kwargs)
        raise KdslError(f"Unknown loss. Received: {identifier!r}; expected one of {sorted(LOSS_CLASSES)}.",
                        hint=did_you_mean(identifier, list(LOSS_CLASSES) + list(LOSS_ALIASES) + list(by_class)))
    raise KdslError(f"Could not interpret loss. Received: {identifier!r}")
