"""Graphviz writer: the view model as ``.dot`` source, rendered to SVG/PNG by ``dot`` if present.

Boxes are HTML-like tables (name, type, key arguments, parameters and FLOPs); edges carry the
tensor's shape; residual shortcuts are drawn in orange; calls of one shared layer are linked by
a dashed purple line; each block call is a cluster (``expand_blocks=True``) or one box for the
whole call (the default).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from html import escape

from ..errors import KdslError
from ..flops import format_flops
from .view import View, ViewNode

__all__ = ["to_dot", "render_dot", "find_dot", "DotNotFound", "COLORS"]

#: fill and border colour of each layer family (shared with the HTML view)
COLORS = {
    "input": ("#e6f4ea", "#2f9e44"), "output": ("#fff4e6", "#e8590c"), "core": ("#f3f0ff", "#7048e8"),
    "conv": ("#e7f5ff", "#1c7ed6"), "pooling": ("#e6fcf5", "#0ca678"), "normalization": ("#fff9db", "#f08c00"),
    "merge": ("#f8f0fc", "#ae3ec9"), "embedding": ("#fff0f6", "#d6336c"), "reshaping": ("#f1f3f5", "#868e96"),
    "spatial": ("#f1f3f5", "#868e96"), "attention": ("#fff5f5", "#e03131"), "recurrent": ("#f4fce3", "#66a80f"),
    "text": ("#f8f9fa", "#495057"), "op": ("#f8f9fa", "#adb5bd"), "other": ("#ffffff", "#495057"),
    "block": ("#edf2ff", "#4c6ef5"),
}
SKIP_COLOR, SHARED_COLOR, EDGE_COLOR = "#e8590c", "#7048e8", "#5c6670"
_SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "÷", "matmul": "@"}


class DotNotFound(KdslError):
    """Graphviz's ``dot`` is not installed, so SVG/PNG cannot be rendered."""

    def __init__(self, fmt: str = "svg"):
        super().__init__(
            f"Graphviz's `dot` program was not found, so kdsl cannot render .{fmt}.",
            hint="install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz), "
                 "or write .html (interactive, needs no Graphviz) or .dot and render it later with "
                 f"`dot -T{fmt} model.dot -o model.{fmt}`")


def find_dot() -> str | None:
    """Path of the ``dot`` program (``$KDSL_DOT`` overrides the name; empty means none)."""
    name = os.environ.get("KDSL_DOT", "dot")
    return shutil.which(name) if name else None


def render_dot(source: str, fmt: str) -> bytes:
    """Run ``dot -T<fmt>`` on ``source``; raise :class:`DotNotFound` without Graphviz."""
    exe = find_dot()
    if exe is None:
        raise DotNotFound(fmt)
    cmd = [exe, f"-T{fmt}"] + (["-Gdpi=110"] if fmt == "png" else [])
    try:
        r = subprocess.run(cmd, input=source.encode("utf-8"), capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise KdslError(f"Graphviz's dot took longer than 300 s to render the diagram as .{fmt}.",
                        hint="write .html instead, or render the .dot file yourself") from None
    if r.returncode != 0 or not r.stdout:
        msg = r.stderr.decode("utf-8", "replace").strip().splitlines()
        raise KdslError(f"Graphviz's dot failed to render .{fmt}: {msg[-1] if msg else 'no output'}")
    return r.stdout


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _h(s: str) -> str:
    return escape(str(s), quote=True)


def _wrap_args(call: str, width: int = 56) -> list[str]:
    inner = call[call.index("(") + 1:-1] if call.endswith(")") and "(" in call else call
    if not inner:
        return []
    parts, lines, cur = _split_top(inner), [], ""
    for p in parts:
        add = p if not cur else cur + ", " + p
        if cur and len(add) > width:
            lines.append(cur + ",")
            cur = p
        else:
            cur = add
    if cur:
        lines.append(cur)
    return lines


def _split_top(s: str) -> list[str]:
    """Split on the commas outside brackets and strings."""
    out, depth, cur, quote = [], 0, "", None
    for ch in s:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _stats(params: int | None, flops: int | None, show_params: bool) -> str:
    if not show_params:
        return ""
    bits = []
    if params:
        bits.append(f"{params:,} params")
    if flops:
        bits.append(format_flops(flops))
    return " · ".join(bits)


def _table(fill: str, border: str, rows: list[str], dashed: bool = False) -> str:
    style = ' STYLE="rounded,dashed"' if dashed else ' STYLE="rounded"'
    cells = "".join(f'<TR><TD ALIGN="LEFT" BALIGN="LEFT">{r}</TD></TR>' for r in rows)
    return (f'<<TABLE BORDER="1" COLOR="{border}" BGCOLOR="{fill}" CELLBORDER="0" CELLSPACING="0" '
            f'CELLPADDING="2"{style}>{cells}</TABLE>>')


def _grey(s: str, size: int = 9) -> str:
    return f'<FONT POINT-SIZE="{size}" COLOR="#555555">{s}</FONT>'


def _node_stmt(n: ViewNode, show_shapes: bool, show_params: bool) -> str:
    fill, border = COLORS.get(n.family, COLORS["other"])
    tooltip = _q(f"{n.name}: {n.call}" + (f" @ {n.source['loc']}" if n.source else ""))
    if n.kind == "op":
        text = _SYMBOLS.get(n.type, n.type)
        return (f'{_q(n.id)} [shape=box, style="rounded,filled", fillcolor="{fill}", color="{border}", '
                f'fontsize=9, height=0.22, width=0.3, margin="0.06,0.02", label={_q(text)}, tooltip={tooltip}];')
    if n.kind in ("input", "output"):
        rows = [f'<B>{_h(n.label)}</B>  {_grey(n.type, 10)}']
        if show_shapes:
            rows.append(_grey(_h(n.out_shapes[0])))
        return f"{_q(n.id)} [label={_table(fill, border, rows)}, tooltip={tooltip}];"
    head = f"<B>{_h(n.label)}</B>  {_grey(_h(n.type), 10)}"
    if n.shared:
        head += "  " + f'<FONT POINT-SIZE="9" COLOR="{SHARED_COLOR}">shared {n.shared["index"]}/{n.shared["count"]}</FONT>'
    rows = [head] + [f'<FONT POINT-SIZE="9">{_h(line)}</FONT>' for line in _wrap_args(n.call)]
    stats = _stats(n.params, n.flops, show_params)
    if stats:
        rows.append(_grey(_h(stats)))
    return f"{_q(n.id)} [label={_table(fill, border, rows)}, tooltip={tooltip}];"


def _visible_skips(edges: list[tuple[str, str, int]], order: list[str], rep: dict) -> set:
    """Edges (as drawn) whose target is reached from another target of the same tensor."""
    from .view import shortcut_targets

    pos: dict[str, int] = {}
    for nid in order:
        pos.setdefault(rep[nid], len(pos))
    succ: list[list[int]] = [[] for _ in pos]
    groups: dict[tuple[str, int], list[int]] = {}
    for a, b, v in edges:
        if pos[a] < pos[b]:
            succ[pos[a]].append(pos[b])
            groups.setdefault((a, v), []).append(pos[b])
    name = {i: k for k, i in pos.items()}
    return {(a, name[t], v) for (a, v), ts in groups.items() for t in shortcut_targets(succ, ts)}


def to_dot(view: View, show_shapes: bool = True, show_params: bool = True, expand_blocks: bool = False) -> str:
    """Graphviz source for the view (``dot -Tsvg`` renders it)."""
    t = view.totals
    title = f"<B>{_h(view.model)}</B>"
    if show_params:
        sub = f"{t['params']:,} params"
        if t["non_trainable"]:
            sub += f" ({t['non_trainable']:,} non-trainable)"
        sub += f" · {t['layers']} layers"
        if t["flops"] is not None:
            sub += f" · {format_flops(t['flops'])} per sample"
        title += f'<BR/><FONT POINT-SIZE="10" COLOR="#555555">{_h(sub)}</FONT>'
    out = [f"digraph {_q(view.model)} {{",
           f'  graph [rankdir=TB, fontname="Helvetica", fontsize=13, labelloc=t, label=<{title}>, '
           'nodesep=0.25, ranksep=0.3, newrank=true, bgcolor="white", pad=0.2];',
           '  node [shape=plain, fontname="Helvetica", fontsize=11];',
           f'  edge [fontname="Helvetica", fontsize=8, fontcolor="#555555", color="{EDGE_COLOR}", arrowsize=0.6];']

    clusters = {c.id: c for c in view.clusters}
    rep = {}
    for n in view.nodes:
        top = n.cluster.split("/", 1)[0] if n.cluster else ""
        rep[n.id] = n.id if (expand_blocks or not top) else f"block:{top}"

    def block_box(cid: str) -> str:
        c = clusters[cid]
        fill, border = COLORS["block"]
        rows = [f"<B>{_h(c.name)}</B>  {_grey('block ' + _h(c.block), 10)}",
                _grey(_h(f"{c.layers} layers" + (" · " + _stats(c.params, c.flops, True) if show_params
                                                  and _stats(c.params, c.flops, True) else "")))]
        return f"{_q('block:' + cid)} [label={_table(fill, border, rows, dashed=True)}, tooltip={_q(cid)}];"

    by_cluster: dict[str, list[ViewNode]] = {}
    for n in view.nodes:
        by_cluster.setdefault(n.cluster, []).append(n)
    children: dict[str, list[str]] = {}
    for c in view.clusters:
        children.setdefault(c.parent, []).append(c.id)

    def emit_cluster(cid: str, depth: int) -> None:
        c = clusters[cid]
        pad = "  " * (depth + 1)
        fill = ("#f8f9ff", "#eef1fb", "#e4e9f7")[min(depth, 2)]
        label = f"<B>{_h(c.name)}</B>  {_grey('block ' + _h(c.block), 9)}"
        if show_params and c.params:
            label += "  " + _grey(f"{c.params:,} params", 9)
        out.append(f"{pad}subgraph {_q('cluster_' + cid)} {{")
        out.append(f'{pad}  label=<{label}>; labeljust=l; style="rounded,filled"; fillcolor="{fill}"; '
                   f'color="#91a7ff"; fontsize=10; margin=8;')
        for sub in children.get(cid, []):
            emit_cluster(sub, depth + 1)
        for n in by_cluster.get(cid, []):
            out.append(f"{pad}  {_node_stmt(n, show_shapes, show_params)}")
        out.append(f"{pad}}}")

    out.append("  { rank=source; " + " ".join(_q(n.id) for n in view.nodes if n.kind == "input") + " }")
    for n in by_cluster.get("", []):
        out.append("  " + _node_stmt(n, show_shapes, show_params))
    for cid in children.get("", []):
        if expand_blocks:
            emit_cluster(cid, 0)
        else:
            out.append("  " + block_box(cid))
    outs = [n.id for n in view.nodes if n.kind == "output"]
    if outs:
        out.append("  { rank=sink; " + " ".join(_q(o) for o in outs) + " }")

    seen_edges: dict[tuple, bool] = {}
    labelled: set[tuple] = set()
    masks = {e.value for e in view.edges if e.mask}
    for e in view.edges:
        a, b = rep[e.src], rep[e.dst]
        if a == b:
            continue
        key = (a, b, e.value)
        if key in seen_edges:
            seen_edges[key] = seen_edges[key] or e.skip
            continue
        seen_edges[key] = e.skip
    shapes = {e.value: e.shape for e in view.edges}
    skips = _visible_skips([k for k in seen_edges if k[2] not in masks], [n.id for n in view.nodes], rep)
    for (a, b, value) in seen_edges:
        skip = (a, b, value) in skips
        attrs = []
        shape = shapes[value]
        if value in masks:
            out.append(f'  {_q(a)} -> {_q(b)} [style=dashed, color="#adb5bd", fontcolor="#868e96", '
                       f'label=" mask ", tooltip="the Keras mask this layer reads"];')
            continue
        if show_shapes and (a, value) not in labelled:
            labelled.add((a, value))
            attrs.append(f"label={_q(' ' + shape + ' ')}")
        if skip:
            attrs.append(f'color="{SKIP_COLOR}", penwidth=1.4, tooltip="shortcut"')
        out.append(f"  {_q(a)} -> {_q(b)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    for group in view.shared:
        vis = [rep[i] for i in group]
        for a, b in zip(vis, vis[1:]):
            if a != b:
                out.append(f'  {_q(a)} -> {_q(b)} [style=dashed, dir=none, constraint=false, '
                           f'color="{SHARED_COLOR}", fontcolor="{SHARED_COLOR}", label=" shared weights "];')
    out.append("}")
    return "\n".join(out) + "\n"
