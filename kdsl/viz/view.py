"""The view model of a data-flow diagram, built from the IR once and drawn by every writer.

One :class:`ViewNode` per model input, layer call (node of the IR) and model output; one
:class:`ViewEdge` per tensor use, labelled with the tensor's shape (symbolic dims by name);
one :class:`ViewCluster` per block call (``residual_2``, nested ``residual_2/conv_bn``).
Edges that jump over a path (residual shortcuts) are marked ``skip``; calls of one layer
object (shared weights) are grouped in ``shared``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..flops import node_flops
from ..ir import BATCH, Graph, Node, TensorType

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["View", "ViewNode", "ViewEdge", "ViewCluster", "build_view", "shape_text"]


@dataclass
class ViewNode:
    id: str
    kind: str                       # input | layer | op | output
    name: str                       # full name: "residual_2/conv_bn/conv2d", or the input/output name
    label: str                      # what the box shows first: the last part of the name
    type: str                       # "Conv2D", "relu", "Input", "Output"
    family: str                     # colour group: core, conv, pooling, ..., op, input, output
    call: str                       # key arguments, as written in .kd: "Conv2D(16, 3, padding=same)"
    args: list[tuple[str, str]] = field(default_factory=list)       # the whole config
    weights: list[tuple[str, str, bool]] = field(default_factory=list)  # name, shape, trainable
    params: int = 0                 # counted at the layer's first call only
    flops: int | None = 0
    in_shapes: list[str] = field(default_factory=list)
    out_shapes: list[str] = field(default_factory=list)
    cluster: str = ""               # id of the innermost block call it belongs to ("" = top level)
    shared: dict | None = None      # {"group": i, "index": k, "count": n} for a shared layer
    source: dict | None = None      # {"loc": "file:line:col", "file", "line", "text"}


@dataclass
class ViewEdge:
    src: str
    dst: str
    value: int                      # the tensor's id: one tensor may feed several edges
    shape: str
    skip: bool = False              # a residual / shortcut edge (jumps over a path)
    mask: bool = False              # the tensor is the Keras mask the layer reads (not a data input)


@dataclass
class ViewCluster:
    id: str                         # "residual_2/conv_bn"
    name: str                       # "conv_bn"
    block: str                      # the block (or model) called: "conv_bn"
    parent: str                     # "" at top level
    params: int = 0
    flops: int | None = 0
    layers: int = 0                 # layer calls inside, nested blocks included


@dataclass
class View:
    model: str
    nodes: list[ViewNode]
    edges: list[ViewEdge]
    clusters: list[ViewCluster]
    shared: list[list[str]]
    totals: dict[str, Any]

    def to_json(self) -> dict:
        return {"model": self.model, "nodes": [asdict(n) for n in self.nodes],
                "edges": [asdict(e) for e in self.edges], "clusters": [asdict(c) for c in self.clusters],
                "shared": self.shared, "totals": self.totals}

    def node(self, node_id: str) -> ViewNode:
        return next(n for n in self.nodes if n.id == node_id)


def shape_text(t: TensorType, dtype: bool = True) -> str:
    """``(batch, 32, 32, 16)``; a non-float32 tensor is prefixed with its dtype."""
    dims = ", ".join(str(d) for d in t.shape)
    s = f"({dims}{',' if t.rank == 1 else ''})"
    return s if (not dtype or t.dtype == "float32") else f"{t.dtype} {s}"


def _fmt(v: Any, short: bool = False) -> str:
    """A value as written in .kd; ``short`` rounds floats and writes ``(3, 3)`` as ``3``."""
    from ..ir.to_kd import format_value

    if short:
        if isinstance(v, float):
            return format(v, ".6g") if v == v and abs(v) != float("inf") else format_value(v)
        if isinstance(v, (list, tuple)) and len(v) > 1 and all(x == v[0] for x in v) and \
                isinstance(v[0], int) and not isinstance(v[0], bool):
            return str(v[0])
    if isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) and v not in ("true", "false", "none"):
        return v                    # bare identifiers read as in .kd: padding=same
    return format_value(v)


def _call_text(layer) -> tuple[str, list[tuple[str, str]]]:
    """``Conv2D(16, 3, padding=same)`` (non-default arguments) and the full argument list."""
    from ..layers.ops import ActivationOp, Binary, Mean

    full = [(k, _fmt(v)) for k, v in layer.get_config().items() if k != "name"]
    if isinstance(layer, Binary):
        sym = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@"}[layer.op]
        if layer.constant is not None:
            c = _fmt(layer.constant, True)
            return (f"{c} {sym} x" if layer.const_first else f"x {sym} {c}"), full
        return f"a {sym} b", full
    if isinstance(layer, ActivationOp):
        return (f"{layer.activation}(x, axis={layer.axis})" if layer.axis != -1 else f"{layer.activation}(x)"), full
    if isinstance(layer, Mean):
        return f"mean(x, axis={_fmt(layer.axis)})", full
    try:
        cfg = layer.non_default_config()
    except Exception:  # a layer that cannot rebuild its defaults: show everything
        cfg = layer.get_config()
    cfg.pop("name", None)
    if cfg.get("trainable") is True:
        cfg.pop("trainable")
    params = list(layer.signature().parameters.values())[1:]
    pos = [p.name for p in params if p.default is p.empty and p.name in cfg]
    parts = [_fmt(cfg.pop(k), True) for k in pos] + [f"{k}={_fmt(v, True)}" for k, v in cfg.items()]
    return f"{type(layer).__name__}({', '.join(parts)})", full


def _family(layer) -> str:
    if layer.is_op:
        return "op"
    return type(layer).__module__.rsplit(".", 1)[-1]    # the family module: conv, pooling, ...


def _source(span) -> dict | None:
    if span is None:
        return None
    try:
        text = span.source_line()
    except Exception:
        text = None
    return {"loc": f"{span.file}:{span.line}:{span.column}", "file": span.file, "line": span.line,
            "text": text.strip() if text else None}


# -- which block call an op belongs to ----------------------------------------------------------
def _def_ranges(graph: Graph) -> dict[str, list[tuple[str, str, int, int]]]:
    """Block and model definitions of the sources the graph came from: name -> (file, kind, first, last)."""
    from ..syntax import parse

    texts = {}
    for n in graph.nodes:
        sp = n.span
        if sp is not None and sp.text is not None and sp.file not in texts:
            texts[sp.file] = sp.text
    out: dict[str, list] = {}
    for file, text in texts.items():
        try:
            mod = parse(text, file)
        except Exception:
            continue
        for d in list(mod.blocks) + list(mod.models):
            out.setdefault(d.name, []).append((file, d.span.line, d.span.end_line or d.span.line))
    return out


def _def_name(component: str, ranges: dict) -> str | None:
    if component in ranges:
        return component
    base = re.sub(r"_\d+$", "", component)
    return base if base in ranges else None


def _node_scopes(graph: Graph) -> list[tuple[str, ...]]:
    """Each node's block-call scope. Layers carry theirs; an op (``relu(x)``, ``a + b``) is placed
    in the innermost call, among those open around it, whose definition contains its source line."""
    nodes = graph.nodes
    scopes: list[tuple[str, ...] | None] = [tuple(n.layer.scope) if (n.layer.scope or not n.layer.is_op)
                                           else None for n in nodes]
    if all(s is not None for s in scopes):
        return scopes  # type: ignore[return-value]
    ranges = _def_ranges(graph)
    nxt: list[tuple[str, ...]] = [()] * len(nodes)
    following: tuple[str, ...] = ()
    for i in range(len(nodes) - 1, -1, -1):
        nxt[i] = following
        if not nodes[i].layer.is_op:
            following = scopes[i] or ()
    prev: tuple[str, ...] = ()
    for i, n in enumerate(nodes):
        if scopes[i] is None:
            chosen: tuple[str, ...] = ()
            sp = n.span
            if sp is not None and ranges:
                # deepest first; on a tie the call still open from before the op wins (ops most
                # often end a block: `return relu(y + shortcut)`)
                cands = sorted(((len(s) - k, r, s[:len(s) - k]) for r, s in enumerate((prev, nxt[i]))
                                for k in range(len(s))), key=lambda c: (-len(c[2]), c[1]))
                for _, _, c in cands:
                    name = _def_name(c[-1], ranges)
                    if name and any(f == sp.file and a <= sp.line <= b for f, a, b in ranges[name]):
                        chosen = c
                        break
            scopes[i] = chosen
        prev = scopes[i]  # type: ignore[assignment]
    return scopes  # type: ignore[return-value]


# -- the view ------------------------------------------------------------------------------------
def shortcut_targets(succ: list[list[int]], targets: list[int]) -> set[int]:
    """Of ``targets`` (consumers of one tensor, as indices in topological order), those reachable
    from another of them: the edges to them jump over a path (a residual shortcut). The search
    never goes past the last target, so a long model costs only the span of each shortcut."""
    targets = sorted(set(targets))
    if len(targets) < 2:
        return set()
    last, want, found = targets[-1], set(targets), set()
    for start in targets[:-1]:
        seen, stack = {start}, [start]
        while stack:
            for nxt in succ[stack.pop()]:
                if nxt <= last and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        found |= (seen - {start}) & want
    return found


def _skip_edges(graph: Graph, consumers: dict[int, list[int]]) -> set[tuple[int, int]]:
    """(value id, consumer node index) pairs of edges that jump over another path from the same
    tensor: the consumer is reachable from another consumer of that tensor."""
    nodes = graph.nodes
    index = {n.id: i for i, n in enumerate(nodes)}
    succ: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for v in n.inputs:
            if v.node is not None and v.node.id in index:
                succ[index[v.node.id]].append(i)
    out = set()
    for vid, cons in consumers.items():
        for c in shortcut_targets(succ, cons):
            out.add((vid, c))
    return out


def build_view(model: "Model") -> View:
    """The diagram's content for ``model``: nodes, edges, block clusters, sharing, totals."""
    g = model.graph
    nodes: list[ViewNode] = []
    producer: dict[int, str] = {}
    for k, v in enumerate(g.inputs):
        vid = f"in{k}"
        producer[v.id] = vid
        dims = ", ".join(str(d) for d in v.type.shape[1:])
        nodes.append(ViewNode(vid, "input", v.name, v.name, "Input", "input", f"input {v.name}: {v.type.dtype}[{dims}]",
                              out_shapes=[shape_text(v.type)], flops=0, source=_source(v.span)))
    scopes = _node_scopes(g)
    calls: dict[int, list[int]] = {}
    for i, n in enumerate(g.nodes):
        calls.setdefault(id(n.layer), []).append(i)
    seen: set[int] = set()
    shared_groups: dict[int, int] = {}
    shared: list[list[str]] = []
    for i, (n, scope) in enumerate(zip(g.nodes, scopes)):
        layer = n.layer
        first = id(layer) not in seen
        seen.add(id(layer))
        call, args = _call_text(layer)
        extra = getattr(n, "call_args", None) or {}
        if extra:   # compile-time call arguments: MultiHeadAttention(...)([x, x], use_causal_mask=true)
            call += "(" + ", ".join(f"{k}={_fmt(v, True)}" for k, v in extra.items()) + ")"
            args = args + [(f"call: {k}", _fmt(v)) for k, v in extra.items()]
        name = layer.name or layer.display_name()
        group = calls[id(layer)]
        info = None
        if len(group) > 1:
            if id(layer) not in shared_groups:
                shared_groups[id(layer)] = len(shared)
                shared.append([f"n{j}" for j in group])
            info = {"group": shared_groups[id(layer)], "index": group.index(i) + 1, "count": len(group)}
        label = name.rsplit("/", 1)[-1]
        nodes.append(ViewNode(
            f"n{i}", "op" if layer.is_op else "layer", name, label, layer.type_name(), _family(layer), call,
            args=args, weights=[(w.name, shape_text(TensorType(w.dtype, w.shape), dtype=False), w.trainable)
                                for w in layer.weights],
            params=layer.count_params() if first else 0, flops=node_flops(n),
            in_shapes=[shape_text(v.type) for v in n.inputs], out_shapes=[shape_text(v.type) for v in n.outputs],
            cluster="/".join(scope), shared=info, source=_source(n.span)))
        for v in n.outputs:
            producer[v.id] = f"n{i}"
    for k, (oname, v) in enumerate(g.outputs):
        nodes.append(ViewNode(f"out{k}", "output", oname, oname, "Output", "output", f"output {oname}",
                              in_shapes=[shape_text(v.type)], out_shapes=[shape_text(v.type)], flops=0))

    consumers: dict[int, list[int]] = {}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            consumers.setdefault(v.id, []).append(i)
    skips = _skip_edges(g, consumers)
    edges: list[ViewEdge] = []
    for i, n in enumerate(g.nodes):
        done = set()
        for v in n.inputs:
            if v.id in done:         # x + x: one edge
                continue
            done.add(v.id)
            edges.append(ViewEdge(producer[v.id], f"n{i}", v.id, shape_text(v.type), (v.id, i) in skips))
        mask = getattr(n, "mask", None)
        if mask is not None and mask.id in producer and mask.id not in done:
            edges.append(ViewEdge(producer[mask.id], f"n{i}", mask.id, shape_text(mask.type), mask=True))
    for k, (_, v) in enumerate(g.outputs):
        edges.append(ViewEdge(producer[v.id], f"out{k}", v.id, shape_text(v.type)))

    clusters: dict[str, ViewCluster] = {}
    for node, scope in zip(nodes[len(g.inputs):], scopes):
        for d in range(1, len(scope) + 1):
            cid = "/".join(scope[:d])
            c = clusters.get(cid)
            if c is None:
                block = re.sub(r"_\d+$", "", scope[d - 1])
                c = clusters[cid] = ViewCluster(cid, scope[d - 1], block, "/".join(scope[:d - 1]))
            c.params += node.params
            c.flops = None if (c.flops is None or node.flops is None) else c.flops + node.flops
            c.layers += node.kind == "layer"
    flops = [nd.flops for nd in nodes]
    totals = {
        "params": model.count_params(),
        "trainable": sum(w.size for w in model.weights if w.trainable),
        "flops": None if any(f is None for f in flops) else sum(flops),
        "layers": len(model.layers),
        "calls": len(g.nodes),
        "inputs": len(g.inputs),
        "outputs": len(g.outputs),
    }
    totals["non_trainable"] = totals["params"] - totals["trainable"]
    return View(model.name, nodes, edges, list(clusters.values()), shared, totals)
