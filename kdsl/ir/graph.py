"""The IR graph: values produced by nodes, each node one call of a layer or op.

The IR is deliberately small. A :class:`Value` has a type and knows the node
that made it; a :class:`Node` is one application of a layer object (which owns
its arguments and weights) to input values, with the source span of the call.
Calling the same layer object at two nodes shares its weights.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import Span
from .types import TensorType

if TYPE_CHECKING:
    from ..layers.base import Layer

__all__ = ["Value", "Node", "Graph"]

_ids = itertools.count()


@dataclass(eq=False)
class Value:
    """A symbolic tensor: an input of the model or one output of a node.

    In the builder API this is what ``kdsl.Input`` and layer calls return,
    the counterpart of a Keras ``KerasTensor``; it supports ``+ - * @``.
    """

    type: TensorType
    node: "Node | None" = None
    index: int = 0
    name: str | None = None
    span: Span | None = None
    id: int = field(default_factory=lambda: next(_ids))
    #: Keras's implicit mask: a bool [batch, steps] value (from Embedding(mask_zero=True)),
    #: propagated by layers that support masking and read by those that use it.
    mask: "Value | None" = None

    # -- Keras-like conveniences ------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.type.keras_shape()

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def rank(self) -> int:
        return self.type.rank

    def __repr__(self) -> str:
        return f"<Value {self.name or ('%' + str(self.id))}: {self.type}>"

    def __hash__(self) -> int:
        return self.id

    def _binary(self, op: str, other: Any, reverse: bool = False) -> "Value":
        from ..layers.ops import binary_op

        return binary_op(op, other, self) if reverse else binary_op(op, self, other)

    def __add__(self, o):
        return self._binary("add", o)

    def __radd__(self, o):
        return self._binary("add", o, True)

    def __sub__(self, o):
        return self._binary("sub", o)

    def __rsub__(self, o):
        return self._binary("sub", o, True)

    def __mul__(self, o):
        return self._binary("mul", o)

    def __rmul__(self, o):
        return self._binary("mul", o, True)

    def __truediv__(self, o):
        return self._binary("div", o)

    def __rtruediv__(self, o):
        return self._binary("div", o, True)

    def __matmul__(self, o):
        return self._binary("matmul", o)

    def __neg__(self):
        return self._binary("mul", -1.0)


@dataclass(eq=False)
class Node:
    """One call of ``layer`` on ``inputs`` producing ``outputs``."""

    layer: "Layer"
    inputs: list[Value]
    outputs: list[Value]
    span: Span | None = None
    id: int = field(default_factory=lambda: next(_ids))
    #: the mask this node's layer reads (layers with ``uses_mask``), else None
    mask: "Value | None" = None
    #: every input's mask (None where an input has none), for layers with ``uses_mask``
    masks: list = field(default_factory=list)
    #: compile-time call arguments, e.g. ``use_causal_mask=True`` (layers' ``call_arguments``)
    call_args: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        ins = ", ".join(f"%{v.id}" for v in self.inputs)
        outs = ", ".join(f"%{v.id}: {v.type}" for v in self.outputs)
        return f"{outs} = {self.layer.name or type(self).__name__}({ins})"


@dataclass(eq=False)
class Graph:
    """A model's graph: named inputs, named outputs, nodes in topological order."""

    name: str
    inputs: list[Value]
    outputs: list[tuple[str, Value]]
    nodes: list[Node]

    @staticmethod
    def trace(name: str, inputs: Sequence[Value], outputs: Sequence[tuple[str, Value]]) -> "Graph":
        """Collect the nodes between ``inputs`` and ``outputs`` (creation order)."""
        from ..errors import KdslError

        inputs = list(inputs)
        known = {v.id for v in inputs}
        seen: dict[int, Node] = {}
        stack = [v for _, v in outputs]
        while stack:
            v = stack.pop()
            if v.id in known:
                continue
            if v.node is None:
                raise KdslError(
                    f"Output of model '{name}' depends on an input that is not among the model's "
                    f"inputs. Received: {v!r}; expected one of the inputs "
                    f"{[i.name for i in inputs]}.", v.span)
            if v.node.id in seen:
                continue
            seen[v.node.id] = v.node
            stack.extend(v.node.inputs)
            stack.extend(m for m in [v.node.mask, *v.node.masks] if m is not None)
        nodes = sorted(seen.values(), key=lambda n: n.id)
        return Graph(name, inputs, list(outputs), nodes)

    def layers(self) -> list["Layer"]:
        """Distinct layer objects in order of first call."""
        out, seen = [], set()
        for n in self.nodes:
            if id(n.layer) not in seen:
                seen.add(id(n.layer))
                out.append(n.layer)
        return out

    def dump(self) -> str:
        """A readable listing of the graph, one node a line."""
        lines = [f"graph {self.name}("]
        lines += [f"  %{v.id} {v.name}: {v.type}" for v in self.inputs]
        lines.append(") {")
        lines += [f"  {n!r}" for n in self.nodes]
        lines += [f"  return {name} = %{v.id}" for name, v in self.outputs]
        lines.append("}")
        return "\n".join(lines)
