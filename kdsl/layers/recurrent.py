"""Recurrent layers: SimpleRNN, LSTM, GRU and the Bidirectional wrapper (Keras 3).

Weights are kept in Keras's layout and gate order and named like Keras's weight paths
(``lstm/lstm_cell/kernel``, ``bidirectional/forward_lstm/lstm_cell/kernel``):

============  ==========================  ================  ============================
layer         kernel                      recurrent_kernel  bias
============  ==========================  ================  ============================
SimpleRNN     ``[in, u]``                 ``[u, u]``        ``[u]``
LSTM          ``[in, 4u]`` gates i f c o  ``[u, 4u]``       ``[4u]``
GRU           ``[in, 3u]`` gates z r h    ``[u, 3u]``       ``[2, 3u]`` (input row, recurrent
                                                            row) with ``reset_after=True``,
                                                            ``[3u]`` otherwise
============  ==========================  ================  ============================

:meth:`_Recurrent.onnx_weight` gives ONNX's layouts (a permutation of the Keras array, so the
trainer can invert it): ``W [1, G*u, in]`` and ``R [1, G*u, u]`` with the gates in ONNX's order
(LSTM ``i o f c``, GRU ``z r h``), the bias as one ``[G*u]`` row in that order (the GRU with
``reset_after=True``: ``[1, 6u]``, ONNX's ``B`` itself). ONNX's ``B`` also holds a recurrent bias
that Keras does not have (LSTM, SimpleRNN, GRU without reset_after): the lowering appends zeros.

Two lowerings:

* inference: ONNX's fused ``LSTM`` / ``GRU`` / ``RNN`` ops (``reset_after=True`` is
  ``linear_before_reset=1``, ``go_backwards`` is ``direction="reverse"``, a ``Bidirectional`` whose
  halves share their configuration is one op with ``direction="bidirectional"``). A mask becomes
  ``sequence_lens`` (the number of unmasked steps of each sequence): exact for right-padded
  sequences, which is what ``Embedding(mask_zero=True)`` over ``TextVectorization`` output gives.
  A mask that is not a prefix of the sequence (a padding id in the middle, left padding) is
  **not** handled exactly by the inference model: the steps after the first ``len`` are dropped
  instead of the masked ones. Activations ONNX's ops lack (gelu, silu, selu, softmax...) fall
  back to the unrolled form, which needs a known number of steps.
* training (and that fallback): unrolled over the static number of steps. The input projection
  of all steps is one ``MatMul`` before the loop, split per step by one ``Split`` into
  ``[batch, G*u]`` matrices; each step does ``Gemm(h, recurrent_kernel, x_t)`` and elementwise
  gate math; masks are ``Where(m_t, new, old)`` (exact for any mask). Every op has a gradient
  rule (see :mod:`kdsl.lower.autodiff_seq`); an LSTM, a GRU with ``reset_after=True`` or a
  SimpleRNN, with sigmoid gates and tanh activations and without recurrent dropout, records its
  steps and gets a backward pass written for the cell instead (:mod:`kdsl.lower.autodiff_rnn`:
  17 nodes per step against 30-31 for the op-by-op LSTM and GRU, 4 against 7 for the SimpleRNN;
  the same gradients).

Masking follows Keras 3 (``keras/src/layers/rnn/rnn.py`` and ``keras/src/backend/*/rnn.py``):
a masked step leaves the states unchanged; with ``return_sequences=True`` its output is the
previous step's output (zeros before the first unmasked step), except in ``Bidirectional``,
which sets ``zero_output_for_mask`` on its halves so masked steps output zeros. With
``go_backwards=True`` the steps run last to first and the output sequence is in that
(reversed) order. The output keeps the mask when ``return_sequences=True``.

``dropout`` / ``recurrent_dropout`` (training only): one mask per sequence, shared across the
time steps, as in Keras; the input mask is also shared by the gates (Keras's default
``implementation=2``); Keras draws one recurrent mask per gate, kdsl one shared by the gates so
that ``h @ recurrent_kernel`` stays one product. Masks come from a hash of the training step,
the layer's name and ``seed`` (reproducible, no RNG op).
"""
from __future__ import annotations

import zlib
from typing import Any, ClassVar

import numpy as np

from ..errors import KdslError
from ..ir import TensorType
from ..lower import autodiff_seq  # noqa: F401  (registers the VJP rules the unrolled form needs)
from ..lower.context import CL
from .activations import AXIS_ACTIVATIONS, canonical_activation, lower_activation
from .args import ArgError, check_choice, check_int, check_rate
from .base import Layer, ShapeError, register
from .initializers import INITIALIZERS, _snake, get_initializer

__all__ = ["SimpleRNN", "LSTM", "GRU", "Bidirectional"]

# Keras activation -> (ONNX activation name, alpha, beta) for the fused ops' ``activations``
_ONNX_ACT = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),   # Keras 3: relu6(x + 3) / 6
    "elu": ("Elu", 1.0, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),           # Keras 3: negative_slope=0.2
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
}
_INT64_MIN = np.iinfo(np.int64).min


def _unit_forget_initializer(base: str) -> str:
    """The name of an initializer for an LSTM bias ``[4u]``: ``base`` for the i, c and o parts,
    ones for the forget gate (Keras's ``unit_forget_bias=True``); registered on first use."""
    key = f"unit_forget_bias({_snake(base)})"
    if key not in INITIALIZERS:
        init = get_initializer(base)

        def fn(rng, shape, dtype):
            u = shape[0] // 4
            return np.concatenate([init(rng, (u,), dtype), np.ones((u,), dtype),
                                   init(rng, (2 * u,), dtype)]).astype(dtype)

        INITIALIZERS[key] = fn
    return key


class _Run:
    """One direction's results, emitted on first use (so unused ones leave no nodes).

    Unrolled form: ``steps`` holds each step's ``[batch, units]`` output in processing order.
    Fused form: ``y()`` is the ``[batch, T, units]`` output in input-time order.
    """

    def __init__(self, layer: "_Recurrent", states, steps: list[str] | None = None, y=None,
                 fused_y: str | None = None):
        self.layer = layer
        self._states = states          # list of names, or a function returning them
        self.steps = steps
        self._y = y
        self.fused_y = fused_y         # a fused op's output as [batch, T, directions, units]

    @property
    def states(self) -> list[str]:
        """The final states ``[batch, units]`` each: h (and c)."""
        if callable(self._states):
            self._states = self._states()
        return self._states

    @property
    def last(self) -> str:
        """The last output ``[batch, units]``: the final h."""
        return self.states[0]

    def y(self) -> str:
        if callable(self._y):
            self._y = self._y()
        return self._y


class _Recurrent(Layer):
    """Shared implementation of SimpleRNN, LSTM and GRU (Keras's ``RNN`` with a cell)."""

    supports_masking = True
    uses_mask = True
    #: number of gate blocks in the kernels
    gates: ClassVar[int] = 1
    #: Keras's cell name, part of the weight paths
    cell_name: ClassVar[str] = "simple_rnn_cell"
    onnx_op: ClassVar[str] = "RNN"
    n_states: ClassVar[int] = 1
    #: Keras gate order -> ONNX gate order (block indices)
    gate_perm: ClassVar[tuple[int, ...]] = (0,)
    #: the fused op's default activations (no ``activations`` attribute needed for these)
    default_onnx_acts: ClassVar[list] = [("Tanh", None, None)]

    def _init_common(self, units, activation, recurrent_activation, use_bias, kernel_initializer,
                     recurrent_initializer, bias_initializer, dropout, recurrent_dropout, seed,
                     return_sequences, return_state, go_backwards, stateful, unroll, name, trainable):
        super().__init__(name=name, trainable=trainable)
        self.units = check_int(units, "units")
        self.activation = canonical_activation(activation)
        if recurrent_activation is not None or self.gates > 1:
            self.recurrent_activation = canonical_activation(recurrent_activation, "recurrent_activation")
        self.use_bias = bool(use_bias)
        for arg, init in (("kernel_initializer", kernel_initializer),
                          ("recurrent_initializer", recurrent_initializer),
                          ("bias_initializer", bias_initializer)):
            if not isinstance(init, str):
                raise ArgError(f"The `{arg}` argument must be an initializer name. Received: {arg}={init!r}", arg)
            try:
                get_initializer(init)
            except KdslError as err:
                raise ArgError(err.message, arg, err.hint) from None
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.dropout = check_rate(dropout, "dropout")
        self.recurrent_dropout = check_rate(recurrent_dropout, "recurrent_dropout")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ArgError(f"The `seed` argument must be an int or None. Received: seed={seed!r}", "seed")
        self.seed = seed
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        if stateful:
            raise ArgError("stateful=True is not supported: kdsl's recurrent layers start every batch from "
                           "zero states. Received: stateful=True", "stateful")
        self.stateful = False
        self.unroll = bool(unroll)      # accepted for Keras compatibility; the lowering decides
        # where the weights live: the layer itself, or a Bidirectional wrapping it
        self._owner: Layer = self
        self._prefix = ""

    # -- weights ---------------------------------------------------------------------------------
    def _wname(self, key: str) -> str:
        return f"{self._prefix}{self.cell_name}/{key}"

    def _bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.units,)

    def _bias_initializer(self) -> str:
        return self.bias_initializer

    def build(self, input_types):
        t = input_types[0]
        if t.rank != 3 or not isinstance(t.shape[-1], int):
            raise ShapeError(f"{type(self).__name__} expects an input of rank 3 (batch, timesteps, features) "
                             f"with a known number of features. Received: input shape {t.shape_str()}")
        g, u = self.gates, self.units
        self.add_weight(self._wname("kernel"), (t.shape[-1], g * u), self.kernel_initializer)
        self.add_weight(self._wname("recurrent_kernel"), (u, g * u), self.recurrent_initializer)
        if self.use_bias:
            self.add_weight(self._wname("bias"), self._bias_shape(), self._bias_initializer())

    def _weight(self, key: str):
        name = self._wname(key)
        return next(w for w in self.weights if w.name == name)

    def compute_output_types(self, input_types):
        t = input_types[0]
        k = self._weight("kernel").shape[0]
        if t.rank != 3 or t.shape[-1] != k:
            raise ShapeError(f"{type(self).__name__} '{self.display_name()}' expects an input of shape "
                             f"(batch, timesteps, {k}). Received: input shape {t.shape_str()}")
        b, steps = t.shape[0], t.shape[1]
        out = (b, steps, self.units) if self.return_sequences else (b, self.units)
        types = [TensorType(self.dtype, out)]
        if self.return_state:
            types += [TensorType(self.dtype, (b, self.units))] * self.n_states
        return types

    def compute_mask(self, inputs, mask):
        return mask if self.return_sequences else None

    def __call__(self, inputs, span=None, **call_args):
        out = super().__call__(inputs, span=span, **call_args)
        if isinstance(out, list):           # states carry no mask (Keras's compute_mask)
            for o in out[1:]:
                o.mask = None
        return out

    def onnx_weight(self, w):
        """Keras layout -> ONNX layout (see the module docstring); a permutation of the array."""
        a = np.asarray(w.value)
        u = self.units
        key = w.name.rsplit("/", 1)[-1]
        if key in ("kernel", "recurrent_kernel"):             # [rows, G*u] -> [1, G*u, rows]
            blocks = a.reshape(a.shape[0], self.gates, u)[:, list(self.gate_perm), :]
            return np.ascontiguousarray(blocks.reshape(a.shape[0], self.gates * u).T[None])
        if key == "bias" and a.ndim == 1:
            return np.ascontiguousarray(a.reshape(self.gates, u)[list(self.gate_perm)].reshape(-1))
        if key == "bias":                                      # GRU reset_after: [2, 3u] -> [1, 6u]
            return np.ascontiguousarray(a.reshape(1, -1))
        return a

    # -- lowering ----------------------------------------------------------------------------------
    def lower(self, ctx, node):
        v = node.inputs[0]
        x = ctx.input_as(v, "float32", CL)
        mask = ctx.get(node.mask, CL) if node.mask is not None else None
        run = self._run(ctx, x, v.type, mask, zero_output=False)
        out = self._sequence(ctx, run, flip=False) if self.return_sequences else run.last
        return [out] + (run.states if self.return_state else [])

    def _onnx_activations(self) -> list[tuple[str, Any, Any]] | None:
        """The fused op's activation list, or None if an activation has no ONNX form."""
        names = self._activation_names()
        if any(n not in _ONNX_ACT for n in names):
            return None
        return [_ONNX_ACT[n] for n in names]

    def _activation_names(self) -> list[str]:
        return [self.activation]

    def _fused_signature(self):
        """What must agree for two directions to share one fused op."""
        return (type(self), self.units, self.use_bias, tuple(self._activation_names()),
                getattr(self, "reset_after", None))

    def _run(self, ctx, x: str, xtype: TensorType, mask: str | None, zero_output: bool) -> _Run:
        """Run over the sequence: unrolled when training (or for activations ONNX's ops lack),
        else the fused ONNX op. ``zero_output``: masked steps output zeros (Bidirectional)."""
        if ctx.training or self._onnx_activations() is None:
            return self._unrolled(ctx, x, xtype, mask, zero_output)
        return _fused(ctx, [self], x, mask, zero_output, need_y=self.return_sequences)[0]

    def _sequence(self, ctx, run: _Run, flip: bool) -> str:
        """The Keras output sequence ``[batch, T, units]`` (in processing order), reversed in time
        if ``flip``."""
        e = ctx.e
        if run.steps is not None:
            steps = run.steps[::-1] if flip else run.steps
            seq = e.op("Concat", steps, axis=1) if len(steps) > 1 else steps[0]     # [b, T * u]
            return e.reshape(seq, [-1, len(steps), self.units])
        # fused: run.y is in input-time order; Keras's order is reversed for go_backwards
        if self.go_backwards != flip:
            return e.op("Slice", [run.y(), e.ints([-1]), e.ints([_INT64_MIN]), e.ints([1]), e.ints([-1])])
        return run.y()

    # -- the unrolled form -----------------------------------------------------------------------------
    def _salt(self, what: str) -> int:
        from ..utils import get_random_seed

        base = self.seed if self.seed is not None else get_random_seed()
        return (zlib.crc32(f"{self._owner.name}/{self._prefix}{what}".encode()) + 7919 * int(base)) % 2147483647

    def _dropout_mask(self, ctx, batch_of: str, size: int, rate: float, what: str) -> str:
        """A ``[batch, size]`` keep-mask scaled by ``1 / (1 - rate)``, drawn once per sequence."""
        from .core import dropout_mask

        e = ctx.e
        shape = e.op("Concat", [e.op("Slice", [e.op("Shape", [batch_of]), e.ints([0]), e.ints([1])]),
                                e.ints([size])], axis=0)
        step = ctx.step if ctx.step is not None else e.scalar(0.0)
        return dropout_mask(e, shape, step, self._salt(what), rate)

    def _act(self, ctx, name: str, x: str, parts: int = 1) -> str:
        """``name`` applied to ``x`` (``[.., parts * units]``), per gate for axis activations."""
        e = ctx.e
        if name not in AXIS_ACTIVATIONS or parts == 1:
            return lower_activation(e, name, x, -1)
        pieces = e.op("Split", [x, e.ints([self.units] * parts)], n_out=parts, axis=-1)
        return e.op("Concat", [lower_activation(e, name, p, -1) for p in pieces], axis=-1)

    def _unrolled(self, ctx, x: str, xtype: TensorType, mask: str | None, zero_output: bool) -> _Run:
        e = ctx.e
        steps_n = xtype.shape[1]
        if not isinstance(steps_n, int):
            what = "Training" if ctx.training else \
                f"Activation {self._activation_names()} (not among ONNX's recurrent activations)"
            raise KdslError(f"{what} of {type(self).__name__} '{self._owner.display_name()}' unrolls the "
                            f"sequence and needs a known number of time steps. Received: input shape "
                            f"{xtype.shape_str()}.",
                            hint="give the input a fixed length, e.g. Input((100,)) or "
                                 "TextVectorization(output_sequence_length=100)")
        u = self.units
        owner = self._owner
        training_dropout = ctx.training
        xt = e.transpose(x, [1, 0, 2])                                   # [T, b, in]
        if training_dropout and self.dropout > 0:
            xt = e.op("Mul", [xt, self._dropout_mask(ctx, x, xtype.shape[2], self.dropout, "dropout")])
        kernel = ctx.weight(owner, self._wname("kernel"))                # [1, G*u, in]
        wt = e.transpose(e.squeeze(kernel, [0]), [1, 0])                 # [in, G*u]
        rt = e.transpose(e.squeeze(ctx.weight(owner, self._wname("recurrent_kernel")), [0]), [1, 0])
        xp = e.op("MatMul", [xt, wt])                                    # [T, b, G*u]
        bias = ctx.weight(owner, self._wname("bias")) if self.use_bias else None
        rec_mask = None
        if training_dropout and self.recurrent_dropout > 0:
            rec_mask = self._dropout_mask(ctx, x, u, self.recurrent_dropout, "recurrent_dropout")
        aux = {"rt": rt}
        # the steps work on [b, .] matrices, so that h @ recurrent_kernel + x_t is one Gemm
        per_step_inputs = [e.reshape(t, [-1, int(self._project_width(i))])
                           for i, t in enumerate(self._project(ctx, xp, bias, aux))]
        split = [e.split_equal(t, steps_n, axis=0) for t in per_step_inputs]
        masks = None
        if mask is not None:
            m = e.reshape(e.transpose(mask, [1, 0]), [-1, 1])            # [T * b, 1]
            masks = e.split_equal(m, steps_n, axis=0)
        zero = e.scalar(0.0) if masks is not None else None
        order = range(steps_n - 1, -1, -1) if self.go_backwards else range(steps_n)
        state: list[str] | None = None
        outs = []
        tape = self._tape(ctx, aux, rec_mask is None)
        if tape is not None:
            tape.projections = [(p, list(xs)) for p, xs in zip(per_step_inputs, split)]
        first = len(e.nodes)
        for t in order:
            new = self._step(ctx, [s[t] for s in split], state, aux, rec_mask)
            if masks is None:
                state = new
                out = new[0]
            else:
                mt = masks[t]
                old = state or [zero] * len(new)
                state = [e.op("Where", [mt, n, o]) for n, o in zip(new, old)]
                out = e.op("Where", [mt, new[0], zero]) if zero_output else state[0]
                if tape is not None:
                    step = tape.steps[-1]
                    step.m, step.hs, step.out = mt, state[0], out
                    if len(state) > 1:
                        step.cs = state[1]
            outs.append(out)
        if tape is not None and len(e.nodes) > first:
            tape.first_node, tape.last_node = e.nodes[first].output[0], e.nodes[-1].output[0]
            ctx.recurrent_tapes.append(tape)
        return _Run(self, lambda: list(state), steps=outs)

    def _tape(self, ctx, aux: dict, plain: bool):
        """A record of the steps for a backward pass written for the cell
        (kdsl.lower.autodiff_rnn), or None: the cells that have one override this.
        ``plain``: no recurrent dropout."""
        return None

    def _project_width(self, i: int) -> int:
        """The last axis of ``_project``'s ``i``-th tensor."""
        return self.gates * self.units

    def _project(self, ctx, xp: str, bias: str | None, aux: dict) -> list[str]:
        """Add the input bias to the projection ``[T, b, G*u]``; returns the tensors to split per
        step. ``aux`` (``rt``: the recurrent kernel ``[u, G*u]``) is what the steps share."""
        if bias is not None:
            xp = ctx.e.op("Add", [xp, bias])
        return [xp]

    def _step(self, ctx, xs: list[str], state: list[str] | None, aux: dict, rec_mask: str | None) -> list[str]:
        """One step: ``xs`` this step's projected inputs ``[b, .]``, ``state`` the previous
        states ``[b, units]`` (None: zeros, the first step). Returns the new states, h first."""
        raise NotImplementedError

    def _rec_input(self, ctx, h: str, rec_mask: str | None) -> str:
        return h if rec_mask is None else ctx.e.op("Mul", [h, rec_mask])


# -- the fused ONNX ops --------------------------------------------------------------------------------
def _onnx_bias(ctx, layer: _Recurrent) -> str:
    """ONNX's ``B [1, 2*G*u]`` for one direction (Keras has no recurrent bias: zeros appended)."""
    e = ctx.e
    b = ctx.weight(layer._owner, layer._wname("bias"))
    if getattr(layer, "reset_after", False):
        return b                                                       # already [1, 6u]
    n = layer.gates * layer.units
    return e.op("Concat", [e.unsqueeze(b, [0]), e.const(np.zeros((1, n), np.float32), hint="zero_bias")], axis=1)


def _fused(ctx, layers: list[_Recurrent], x: str, mask: str | None, zero_output: bool,
           need_y: bool) -> list[_Run]:
    """One ONNX RNN/GRU/LSTM node for one layer, or for the two halves of a Bidirectional
    (``layers = [forward, backward]``, forward with go_backwards=False)."""
    e = ctx.e
    first = layers[0]
    u = first.units
    nd = len(layers)
    xt = e.transpose(x, [1, 0, 2])                                      # ONNX layout 0: [T, b, in]

    def stack(names):
        return names[0] if nd == 1 else e.op("Concat", names, axis=0)

    w = stack([ctx.weight(l._owner, l._wname("kernel")) for l in layers])
    r = stack([ctx.weight(l._owner, l._wname("recurrent_kernel")) for l in layers])
    b = stack([_onnx_bias(ctx, l) for l in layers]) if first.use_bias else ""
    lens = ""
    if mask is not None:
        lens = e.reduce("ReduceSum", e.cast(mask, "int32"), [1], keepdims=False)
    attrs: dict[str, Any] = {"hidden_size": u}
    if nd == 2:
        attrs["direction"] = "bidirectional"
    elif first.go_backwards:
        attrs["direction"] = "reverse"
    acts = first._onnx_activations() * nd
    if [a for a, _, _ in acts] != [a for a, _, _ in first.default_onnx_acts] * nd:
        attrs["activations"] = [a for a, _, _ in acts]
        alphas = [al for _, al, _ in acts if al is not None]
        betas = [be for _, _, be in acts if be is not None]
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
    if first.onnx_op == "GRU":
        attrs["linear_before_reset"] = int(first.reset_after)
    need_c = first.onnx_op == "LSTM" and first.return_state
    inputs = [xt, w, r, b, lens]
    while not inputs[-1]:
        inputs.pop()
    outs = e.op(first.onnx_op, inputs, n_out=3 if need_c else 2, **attrs)
    if not need_y:                    # ONNX's optional outputs: Y not computed
        e.nodes[-1].output[0] = ""
    yh = outs[1]
    yc = outs[2] if need_c else None
    yb = e.transpose(outs[0], [2, 0, 1, 3]) if need_y else None       # [T, nd, b, u] -> [b, T, nd, u]

    def states_of(d):
        if nd == 1:
            return lambda: [e.squeeze(yh, [0])] + ([e.squeeze(yc, [0])] if yc else [])
        def gather():
            idx = e.const(np.asarray(d, np.int64), hint="direction")
            return [e.op("Gather", [yh, idx], axis=0)] + ([e.op("Gather", [yc, idx], axis=0)] if yc else [])
        return gather

    def y_of(d, run):
        def make():
            if nd == 2:     # Bidirectional with return_sequences: masked steps are zeros, as ONNX's
                return e.op("Gather", [yb, e.const(np.asarray(d, np.int64), hint="direction")], axis=2)
            seq = e.op("Reshape", [yb, e.ints([0, 0, u])])
            if mask is not None and not zero_output and not run.layer.go_backwards:
                # ONNX writes zeros after a sequence's end; Keras repeats the last output there
                seq = e.op("Where", [e.unsqueeze(mask, [2]), seq, e.unsqueeze(run.last, [1])])
            return seq
        return make

    runs = []
    for d, layer in enumerate(layers):
        run = _Run(layer, states_of(d), fused_y=yb)
        run._y = y_of(d, run)
        runs.append(run)
    return runs


# -- the layers -----------------------------------------------------------------------------------------
_COMMON_DOC = """
    Args:
        units: positive int, dimensionality of the output space.
        activation: activation of the output/candidate (default ``"tanh"``).{rec_act}
        use_bias: whether the layer uses a bias vector.
        kernel_initializer: initializer of ``kernel`` (default ``"glorot_uniform"``).
        recurrent_initializer: initializer of ``recurrent_kernel`` (default ``"orthogonal"``).
        bias_initializer: initializer of ``bias`` (default ``"zeros"``).{extra}
        dropout: float in [0, 1), fraction of the input units to drop (training only; one mask
            per sequence, shared across time steps).
        recurrent_dropout: float in [0, 1), fraction of the recurrent state's units to drop in
            ``h @ recurrent_kernel`` (training only; one mask per sequence).
        seed: optional int seed of the dropout masks.
        return_sequences: return the whole output sequence ``(batch, timesteps, units)`` instead of
            the last output ``(batch, units)``.
        return_state: also return the final state(s): ``[output, {states}]``.
        go_backwards: process the sequence backwards and return the reversed sequence.
        stateful: only ``False`` (every batch starts from zero states).
        unroll: accepted for Keras compatibility; kdsl picks the form itself (fused ONNX op for
            inference, unrolled for training).

    Input shape: ``(batch, timesteps, features)``; a mask (``Embedding(mask_zero=True)``) makes
    padded steps neither update the state nor count (see the module docstring: the inference
    model is exact for right-padded masks).
    Output shape: ``(batch, units)``, or ``(batch, timesteps, units)`` with ``return_sequences``.
    Weights: {weights}.
    """


@register
class SimpleRNN(_Recurrent):
    gates, cell_name, onnx_op, n_states, gate_perm = 1, "simple_rnn_cell", "RNN", 1, (0,)
    default_onnx_acts = [("Tanh", None, None)]
    __doc__ = ("Fully-connected RNN where the output is fed back as the next input: "
               "``h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)``.\n"
               + _COMMON_DOC.format(rec_act="", extra="", states="final_state",
                                    weights="``kernel [features, units]``, ``recurrent_kernel [units, units]``, "
                                            "``bias [units]``"))

    def __init__(self, units: int, activation: str | None = "tanh", use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", recurrent_initializer: str = "orthogonal",
                 bias_initializer: str = "zeros", dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: int | None = None, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 name: str | None = None, trainable: bool = True):
        self._init_common(units, activation, None, use_bias, kernel_initializer, recurrent_initializer,
                          bias_initializer, dropout, recurrent_dropout, seed, return_sequences, return_state,
                          go_backwards, stateful, unroll, name, trainable)

    def _step(self, ctx, xs, state, aux, rec_mask):
        e = ctx.e
        z = xs[0]
        if state is not None:
            z = e.op("Gemm", [self._rec_input(ctx, state[0], rec_mask), aux["rt"], z])
        h = self._act(ctx, self.activation, z)
        if "tape" in aux:
            from ..lower.autodiff_rnn import RNNStep

            aux["tape"].steps.append(RNNStep(xs[0], h))
        return [h]

    def _tape(self, ctx, aux, plain):
        from ..lower.autodiff_rnn import RNNTape

        if not (ctx.training and plain and self.activation == "tanh"):
            return None
        tape = RNNTape(self.units, aux["rt"], name=f"{self._owner.name}/{self._prefix}fused_rnn")
        aux["tape"] = tape
        return tape


@register
class LSTM(_Recurrent):
    gates, cell_name, onnx_op, n_states, gate_perm = 4, "lstm_cell", "LSTM", 2, (0, 3, 1, 2)
    default_onnx_acts = [("Sigmoid", None, None), ("Tanh", None, None), ("Tanh", None, None)]
    __doc__ = ("Long Short-Term Memory layer (Hochreiter 1997), Keras's equations: gates "
               "``i, f, o = recurrent_activation(...)``, ``c_t = f * c_{t-1} + i * activation(...)``, "
               "``h_t = o * activation(c_t)``.\n"
               + _COMMON_DOC.format(
                   rec_act="\n        recurrent_activation: activation of the gates (default ``\"sigmoid\"``).",
                   extra="\n        unit_forget_bias: add 1 to the forget gate's bias at initialization.",
                   states="final_memory_state, final_carry_state",
                   weights="``kernel [features, 4*units]`` (gates i, f, c, o), ``recurrent_kernel [units, "
                           "4*units]``, ``bias [4*units]``"))

    def __init__(self, units: int, activation: str | None = "tanh", recurrent_activation: str | None = "sigmoid",
                 use_bias: bool = True, kernel_initializer: str = "glorot_uniform",
                 recurrent_initializer: str = "orthogonal", bias_initializer: str = "zeros",
                 unit_forget_bias: bool = True, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 seed: int | None = None, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 name: str | None = None, trainable: bool = True):
        self._init_common(units, activation, recurrent_activation, use_bias, kernel_initializer,
                          recurrent_initializer, bias_initializer, dropout, recurrent_dropout, seed,
                          return_sequences, return_state, go_backwards, stateful, unroll, name, trainable)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_initializer(self):
        return _unit_forget_initializer(self.bias_initializer) if self.unit_forget_bias else self.bias_initializer

    def _activation_names(self):
        return [self.recurrent_activation, self.activation, self.activation]

    def _tape(self, ctx, aux, plain):
        from ..lower.autodiff_rnn import LSTMTape

        if not (ctx.training and plain and self.activation == "tanh" and self.recurrent_activation == "sigmoid"):
            return None
        tape = LSTMTape(self.units, aux["rt"], name=f"{self._owner.name}/{self._prefix}fused_lstm")
        aux["tape"] = tape
        return tape

    def _step(self, ctx, xs, state, aux, rec_mask):
        # ONNX gate order i, o, f, c: the three sigmoid gates are contiguous
        e = ctx.e
        u = self.units
        z = xs[0]
        if state is not None:
            z = e.op("Gemm", [self._rec_input(ctx, state[0], rec_mask), aux["rt"], z])
        ziof, zc = e.op("Split", [z, e.ints([3 * u, u])], n_out=2, axis=-1)
        sig = self._act(ctx, self.recurrent_activation, ziof, 3)
        i, o, f = e.op("Split", [sig, e.ints([u, u, u])], n_out=3, axis=-1)
        g = self._act(ctx, self.activation, zc)
        ig = e.op("Mul", [i, g])
        c = ig if state is None else e.op("Add", [e.op("Mul", [f, state[1]]), ig])
        tc = self._act(ctx, self.activation, c)
        h = e.op("Mul", [o, tc])
        if "tape" in aux:
            from ..lower.autodiff_rnn import LSTMStep

            aux["tape"].steps.append(LSTMStep(xs[0], i, o, f, g, c, tc, h))
        return [h, c]


@register
class GRU(_Recurrent):
    gates, cell_name, onnx_op, n_states, gate_perm = 3, "gru_cell", "GRU", 1, (0, 1, 2)
    default_onnx_acts = [("Sigmoid", None, None), ("Tanh", None, None)]
    __doc__ = ("Gated Recurrent Unit (Cho et al. 2014), Keras's equations: "
               "``z, r = recurrent_activation(...)``, ``hh = activation(x @ k_h + r * (h @ r_h + b_rh))`` "
               "(``reset_after=True``) or ``activation(x @ k_h + (r * h) @ r_h + b_h)``, "
               "``h_t = z * h_{t-1} + (1 - z) * hh``.\n"
               + _COMMON_DOC.format(
                   rec_act="\n        recurrent_activation: activation of the gates (default ``\"sigmoid\"``).",
                   extra="\n        reset_after: apply the reset gate after the recurrent matrix product "
                         "(default, cuDNN-compatible; ONNX's ``linear_before_reset=1``) or before.",
                   states="final_state",
                   weights="``kernel [features, 3*units]`` (gates z, r, h), ``recurrent_kernel [units, "
                           "3*units]``, ``bias [2, 3*units]`` (input and recurrent rows) with ``reset_after``, "
                           "else ``[3*units]``"))

    def __init__(self, units: int, activation: str | None = "tanh", recurrent_activation: str | None = "sigmoid",
                 use_bias: bool = True, kernel_initializer: str = "glorot_uniform",
                 recurrent_initializer: str = "orthogonal", bias_initializer: str = "zeros",
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, seed: int | None = None,
                 return_sequences: bool = False, return_state: bool = False, go_backwards: bool = False,
                 stateful: bool = False, unroll: bool = False, reset_after: bool = True,
                 name: str | None = None, trainable: bool = True):
        self._init_common(units, activation, recurrent_activation, use_bias, kernel_initializer,
                          recurrent_initializer, bias_initializer, dropout, recurrent_dropout, seed,
                          return_sequences, return_state, go_backwards, stateful, unroll, name, trainable)
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _activation_names(self):
        return [self.recurrent_activation, self.activation]

    def _project_width(self, i):
        return 2 * self.units if i == 0 else self.units

    def _project(self, ctx, xp, bias, aux):
        # per step: x_zr [2u] and x_h [u]; the recurrent z/r biases fold into the input bias
        e = ctx.e
        u = self.units
        if bias is not None:
            if self.reset_after:                                   # bias [1, 6u]: wb_zr wb_h rb_zr rb_h
                wzr, wh, rzr, rh = e.op("Split", [bias, e.ints([2 * u, u, 2 * u, u])], n_out=4, axis=1)
                xp = e.op("Add", [xp, e.op("Concat", [e.op("Add", [wzr, rzr]), wh], axis=1)])
                aux["rb_h"] = rh                                   # [1, u], inside r * (h @ r_h + rb_h)
            else:
                xp = e.op("Add", [xp, bias])
        if not self.reset_after:                                   # (r * h) @ r_h needs r_h apart
            aux["rzr"], aux["rh"] = e.op("Split", [aux["rt"], e.ints([2 * u, u])], n_out=2, axis=1)
        return list(e.op("Split", [xp, e.ints([2 * u, u])], n_out=2, axis=-1))

    def _step(self, ctx, xs, state, aux, rec_mask):
        e = ctx.e
        u = self.units
        xzr, xh = xs
        if state is None:                                          # h_{t-1} = 0
            zr_in = xzr
        else:
            hd = self._rec_input(ctx, state[0], rec_mask)
            if self.reset_after:
                hz, hh = e.op("Split", [e.op("MatMul", [hd, aux["rt"]]), e.ints([2 * u, u])], n_out=2, axis=-1)
            else:
                hz = e.op("MatMul", [hd, aux["rzr"]])
            zr_in = e.op("Add", [xzr, hz])
        z, r = e.op("Split", [self._act(ctx, self.recurrent_activation, zr_in, 2), e.ints([u, u])],
                    n_out=2, axis=-1)
        if self.reset_after:
            rec = None if state is None else hh
            rb = aux.get("rb_h")
            if rb is not None:
                rec = rb if rec is None else e.op("Add", [rec, rb])
            hh_in = xh if rec is None else e.op("Add", [xh, e.op("Mul", [r, rec])])
        else:
            hh_in = xh if state is None else e.op("Add", [xh, e.op("MatMul", [e.op("Mul", [r, hd]), aux["rh"]])])
        cand = self._act(ctx, self.activation, hh_in)
        if state is None:                                          # h = (1 - z) * cand
            h = e.op("Sub", [cand, e.op("Mul", [z, cand])])
        else:
            h = e.op("Add", [cand, e.op("Mul", [z, e.op("Sub", [state[0], cand])])])
        if "tape" in aux:
            from ..lower.autodiff_rnn import GRUStep

            aux["tape"].steps.append(GRUStep(xzr, xh, z, r, cand, rec, h))
        return [h]

    def _tape(self, ctx, aux, plain):
        from ..lower.autodiff_rnn import GRUTape

        if not (ctx.training and plain and self.reset_after and self.activation == "tanh"
                and self.recurrent_activation == "sigmoid"):
            return None
        tape = GRUTape(self.units, aux["rt"], name=f"{self._owner.name}/{self._prefix}fused_gru",
                       rb=aux.get("rb_h"))
        aux["tape"] = tape
        return tape


# -- Bidirectional ----------------------------------------------------------------------------------------
def _clone(layer: _Recurrent, **changes) -> _Recurrent:
    cfg = layer.get_config()
    cfg.update(changes)
    return type(layer)(**cfg)


@register
class Bidirectional(Layer):
    """Bidirectional wrapper for recurrent layers (Keras 3).

    Runs a copy of ``layer`` forward (named ``forward_<name>``) and one with ``go_backwards``
    flipped (``backward_<name>``, or ``backward_layer``), and merges their outputs; with
    ``return_sequences`` the backward output is flipped back to input order first. Masked steps
    output zeros in both directions (Keras forces ``zero_output_for_mask`` in Bidirectional).

    Args:
        layer: a fresh ``SimpleRNN``, ``LSTM`` or ``GRU`` (not called on a tensor yet); its
            weights are not shared, as in Keras.
        merge_mode: ``"concat"`` (default), ``"sum"``, ``"mul"``, ``"ave"`` or ``None`` (the two
            outputs returned separately).
        backward_layer: optional recurrent layer for the backward direction, with the opposite
            ``go_backwards`` and the same ``return_sequences`` / ``return_state``.

    Output: the merged output, then with ``return_state`` the forward states and the backward
    states. Weights: the forward layer's, then the backward layer's (Keras's order), named
    ``bidirectional/forward_lstm/lstm_cell/kernel``... A pair with the same configuration runs as
    one ONNX op with ``direction="bidirectional"`` at inference.
    """

    uses_mask = True
    supports_masking = True

    def __init__(self, layer: "Layer", merge_mode: str | None = "concat", backward_layer: "Layer | None" = None,
                 name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        if not isinstance(layer, _Recurrent):
            raise ArgError("Bidirectional wraps a recurrent layer (SimpleRNN, LSTM or GRU). "
                           f"Received: layer={layer!r:.60}", "layer")
        if backward_layer is not None and not isinstance(backward_layer, _Recurrent):
            raise ArgError("`backward_layer` must be a recurrent layer (SimpleRNN, LSTM or GRU). "
                           f"Received: backward_layer={backward_layer!r:.60}", "backward_layer")
        if merge_mode is not None:
            merge_mode = check_choice(merge_mode, ("concat", "sum", "mul", "ave"), "merge_mode")
        self.layer = layer
        self.merge_mode = merge_mode
        self.backward_layer = backward_layer
        base = layer.display_name()
        fname = "forward_" + (base[len("forward_"):] if base.startswith("forward_") else base)
        self.forward = _clone(layer, name=fname, trainable=trainable and layer.trainable)
        if backward_layer is None:
            bname = "backward_" + (base[len("backward_"):] if base.startswith("backward_") else base)
            self.backward = _clone(layer, name=bname, go_backwards=not layer.go_backwards,
                                   trainable=trainable and layer.trainable)
        else:
            bname = backward_layer.display_name()
            if bname == fname:
                bname = "backward_" + bname
            self.backward = _clone(backward_layer, name=bname,
                                   trainable=trainable and backward_layer.trainable)
        if self.forward.go_backwards == self.backward.go_backwards:
            raise ArgError("Forward layer and backward layer should have different `go_backwards` values. "
                           f"Received: forward go_backwards={self.forward.go_backwards}, backward "
                           f"go_backwards={self.backward.go_backwards}", "backward_layer")
        for a in ("return_sequences", "return_state"):
            if getattr(self.forward, a) != getattr(self.backward, a):
                raise ArgError(f"Forward layer and backward layer are expected to have the same value for "
                               f"attribute \"{a}\". Received: {getattr(self.forward, a)} for the forward layer "
                               f"and {getattr(self.backward, a)} for the backward layer", "backward_layer")
        if type(self.forward).n_states != type(self.backward).n_states and self.forward.return_state:
            raise ArgError("With return_state=True, the forward and backward layers must have the same "
                           "number of states.", "backward_layer")
        for sub in (self.forward, self.backward):
            sub._owner = self
            sub._prefix = f"{sub.name}/"
        self.return_sequences = self.forward.return_sequences
        self.return_state = self.forward.return_state

    def get_config(self):
        return {"layer": self.layer, "merge_mode": self.merge_mode, "backward_layer": self.backward_layer,
                "name": self.name, "trainable": self.trainable}

    def build(self, input_types):
        for sub in (self.forward, self.backward):
            sub.build(input_types)
            sub.built = True
        self.weights = self.forward.weights + self.backward.weights

    def _merged_units(self) -> int:
        f, b = self.forward.units, self.backward.units
        if self.merge_mode == "concat":
            return f + b
        if self.merge_mode is not None and f != b:
            raise ShapeError(f"Bidirectional merge_mode='{self.merge_mode}' needs both directions to have the "
                             f"same units. Received: {f} and {b}")
        return f

    def compute_output_types(self, input_types):
        ft = self.forward.compute_output_types(input_types)
        bt = self.backward.compute_output_types(input_types)
        if self.merge_mode is None:
            outs = [ft[0], bt[0]]
        else:
            shape = ft[0].shape[:-1] + (self._merged_units(),)
            outs = [TensorType(self.dtype, shape)]
        return outs + ft[1:] + bt[1:]

    def compute_mask(self, inputs, mask):
        return mask if self.return_sequences else None

    def __call__(self, inputs, span=None, **call_args):
        out = super().__call__(inputs, span=span, **call_args)
        if isinstance(out, list):
            n_seq = 2 if self.merge_mode is None else 1
            for o in out[n_seq:]:
                o.mask = None
        return out

    def onnx_weight(self, w):
        for sub in (self.forward, self.backward):
            if any(w is x for x in sub.weights):
                return sub.onnx_weight(w)
        return super().onnx_weight(w)

    def _fusable(self) -> bool:
        f, b = self.forward, self.backward
        return (not f.go_backwards and b.go_backwards and f._onnx_activations() is not None
                and f._fused_signature() == b._fused_signature())

    def lower(self, ctx, node):
        e = ctx.e
        v = node.inputs[0]
        x = ctx.input_as(v, "float32", CL)
        mask = ctx.get(node.mask, CL) if node.mask is not None else None
        zero_output = self.return_sequences
        f, b = self.forward, self.backward
        fused = not ctx.training and self._fusable()
        if fused:
            rf, rb = _fused(ctx, [f, b], x, mask, zero_output, need_y=self.return_sequences)
        else:
            rf = f._run(ctx, x, v.type, mask, zero_output)
            rb = b._run(ctx, x, v.type, mask, zero_output)
        if self.return_sequences:
            if fused and self.merge_mode == "concat":          # [b, T, 2, u] -> [b, T, 2u]
                outs = [e.op("Reshape", [rf.fused_y, e.ints([0, 0, f.units + b.units])])]
            else:
                outs = self._merge(ctx, f._sequence(ctx, rf, flip=False), b._sequence(ctx, rb, flip=True))
        else:
            outs = self._merge(ctx, rf.last, rb.last)
        if self.return_state:
            outs += rf.states + rb.states
        return outs

    def _merge(self, ctx, y: str, y_rev: str) -> list[str]:
        e = ctx.e
        if self.merge_mode == "concat":
            return [e.op("Concat", [y, y_rev], axis=-1)]
        if self.merge_mode == "sum":
            return [e.op("Add", [y, y_rev])]
        if self.merge_mode == "mul":
            return [e.op("Mul", [y, y_rev])]
        if self.merge_mode == "ave":
            return [e.op("Mul", [e.op("Add", [y, y_rev]), e.scalar(0.5)])]
        return [y, y_rev]
