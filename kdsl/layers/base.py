"""The layer base class: arguments, weights, shape rule and ONNX lowering in one place.

A layer is a Python object holding its (normalised) arguments and weights, like
a Keras layer. Calling it on :class:`~kdsl.ir.Value` objects adds a node to the
IR; the same object called twice shares its weights. Each subclass provides:

- ``__init__``: Keras's arguments and defaults, validated with ``layers.args``;
- ``build(input_types)``: declares weights with :meth:`Layer.add_weight`;
- ``compute_output_types(input_types)``: the shape rule, raising
  :class:`~kdsl.layers.args.ShapeError` with both shapes on a mismatch;
- ``lower(ctx, node)``: emits ONNX through :class:`~kdsl.lower.context.LowerContext`.
"""
from __future__ import annotations

import inspect
import math
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from .. import limits
from ..errors import KdslError, Span
from ..ir import Node, TensorType, Value
from .initializers import get_initializer

if TYPE_CHECKING:
    from ..lower.context import LowerContext

__all__ = ["Layer", "Weight", "ShapeError", "LAYERS", "register", "snake_case", "python_call_site"]

LAYERS: dict[str, type["Layer"]] = {}
"""Public layer classes by Keras class name, as the language and builder see them."""


def register(cls: type["Layer"]) -> type["Layer"]:
    """Class decorator: make a layer visible to the ``.kd`` language by its class name."""
    LAYERS[cls.__name__] = cls
    return cls


class ShapeError(KdslError):
    """A shape or dtype rule of a layer was violated."""


def snake_case(name: str) -> str:
    """Keras's default layer-name rule: ``Conv2DTranspose`` -> ``conv2d_transpose``."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


def python_call_site() -> Span | None:
    """The first stack frame outside the kdsl package: where a builder call was written."""
    pkg = __name__.rsplit(".", 2)[0]
    f = sys._getframe(1)
    while f is not None:
        mod = f.f_globals.get("__name__", "")
        if mod != pkg and not mod.startswith(pkg + "."):
            return Span(f.f_code.co_filename, f.f_lineno, 1)
        f = f.f_back
    return None


@dataclass(eq=False)
class Weight:
    """One weight of a layer, in Keras's layout (``value`` may be unset until materialised)."""

    name: str
    shape: tuple[int, ...]
    initializer: str
    trainable: bool = True
    dtype: str = "float32"
    value: np.ndarray | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Layer:
    """Base class of every layer and op.

    Args:
        name: the layer's name; unique within a model. When omitted, the model
            names it after its class (``dense``, ``dense_1``, ...).
        trainable: whether its weights are updated by training.
    """

    #: ``"one"``: called on one tensor; ``"list"``: on a list of tensors (merge layers).
    arity: ClassVar[str] = "one"
    #: ops (``relu(x)``, ``a + b``) are graph functions, not user-visible layer classes.
    is_op: ClassVar[bool] = False
    #: pass the input's mask on to the output unchanged (Keras's ``supports_masking``)
    supports_masking: ClassVar[bool] = False
    #: the lowering reads the input's mask (``node.mask``): pooling over steps, recurrent layers
    uses_mask: ClassVar[bool] = False
    #: compile-time keyword arguments accepted at call time, with defaults (Keras's call args,
    #: e.g. MultiHeadAttention's ``use_causal_mask``); they are stored on the node
    call_arguments: ClassVar[dict] = {}
    #: runs on the host, not in training graphs (TextVectorization): the trainer applies
    #: :meth:`host_apply` to the raw input and the training graph starts at this layer's output
    host_preprocessing: ClassVar[bool] = False

    def __init__(self, name: str | None = None, trainable: bool = True, dtype: str | None = None):
        if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w./-]*", name)):
            from .args import ArgError
            raise ArgError("A layer name must start with a letter or '_' and contain only letters, "
                           f"digits, '_', '.', '-' and '/'. Received: name={name!r}", "name")
        self.name: str | None = name
        self.trainable = bool(trainable)
        self.dtype = dtype or "float32"
        self.weights: list[Weight] = []
        self.built = False
        self.scope: tuple[str, ...] = ()   # block-call scope, set by the front end

    # -- construction -----------------------------------------------------------
    @classmethod
    def signature(cls) -> inspect.Signature:
        return inspect.signature(cls.__init__)

    def get_config(self) -> dict[str, Any]:
        """Arguments as given to ``__init__`` (normalised), Keras's ``get_config``."""
        cfg = {}
        for p in list(self.signature().parameters.values())[1:]:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if hasattr(self, p.name):
                cfg[p.name] = getattr(self, p.name)
        return cfg

    def non_default_config(self) -> dict[str, Any]:
        """The arguments that differ from their defaults (for ``to_kd`` and summaries).

        Defaults are compared after the layer's own normalisation, by building a reference
        layer from the required arguments alone.
        """
        cfg = self.get_config()
        params = self.signature().parameters
        required = {k: v for k, v in cfg.items() if params[k].default is inspect.Parameter.empty}
        try:
            ref = type(self)(**required).get_config()
        except Exception:  # a layer whose defaults cannot be rebuilt: compare with raw defaults
            ref = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        return {k: v for k, v in cfg.items() if k in required or k not in ref or not _same(v, ref[k])}

    def add_weight(self, name: str, shape: Sequence[int], initializer: str = "glorot_uniform",
                   trainable: bool = True, dtype: str = "float32") -> Weight:
        shape = tuple(int(s) for s in shape)
        size = math.prod(shape)
        if any(s <= 0 for s in shape):
            raise ShapeError(f"Layer '{self.display_name()}' would create weight '{name}' with shape "
                             f"{shape}; every dimension must be positive.")
        if size > limits.MAX_WEIGHT_ELEMENTS:
            raise ShapeError(
                f"Layer '{self.display_name()}' would create weight '{name}' with shape {shape} "
                f"({size:,} elements); the limit is {limits.MAX_WEIGHT_ELEMENTS:,} elements per weight.",
                hint="check the layer's units/filters and the input shape")
        get_initializer(initializer)  # validate now, materialise later
        w = Weight(name, shape, initializer, trainable and self.trainable, dtype)
        self.weights.append(w)
        return w

    def build(self, input_types: list[TensorType]) -> None:
        """Create weights for the given input types (called once, on first call)."""

    def compute_output_types(self, input_types: list[TensorType]) -> list[TensorType]:
        raise NotImplementedError

    def lower(self, ctx: "LowerContext", node: Node) -> list:
        raise NotImplementedError

    # -- calling -----------------------------------------------------------------
    def __call__(self, inputs, *more, span: Span | None = None, **call_args):
        """Apply the layer to a tensor (or a list of tensors); returns the output tensor(s).

        Layers called on several tensors also take them Keras-style as separate arguments:
        ``mha(query, value)`` is ``mha([query, value])``.
        """
        if span is None:
            span = python_call_site()
        if more:
            if self.arity != "list":
                raise KdslError(f"Layer {type(self).__name__} expects one input tensor. "
                                f"Received: {1 + len(more)} tensors.", span)
            inputs = [inputs, *more]
        for k in call_args:
            if k not in self.call_arguments:
                from ..errors import did_you_mean
                raise KdslError(f"{type(self).__name__} takes no call argument '{k}'"
                                + (f"; its call arguments: {sorted(self.call_arguments)}." if self.call_arguments
                                   else "."), span, did_you_mean(k, self.call_arguments))
        call_args = {**self.call_arguments, **call_args}
        values = _as_values(inputs, self, span)
        if self.arity == "one" and len(values) != 1:
            raise KdslError(f"Layer {type(self).__name__} expects one input tensor. "
                            f"Received: {len(values)} tensors.", span)
        if self.arity == "list" and isinstance(inputs, Value):
            raise KdslError(f"Layer {type(self).__name__} expects a list of tensors, e.g. "
                            f"{type(self).__name__}()([a, b]). Received: one tensor.", span)
        types = [v.type for v in values]
        try:
            if not self.built:
                self.build(types)
                self.built = True
            self._call_args = call_args
            out_types = self.compute_output_types(types)
        except KdslError as e:
            raise e.with_span(span)
        for t in out_types:
            for d in t.shape:
                if isinstance(d, int) and d > limits.MAX_DIM:
                    raise ShapeError(f"Layer {type(self).__name__} would produce a tensor of shape "
                                     f"{t.shape_str()}, beyond the limit of {limits.MAX_DIM} per axis.", span)
        node = Node(self, values, [], span, call_args=call_args)
        in_mask = next((v.mask for v in values if v.mask is not None), None)
        if self.uses_mask and in_mask is not None:
            node.mask = in_mask
            node.masks = [v.mask for v in values]
        node.outputs = [Value(t, node, i, span=span) for i, t in enumerate(out_types)]
        out_mask = self.compute_mask(values, in_mask)
        if out_mask is not None:
            for o in node.outputs:
                if o.type.rank >= 2 and o.type.shape[:2] == out_mask.type.shape[:2]:
                    o.mask = out_mask
        return node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)

    def compute_mask(self, inputs: list[Value], mask: Value | None) -> Value | None:
        """The output's mask: the input's if the layer supports masking (Keras's rule)."""
        return mask if self.supports_masking else None

    # -- weights in Keras layout --------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """The layer's weights as NumPy arrays, in Keras's order and layout."""
        return [np.array(w.value) for w in self.weights if self._ensure(w)]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Set the weights from arrays in Keras's order and layout (shapes checked)."""
        weights = list(weights)
        if len(weights) != len(self.weights):
            raise KdslError(f"Layer '{self.display_name()}' expects {len(self.weights)} weight arrays "
                            f"({', '.join(w.name for w in self.weights) or 'none'}). "
                            f"Received: {len(weights)} arrays.")
        for w, a in zip(self.weights, weights):
            a = np.asarray(a)
            if tuple(a.shape) != w.shape:
                raise KdslError(f"Weight '{self.display_name()}/{w.name}' has shape {w.shape}. "
                                f"Received: an array of shape {tuple(a.shape)}.")
            w.value = a.astype(w.dtype, copy=True)

    def _ensure(self, w: Weight) -> bool:
        if w.value is None:
            raise KdslError(f"Weight '{self.display_name()}/{w.name}' has no value yet: the layer belongs "
                            "to no model. Build a kdsl.Model from it first.")
        return True

    def onnx_weight(self, w: Weight) -> np.ndarray:
        """The array stored in the ONNX initializer for ``w`` (default: Keras layout)."""
        return w.value

    def count_params(self) -> int:
        return sum(w.size for w in self.weights)

    def host_preprocessing_metadata(self, input_name: str) -> dict[str, str]:
        """For a ``host_preprocessing`` layer left out of an export (the int-token model), the
        ONNX ``metadata_props`` entries telling a deployer how to compute the graph input
        ``input_name`` on the host. Default: none."""
        return {}

    def type_name(self) -> str:
        """What the summary shows as the layer's type (the class; ops show their function)."""
        return type(self).__name__

    def display_name(self) -> str:
        return self.name or snake_case(type(self).__name__)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


def _same(a: Any, b: Any) -> bool:
    if a == "linear" and b is None:      # activations: None and "linear" are the same
        return True
    if isinstance(a, tuple) and isinstance(b, int) and not isinstance(b, bool):
        return all(x == b for x in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return type(a) is type(b) and a == b or (a is None and b is None)


def _as_values(inputs, layer: Layer, span) -> list[Value]:
    if isinstance(inputs, Value):
        return [inputs]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(v, Value) for v in inputs):
        return list(inputs)
    raise KdslError(f"Layer {type(layer).__name__} must be called on a tensor (kdsl.Input or a layer "
                    f"output). Received: {type(inputs).__name__} {inputs!r:.60}", span)
