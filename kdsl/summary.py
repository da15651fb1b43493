"""Keras-style model summary: layer (type), output shape, param #, connected to, totals."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Model

__all__ = ["summary_rows", "summary_text", "format_bytes"]


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def summary_rows(model: "Model") -> list[dict]:
    """One row per layer call: name, type, output shape, params (first call only), inputs."""
    g = model.graph
    producer = {v.id: (v.name or "input") for v in g.inputs}
    rows = [{"name": v.name, "type": "InputLayer", "output_shape": v.type.shape_str(), "params": 0,
             "connected_to": []} for v in g.inputs]
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
    headers = ["Layer (type)", "Output Shape", "Param #"] + (["Connected to"] if functional else [])
    table = []
    for r in rows:
        cells = [f"{r['name']} ({r['type']})", r["output_shape"], f"{r['params']:,}"]
        if functional:
            cells.append(", ".join(r["connected_to"]) or "-")
        table.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in table)) + 2 for i, h in enumerate(headers)]
    right = {2}

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
    trainable = sum(w.size for w in model.weights if w.trainable)
    total = sum(w.size for w in model.weights)
    nbytes = sum(w.size * _itemsize(w.dtype) for w in model.weights)
    tbytes = sum(w.size * _itemsize(w.dtype) for w in model.weights if w.trainable)
    out.append(f" Total params: {total:,} ({format_bytes(nbytes)})")
    out.append(f" Trainable params: {trainable:,} ({format_bytes(tbytes)})")
    out.append(f" Non-trainable params: {total - trainable:,} ({format_bytes(nbytes - tbytes)})")
    return "\n".join(out)


def _branches(rows) -> bool:
    names = [r["name"] for r in rows]
    for i, r in enumerate(rows[1:], 1):
        if r["connected_to"] and r["connected_to"][0] != names[i - 1]:
            return True
    return False


def _itemsize(dtype: str) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize
