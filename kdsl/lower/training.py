"""The portable training step and evaluation graphs (standard ``ai.onnx`` ops only).

Training step ``<model>.train.onnx``::

    inputs : the model's inputs (data), target:<output>, sample_weight:<output>,
             lr (float32 scalar), step (float32 scalar, 1-based),
             state: every weight (``dense/kernel``...), non-trainable state
             (``batch_normalization/moving_mean``...) and optimizer slot (``dense/kernel:m``...)
    outputs: loss (float32 scalar), loss:<output> (several outputs),
             metric:<name>:<part> (partial sums), and ``<state>:new`` for each state input
             that changes: feed output ``X:new`` back as input ``X`` at the next step.

Evaluation ``<model>.eval.onnx`` takes the same data, targets, sample weights and the weights
and state (inference mode: dropout off, moving statistics), and outputs loss and metric parts.
The initial state is written beside them as ``<model>.state.npz`` (keys = input names).
See docs/training_graph.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from ..errors import KdslError
from ..ir import BATCH, TensorType
from .autodiff_nn import prepare_forward, prune_dead_nodes   # also registers the conv/pool/norm rules
from .autodiff import backprop
from .autodiff_rnn import fuse as fuse_recurrent
from .autodiff_rnn import lstm_forward_as_op
from .rewrite import eliminate_common_subexpressions, transpose_gather_indices
from .context import CL, LowerContext
from .emitter import ONNX_DTYPE, Emitter
from .export import check_opset, input_types, lower_body, make_model, value_info

if TYPE_CHECKING:
    from ..model import Model
    from ..train.losses import Loss
    from ..train.metrics import Metric
    from ..train.optimizers import Optimizer

__all__ = ["TrainSetup", "TrainingProgram", "StateEntry", "build_training", "build_gradient_graph", "log_names"]

#: the LSTM, GRU and SimpleRNN backward passes written for the cell (autodiff_rnn); False differentiates their
#: steps op by op (tests)
FUSED_RECURRENT_BACKWARD = True


@dataclass
class TrainSetup:
    """What ``compile`` decided: per-output losses, weights and metrics, and the optimizer."""
    losses: dict[str, "Loss"]
    loss_weights: dict[str, float]
    metrics: dict[str, list["Metric"]]
    optimizer: "Optimizer"


@dataclass
class StateEntry:
    """One state input of the training graph."""
    name: str
    kind: str                   # "weight" (trainable), "state" (non-trainable), "slot"
    value: np.ndarray           # initial value, ONNX layout
    layer: Any = None
    weight: Any = None          # the kdsl Weight this entry mirrors (weights and state)
    updated: bool = True        # whether the step outputs ``name:new``


@dataclass
class TrainingProgram:
    train: onnx.ModelProto
    eval: onnx.ModelProto
    data_inputs: list[tuple[str, TensorType]]
    targets: list[tuple[str, str, TensorType]]         # (input name, output name, type)
    sample_weights: list[tuple[str, str]]              # (input name, output name)
    state: list[StateEntry]
    losses: list[tuple[str, str]]                      # (graph output, log name)
    metrics: list[tuple["Metric", str, dict[str, str]]]   # (metric, log name, {part: graph output})
    eval_state: list[str] = field(default_factory=list)   # state inputs the eval graph takes


def log_names(output_names: list[str], setup: TrainSetup) -> tuple[list[tuple[str, str]], list[tuple]]:
    """Keras's log keys: ``loss``, ``<out>_loss`` and ``<out>_<metric>`` when there are several outputs."""
    multi = len(output_names) > 1
    losses = [("loss", "loss")]
    if multi:
        losses += [(f"loss:{o}", f"{o}_loss") for o in output_names if o in setup.losses]
    metrics = []
    for o in output_names:
        for m in setup.metrics.get(o, []):
            log = f"{o}_{m.name}" if multi else m.name
            metrics.append((o, m, log))
    return losses, metrics


def _infer(e: Emitter, inputs: list[onnx.ValueInfoProto], opset: int, outputs: list[str]):
    """Shapes and dtypes of every value so far, from ONNX shape inference."""
    g = helper.make_graph(list(e.nodes), "infer", inputs,
                          [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outputs],
                          initializer=list(e.initializers.values()))
    m = make_model(g, opset)
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception as err:  # a bug in our lowering
        raise KdslError(f"Internal: shape inference failed on the training graph: {err}") from None
    shapes, dtypes = {}, {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = []
        for d in tt.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        shapes[vi.name] = tuple(dims)
        dtypes[vi.name] = tt.elem_type
    for init in m.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        dtypes[init.name] = init.data_type
    for n in m.graph.node:
        if n.op_type == "Constant":
            t = n.attribute[0].t
            shapes[n.output[0]] = tuple(t.dims)
            dtypes[n.output[0]] = t.data_type
    return shapes, dtypes


def _identity_out(e: Emitter, src: str, name: str) -> None:
    e.op("Identity", [src], out=name)


def _name_outputs(e: Emitter, outputs: list[tuple[str, str]], graph_inputs: set[str]) -> None:
    """Give each ``(value, name)`` its output name: the node computing ``value`` writes ``name``
    directly (an ``Identity`` would copy every updated weight and slot once more per step);
    an ``Identity`` only where the value is a graph input, an initializer, or named twice."""
    producer = {o: n for n in e.nodes for o in n.output if o}
    renamed: dict[str, str] = {}
    for src, name in outputs:
        if src in producer and src not in graph_inputs and src not in e.initializers and src not in renamed:
            renamed[src] = name
        else:
            _identity_out(e, renamed.get(src, src), name)
    for n in e.nodes:
        for seq in (n.input, n.output):
            for i, v in enumerate(seq):
                if v in renamed:
                    seq[i] = renamed[v]


def _build(model: "Model", setup: TrainSetup, opset: int, training: bool, gradients_only: bool = False,
           device: str = "cpu"):
    graph = model.graph
    e = Emitter(opset)
    ctx = LowerContext(e, training=training, weights_as_inputs=True)
    for reserved in ("loss", "lr", "step"):
        e.reserve(reserved)
    if training:
        ctx.step = "step"
    lower_body(ctx, graph, skip_host_preprocessing=True)
    inputs = [value_info(n, t) for n, t in input_types(graph, skip_host_preprocessing=True)]
    targets, sws, per_output = [], [], []
    out_names = [n for n, _ in graph.outputs]
    loss_logs, metric_logs = log_names(out_names, setup)
    metric_parts: list[tuple[Any, str, dict[str, str]]] = []
    for name, v in graph.outputs:
        loss = setup.losses.get(name)
        if loss is None:
            continue
        y_pred = ctx.get(v, CL)
        ttype = loss.target_type(v.type)
        t_in, w_in = f"target:{name}", f"sample_weight:{name}"
        e.reserve(t_in)
        e.reserve(w_in)
        inputs.append(value_info(t_in, ttype))
        inputs.append(value_info(w_in, TensorType("float32", (BATCH,))))
        targets.append((t_in, name, ttype))
        sws.append((w_in, name))
        with e.scope(f"loss/{name}"):
            lv = loss.emit(e, y_pred, t_in, w_in, v.type)
            weight = setup.loss_weights.get(name, 1.0)
            per_output.append((name, lv, lv if weight == 1.0 else e.op("Mul", [lv, e.scalar(weight)])))
        for o, metric, log in metric_logs:
            if o != name:
                continue
            with e.scope(f"metric/{log}"):
                parts = metric.emit(e, y_pred, t_in, w_in, v.type, ttype)
            named = {}
            for part, src in parts.items():
                gname = f"metric:{log}:{part}"
                _identity_out(e, src, gname)
                named[part] = gname
            metric_parts.append((metric, log, named))
    if not per_output:
        raise KdslError("No loss to train: give `loss` for at least one output.")
    total = per_output[0][2] if len(per_output) == 1 else e.op("Sum", [w for _, _, w in per_output])
    outputs = ["loss"]
    _identity_out(e, total, "loss")
    if len(out_names) > 1:
        for name, lv, _ in per_output:
            _identity_out(e, lv, f"loss:{name}")
            outputs.append(f"loss:{name}")
    outputs += [g for _, _, parts in metric_parts for g in parts.values()]

    state: list[StateEntry] = []
    weight_inputs = dict(ctx.weight_inputs)
    for wname, (layer, w) in weight_inputs.items():
        kind = "weight" if w.trainable else "state"
        state.append(StateEntry(wname, kind, np.ascontiguousarray(layer.onnx_weight(w)), layer, w,
                                updated=False))
    by_name = {s.name: s for s in state}
    ranks = {s.name: s.value.ndim for s in state} | {vi.name: len(vi.type.tensor_type.shape.dim) for vi in inputs}
    e.nodes[:] = transpose_gather_indices(e.nodes, e, ranks, outputs)
    new_outputs: list[tuple[str, str]] = []
    if training:
        trainable = [s.name for s in state if s.kind == "weight"]
        state_inputs = [helper.make_tensor_value_info(s.name, ONNX_DTYPE[s.weight.dtype], list(s.value.shape))
                        for s in state]
        lr_vi = helper.make_tensor_value_info("lr", onnx.TensorProto.FLOAT, [])
        step_vi = helper.make_tensor_value_info("step", onnx.TensorProto.FLOAT, [])
        prepare_forward(e.nodes, e)
        shapes, dtypes = _infer(e, inputs + [lr_vi, step_vi] + state_inputs, opset, ["loss"])
        with e.scope("grad"):
            nodes, records = (fuse_recurrent(e.nodes, ctx.recurrent_tapes, e.initializers)
                              if FUSED_RECURRENT_BACKWARD else (list(e.nodes), {}))
            if device == "cuda" and records:
                # unmasked LSTMs forward through ONNX's LSTM op (cuDNN) with the values the backward
                # reads recomputed in bulk; the steps' names stay. Measured on an H100 (text LSTM,
                # 200 steps, 64 units, captured step), ms per step with the op / the unrolled steps:
                # batch 64 5.2 / 9.7, 256 7.1 / 10.0, 512 9.9 / 12.5
                lstm_forward_as_op(e, records)
            grads = backprop(e, nodes, "loss", trainable, shapes, dtypes, records=records, device=device)
        if gradients_only:   # for gradient checks: loss and grad:<weight>, no optimizer
            for wname in trainable:
                if grads[wname] is not None:
                    new_outputs.append((grads[wname], f"grad:{wname}"))
            trainable = []
        params, slot_entries = [], []
        opt = setup.optimizer
        for wname in trainable:
            g = grads[wname]
            if g is None:
                continue
            s = by_name[wname]
            slots = {}
            for slot, init in opt.initial_slots(s.value.shape, s.value.dtype).items():
                sname = f"{wname}:{slot}"
                e.reserve(sname)
                slot_entries.append(StateEntry(sname, "slot", init))
                slots[slot] = sname
            params.append((wname, g, slots))
        with e.scope("optimizer"):
            updates = opt.emit_updates(e, params, "lr", "step", {s.name: s.value.shape for s in state})
        for (wname, _, slots), (new_w, new_slots) in zip(params, updates):
            new_outputs.append((new_w, f"{wname}:new"))
            by_name[wname].updated = True
            for slot, sname in slots.items():
                new_outputs.append((new_slots[slot], f"{sname}:new"))
        state += slot_entries
        for sname, new in ctx.state_updates.items():
            new_outputs.append((new, f"{sname}:new"))
            by_name[sname].updated = True
        inputs += [lr_vi, step_vi]
    _name_outputs(e, new_outputs, {i.name for i in inputs} | {s.name for s in state})
    outputs += [name for _, name in new_outputs]
    # onnxruntime runs every node, used or not
    e.nodes[:] = prune_dead_nodes(eliminate_common_subexpressions(e.nodes, outputs), outputs)
    state_vis = [helper.make_tensor_value_info(s.name, ONNX_DTYPE[s.weight.dtype] if s.weight else
                                               onnx.TensorProto.FLOAT, list(s.value.shape)) for s in state]
    out_vis = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs]
    g = helper.make_graph(e.nodes, f"{graph.name}_{'train' if training else 'eval'}", inputs + state_vis, out_vis,
                          initializer=list(e.initializers.values()))
    proto = make_model(g, opset, {"kdsl.model": graph.name, "kdsl.graph": "train" if training else "eval"})
    proto = onnx.shape_inference.infer_shapes(proto)
    meta = dict(targets=targets, sample_weights=sws, losses=loss_logs, metrics=metric_parts)
    return proto, state, meta


def build_gradient_graph(model: "Model", setup: TrainSetup, opset: int = 17,
                         device: str = "cpu") -> tuple[onnx.ModelProto, list]:
    """A training-mode graph that outputs ``loss`` and ``grad:<weight>`` for every trainable
    weight the loss depends on (inputs as in the training step, without lr's effect), built
    as :func:`build_training` builds it for ``device``. Used by the gradient checks."""
    check_opset(opset)
    proto, state, _ = _build(model, setup, opset, training=True, gradients_only=True, device=device)
    return proto, state


def build_training(model: "Model", setup: TrainSetup, opset: int = 17, device: str = "cpu") -> TrainingProgram:
    """Build the training-step and evaluation graphs for ``model`` under ``setup``, for onnxruntime
    on ``device`` (``"cpu"`` or ``"cuda"``: the gradients use ops its kernels run there; on the GPU,
    LSTMs run forward through ONNX's LSTM op)."""
    check_opset(opset)
    train, state, meta = _build(model, setup, opset, training=True, device=device)
    evalm, eval_state, _ = _build(model, setup, opset, training=False)
    return TrainingProgram(train=train, eval=evalm,
                           data_inputs=input_types(model.graph, skip_host_preprocessing=True),
                           targets=meta["targets"], sample_weights=meta["sample_weights"], state=state,
                           losses=meta["losses"], metrics=meta["metrics"],
                           eval_state=[s.name for s in eval_state])
