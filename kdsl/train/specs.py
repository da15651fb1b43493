"""What a ``train`` section may say: Keras's loss, optimizer, schedule and metric names
with their arguments, and the ``compile``/``fit`` keys. Used to validate ``.kd`` files;
the training runtime builds the real objects from the same names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import KdslError, Span, did_you_mean

__all__ = ["Spec", "TrainConfig", "LOSSES", "OPTIMIZERS", "SCHEDULES", "METRICS", "FIT_KEYS",
           "canonical_loss", "canonical_metric"]

_REDUCTION = {"reduction": str, "name": str}
LOSSES: dict[str, dict[str, type]] = {
    "categorical_crossentropy": {"from_logits": bool, "label_smoothing": float, "axis": int, **_REDUCTION},
    "sparse_categorical_crossentropy": {"from_logits": bool, "ignore_class": int, "axis": int, **_REDUCTION},
    "binary_crossentropy": {"from_logits": bool, "label_smoothing": float, "axis": int, **_REDUCTION},
    "mean_squared_error": dict(_REDUCTION),
    "mean_absolute_error": dict(_REDUCTION),
    "huber": {"delta": float, **_REDUCTION},
    "kl_divergence": dict(_REDUCTION),
    "hinge": dict(_REDUCTION),
}
LOSS_ALIASES = {
    "mse": "mean_squared_error", "mae": "mean_absolute_error", "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence", "huber_loss": "huber",
    "categorical_cross_entropy": "categorical_crossentropy",
}
_OPT = {"learning_rate": float, "weight_decay": float, "clipnorm": float, "clipvalue": float,
        "global_clipnorm": float, "use_ema": bool, "ema_momentum": float, "ema_overwrite_frequency": int,
        "name": str}
OPTIMIZERS: dict[str, dict[str, type]] = {
    "sgd": {**_OPT, "momentum": float, "nesterov": bool},
    "adam": {**_OPT, "beta_1": float, "beta_2": float, "epsilon": float, "amsgrad": bool},
    "adamw": {**_OPT, "beta_1": float, "beta_2": float, "epsilon": float, "amsgrad": bool},
    "rmsprop": {**_OPT, "rho": float, "momentum": float, "epsilon": float, "centered": bool},
    "adagrad": {**_OPT, "initial_accumulator_value": float, "epsilon": float},
    "adadelta": {**_OPT, "rho": float, "epsilon": float},
    "adamax": {**_OPT, "beta_1": float, "beta_2": float, "epsilon": float},
    "nadam": {**_OPT, "beta_1": float, "beta_2": float, "epsilon": float},
    "lion": {**_OPT, "beta_1": float, "beta_2": float},
    "ftrl": {**_OPT, "learning_rate_power": float, "initial_accumulator_value": float,
             "l1_regularization_strength": float, "l2_regularization_strength": float,
             "l2_shrinkage_regularization_strength": float, "beta": float},
}
OPTIMIZER_CLASSES = {"SGD": "sgd", "Adam": "adam", "AdamW": "adamw", "RMSprop": "rmsprop", "Adagrad": "adagrad",
                     "Adadelta": "adadelta", "Adamax": "adamax", "Nadam": "nadam", "Lion": "lion", "Ftrl": "ftrl"}
SCHEDULES: dict[str, dict[str, type]] = {
    "ExponentialDecay": {"initial_learning_rate": float, "decay_steps": int, "decay_rate": float,
                         "staircase": bool, "name": str},
    "PiecewiseConstantDecay": {"boundaries": list, "values": list, "name": str},
    "CosineDecay": {"initial_learning_rate": float, "decay_steps": int, "alpha": float, "name": str,
                    "warmup_target": float, "warmup_steps": int},
}
METRICS = {"accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
           "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "precision", "recall", "auc",
           "mean_squared_error", "mean_absolute_error"}
METRIC_ALIASES = {"acc": "accuracy", "mse": "mean_squared_error", "mae": "mean_absolute_error"}
METRIC_ARGS = {"binary_accuracy": {"threshold": float, "name": str},
               "top_k_categorical_accuracy": {"k": int, "name": str},
               "sparse_top_k_categorical_accuracy": {"k": int, "name": str},
               "precision": {"thresholds": float, "name": str}, "recall": {"thresholds": float, "name": str},
               "auc": {"num_thresholds": int, "curve": str, "from_logits": bool, "summation_method": str,
                       "name": str}}
FIT_KEYS: dict[str, type] = {"batch_size": int, "epochs": int, "validation_split": float, "shuffle": bool,
                             "steps_per_epoch": int, "initial_epoch": int, "verbose": int, "seed": int}
COMPILE_KEYS = ("loss", "optimizer", "metrics", "loss_weights", "class_weight")


@dataclass
class Spec:
    """A named object with arguments, e.g. ``Adam(learning_rate=1e-3)``."""
    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    span: Span | None = None


@dataclass
class TrainConfig:
    """A validated ``train`` section (Keras's ``compile`` + ``fit`` arguments)."""
    model: str
    loss: Any = None                 # Spec, or {output: Spec}
    optimizer: Spec | None = None
    metrics: list[Spec] = field(default_factory=list)
    loss_weights: Any = None
    class_weight: dict | None = None
    fit: dict[str, Any] = field(default_factory=dict)
    span: Span | None = None


def _check_kwargs(spec: Spec, allowed: dict[str, type], what: str) -> None:
    for k, v in spec.kwargs.items():
        if k not in allowed:
            raise KdslError(f"Unknown argument '{k}' for {what} '{spec.name}'. Expected one of "
                            f"{sorted(allowed)}.", spec.span, did_you_mean(k, allowed))
        _check_type(v, allowed[k], f"{spec.name}({k}=...)", spec.span)


def _check_type(v, typ, what: str, span) -> None:
    if isinstance(v, Spec):
        if typ is float and v.name in SCHEDULES:
            _check_kwargs(v, SCHEDULES[v.name], "learning-rate schedule")
            return
        raise KdslError(f"{what} expects a {typ.__name__}. Received: {v.name}(...)", v.span or span)
    ok = (isinstance(v, typ) and not (typ is int and isinstance(v, bool))) or (
        typ is float and isinstance(v, int) and not isinstance(v, bool))
    if not ok:
        raise KdslError(f"{what} expects a {typ.__name__}. Received: {v!r}", span)


def canonical_loss(spec: Spec) -> Spec:
    key = LOSS_ALIASES.get(spec.name.lower(), spec.name.lower())
    if key not in LOSSES:
        camel = {n.replace("_", "").lower(): n for n in LOSSES}
        key = camel.get(spec.name.replace("_", "").lower(), key)
    if key not in LOSSES:
        raise KdslError(f"Unknown loss '{spec.name}'. Expected one of {sorted(LOSSES)}.", spec.span,
                        did_you_mean(spec.name, list(LOSSES) + list(LOSS_ALIASES)))
    spec.name = key
    _check_kwargs(spec, LOSSES[key], "loss")
    return spec


def canonical_metric(spec: Spec) -> Spec:
    original = spec.name
    key = METRIC_ALIASES.get(spec.name.lower(), spec.name.lower())
    if key not in METRICS:
        camel = {n.replace("_", ""): n for n in METRICS}
        key = camel.get(spec.name.replace("_", "").lower(), key)
    if key not in METRICS:
        raise KdslError(f"Unknown metric '{spec.name}'. Expected one of {sorted(METRICS)}.", spec.span,
                        did_you_mean(spec.name, list(METRICS) + list(METRIC_ALIASES)))
    spec.name = key
    _check_kwargs(spec, METRIC_ARGS.get(key, {"name": str}), "metric")
    if original != key and key != "accuracy" and original.lower() in METRIC_ALIASES:
        spec.kwargs.setdefault("name", original)      # Keras logs a metric under the name it was given
    return spec


def canonical_optimizer(spec: Spec) -> Spec:
    key = OPTIMIZER_CLASSES.get(spec.name, spec.name.lower())
    if key not in OPTIMIZERS:
        raise KdslError(f"Unknown optimizer '{spec.name}'. Expected one of {sorted(OPTIMIZER_CLASSES)}.",
                        spec.span, did_you_mean(spec.name, list(OPTIMIZER_CLASSES)))
    spec.name = key
    if spec.args:
        if len(spec.args) > 1:
            raise KdslError(f"Optimizer '{spec.name}' takes at most one positional argument "
                            f"(learning_rate). Received: {len(spec.args)}.", spec.span)
        spec.kwargs = {"learning_rate": spec.args[0], **spec.kwargs}
        spec.args = []
    _check_kwargs(spec, OPTIMIZERS[key], "optimizer")
    return spec


def build_train_config(model: str, entries: dict[str, tuple[Any, Span]], span: Span | None,
                       output_names: list[str] | None = None) -> TrainConfig:
    """Validate evaluated ``train`` entries (``key -> (value, span)``) into a TrainConfig."""
    cfg = TrainConfig(model=model, span=span)
    for key, (value, vspan) in entries.items():
        if key == "loss":
            if isinstance(value, dict):
                if output_names is not None:
                    for k in value:
                        if k not in output_names:
                            raise KdslError(f"loss names output '{k}', which model '{model}' does not have. "
                                            f"Its outputs: {output_names}.", vspan,
                                            did_you_mean(k, output_names))
                cfg.loss = {k: canonical_loss(_spec(v, vspan)) for k, v in value.items()}
            else:
                cfg.loss = canonical_loss(_spec(value, vspan))
        elif key == "optimizer":
            cfg.optimizer = canonical_optimizer(_spec(value, vspan))
        elif key == "metrics":
            items = value if isinstance(value, list) else [value]
            cfg.metrics = [canonical_metric(_spec(v, vspan)) for v in items]
        elif key == "loss_weights":
            if not isinstance(value, (dict, list)) and not isinstance(value, (int, float)):
                raise KdslError(f"loss_weights expects a dict {{output: weight}} or a list. Received: {value!r}",
                                vspan)
            if isinstance(value, dict) and output_names is not None:
                for k in value:
                    if k not in output_names:
                        raise KdslError(f"loss_weights names output '{k}', which model '{model}' does not "
                                        f"have. Its outputs: {output_names}.", vspan, did_you_mean(k, output_names))
            cfg.loss_weights = value
        elif key == "class_weight":
            if not isinstance(value, dict):
                raise KdslError(f"class_weight expects a dict {{class: weight}}. Received: {value!r}", vspan)
            try:
                cfg.class_weight = {int(k): float(v) for k, v in value.items()}
            except (TypeError, ValueError):
                raise KdslError("class_weight keys must be class indices and values numbers. "
                                f"Received: {value!r}", vspan) from None
        elif key in FIT_KEYS:
            _check_type(value, FIT_KEYS[key], key, vspan)
            if key == "validation_split" and not 0.0 <= float(value) < 1.0:
                raise KdslError(f"validation_split must be in [0, 1). Received: {value!r}", vspan)
            if key in ("batch_size", "epochs", "steps_per_epoch") and value < 1:
                raise KdslError(f"{key} must be positive. Received: {value!r}", vspan)
            cfg.fit[key] = value
        else:
            raise KdslError(f"Unknown key '{key}' in train section. Expected one of "
                            f"{sorted(list(COMPILE_KEYS) + list(FIT_KEYS))}.", vspan,
                            did_you_mean(key, list(COMPILE_KEYS) + list(FIT_KEYS)))
    if cfg.loss is None:
        raise KdslError(f"The train section of '{model}' has no loss; add e.g. "
                        "`loss = categorical_crossentropy`.", span)
    if cfg.optimizer is None:
        cfg.optimizer = Spec("adam", span=span)
    return cfg


def _spec(value, span) -> Spec:
    if isinstance(value, Spec):
        return value
    if isinstance(value, str):
        return Spec(value, span=span)
    raise KdslError(f"Expected a name such as `adam` or a call such as `Adam(learning_rate=1e-3)`. "
                    f"Received: {value!r}", span)
