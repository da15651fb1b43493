"""Rewrites of a lowered graph that keep every value and make it cheaper to run.

Layers lower one at a time, so a layer cannot see what its input's producer could have done
instead. These rewrites look across layers:

* ``Transpose(Gather(data, ids, axis=0))`` whose permutation only reorders the axes of ``ids``
  becomes ``Gather(data, Transpose(ids))``: the recurrent layers want time-major inputs, and
  transposing the ``[batch, T]`` token ids of an ``Embedding`` costs nothing next to moving its
  ``[batch, T, dim]`` output (twice when training: its gradient comes back the same way).
* Common subexpressions: a node that repeats an earlier one (same op, inputs and attributes) is
  dropped and its outputs read from the earlier node. The optimizer's step-dependent scalars
  (Adam's bias correction) are emitted per weight, the gradient rules ask for the same shapes
  again...: onnxruntime runs every node, and on small models a node costs more than its work.
* ``limit_arity``: a ``Concat`` of more than 32 inputs or a ``Split`` of more than 32 outputs
  becomes two levels of them. onnxruntime's CUDA kernels pass up to 32 pointers by value and copy
  longer lists from host memory at each run, which a captured CUDA graph cannot hold (the
  recurrent layers split and stack one piece per time step).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .emitter import Emitter

__all__ = ["transpose_gather_indices", "eliminate_common_subexpressions", "limit_arity"]

#: ops whose outputs are not a function of their inputs
_RANDOM = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
           "Bernoulli", "Dropout"}


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def transpose_gather_indices(nodes: Sequence[onnx.NodeProto], e: Emitter, ranks: dict[str, int],
                             keep: Iterable[str] = ()) -> list[onnx.NodeProto]:
    """``nodes`` with ``Transpose(Gather(data, ids, axis=0), perm)`` rewritten as
    ``Gather(data, Transpose(ids, perm[:rank(ids)]))`` where ``perm`` leaves the data axes in
    place and the Gather's output feeds nothing else. ``ranks``: ranks of the names the caller
    knows (graph inputs, weights); a Gather whose ``ids`` rank follows from neither its ``ids``
    nor its ``data`` is left alone. ``keep``: names that must stay (graph outputs).
    """
    keep = set(keep)
    uses: dict[str, int] = {}
    for nd in nodes:
        for i in nd.input:
            uses[i] = uses.get(i, 0) + 1
    producer = {o: k for k, nd in enumerate(nodes) for o in nd.output}
    out = list(nodes)
    inserts: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for k, nd in enumerate(nodes):
        if nd.op_type != "Transpose" or not nd.input:
            continue
        src = nd.input[0]
        j = producer.get(src)
        if j is None or uses.get(src, 0) != 1 or src in keep:
            continue
        gather = nodes[j]
        if gather.op_type != "Gather" or _attr(gather, "axis", 0) != 0 or len(gather.input) != 2:
            continue
        perm = _attr(nd, "perm")
        if perm is None:
            continue
        perm = list(perm)
        r = ranks.get(gather.input[1])
        if r is None and gather.input[0] in ranks:
            r = len(perm) - ranks[gather.input[0]] + 1
        if r is None or r < 2:
            continue
        if sorted(perm[:r]) != list(range(r)) or perm[r:] != list(range(r, len(perm))):
            continue
        ids_t = e.fresh(f"{gather.input[1]}_transposed")
        inserts[j] = helper.make_node("Transpose", [gather.input[1]], [ids_t], perm=perm[:r],
                                      name=f"{gather.name}/ids_transpose")
        gather.input[1] = ids_t
        gather.output[0] = nd.output[0]
        dropped.add(k)
    if not inserts:
        return out
    result = []
    for k, nd in enumerate(out):
        if k in inserts:
            result.append(inserts[k])
        if k not in dropped:
            result.append(nd)
    return result


def eliminate_common_subexpressions(nodes: Sequence[onnx.NodeProto], keep: Iterable[str] = ()) -> list[onnx.NodeProto]:
    """``nodes`` (in topological order) without the nodes that repeat an earlier node: same
    domain, op type, inputs (after earlier replacements) and attributes. Nodes with subgraphs,
    random ops and nodes that write a name in ``keep`` (graph outputs) stay. Inputs are renamed
    in place."""
    keep = set(keep)
    seen: dict[tuple, onnx.NodeProto] = {}
    rename: dict[str, str] = {}
    out = []
    for nd in nodes:
        for i, x in enumerate(nd.input):
            if x in rename:
                nd.input[i] = rename[x]
        if (nd.op_type in _RANDOM or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                         for a in nd.attribute) or keep.intersection(nd.output)):
            out.append(nd)
            continue
        key = (nd.domain, nd.op_type, tuple(nd.input), len(nd.output),
               tuple(sorted(a.SerializeToString() for a in nd.attribute)))
        first = seen.get(key)
        if first is None or any(mine and not theirs for mine, theirs in zip(nd.output, first.output)):
            seen.setdefault(key, nd)
            out.append(nd)
            continue
        for mine, theirs in zip(nd.output, first.output):
            if mine:
                rename[mine] = theirs
    return out


def _group_size(n: int, most: int) -> int | None:
    """The size of equal groups (an equal ``Split`` can make them) splitting ``n`` pieces into at
    most ``most`` groups of at most ``most`` each; None where there is none."""
    fits = [k for k in range(2, most + 1) if n % k == 0 and n // k <= most]
    return n // min(fits, key=lambda k: abs(k - n ** 0.5)) if fits else None


def limit_arity(graph: onnx.GraphProto, most: int = 32) -> None:
    """Rewrite ``graph`` in place so that no ``Concat`` has more than ``most`` inputs and no
    ``Split`` more than ``most`` outputs: each becomes an outer node over inner ones of
    consecutive pieces (the same values). A ``Split`` is rewritten when its sizes are constant
    (an initializer or a ``Constant`` node) or when it splits equally into a number of parts that
    factors into two at most ``most``; others stay as they are."""
    taken = {n for nd in graph.node for n in list(nd.input) + list(nd.output)}
    taken |= {v.name for v in list(graph.input) + list(graph.output) + list(graph.initializer)}
    taken |= {nd.name for nd in graph.node}
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for nd in graph.node:
        if nd.op_type == "Constant" and nd.attribute and nd.attribute[0].name == "value":
            consts[nd.output[0]] = numpy_helper.to_array(nd.attribute[0].t)

    def fresh(base: str) -> str:
        k = 0
        while f"{base}_{k}" in taken:
            k += 1
        taken.add(f"{base}_{k}")
        return f"{base}_{k}"

    def sizes_const(values, base: str) -> tuple[str, onnx.NodeProto]:
        name = fresh(base)
        consts[name] = np.asarray(values, dtype=np.int64)
        return name, helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
            np.asarray(values, dtype=np.int64), name))

    changed = True
    while changed:
        changed = False
        out: list[onnx.NodeProto] = []
        for nd in graph.node:
            axis = _attr(nd, "axis", 0)
            base = nd.name or nd.output[0]
            if nd.op_type == "Concat" and len(nd.input) > most:
                groups = [list(nd.input[i:i + most]) for i in range(0, len(nd.input), most)]
                inner = []
                for g, ins in enumerate(groups):
                    inner.append(fresh(f"{nd.output[0]}/part{g}"))
                    out.append(helper.make_node("Concat", ins, [inner[-1]], axis=axis,
                                                name=fresh(f"{base}/part{g}")))
                del nd.input[:]
                nd.input.extend(inner)
                out.append(nd)
                changed = True
            elif nd.op_type == "Split" and len(nd.output) > most:
                n = len(nd.output)
                sized = len(nd.input) > 1 and bool(nd.input[1])
                sizes = consts.get(nd.input[1]) if sized else None
                per = None if sized else _group_size(n, most)
                if sizes is not None:
                    sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
                    bounds = list(range(0, n, most)) + [n]
                elif per is not None:
                    bounds = list(range(0, n + 1, per))
                else:          # sizes computed in the graph, or a count that does not factor
                    out.append(nd)
                    continue
                pieces = [(bounds[g], bounds[g + 1]) for g in range(len(bounds) - 1)]
                parts = [fresh(f"{nd.input[0]}/part{g}") for g in range(len(pieces))]
                attrs = {"axis": axis}
                if sizes is not None:
                    name, node = sizes_const([sum(sizes[a:b]) for a, b in pieces], f"{base}/sizes")
                    out.append(node)
                    out.append(helper.make_node("Split", [nd.input[0], name], parts, name=fresh(f"{base}/outer"), **attrs))
                else:
                    if _attr(nd, "num_outputs") is not None:
                        attrs["num_outputs"] = len(pieces)
                    out.append(helper.make_node("Split", [nd.input[0]], parts, name=fresh(f"{base}/outer"), **attrs))
                for g, ((a, b), part) in enumerate(zip(pieces, parts)):
                    ins = [part]
                    inner_attrs = {"axis": axis}
                    if sizes is not None:
                        name, node = sizes_const(sizes[a:b], f"{base}/sizes{g}")
                        out.append(node)
                        ins.append(name)
                    elif "num_outputs" in attrs:
                        inner_attrs["num_outputs"] = b - a
                    out.append(helper.make_node("Split", ins, list(nd.output[a:b]), name=fresh(f"{base}/inner{g}"),
                                                **inner_attrs))
                changed = True
            else:
                out.append(nd)
        del graph.node[:]
        graph.node.extend(out)
