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
"""
from __future__ import annotations

from typing import Iterable, Sequence

import onnx
from onnx import helper

from .emitter import Emitter

__all__ = ["transpose_gather_indices", "eliminate_common_subexpressions"]

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
