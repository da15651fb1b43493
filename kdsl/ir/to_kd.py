"""Print an IR graph as ``.kd`` source that compiles back to the same graph.

Every layer is written with its explicit ``name=`` so names (and so ONNX weight
names) survive the round trip; a layer called more than once is declared with
``layer`` and called by its instance name, which keeps the sharing.
"""
from __future__ import annotations

import json
import re
from typing import Any

from .graph import Graph, Value

__all__ = ["graph_to_kd", "format_value"]


def layer_call(layer) -> str:
    """``Class(args, name="...")`` for a layer: positional required args, then non-defaults."""
    cfg = layer.non_default_config()
    cfg.pop("name", None)
    pos = [p for p in list(layer.signature().parameters.values())[1:] if p.default is p.empty and p.name in cfg]
    parts = [format_value(cfg.pop(p.name)) for p in pos]
    parts += [f"{k}={format_value(v)}" for k, v in cfg.items()]
    if layer.name is not None:
        parts.append(f"name={format_value(layer.name)}")
    return f"{type(layer).__name__}({', '.join(parts)})"


def format_value(v: Any) -> str:
    from ..layers.base import Layer

    if isinstance(v, Layer):
        return layer_call(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)   # escapes quotes, backslashes and control characters
    if isinstance(v, float):
        r = repr(v)
        return r if ("." in r or "e" in r or "inf" in r or "nan" in r) else r + ".0"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)


def _ident(name: str, used: set[str]) -> str:
    base = re.sub(r"\W", "_", name)
    if not base or base[0].isdigit():
        base = "v_" + base
    out, i = base, 1
    while out in used:
        out = f"{base}_{i}"
        i += 1
    used.add(out)
    return out


_SYM = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@"}


def graph_to_kd(graph: Graph) -> str:
    from ..layers.ops import ActivationOp, Binary, Mean, NotZero
    from ..syntax.parser import KEYWORDS

    used: set[str] = set(KEYWORDS)
    names: dict[int, str] = {}
    model_name = graph.name if graph.name.isidentifier() and graph.name not in KEYWORDS else \
        _ident(f"{graph.name}_model", set(KEYWORDS))
    lines = [f"model {model_name} {{"]
    for v in graph.inputs:
        names[v.id] = _ident(v.name, used)
        dims = ", ".join(str(d) for d in v.type.shape[1:])
        lines.append(f"    input {names[v.id]}: {v.type.dtype}[{dims}]")
    calls: dict[int, int] = {}
    for n in graph.nodes:
        calls[id(n.layer)] = calls.get(id(n.layer), 0) + 1
    declared: dict[int, str] = {}
    for node in graph.nodes:
        layer = node.layer
        if isinstance(layer, NotZero):     # implicit: Embedding(mask_zero=true) makes it again
            continue
        args = [names[v.id] for v in node.inputs]
        if isinstance(layer, Binary):
            if layer.constant is not None:
                c = format_value(layer.constant)
                expr = f"{c} {_SYM[layer.op]} {args[0]}" if layer.const_first else f"{args[0]} {_SYM[layer.op]} {c}"
            else:
                expr = f"{args[0]} {_SYM[layer.op]} {args[1]}"
        elif isinstance(layer, ActivationOp):
            extra = f", axis={layer.axis}" if layer.axis != -1 else ""
            expr = f"{layer.activation}({args[0]}{extra})"
        elif isinstance(layer, Mean):
            expr = f"mean({args[0]}, axis={format_value(layer.axis)}, keepdims={format_value(layer.keepdims)})"
        else:
            ctor = layer_call(layer)
            target = args[0] if layer.arity == "one" else "[" + ", ".join(args) + "]"
            extra = {k: v for k, v in node.call_args.items() if layer.call_arguments.get(k, object()) != v}
            if calls[id(layer)] > 1:
                if id(layer) not in declared:
                    declared[id(layer)] = _ident(layer.name, used)
                    lines.append(f"    layer {declared[id(layer)]} = {ctor}")
                ctor = declared[id(layer)]
            if extra:   # call arguments need Keras's call style
                kw = "".join(f", {k}={format_value(v)}" for k, v in extra.items())
                expr = f"{ctor}({target}{kw})"
            else:
                expr = f"{target} -> {ctor}"
        outs = [_ident(f"{layer.name}_out" if len(node.outputs) == 1 else f"{layer.name}_out{i}", used)
                for i in range(len(node.outputs))]
        for v, o in zip(node.outputs, outs):
            names[v.id] = o
        lines.append(f"    {', '.join(outs)} = {expr}")
    for name, v in graph.outputs:
        lines.append(f"    output {name} = {names[v.id]}")
    lines.append("}")
    return "\n".join(lines) + "\n"
