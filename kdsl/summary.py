"""Keras-style model summary: layer (type), output shape, param #, FLOPs, connected to, totals.

``summary_json`` gives the same content as a dict for machines (``kdsl summary --json``);
FLOPs are per sample, counted as :mod:`kdsl.flops` documents.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Model

__all__ = ["summary_rows", "summary_text", "summary_json", "format_bytes"]


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def summary_rows(model: "Model") -> list[dict]:
    """One row per layer call: name, type, output shape, params (first call only), FLOPs per
    sample (``None`` when unknown), inputs."""
    from .flops import node_flops

    g = model.graph
    producer = {v.id: (v.name or "input") for v in g.inputs}
    rows = [{"name": v.name, "type": "InputLayer", "output_shape": v.type.shape_str(), "params": 0,
             "flops": 0, "connected_to": []} for v in g.inputs]
    seen = set()
    for node in g.nodes:
        layer = node.layer
        first = id(layer) not in seen
        seen.add(id(layer))
        rows.append({
            "name": layer.name,
            "type": layer.type_name(),
            "output_shape": ", ".join(v.type.shape_str() for v in node.outputs),
            "params": layer.count_params() if first else 0,
            "flops": node_flops(node),
            "connected_to": [producer.get(v.id, "?") for v in node.inputs],
            "shared": not first,
        })
        for i, v in enumerate(node.outputs):
            producer[v.id] = layer.name if len(node.outputs) == 1 else f"{layer.name}[{i}]"
    return rows


def summary_text(model: "Model", line_length: int | None = None) -> str:
    rows = summary_rows(model)
    functional = any(len(r["connected_to"]) > 1 for r in rows) or len(model.graph.inputs) > 1 or any(
        r.get("shared") for r in rows) or _branches(rows)
    headers = ["Layer (type)", "Output Shape", "Param #", "FLOPs"] + (["Connected to"] if functional else [])
    table = []
    for r in rows:
        cells = [f"{r['name']} ({r['type']})", r["output_shape"], f"{r['params']:,}",
                 "?" if r["flops"] is None else f"{r['flops']:,}"]
        if functional:
            cells.append(", ".join(r["connected_to"]) or "-")
        table.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in table)) + 2 for i, h in enumerate(headers)]
    right = {2, 3}

    def line(cells, l, m, r):
        return l + m.join((f" {c:>{w - 2}} " if i in right else f" {c:<{w - 2}} ")
                          for i, (c, w) in enumerate(zip(cells, widths))) + r

    def rule(l, m, r, ch):
        return l + m.join(ch * w for w in widths) + r

    out = [f'Model: "{model.name}"', rule("┏", "┳", "┓", "━"), line(headers, "┃", "┃", "┃"),
           rule("┡", "╇", "┩", "━")]
    for i, cells in enumerate(table):
        out.append(line(cells, "│", "│", "│"))
        if i + 1 < len(table):
            out.append(rule("├", "┼", "┤", "─"))
    out.append(rule("└", "┴", "┘", "─"))
    t = _totals(model, rows)
    out.append(f" Total params: {t['params']:,} ({format_bytes(t['params_bytes'])})")
    out.append(f" Trainable params: {t['trainable_params']:,} ({format_bytes(t['trainable_bytes'])})")
    out.append(f" Non-trainable params: {t['non_trainable_params']:,} "
               f"({format_bytes(t['non_trainable_bytes'])})")
    out.append(f" FLOPs per sample: {_flops_total_text(t)}")
    return "\n".join(out)


def _totals(model: "Model", rows: list[dict]) -> dict:
    trainable = sum(w.size for w in model.weights if w.trainable)
    total = sum(w.size for w in model.weights)
    nbytes = sum(w.size * _itemsize(w.dtype) for w in model.weights)
    tbytes = sum(w.size * _itemsize(w.dtype) for w in model.weights if w.trainable)
    known = [r["flops"] for r in rows if r["flops"] is not None]
    return {"params": total, "trainable_params": trainable, "non_trainable_params": total - trainable,
            "params_bytes": nbytes, "trainable_bytes": tbytes, "non_trainable_bytes": nbytes - tbytes,
            "flops": sum(known) if len(known) == len(rows) else None, "flops_known": sum(known)}


def _flops_total_text(t: dict) -> str:
    from .flops import format_flops

    if t["flops"] is None:
        return f"at least {t['flops_known']:,} (some layers have a symbolic size)"
    return f"{t['flops']:,} ({format_flops(t['flops'])})"


def summary_json(model: "Model") -> dict:
    """The summary as plain data: model name, inputs, outputs, one entry per layer call, totals.

    Shapes are lists with ``null`` for the batch axis and names for symbolic dims.
    """
    g = model.graph
    rows = summary_rows(model)
    outs = [[v.type for v in [i]] for i in g.inputs] + [[v.type for v in n.outputs] for n in g.nodes]
    layers = []
    for r, types in zip(rows, outs):   # rows: the inputs, then one per node
        entry = dict(r, shared=r.get("shared", False))
        entry["output_shapes"] = [list(t.keras_shape()) for t in types]
        entry["dtype"] = types[0].dtype if types else None
        layers.append(entry)
    return {
        "model": model.name,
        "inputs": [{"name": v.name, "dtype": v.type.dtype, "shape": list(v.type.keras_shape())}
                   for v in g.inputs],
        "outputs": [{"name": n, "dtype": v.type.dtype, "shape": list(v.type.keras_shape())}
                    for n, v in g.outputs],
        "layers": layers,
        "totals": _totals(model, rows),
    }


def _branches(rows) -> bool:
    names = [r["name"] for r in rows]
    for i, r in enumerate(rows[1:], 1):
        if r["connected_to"] and r["connected_to"][0] != names[i - 1]:
            return True
    return False


def _itemsize(dtype: str) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize
