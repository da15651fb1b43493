"""Backward passes written for the unrolled LSTM, GRU and SimpleRNN, used in place of op-by-op
differentiation.

The unrolled LSTM (see :mod:`kdsl.layers.recurrent`) emits about a dozen small ops per time
step; differentiating them op by op gives about two dozen more per step, each a separate
onnxruntime kernel launch on ``[batch, units]`` tensors. For the common configuration (sigmoid
gates, tanh activations, no recurrent dropout; masked or not) the layer records a :class:`LSTMTape`
of its steps, and :func:`fuse` replaces the steps' nodes, for backprop only, by one node whose
rule (:func:`_lstm_rule`) emits:

* in bulk over all steps (a few ops on ``[T * batch, units]`` tensors): the local derivatives
  ``A_t`` (how each gate's pre-activation moves the cell, or h for the output gate) and
  ``K_t = o_t * (1 - tanh(c_t)^2)``;
* per step, in reverse: ``dc = dc_next * f_{t+1} + dh * K_t``,
  ``dz = [dc, dh, dc, dc] * A_t`` (ONNX gate order i, o, f, c) and ``dh_prev = dz @ R^T``:
  six small ops and one small GEMM;
* the gradient of the projected inputs ``[T * batch, 4u]`` as one ``Concat`` of the steps' ``dz``
  (the node also stands for the ``Split`` that fed the steps), and the recurrent kernel's
  gradient as one GEMM over all steps (``H_prev^T @ dZ``).

Measured on the CPU, the step's time goes to passes over ``[T, batch, 4u]`` tensors (13 MB for
the benchmark's LSTM, past the caches: about 1 ms each) more than to the per-step ops (about
1 µs each on ``[batch, units]``), so the rule keeps ``[T, batch, units]`` stacks per gate
and forms each step's ``A_t`` with a small ``Concat`` rather than stacking and splitting a
``[T, batch, 4u]`` one.

With a mask, a step's states are ``Where(m_t, new, old)`` (and its output, in a Bidirectional,
``Where(m_t, h_new, 0)``): the gradient of a state splits into ``m_t * g`` for the step's new
values and ``(1 - m_t) * g`` passed straight to the previous state.

The GRU (``reset_after=True``, Keras's default; sigmoid gates, tanh candidate, no recurrent
dropout) gets the same treatment: with ``h = hh + z * (h_prev - hh)``, ``hh = tanh(x_h + r * rec)``
(``rec = h_prev @ R_h + b_rh``), the local derivatives ``A1 = (h_prev - hh) z (1 - z)``,
``A2 = (1 - z)(1 - hh^2)``, ``A4 = A2 r`` and ``A3 = A4 rec (1 - r)`` are computed in bulk; per
step, ``q = [g, g, g] * [A1, A3, A4]_t`` (the gradient of ``h_prev @ R``) and
``dh_prev = q @ R^T + g * z_t``; the projections', ``R``'s and ``b_rh``'s gradients are bulk
products of the stacked ``g``.

The SimpleRNN (tanh, no recurrent dropout): ``A = 1 - h^2`` in bulk; per step ``dz = g * A_t`` and
``dh_prev = dz @ R^T``; the recurrent kernel's gradient in one GEMM (op by op it is a GEMM per
step and a sum of them).

The forward graph is unchanged; the gradients of the hoisted input projections flow on to the
``MatMul`` and bias ``Add`` before their ``Split``, whose own rules do the rest.

On onnxruntime's CUDA provider each node is a kernel launch (about 2.7 µs in a captured CUDA
graph on an H100, more than the work of a ``[batch, units]`` op), so two things differ there:
for an unmasked LSTM :func:`lstm_forward_as_op` replaces the forward steps by ONNX's ``LSTM`` op
with the values the rule reads recomputed in bulk, and :func:`_lstm_reverse_by_gemm` runs the
reverse loop in two kernels a step (a masked LSTM's rule forms all the steps' ``A_t`` from one
``[T * b, 4u]`` stack split once).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Sequence

import numpy as np
import onnx
from onnx import helper

from .autodiff import GradContext, register
from .emitter import Emitter

__all__ = ["LSTMTape", "GRUTape", "RNNTape", "fuse", "lstm_forward_as_op"]

_INT64_MIN = np.iinfo(np.int64).min


@dataclass
class _Step:
    """What every step records besides its cell's values: with a mask, ``m`` (bool ``[b, 1]``),
    the state ``hs`` after the step and its output ``out`` (``hs``, or the new h with masked rows
    zeroed, in a Bidirectional); without, both are the step's new ``h`` (a subclass field)."""
    m: str | None = field(default=None, kw_only=True)
    hs: str = field(default="", kw_only=True)
    out: str = field(default="", kw_only=True)

    def __post_init__(self):
        self.hs, self.out = self.hs or self.h, self.out or self.h


@dataclass
class LSTMStep(_Step):
    """One LSTM step's values (each ``[b, .]``): its projected input ``x`` (an output of the
    projection's ``Split``), the gates ``i``, ``o``, ``f`` (sigmoid), ``g = tanh(z_c)``, the new
    cell ``c``, ``tc = tanh(c)`` and the new ``h``; with a mask, also the cell state ``cs`` after
    the step (else ``c``)."""
    x: str
    i: str
    o: str
    f: str
    g: str
    c: str
    tc: str
    h: str
    cs: str = field(default="", kw_only=True)

    def __post_init__(self):
        super().__post_init__()
        self.cs = self.cs or self.c


@dataclass
class GRUStep(_Step):
    """One GRU step's values (each ``[b, .]``): its projected inputs ``xzr`` and ``xh`` (outputs
    of the projections' ``Split``s), the gates ``z``, ``r``, the candidate ``hh``, ``rec`` (what
    ``r`` multiplies: ``h_prev @ R_h + b_rh``; at the first step ``b_rh`` alone ``[1, u]``, or
    None without a bias) and the new ``h``."""
    xzr: str
    xh: str
    z: str
    r: str
    hh: str
    rec: str | None
    h: str


@dataclass
class RNNStep(_Step):
    """One SimpleRNN step's values (each ``[b, .]``): its projected input ``x`` and the new
    ``h = tanh(x + h_prev @ R)``."""
    x: str
    h: str


@dataclass
class _Tape:
    """The steps of one unrolled layer, in processing order, the node range they span, and the
    projections ``(xp [T * b, .], xs)`` whose ``Split`` gave the steps' inputs ``xs`` (in time
    order)."""
    units: int
    rt: str                                   # the recurrent kernel as [u, G*u]
    first_node: str = ""                      # output name of the group's first node
    last_node: str = ""                       # output name of the group's last node
    steps: list = field(default_factory=list)
    name: str = ""
    projections: list[tuple[str, list[str]]] = field(default_factory=list)
    #: the steps' values already stacked in processing order (``[T * b, u]``), by LSTMStep field
    #: name (and ``c_prev``), where a rewrite made them in bulk; the rule stacks the others
    bulk: dict[str, str] = field(default_factory=dict)
    #: the fused node's op type: only ever seen by backprop, never written to a graph
    op_type: ClassVar[str] = ""

    def extra_inputs(self) -> list[str]:
        """Values besides the projections, the recurrent kernel and the masks the steps read."""
        return []

    def outputs(self) -> list[str]:
        last = self.steps[-1]
        return [s.out for s in self.steps] + ([last.hs] if last.hs != last.out else [])


@dataclass
class LSTMTape(_Tape):
    op_type: ClassVar[str] = "KdslUnrolledLSTM"

    def outputs(self) -> list[str]:
        return super().outputs() + [self.steps[-1].cs]


@dataclass
class RNNTape(_Tape):
    op_type: ClassVar[str] = "KdslUnrolledRNN"


@dataclass
class GRUTape(_Tape):
    rb: str | None = None                     # b_rh [1, u], read by every step
    op_type: ClassVar[str] = "KdslUnrolledGRU"

    def extra_inputs(self) -> list[str]:
        return [self.rb] if self.rb else []


def fuse(nodes: Sequence[onnx.NodeProto], tapes: Sequence[_Tape],
         initializers: Iterable[str] = ()) -> tuple[list[onnx.NodeProto], dict[str, _Tape]]:
    """``nodes`` with each tape's contiguous run of step nodes, and the ``Split``s of the
    projections that feed them, replaced by one node of the tape's ``op_type`` (inputs: the
    projections, the recurrent kernel, the tape's extra inputs and the masks; outputs: every
    step's output, the last h if that differs, and the LSTM's last cell), for
    :func:`kdsl.lower.autodiff.backprop`. Returns the nodes and the tapes of the fused nodes by
    node name (backprop's ``records``)."""
    out = list(nodes)
    fused: dict[str, _Tape] = {}
    constants = set(initializers) | {o for n in out if n.op_type == "Constant" for o in n.output}
    for tape in tapes:
        first = next((i for i, n in enumerate(out) if tape.first_node in n.output), None)
        last = next((i for i, n in enumerate(out) if tape.last_node in n.output), None)
        if first is None or last is None or last < first or not tape.projections:
            continue                          # pruned or reordered: plain op-by-op rules apply
        splits = [None if xs == [xp] else next((i for i, n in enumerate(out[:first]) if list(n.output) == xs), -1)
                  for xp, xs in tape.projections]
        if -1 in splits:
            continue
        pieces = {x for _, xs in tape.projections for x in xs}
        inside = {o for n in out[first:last + 1] for o in n.output}
        masks = [s.m for s in tape.steps if s.m is not None]
        # every value the group reads from outside must be a declared input, and the projections'
        # pieces must feed nothing else
        reads = {i for n in out[first:last + 1] for i in n.input if i and i not in inside}
        declared = pieces | {tape.rt} | set(tape.extra_inputs()) | set(masks) | constants
        if not reads <= declared or (masks and len(masks) != len(tape.steps)):
            continue
        if any(i in pieces for n in out[:first] + out[last + 1:] for i in n.input):
            continue
        fused[tape.name] = tape
        inputs = [xp for xp, _ in tape.projections] + [tape.rt] + tape.extra_inputs() + masks
        out[first:last + 1] = [helper.make_node(tape.op_type, inputs, tape.outputs(), name=tape.name)]
        for k in sorted((k for k in splits if k is not None), reverse=True):
            del out[k]
    return out, fused


def _stack(e: Emitter, names: list[str]) -> str:
    return names[0] if len(names) == 1 else e.op("Concat", names, axis=0)


def _unstack(e: Emitter, x: str, n: int) -> list[str]:
    return e.split_equal(x, n, axis=0)


def _total(e: Emitter, parts: list) -> str | None:
    parts = [p for p in parts if p is not None]
    return None if not parts else parts[0] if len(parts) == 1 else e.op("Sum", parts)


@register(LSTMTape.op_type)
def _lstm_rule(g: GradContext, n, gy):
    tape = g.records[n.name]
    e = g.e
    steps, T = tape.steps, len(tape.steps)
    masked = steps[0].m is not None
    zero_output = steps[-1].out != steps[-1].hs       # outputs Where(m, h_new, 0), apart from the states
    gy_out, gy_c = list(gy[:T]), gy[-1]
    gy_hs_last = gy[T] if zero_output else None
    if g.device == "cuda" and not masked:
        return _lstm_reverse_by_gemm(g, tape, gy_out, gy_c)
    zero = _zeros_like(e, steps[0].cs)                 # [b, u]
    a_i, a_o, a_f, a_g, k_all, _ = _lstm_local_derivatives(e, tape, lambda: zero)
    k = _unstack(e, k_all, T)
    if g.device == "cuda":
        # a kernel launch costs more than the bytes it moves: one [T * b, 4u] stack, split once
        a_steps = _unstack(e, e.op("Concat", [a_i, a_o, a_f, a_g], axis=-1), T)
    else:   # the CPU keeps [T * b, u] stacks in cache and forms each step's A_t (see above)
        a_parts = [_unstack(e, a, T) for a in (a_i, a_o, a_f, a_g)]
        a_steps = [e.op("Concat", [a[t] for a in a_parts], axis=-1) for t in range(T)]
    r_t = e.transpose(tape.rt, [1, 0])                               # [4u, u]
    mf = _unstack(e, e.op("Cast", [_lstm_bulk(e, tape, "m")], to=onnx.TensorProto.FLOAT), T) if masked else None

    def total(parts):
        return _total(e, parts)

    dz: list[str | None] = [None] * T
    dh_rec = dc_next = None              # gradients of the states after step t - 1, from step t
    for t in range(T - 1, -1, -1):
        last = t == T - 1
        g_hs = total([None if zero_output else gy_out[t], dh_rec, gy_hs_last if last else None])
        g_cs = total([dc_next, gy_c if last else None])
        pass_h = pass_c = None
        if masked:   # states = Where(m, new, old): m * g to the new values, (1 - m) * g to the old
            new_h = e.op("Mul", [g_hs, mf[t]]) if g_hs is not None else None
            dh = total([new_h, e.op("Mul", [gy_out[t], mf[t]]) if zero_output and gy_out[t] is not None else None])
            dc_in = e.op("Mul", [g_cs, mf[t]]) if g_cs is not None else None
            if t > 0:
                pass_h = e.op("Sub", [g_hs, new_h]) if g_hs is not None else None
                pass_c = e.op("Sub", [g_cs, dc_in]) if g_cs is not None else None
        else:
            dh, dc_in = g_hs, g_cs
        dc = total([dc_in, e.op("Mul", [dh, k[t]]) if dh is not None else None])
        if dc is None:
            dh_rec, dc_next = pass_h, pass_c                          # nothing enters this step's cell
            continue
        if dh is None:
            dh = zero
        dz[t] = e.op("Mul", [e.op("Concat", [dc, dh, dc, dc], axis=-1), a_steps[t]])
        if t > 0:
            dh_rec = total([e.op("MatMul", [dz[t], r_t]), pass_h])
            dc_next = total([e.op("Mul", [dc, steps[t].f]), pass_c])
        else:
            dh_rec = dc_next = None
    return _lstm_input_grads(g, tape, dz, zero, masked)


def _zeros_like(e: Emitter, x: str) -> str:
    """Zeros of ``x``'s shape (``x`` times 0, whatever its batch size)."""
    return e.op("Mul", [x, e.const(np.zeros((1, 1), np.float32), hint="zero")])


def _lstm_bulk(e: Emitter, tape: LSTMTape, name: str) -> str:
    """``[T * b, .]``: the steps' value ``name`` in processing order (made in bulk by a rewrite,
    or stacked)."""
    return tape.bulk.get(name) or _stack(e, [getattr(s, name) for s in tape.steps])


def _lstm_local_derivatives(e: Emitter, tape: LSTMTape, zero: Callable[[], str]):
    """``A_t`` per gate (``a_i = g i (1 - i)``, ``a_o = tanh(c) o (1 - o)``,
    ``a_f = c_prev f (1 - f)``, ``a_g = i (1 - g^2)``), ``K = o (1 - tanh(c)^2)`` and ``f``, each
    ``[T * b, u]`` in processing order."""
    one = e.const(np.ones((1, 1), np.float32), hint="one")
    i, o, f, gg, tc = (_lstm_bulk(e, tape, k) for k in ("i", "o", "f", "g", "tc"))
    c_prev = tape.bulk.get("c_prev") or _stack(e, [zero()] + [s.cs for s in tape.steps[:-1]])   # zeros first

    def dsig(s):   # s * (1 - s)
        return e.op("Mul", [s, e.op("Sub", [one, s])])

    a_i = e.op("Mul", [gg, dsig(i)])
    a_o = e.op("Mul", [tc, dsig(o)])
    a_f = e.op("Mul", [c_prev, dsig(f)])
    a_g = e.op("Mul", [i, e.op("Sub", [one, e.op("Mul", [gg, gg])])])
    k = e.op("Mul", [o, e.op("Sub", [one, e.op("Mul", [tc, tc])])])
    return a_i, a_o, a_f, a_g, k, f


def _lstm_reverse_by_gemm(g: GradContext, tape: LSTMTape, gy_out: list, gy_c: str | None) -> list:
    """The reverse loop of an unmasked LSTM in two kernels per step, for onnxruntime's CUDA
    provider (where each node is a kernel launch costing more than its work), and the fused
    node's input gradients.

    The loop carries ``X_t = [dh_t, cf_{t+1}]`` (the gradient reaching h_t, and the cell's
    gradient through the next step's forget gate, ``dc_{t+1} f_{t+1}``). Both ``dz_t`` and
    ``cf_t`` are linear in ``X_t`` with per-element coefficients computed in bulk:
    ``dc_t = dh_t K_t + cf_{t+1}``, so ``dz_t = dh_t [K a_i, a_o, K a_f, K a_g] +
    cf_{t+1} [a_i, 0, a_f, a_g]`` and ``cf_t = dh_t K f + cf_{t+1} f``. One ``Mul`` (``X_t``
    broadcast against the ``[b, 2, 5, u]`` coefficients) gives ``Y_t``, both halves of those
    sums side by side; one GEMM with ``W = [[R^T, 0], [0, I], [R^T, 0], [0, I]]`` (``[10u, 2u]``)
    adds the halves and gives ``X_{t-1} = [dz_t R^T, cf_t]`` (plus the output's gradient
    ``[dy_{t-1}, 0]`` for a sequence, padded in bulk: one more kernel a step). The ``dz_t`` are
    the halves' sum, formed after the loop in bulk. (On the CPU the GEMM's five times larger work
    costs more than the kernels it saves.) Where every step gets a gradient, the projection's and the recurrent kernel's gradients are
    formed from the ``[T * b, 4u]`` stack of ``dz`` and, after the LSTM-op rewrite, the bulk
    previous outputs, without splitting into steps and stacking again."""
    e = g.e
    steps, T, u = tape.steps, len(tape.steps), tape.units
    zeros: list[str] = []

    def zero() -> str:   # [b, u], made only where needed (it reads the first step's cell)
        if not zeros:
            zeros.append(_zeros_like(e, steps[0].cs))
        return zeros[0]

    a_i, a_o, a_f, a_g, k, f = _lstm_local_derivatives(e, tape, zero)
    no_o = _zeros_like(e, a_o)
    from_dh = e.op("Concat", [e.op("Mul", [a, k]) if a != a_o else a for a in (a_i, a_o, a_f, a_g, f)], axis=-1)
    from_cf = e.op("Concat", [a_i, no_o, a_f, a_g, f], axis=-1)
    coef = _unstack(e, e.reshape(e.op("Concat", [from_dh, from_cf], axis=-1), [-1, 2, 5, u]), T)
    r_t = e.transpose(tape.rt, [1, 0])                                          # [4u, u]
    eye = np.concatenate([np.zeros((u, u), np.float32), np.eye(u, dtype=np.float32)], axis=1)   # [u, 2u]
    half = e.op("Concat", [e.op("Concat", [r_t, e.const(np.zeros((4 * u, u), np.float32), hint="zeros")], axis=1),
                           e.const(eye, hint="eye")], axis=0)                   # [5u, 2u]
    w = e.op("Concat", [half, half], axis=0)                                     # [10u, 2u]
    # the outputs' gradients as [dy_t, 0], padded in bulk
    with_dy = [t for t in range(T) if gy_out[t] is not None]
    dy_pad = {}
    if with_dy:
        dy = _stack(e, [gy_out[t] for t in with_dy])
        dy = e.op("Concat", [dy, e.op("ConstantOfShape", [e.op("Shape", [dy])])], axis=-1)
        dy_pad = dict(zip(with_dy, _unstack(e, dy, len(with_dy))))
    y: list[str | None] = [None] * T
    x = None                             # X_t, [b, 2u]
    for t in range(T - 1, -1, -1):
        dc_in = gy_c if t == T - 1 else None
        if x is None and t not in dy_pad and dc_in is None:
            continue                     # nothing reaches this step (nor, unmasked, the ones after)
        if x is None:
            x = e.op("Concat", [gy_out[t] or zero(), dc_in or zero()], axis=-1) if dc_in else dy_pad[t]
        elif t in dy_pad:
            x = e.op("Add", [x, dy_pad[t]])
        y[t] = e.reshape(e.op("Mul", [e.reshape(x, [-1, 2, 1, u]), coef[t]]), [-1, 10 * u])
        x = e.op("MatMul", [y[t], w]) if t > 0 else None
    present = [t for t in range(T) if y[t] is not None]
    if not present:
        return [None, None]
    # dz = the two halves' sum, in bulk (a Split and an Add: CUDA's ReduceSum over the middle axis
    # took 125 us)
    ys = e.op("Slice", [e.reshape(_stack(e, [y[t] for t in present]), [-1, 2, 5 * u]), e.ints([0]), e.ints([4 * u]),
                        e.ints([2])])
    dz_all = e.reshape(e.op("Add", e.split_equal(ys, 2, axis=1)), [-1, 4 * u])      # processing order
    in_time = [s.x for s in steps] == tape.projections[0][1]
    if len(present) < T or not (in_time or [s.x for s in steps][::-1] == tape.projections[0][1]):
        dz: list[str | None] = [None] * T
        for t, d in zip(present, _unstack(e, dz_all, len(present))):
            dz[t] = d
        return _lstm_input_grads(g, tape, dz, zero(), False)
    d_xp = dz_all if in_time else e.reshape(_time_reversed(e, e.reshape(dz_all, [T, -1, 4 * u])), [-1, 4 * u])
    d_rt = None
    if T > 1 and tape.rt in getattr(g, "active", {tape.rt}):
        h_prev = tape.bulk.get("h_prev") or _stack(e, [zero()] + [s.hs for s in steps[:-1]])   # processing order
        d_rt = e.op("MatMul", [e.transpose(h_prev, [1, 0]), dz_all])                          # [u, 4u]
    return [d_xp, d_rt]


def _time_reversed(e: Emitter, x3: str) -> str:
    """``x3`` (time first) in reverse order along time."""
    return e.op("Slice", [x3, e.ints([-1]), e.ints([_INT64_MIN]), e.ints([0]), e.ints([-1])])


def _lstm_input_grads(g: GradContext, tape: LSTMTape, dz: list, zero: str, masked: bool) -> list:
    """The fused node's input gradients from the steps' ``dz``: the projection's ``[T * b, 4u]``
    (the steps' ``dz`` in time order, zeros where none) and the recurrent kernel's
    ``H_prev^T @ dZ``."""
    e, T, u = g.e, len(tape.steps), tape.units
    if all(d is None for d in dz):
        return [None, None] + [None] * (T if masked else 0)
    at = {s.x: t for t, s in enumerate(tape.steps)}
    zero4 = None
    pieces, h_prev = [], []
    for x in tape.projections[0][1]:
        t = at[x]
        if dz[t] is None:
            zero4 = zero4 or e.op("Concat", [zero] * 4, axis=-1)
        pieces.append(dz[t] if dz[t] is not None else zero4)
        h_prev.append(tape.steps[t - 1].hs if t > 0 else zero)
    d_xp = _stack(e, pieces)                                          # [T * b, 4u]
    d_rt = None
    if T > 1 and tape.rt in getattr(g, "active", {tape.rt}):
        hp = e.reshape(_stack(e, h_prev), [-1, u])
        d_rt = e.op("MatMul", [e.transpose(hp, [1, 0]), d_xp])       # [u, 4u]
    return [d_xp, d_rt] + ([None] * T if masked else [])


class _OneState:
    """What the GRU and SimpleRNN rules share (cells with one state h): the fused node's output
    gradients, the bulk helpers in time order (the order of the projections' pieces; ``pos[t]`` is
    the time index of processing step ``t``), the previous states and the float masks."""

    def __init__(self, g: GradContext, n, gy, x_of):
        self.tape = tape = g.records[n.name]
        self.e = e = g.e
        self.steps, self.T = tape.steps, len(tape.steps)
        self.one = e.const(np.ones((1, 1), np.float32), hint="one")
        self.zero = _zeros_like(e, self.steps[0].hs)   # [b, u]
        self.zero_output = self.steps[-1].out != self.steps[-1].hs   # outputs Where(m, h_new, 0)
        self.gy_out = list(gy[:self.T])
        self.gy_hs_last = gy[self.T] if self.zero_output else None
        at = {x_of(s): t for t, s in enumerate(self.steps)}
        self.order = [at[x] for x in tape.projections[0][1]]
        self.pos = {t: j for j, t in enumerate(self.order)}
        self.masked = self.steps[0].m is not None
        self.mf = _unstack(e, e.op("Cast", [self.stack(lambda t: self.steps[t].m)], to=onnx.TensorProto.FLOAT),
                           self.T) if self.masked else None
        self.h_prev = self.stack(lambda t: self.steps[t - 1].hs if t > 0 else self.zero)
        self.wants_rt = self.T > 1 and tape.rt in getattr(g, "active", {tape.rt})

    def stack(self, value_of) -> str:
        """``[T * b, .]``: ``value_of(t)`` of every processing step ``t``, in time order."""
        return _stack(self.e, [value_of(t) for t in self.order])

    def no_masks(self) -> list:
        """The gradients of the mask inputs (none)."""
        return [None] * self.T if self.masked else []

    def reverse(self, through) -> str | None:
        """The reverse loop: the gradients reaching each step's new h, stacked in time order
        (``None`` if none does). ``through(t, j, dh)`` emits the gradient that step ``t`` (time
        index ``j``) passes to the previous h. With masks a state ``Where(m, new, old)`` gives
        ``m * g`` to the new h and ``(1 - m) * g`` to the old, and a Bidirectional half's output
        ``Where(m, h_new, 0)`` only the new."""
        e, mf, gy_out = self.e, self.mf, self.gy_out
        gh: list[str | None] = [None] * self.T
        dh_rec = None
        for t in range(self.T - 1, -1, -1):
            j = self.pos[t]
            last = t == self.T - 1
            g_hs = _total(e, [None if self.zero_output else gy_out[t], dh_rec, self.gy_hs_last if last else None])
            pass_h = None
            if mf is not None:
                new_h = e.op("Mul", [g_hs, mf[j]]) if g_hs is not None else None
                dh = _total(e, [new_h, e.op("Mul", [gy_out[t], mf[j]])
                                if self.zero_output and gy_out[t] is not None else None])
                if t > 0 and g_hs is not None:
                    pass_h = e.op("Sub", [g_hs, new_h])
            else:
                dh = g_hs
            gh[t] = dh
            dh_rec = pass_h if dh is None or t == 0 else _total(e, [through(t, j, dh), pass_h])
        if all(x is None for x in gh):
            return None
        return self.stack(lambda t: gh[t] if gh[t] is not None else self.zero)


@register(GRUTape.op_type)
def _gru_rule(g: GradContext, n, gy):
    c = _OneState(g, n, gy, lambda s: s.xzr)
    e, steps, one, zero = c.e, c.steps, c.one, c.zero

    def rec_of(t):
        r = steps[t].rec
        return zero if r is None else e.op("Add", [zero, r]) if t == 0 else r

    z, r, hh = (c.stack(lambda t, k=k: getattr(steps[t], k)) for k in ("z", "r", "hh"))
    rec = c.stack(rec_of)
    omz = e.op("Sub", [one, z])
    a1 = e.op("Mul", [e.op("Sub", [c.h_prev, hh]), e.op("Mul", [z, omz])])
    a2 = e.op("Mul", [omz, e.op("Sub", [one, e.op("Mul", [hh, hh])])])
    a4 = e.op("Mul", [a2, r])
    a3 = e.op("Mul", [e.op("Mul", [a4, rec]), e.op("Sub", [one, r])])
    a_parts = [_unstack(e, a, c.T) for a in (a1, a3, a4)]
    r_t = e.transpose(c.tape.rt, [1, 0])                             # [3u, u]

    def through(t, j, dh):   # the gradient of h_prev from step t: q @ R^T + g * z_t
        q = e.op("Mul", [e.op("Concat", [dh, dh, dh], axis=-1), e.op("Concat", [a[j] for a in a_parts], axis=-1)])
        return e.op("Gemm", [q, r_t, e.op("Mul", [dh, steps[t].z])])

    gs = c.reverse(through)                                          # [T * b, u], time order
    if gs is None:
        return [None, None, None] + [None] * len(c.tape.extra_inputs()) + c.no_masks()
    p1, p3, p4 = (e.op("Mul", [gs, a]) for a in (a1, a3, a4))
    d_rt = e.op("MatMul", [e.transpose(c.h_prev, [1, 0]), e.op("Concat", [p1, p3, p4], axis=-1)]) \
        if c.wants_rt else None                                      # [u, 3u]
    grads = [e.op("Concat", [p1, p3], axis=-1), e.op("Mul", [gs, a2]), d_rt]
    if c.tape.rb:
        grads.append(e.reduce("ReduceSum", p4, [0], keepdims=True))  # [1, u]
    return grads + c.no_masks()


@register(RNNTape.op_type)
def _rnn_rule(g: GradContext, n, gy):
    c = _OneState(g, n, gy, lambda s: s.x)
    e = c.e
    h = c.stack(lambda t: c.steps[t].h)
    a = e.op("Sub", [c.one, e.op("Mul", [h, h])])                    # tanh' = 1 - h^2
    a_t = _unstack(e, a, c.T)
    r_t = e.transpose(c.tape.rt, [1, 0])                             # [u, u]
    gs = c.reverse(lambda t, j, dh: e.op("MatMul", [e.op("Mul", [dh, a_t[j]]), r_t]))
    if gs is None:
        return [None, None] + c.no_masks()
    dz = e.op("Mul", [gs, a])                                        # [T * b, u]
    d_rt = e.op("MatMul", [e.transpose(c.h_prev, [1, 0]), dz]) if c.wants_rt else None
    return [dz, d_rt] + c.no_masks()


def lstm_forward_as_op(e: Emitter, tapes: dict[str, _Tape]) -> None:
    """Rewrite ``e.nodes`` for onnxruntime's CUDA provider: the forward steps of each unmasked
    LSTM tape (ten small kernels per step) become ONNX's ``LSTM`` op (cuDNN) on the projected
    inputs, followed by a recomputation in bulk of what :func:`_lstm_rule` reads: the gates from
    one ``MatMul`` of the previous outputs, and the cells ``c_t = f_t c_{t-1} + i_t g_t`` as a scan
    over time in ``log2(T)`` rounds of ``[T, b, u]`` ops. The steps' names stay defined (one
    ``Split`` per value), so the backward pass and the layer's consumers are unchanged; on the
    GPU each node is a kernel launch, and this leaves a few dozen for the forward instead of
    ``10 * T``. Tapes whose steps' values are read other than through their names are left as
    they are."""
    for tape in tapes.values():
        if not isinstance(tape, LSTMTape) or len(tape.projections) != 1 or len(tape.steps) < 2 \
                or tape.steps[0].m is not None:
            continue
        steps, T, u = tape.steps, len(tape.steps), tape.units
        xp, xs = tape.projections[0]
        pos = {x: k for k, x in enumerate(xs)}
        order = [pos.get(st.x) for st in steps]
        if order not in (list(range(T)), list(range(T - 1, -1, -1))):
            continue
        where = {o: k for k, n in enumerate(e.nodes) for o in n.output}
        first, last = where.get(tape.first_node), where.get(tape.last_node)
        if first is None or last is None or last < first:
            continue
        group = [n for n in e.nodes[first:last + 1] if n.op_type != "Constant"]
        made = {getattr(st, k) for st in steps for k in ("i", "o", "f", "g", "c", "tc", "h")}
        inside = {o for n in group for o in n.output}
        rest = e.nodes[:first] + e.nodes[last + 1:]
        if any(i in inside and i not in made for n in rest for i in n.input):
            continue
        start = len(e.nodes)
        x3 = e.reshape(xp, [T, -1, 4 * u])                                 # time order
        if order[0] != 0:                                                 # go_backwards
            x3 = _time_reversed(e, x3)
        eye = e.const(np.eye(4 * u, dtype=np.float32)[None], hint="eye")  # the inputs are projected already
        r = e.unsqueeze(e.transpose(tape.rt, [1, 0]), [0])                 # [1, 4u, u]
        y3 = e.reshape(e.op("LSTM", [x3, eye, r], hidden_size=u), [T, -1, u])   # [T, b, u]

        # v[t - d] along time, ``fill`` for t < d: a Slice of [fill; v] (onnxruntime's CUDA Pad
        # kernel took 100 us on [200, 64, 64], a Concat and a Slice a few)
        fills = {}

        def shifted(v, d, fill):
            if fill not in fills:
                fills[fill] = e.op("ConstantOfShape", [e.op("Shape", [y3])],
                                   value=helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [fill]))
            return e.op("Slice", [e.op("Concat", [fills[fill], v], axis=0), e.ints([T - d]), e.ints([2 * T - d]),
                                  e.ints([0])])

        h_prev = e.reshape(shifted(y3, 1, 0.0), [-1, u])
        z = e.op("Add", [e.reshape(x3, [-1, 4 * u]), e.op("MatMul", [h_prev, tape.rt])])
        ziof, zc = e.op("Split", [z, e.ints([3 * u, u])], n_out=2, axis=-1)
        i, o, f = e.op("Split", [e.op("Sigmoid", [ziof]), e.ints([u, u, u])], n_out=3, axis=-1)
        g = e.op("Tanh", [zc])
        # inclusive scan of the maps c -> a * c + v over time (Hillis-Steele): after the round of
        # distance d, (a_t, v_t) compose the 2d steps up to t
        a, v = e.reshape(f, [T, -1, u]), e.reshape(e.op("Mul", [i, g]), [T, -1, u])
        d = 1
        while d < T:
            v = e.op("Add", [v, e.op("Mul", [a, shifted(v, d, 0.0)])])
            if 2 * d < T:
                a = e.op("Mul", [a, shifted(a, d, 1.0)])
            d *= 2
        c = e.reshape(v, [-1, u])
        tc = e.op("Tanh", [c])
        h = e.reshape(y3, [-1, u])
        split = {"num_outputs": T} if e.opset >= 18 else {}
        for key, stacked in (("i", i), ("o", o), ("f", f), ("g", g), ("c", c), ("tc", tc), ("h", h)):
            e.nodes.append(helper.make_node("Split", [stacked], [getattr(st, key) for st in steps], axis=0,
                                            name=e.fresh(f"{tape.name}/unstack_{key}"), **split))
        tape.bulk = {"i": i, "o": o, "f": f, "g": g, "tc": tc,
                     "c_prev": e.reshape(shifted(v, 1, 0.0), [-1, u]), "h_prev": h_prev}
        new = e.nodes[start:]
        del e.nodes[start:]
        kept = [n for n in e.nodes[first:last + 1] if n.op_type == "Constant"]
        e.nodes[first:last + 1] = kept + new
    # constants may have been made before (and be used by) the nodes put in earlier: first
    e.nodes[:] = [n for n in e.nodes if n.op_type == "Constant"] + [n for n in e.nodes if n.op_type != "Constant"]
