"""Calling a whole model inside another: replay its graph on new input tensors."""
from __future__ import annotations

from ..errors import KdslError, Span
from ..ir import Graph, Value

__all__ = ["inline_graph", "check_input_type"]


def check_input_type(graph: Graph, i: int, v: Value, span: Span | None) -> None:
    want = graph.inputs[i].type
    got = v.type
    ok = got.rank == want.rank and got.dtype == want.dtype and all(
        isinstance(w, str) or g == w for g, w in zip(got.shape[1:], want.shape[1:]))
    if not ok:
        raise KdslError(f"Model '{graph.name}' input '{graph.inputs[i].name}' expects {want}. "
                        f"Received: {got}", span)


def inline_graph(graph: Graph, inputs, span: Span | None, scope=None):
    """Apply ``graph``'s nodes (same layer objects, so shared weights) to ``inputs``."""
    vals = [inputs] if isinstance(inputs, Value) else list(inputs)
    if len(vals) != len(graph.inputs):
        raise KdslError(f"Model '{graph.name}' takes {len(graph.inputs)} inputs "
                        f"{[v.name for v in graph.inputs]}. Received: {len(vals)}.", span)
    env = {}
    for i, (src, v) in enumerate(zip(graph.inputs, vals)):
        if not isinstance(v, Value):
            raise KdslError(f"Model '{graph.name}' must be called on tensors. Received: {v!r:.40}", span)
        check_input_type(graph, i, v, span)
        env[src.id] = v
    for node in graph.nodes:
        ins = [env[v.id] for v in node.inputs]
        out = node.layer(ins if node.layer.arity == "list" else ins[0], span=span)
        outs = out if isinstance(out, list) else [out]
        for a, b in zip(node.outputs, outs):
            env[a.id] = b
    res = [env[v.id] for _, v in graph.outputs]
    return res[0] if len(res) == 1 else res
