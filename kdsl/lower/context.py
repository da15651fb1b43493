"""Lowering state shared by the layers: where each IR value lives in ONNX, in which layout.

The language is channels-last (Keras); ONNX convolutions are channels-first.
Every IR value may exist in ONNX in the surface layout (``"cl"``) and/or in the
channels-first layout (``"cf"``: the last axis moved to axis 1). A layer asks
for the layout it needs; the context inserts one ``Transpose`` the first time a
value is asked for in the other layout and reuses it after. Layout-agnostic
layers (activations, batch norm, residual adds) keep whatever layout they get,
so a convolutional stack has one transpose at each boundary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..ir import Node, TensorType, Value
from .emitter import Emitter

if TYPE_CHECKING:
    from ..layers.base import Layer

__all__ = ["LowerContext", "cl_to_cf", "cf_to_cl", "CL", "CF"]

CL, CF = "cl", "cf"


def cl_to_cf(rank: int) -> list[int]:
    return [0, rank - 1, *range(1, rank - 1)]


def cf_to_cl(rank: int) -> list[int]:
    return [0, *range(2, rank), 1]


@dataclass
class _Placed:
    names: dict[str, str] = field(default_factory=dict)   # layout -> ONNX name


class LowerContext:
    """What a layer's ``lower`` sees: the emitter, the values, the weights, the mode."""

    def __init__(self, emitter: Emitter, training: bool = False, weights_as_inputs: bool = False):
        self.e = emitter
        self.training = training
        self.opset = emitter.opset
        #: training graphs take weights as graph inputs (state) instead of initializers
        self.weights_as_inputs = weights_as_inputs
        self.weight_inputs: dict[str, tuple["Layer", object]] = {}   # input name -> (layer, Weight)
        #: state updates made in training mode: weight input name -> ONNX name of its new value
        self.state_updates: dict[str, str] = {}
        #: the step counter (float32 scalar, 1-based) in training graphs; seeds dropout masks
        self.step: str | None = None
        #: unrolled recurrent layers that recorded their steps for the fused backward (autodiff_rnn)
        self.recurrent_tapes: list = []
        self._placed: dict[int, _Placed] = {}
        self.types: dict[str, TensorType] = {}    # ONNX name -> type of the value it holds

    # -- values -------------------------------------------------------------------
    def place(self, v: Value, name: str, layout: str = CL) -> None:
        self._placed.setdefault(v.id, _Placed()).names[layout] = name
        self._record(v, name, layout)

    def _record(self, v: Value, name: str, layout: str) -> None:
        """Remember ``name``'s type (in its layout) for value_info and the shape-agreement tests."""
        if layout == CL or v.type.rank < 3:
            self.types[name] = v.type
        else:
            self.types[name] = v.type.with_shape([v.type.shape[i] for i in cl_to_cf(v.type.rank)])

    def layouts(self, v: Value) -> dict[str, str]:
        return self._placed[v.id].names

    def get(self, v: Value, layout: str = CL) -> str:
        """The ONNX name of ``v`` in ``layout``, transposing once if needed."""
        names = self._placed[v.id].names
        if layout in names:
            return names[layout]
        if v.type.rank < 3:
            return names.get(CL) or names[CF]
        src = CF if layout == CL else CL
        perm = cl_to_cf(v.type.rank) if layout == CF else cf_to_cl(v.type.rank)
        name = self.e.transpose(names[src], perm)
        names[layout] = name
        self._record(v, name, layout)
        return name

    def get_any(self, v: Value) -> tuple[str, str]:
        """``v`` in whichever layout exists (channels-first preferred), and that layout."""
        names = self._placed[v.id].names
        if CF in names:
            return names[CF], CF
        return names[CL], CL

    def get_same(self, values: list[Value]) -> tuple[list[str], str]:
        """All ``values`` in one layout: channels-first if all have the same rank >= 3 and
        at least one already exists channels-first; otherwise channels-last."""
        ranks = {v.type.rank for v in values}
        if len(ranks) == 1 and next(iter(ranks)) >= 3 and any(CF in self.layouts(v) for v in values):
            return [self.get(v, CF) for v in values], CF
        return [self.get(v, CL) for v in values], CL

    def input_as(self, v: Value, dtype: str, layout: str = CL) -> str:
        """``v`` in ``layout``, cast to ``dtype`` if it has another dtype."""
        name = self.get(v, layout)
        return name if v.type.dtype == dtype else self.e.cast(name, dtype)

    # -- weights -----------------------------------------------------------------------
    def weight(self, layer: "Layer", wname: str) -> str:
        """The initializer holding ``layer``'s weight ``wname`` (ONNX layout), added once."""
        for w in layer.weights:
            if w.name == wname:
                name = f"{layer.name}/{w.name}"
                if self.weights_as_inputs:
                    self.e.reserve(name)
                    self.weight_inputs[name] = (layer, w)
                    return name
                return self.e.initializer(name, layer.onnx_weight(w))
        raise KeyError(f"{layer.name} has no weight {wname}")

    def update_state(self, layer: "Layer", wname: str, new_value: str) -> None:
        """Training mode: ``new_value`` is the next value of ``layer``'s non-trainable ``wname``."""
        self.state_updates[f"{layer.name}/{wname}"] = new_value

    def has_weight(self, layer: "Layer", wname: str) -> bool:
        return any(w.name == wname for w in layer.weights)
