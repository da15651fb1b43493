"""IR graph -> onnx.ModelProto (the inference model): a pure function of the graph."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import onnx
from onnx import helper

from ..errors import KdslError
from ..ir import Graph, Node, TensorType
from .context import CL, LowerContext
from .emitter import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ONNX_DTYPE, Emitter
from .rewrite import eliminate_common_subexpressions, transpose_gather_indices

if TYPE_CHECKING:
    pass

__all__ = ["lower_graph", "lower_body", "value_info", "ir_version_for", "check_opset", "make_model",
           "host_preprocessing_nodes", "input_types", "default_opset"]


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise KdslError(f"Unsupported ONNX opset. Received: opset={opset!r}; expected an int from "
                        f"{MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET}).")
    return opset


def ir_version_for(opset: int) -> int:
    """The lowest IR version that carries ``opset`` (so older runtimes load the file)."""
    best = None
    for _release, ir, ai_onnx, *_ in helper.VERSION_TABLE:
        if ai_onnx >= opset and (best is None or ir < best):
            best = ir
    return best or onnx.IR_VERSION


def value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, ONNX_DTYPE[t.dtype], list(t.shape))


def host_preprocessing_nodes(graph: Graph) -> dict[str, "Node"]:
    """Input name -> the host-side preprocessing node (e.g. TextVectorization) applied to it."""
    inputs = {v.id: v.name for v in graph.inputs}
    out = {}
    for node in graph.nodes:
        if node.layer.host_preprocessing and len(node.inputs) == 1 and node.inputs[0].id in inputs:
            out[inputs[node.inputs[0].id]] = node
    return out


def _check_skippable(graph: Graph, skipped: dict[str, Node]) -> None:
    """Every input replaced by its preprocessing layer's output must feed that layer only."""
    skipped_ids = {id(n) for n in skipped.values()}
    by_id = {v.id: v.name for v in graph.inputs if v.name in skipped}
    for node in graph.nodes:
        if id(node) in skipped_ids:
            continue
        for v in [*node.inputs, node.mask, *node.masks]:
            if v is not None and v.id in by_id:
                name = by_id[v.id]
                raise KdslError(
                    f"Input '{name}' feeds the host-side preprocessing layer "
                    f"'{skipped[name].layer.display_name()}' and also layer '{node.layer.display_name()}'. "
                    "Expected the preprocessing layer to be its only consumer, so that the graph can "
                    "start at that layer's output.", node.span,
                    hint="give the other layer its own input, or keep the preprocessing in the graph "
                         "(include_preprocessing=True)")
    for out_name, v in graph.outputs:
        if v.id in by_id:
            raise KdslError(f"Input '{by_id[v.id]}' is also the model output '{out_name}'; it cannot be "
                            "replaced by its host-side preprocessing layer's output.",
                            hint="keep the preprocessing in the graph (include_preprocessing=True)")


def input_types(graph: Graph, skip_host_preprocessing: bool = False) -> list[tuple[str, TensorType]]:
    """The graph inputs' names and types. With ``skip_host_preprocessing``, an input consumed by a
    host-side preprocessing layer (TextVectorization) has that layer's output type (int64 token
    ids), under the input's own name."""
    pre = host_preprocessing_nodes(graph) if skip_host_preprocessing else {}
    return [(v.name, pre[v.name].outputs[0].type if v.name in pre else v.type) for v in graph.inputs]


def default_opset(graph: Graph, skip_host_preprocessing: bool = False) -> int:
    """``DEFAULT_OPSET``, raised to the ``min_opset`` of the layers the export contains
    (TextVectorization: 20, unless it is skipped)."""
    skipped = {id(n) for n in host_preprocessing_nodes(graph).values()} if skip_host_preprocessing else set()
    return max([DEFAULT_OPSET] + [getattr(n.layer, "min_opset", DEFAULT_OPSET)
                                  for n in graph.nodes if id(n) not in skipped])


def lower_body(ctx: LowerContext, graph: Graph, skip_host_preprocessing: bool = False) -> None:
    """Place the graph's inputs under their names and lower every node, in order.

    With ``skip_host_preprocessing`` (training graphs, the int-token inference model), an input
    consumed by a host-side preprocessing layer is replaced by that layer's output, under the
    input's name.
    """
    e = ctx.e
    skipped = host_preprocessing_nodes(graph) if skip_host_preprocessing else {}
    _check_skippable(graph, skipped)
    skipped_ids = {id(n) for n in skipped.values()}
    for v in graph.inputs:
        e.reserve(v.name)
        if v.name in skipped:
            ctx.place(skipped[v.name].outputs[0], v.name, CL)
        else:
            ctx.place(v, v.name, CL)
    for node in graph.nodes:
        if id(node) in skipped_ids:
            continue
        layer = node.layer
        with e.scope(layer.name, str(node.span) if node.span else ""):
            results = layer.lower(ctx, node)
        if not isinstance(results, list):   # one output: a name, or (name, layout)
            results = [results]
        for v, r in zip(node.outputs, results):
            name, layout = (r, CL) if isinstance(r, str) else r
            ctx.place(v, name, layout)


def lower_graph(graph: Graph, opset: int = DEFAULT_OPSET, training: bool = False,
                metadata: dict[str, str] | None = None, doc: str = "",
                skip_host_preprocessing: bool = False) -> onnx.ModelProto:
    """Lower ``graph`` (layers already named, weights materialised) to an ONNX model.

    With ``skip_host_preprocessing``, the host-side preprocessing layers applied to inputs are
    left out and those inputs take the layers' outputs (the int-token model; see
    ``Model.to_onnx(include_preprocessing=False)``).
    """
    check_opset(opset)
    e = Emitter(opset)
    ctx = LowerContext(e, training=training)
    out_names = {name for name, _ in graph.outputs}
    for n in out_names:
        e.reserve(n)
    lower_body(ctx, graph, skip_host_preprocessing)

    renames: dict[str, str] = {}
    outputs = []
    graph_inputs = {v.name for v in graph.inputs}
    used_as_output: set[str] = set()
    for name, v in graph.outputs:
        src = ctx.get(v, CL)
        if src in graph_inputs or src in used_as_output or src in e.initializers:
            e.op("Identity", [src], out=name)
        else:
            renames[src] = name
        used_as_output.add(src)
        outputs.append(value_info(name, v.type))
    for node in e.nodes:
        for i, x in enumerate(node.input):
            if x in renames:
                node.input[i] = renames[x]
        for i, x in enumerate(node.output):
            if x in renames:
                node.output[i] = renames[x]

    inputs = [value_info(n, t) for n, t in input_types(graph, skip_host_preprocessing)]
    ranks = {n: len(i.dims) for n, i in e.initializers.items()} | \
        {vi.name: len(vi.type.tensor_type.shape.dim) for vi in inputs}
    keep = [o.name for o in outputs]
    e.nodes[:] = eliminate_common_subexpressions(transpose_gather_indices(e.nodes, e, ranks, keep), keep)
    out_set = set(out_names) | graph_inputs
    produced = {o for nd in e.nodes for o in nd.output}
    infos = [value_info(renames.get(n, n), t) for n, t in ctx.types.items()
             if renames.get(n, n) not in out_set and renames.get(n, n) in produced]
    g = helper.make_graph(e.nodes, graph.name, inputs, outputs,
                          initializer=list(e.initializers.values()), value_info=infos, doc_string=doc)
    return make_model(g, opset, metadata)


def make_model(g: onnx.GraphProto, opset: int, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Wrap a graph as a model: opset, producer, IR version, metadata."""
    from .. import __version__

    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="kdsl", producer_version=__version__,
                              ir_version=ir_version_for(opset))
    for k, v in (metadata or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    from ..layers.text import add_opset_imports   # ai.onnx.ml for LabelEncoder (TextVectorization)

    return add_opset_imports(model)


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
