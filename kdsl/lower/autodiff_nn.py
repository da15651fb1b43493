"""VJP rules for the neural-network ONNX ops the layers emit: convolutions, pooling,
resizing, embedding lookups and normalizations (see :mod:`kdsl.lower.autodiff` for the
rule protocol).

Importing this module registers the rules. Everything is written with plain ``ai.onnx``
ops, chosen to run fast in onnxruntime:

* ``Conv``: input gradient by a ``ConvTranspose`` with the forward geometry; weight
  gradient as one GEMM per kernel offset (a strided ``Slice`` of the channels-last input
  times the gradient folded to ``[M, N*Ho*Wo]``: im2col without materialising the
  column matrix), or, for inputs with few channels per group (RGB inputs, depthwise
  convolutions), by the "batch as channels" ``Conv`` trick (see :func:`_use_offsets`).
* ``ConvTranspose``: input gradient by a ``Conv`` with the same weight, weight gradient as
  for ``Conv`` with the roles of input and output swapped.
* ``MaxPool``: the pooling ``Indices`` (flat over the whole input, as onnxruntime and the
  ONNX spec define them) and one ``ScatterElements(reduction="add")``.
  :func:`prepare_forward` makes the forward node itself output the indices.
* ``AveragePool``: the gradient divided by a static count map, spread back over the windows
  by ``Expand`` (non-overlapping windows) or by a ``ConvTranspose`` with a ones kernel.
* ``Resize`` (nearest, integer scales): a ``ReduceSum`` over the repeated blocks.
* ``Gather`` (axis 0): ``ScatterND(reduction="add")`` into zeros of the table's shape.
* ``LayerNormalization`` and inference ``BatchNormalization``: analytic rules.

Window ops need static spatial sizes in training graphs (their backward geometry, e.g. a
``ConvTranspose``'s output padding, is computed at compile time).

Two graph passes for the training-graph builder: :func:`prepare_forward` (before shape
inference and backprop: MaxPool also outputs its Indices, LayerNormalization its Mean and
InvStdDev, so the backward pass does not recompute them) and :func:`prune_dead_nodes`
(after: removes nodes whose results nothing uses, e.g. the input gradient of the first
convolution, which rules emit but onnxruntime would otherwise still compute).
"""
from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import KdslError
from .autodiff import GradContext, register
from .emitter import Emitter

__all__ = ["prepare_forward", "prune_dead_nodes", "WEIGHT_GRAD_STRATEGY"]

#: how Conv/ConvTranspose weight gradients are computed: "auto", "offsets" (one GEMM per
#: kernel offset) or "conv" (the batch-as-channels Conv trick).
WEIGHT_GRAD_STRATEGY = "auto"
#: the input gradient of a unit-stride Conv: "transpose" (ConvTranspose, as for strided
#: convolutions) or "conv" (a Conv with the flipped kernel). Measured on the MNIST CNN (2-core
#: CPU, onnxruntime 1.32, steps of the two graphs interleaved): ConvTranspose 6% faster per step
#: on an idle machine, the Conv 3% faster on a busy one; both are tested.
CONV_INPUT_GRAD = "transpose"

_NP = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
       onnx.TensorProto.FLOAT16: np.float16}


# -- helpers -------------------------------------------------------------------------------------------
def _wants(g: GradContext, name: str) -> bool:
    """Whether a gradient for ``name`` is needed (always, unless backprop tells the context
    which values are active: ``g.active``)."""
    active = getattr(g, "active", None)
    return active is None or name in active


def _np_dtype(g: GradContext, name: str):
    return _NP.get(g._dtypes.get(name, onnx.TensorProto.FLOAT), np.float32)


def _const(g: GradContext, value, like: str) -> str:
    """A float constant with the dtype of value ``like``."""
    return g.e.const(np.asarray(value, dtype=_np_dtype(g, like)), hint="const")


def _zeros_of_shape(g: GradContext, shape: str, like: str) -> str:
    value = numpy_helper.from_array(np.zeros(1, dtype=_np_dtype(g, like)))
    return g.e.op("ConstantOfShape", [shape], value=value)


def _str_attr(g: GradContext, n, name: str, default: str) -> str:
    v = g.attr(n, name, default)
    return v.decode() if isinstance(v, bytes) else v


def _spatial(g: GradContext, n, names: Sequence[str]) -> list[tuple[int, ...]]:
    """The spatial sizes (axes 2...) of ``names``; a KdslError unless all are static."""
    out = []
    for x in names:
        s = g.shape(x)
        dims = tuple(s[2:])
        if not all(isinstance(d, int) for d in dims):
            raise KdslError(f"Training through {n.op_type} (node '{n.name}') needs fixed spatial sizes: its "
                            f"gradient's geometry is computed when the training graph is built. Received: "
                            f"a value of shape {tuple(s)}. Give the model's input fixed spatial sizes "
                            "(e.g. Input((32, 32, 3))).")
        out.append(dims)
    return out


def _static_dim(g: GradContext, n, x: str, axis: int) -> int:
    d = g.shape(x)[axis]
    if not isinstance(d, int):
        raise KdslError(f"Training through {n.op_type} (node '{n.name}') needs a known size on axis {axis}. "
                        f"Received: a value of shape {tuple(g.shape(x))}.")
    return d


class _Window:
    """Resolved geometry of a sliding-window node (Conv, ConvTranspose, pools)."""

    def __init__(self, kernel, strides, dilations, begin, end, size, out):
        self.kernel, self.strides, self.dilations = list(kernel), list(strides), list(dilations)
        self.begin, self.end = list(begin), list(end)
        self.size, self.out = list(size), list(out)
        self.rank = len(self.kernel)

    @property
    def keff(self) -> list[int]:
        return [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations)]


def _window(g: GradContext, n, x: str, y: str, kernel: Sequence[int] | None = None) -> _Window:
    """The geometry of window node ``n`` (input ``x``, output ``y``), ``auto_pad`` resolved to
    explicit pads from the static sizes."""
    size, out = _spatial(g, n, [x, y])
    r = len(size)
    kernel = list(g.attr(n, "kernel_shape") or kernel)
    strides = list(g.attr(n, "strides") or [1] * r)
    dil = list(g.attr(n, "dilations") or [1] * r)
    pads = list(g.attr(n, "pads") or [0] * (2 * r))
    auto = _str_attr(g, n, "auto_pad", "NOTSET")
    if g.attr(n, "ceil_mode", 0) and n.op_type != "MaxPool":
        raise KdslError(f"Training through {n.op_type} with ceil_mode=1 (node '{n.name}') is not supported.")
    begin, end = pads[:r], pads[r:]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for d, o, k, s, dl in zip(size, out, kernel, strides, dil):
            total = max((o - 1) * s + (k - 1) * dl + 1 - d, 0)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    elif auto == "VALID":
        begin, end = [0] * r, [0] * r
    return _Window(kernel, strides, dil, begin, end, size, out)


def _slice(e: Emitter, x: str, axes: Sequence[int], starts, ends, steps=None) -> str:
    ins = [x, e.ints(starts), e.ints(ends), e.ints(axes)]
    if steps is not None and any(s != 1 for s in steps):
        ins.append(e.ints(steps))
    return e.op("Slice", ins)


def _pad(e: Emitter, x: str, rank: int, axes: Sequence[int], begin, end) -> str:
    if not any(begin) and not any(end):
        return x
    b, a = [0] * rank, [0] * rank
    for ax, p, q in zip(axes, begin, end):
        b[ax], a[ax] = p, q
    return e.op("Pad", [x, e.ints(b + a)])


def _crop_to(e: Emitter, x: str, have: Sequence[int], want: Sequence[int], first_axis: int = 2) -> str:
    """Slice the trailing window axes of ``x`` (sizes ``have``) down to ``want``."""
    if list(have) == list(want):
        return x
    r = len(want)
    return _slice(e, x, list(range(first_axis, first_axis + r)), [0] * r, list(want))


def _bias_grad(g: GradContext, dy: str, rank: int) -> str:
    return g.e.reduce("ReduceSum", dy, [0] + list(range(2, rank)), keepdims=False)


def _offsets(kernel: Sequence[int]) -> Iterable[tuple[int, ...]]:
    return itertools.product(*[range(k) for k in kernel])


def _use_offsets(batch_side: int, kernel: Sequence[int]) -> bool:
    """Strategy for a weight gradient. The Conv trick runs one GEMM per "image" of its batch
    (``batch_side``: input channels per group for Conv, output channels for ConvTranspose),
    each with a tiny output (the kernel window); the offsets form runs one GEMM per kernel
    offset with all channels at once. Measured on onnxruntime's CPU provider (one thread,
    MNIST/CIFAR/MobileNet-like shapes): offsets is 1.3-3x faster from 8 channels per group
    and for 1x1 kernels (a single GEMM); the trick is ~2x faster on RGB-like inputs (3
    channels) and on depthwise convolutions (1 channel per group)."""
    if WEIGHT_GRAD_STRATEGY != "auto":
        return WEIGHT_GRAD_STRATEGY == "offsets"
    return batch_side >= 8 or all(k == 1 for k in kernel)


# -- Conv ---------------------------------------------------------------------------------------------
def _conv_weight_grad_offsets(g: GradContext, x: str, dy: str, w: _Window, c: int, m: int,
                              group: int) -> str:
    """dW[m, c, k] = sum_{n, o} dY[n, m, o] * Xpad[n, c, o * s + k * d], one GEMM per offset k.

    The input is laid out ``[group, N, *spatial, C/group]`` (channels last, padded once);
    for each offset a strided slice of it, folded to ``[group, N*P, C/group]``, multiplies
    the gradient folded to ``[group, M/group, N*P]``.
    """
    e = g.e
    r = w.rank
    cg, mg = c // group, m // group
    sp = list(range(2, 2 + r))
    if group == 1:
        d = e.reshape(e.transpose(dy, [1, 0] + sp), [1, m, -1])
        xt = e.unsqueeze(e.transpose(x, [0] + sp + [1]), [0])
    else:
        d = e.reshape(dy, [-1, group, mg, int(np.prod(w.out))])
        d = e.reshape(e.transpose(d, [1, 2, 0, 3]), [group, mg, -1])
        xt = e.reshape(x, [-1, group, cg] + w.size)
        xt = e.transpose(xt, [1, 0] + list(range(3, 3 + r)) + [2])
    # padded extent the windows read: (out - 1) * s + keff cells from -begin
    need_end = [max(0, (o - 1) * s + ke - sz - b) for o, s, ke, sz, b in
                zip(w.out, w.strides, w.keff, w.size, w.begin)]
    xt = _pad(e, xt, r + 3, sp, w.begin, need_end)
    padded = [sz + b + a for sz, b, a in zip(w.size, w.begin, need_end)]
    parts = []
    for off in _offsets(w.kernel):
        starts = [k * dl for k, dl in zip(off, w.dilations)]
        ends = [st + (o - 1) * s + 1 for st, o, s in zip(starts, w.out, w.strides)]
        full = all(st == 0 and en == p and s == 1 for st, en, p, s in zip(starts, ends, padded, w.strides))
        sl = xt if full else _slice(e, xt, sp, starts, ends, w.strides)
        parts.append(e.op("MatMul", [d, e.reshape(sl, [group, -1, cg])]))   # [group, M/g, C/g]
    cat = parts[0] if len(parts) == 1 else e.op("Concat", parts, axis=2)    # [group, M/g, K * C/g]
    res = e.reshape(cat, [m] + w.kernel + [cg])
    return e.transpose(res, [0, r + 1] + list(range(1, r + 1)))


def _conv_weight_grad_batch_trick(g: GradContext, x: str, dy: str, w: _Window, c: int, m: int,
                                  group: int) -> str:
    """The batch axis as channels: Conv(X^T [C/g, g*N, *S], dY^T [M, N, *So]) with
    strides = forward dilations, dilations = forward strides, the forward pads (end pad trimmed
    to what the windows read), group ``group``; cropped to the kernel size and transposed back."""
    e = g.e
    r = w.rank
    cg = c // group
    sp = list(range(2, 2 + r))
    if group == 1:
        xt = e.transpose(x, [1, 0] + sp)                                   # [C, N, *S]
    else:
        xt = e.reshape(x, [-1, group, cg] + w.size)
        xt = e.transpose(xt, [2, 1, 0] + list(range(3, 3 + r)))            # [C/g, g, N, *S]
        xt = e.reshape(xt, [cg, -1] + w.size)
    dyt = e.transpose(dy, [1, 0] + sp)                                     # [M, N, *So]
    end, have = [], []
    for sz, o, k, s, dl, b, a in zip(w.size, w.out, w.kernel, w.strides, w.dilations, w.begin, w.end):
        span = (o - 1) * s + 1
        keep = max(0, min(a, (k - 1) * dl + span - sz - b))
        end.append(keep)
        have.append((sz + b + keep - span) // dl + 1)
    res = e.op("Conv", [xt, dyt], kernel_shape=w.out, strides=w.dilations, dilations=w.strides,
               pads=w.begin + end, group=group)                           # [C/g, M, *k']
    res = _crop_to(e, res, have, w.kernel)
    return e.transpose(res, [1, 0] + sp)


def _conv_input_grad(g: GradContext, dy: str, wt: str, w: _Window, c: int, m: int, group: int) -> str:
    """dX of a Conv: ConvTranspose with the forward geometry (``output_padding`` restores the
    input size). With unit strides and ``CONV_INPUT_GRAD = "conv"``, a plain Conv of dY with the
    kernel flipped and its in/out channel axes swapped (per group), padded by ``keff - 1 - pad``."""
    e = g.e
    r = w.rank
    if CONV_INPUT_GRAD == "conv" and all(s == 1 for s in w.strides):
        pads_b = [ke - 1 - b for ke, b in zip(w.keff, w.begin)]
        pads_e = [ke - 1 - a for ke, a in zip(w.keff, w.end)]
        if all(p >= 0 for p in pads_b + pads_e):
            cg, mg = c // group, m // group
            sp = list(range(2, 2 + r))
            flipped = _slice(e, wt, sp, [-1] * r, [-(2 ** 62)] * r, [-1] * r)
            if group == 1:
                wf = e.transpose(flipped, [1, 0] + sp)                       # [C, M, *k]
            else:
                wf = e.reshape(flipped, [group, mg, cg] + w.kernel)
                wf = e.reshape(e.transpose(wf, [0, 2, 1] + [3 + i for i in range(r)]), [c, mg] + w.kernel)
            return e.op("Conv", [dy, wf], kernel_shape=w.kernel, dilations=w.dilations,
                        pads=pads_b + pads_e, group=group)
    op = [(sz + bb + a - ke) % s for sz, bb, a, ke, s in zip(w.size, w.begin, w.end, w.keff, w.strides)]
    return e.op("ConvTranspose", [dy, wt], kernel_shape=w.kernel, strides=w.strides,
                dilations=w.dilations, pads=w.begin + w.end, group=group,
                output_padding=op if any(op) else None)


@register("Conv")
def _conv(g: GradContext, n, gy):
    x, wt = n.input[0], n.input[1]
    b = n.input[2] if len(n.input) > 2 and n.input[2] else None
    dy = gy[0]
    e = g.e
    group = int(g.attr(n, "group", 1))
    wshape = g.shape(wt)
    if not all(isinstance(d, int) for d in wshape):
        raise KdslError(f"Training through Conv (node '{n.name}') needs a weight of known shape.")
    m, cg = wshape[0], wshape[1]
    c = cg * group
    w = _window(g, n, x, n.output[0], wshape[2:])
    out = [None, None] + ([None] if len(n.input) > 2 else [])
    if _wants(g, x):
        out[0] = _conv_input_grad(g, dy, wt, w, c, m, group)
    if _wants(g, wt):
        if _use_offsets(cg, w.kernel):
            out[1] = _conv_weight_grad_offsets(g, x, dy, w, c, m, group)
        else:
            out[1] = _conv_weight_grad_batch_trick(g, x, dy, w, c, m, group)
    if b is not None and _wants(g, b):
        out[2] = _bias_grad(g, dy, g.rank(x))
    return out


# -- ConvTranspose ------------------------------------------------------------------------------------
def _convt_weight_grad_offsets(g: GradContext, x: str, dy: str, w: _Window, c: int, m: int) -> str:
    """dW[c, m, k] = sum_{n, i} X[n, c, i] * dYpad[n, m, i * s + k * d], one GEMM per offset."""
    e = g.e
    r = w.rank
    sp = list(range(2, 2 + r))
    xk = e.reshape(e.transpose(x, [1, 0] + sp), [c, -1])                  # [C, N*P]
    dyl = e.transpose(dy, [0] + sp + [1])                                  # [N, *So, M]
    sp1 = list(range(1, 1 + r))
    need_end = [max(0, (sz - 1) * s + ke - o - b) for sz, s, ke, o, b in
                zip(w.size, w.strides, w.keff, w.out, w.begin)]
    dyl = _pad(e, dyl, r + 2, sp1, w.begin, need_end)
    padded = [o + b + a for o, b, a in zip(w.out, w.begin, need_end)]
    parts = []
    for off in _offsets(w.kernel):
        starts = [k * dl for k, dl in zip(off, w.dilations)]
        ends = [st + (sz - 1) * s + 1 for st, sz, s in zip(starts, w.size, w.strides)]
        full = all(st == 0 and en == p and s == 1 for st, en, p, s in zip(starts, ends, padded, w.strides))
        sl = dyl if full else _slice(e, dyl, sp1, starts, ends, w.strides)
        parts.append(e.op("MatMul", [xk, e.reshape(sl, [-1, m])]))        # [C, M]
    cat = parts[0] if len(parts) == 1 else e.op("Concat", parts, axis=1)   # [C, K * M]
    res = e.reshape(cat, [c] + w.kernel + [m])
    return e.transpose(res, [0, r + 1] + list(range(1, r + 1)))


def _convt_weight_grad_batch_trick(g: GradContext, x: str, dy: str, w: _Window, c: int, m: int) -> str:
    """Conv(dY^T [M, N, *So], X^T [C, N, *S]) with strides = dilations, dilations = strides."""
    e = g.e
    r = w.rank
    sp = list(range(2, 2 + r))
    dyt = e.transpose(dy, [1, 0] + sp)
    xt = e.transpose(x, [1, 0] + sp)
    end, have = [], []
    for sz, o, k, s, dl, b in zip(w.size, w.out, w.kernel, w.strides, w.dilations, w.begin):
        span = (sz - 1) * s + 1
        keep = max(0, (k - 1) * dl + span - o - b)
        end.append(keep)
        have.append((o + b + keep - span) // dl + 1)
    res = e.op("Conv", [dyt, xt], kernel_shape=w.size, strides=w.dilations, dilations=w.strides,
               pads=w.begin + end)                                         # [M, C, *k']
    res = _crop_to(e, res, have, w.kernel)
    return e.transpose(res, [1, 0] + sp)


@register("ConvTranspose")
def _conv_transpose(g: GradContext, n, gy):
    x, wt = n.input[0], n.input[1]
    b = n.input[2] if len(n.input) > 2 and n.input[2] else None
    dy = gy[0]
    e = g.e
    group = int(g.attr(n, "group", 1))
    if group != 1 or g.attr(n, "output_shape") or _str_attr(g, n, "auto_pad", "NOTSET") != "NOTSET":
        raise KdslError(f"Training through ConvTranspose (node '{n.name}') supports only group=1 and explicit "
                        "pads (no output_shape or auto_pad).")
    wshape = g.shape(wt)
    if not all(isinstance(d, int) for d in wshape):
        raise KdslError(f"Training through ConvTranspose (node '{n.name}') needs a weight of known shape.")
    c, m = wshape[0], wshape[1]
    w = _window(g, n, x, n.output[0], wshape[2:])
    out = [None, None] + ([None] if len(n.input) > 2 else [])
    if _wants(g, x):
        dx = e.op("Conv", [dy, wt], kernel_shape=w.kernel, strides=w.strides, dilations=w.dilations,
                  pads=w.begin + w.end)
        have = [(o + bb + a - ke) // s + 1 for o, bb, a, ke, s in
                zip(w.out, w.begin, w.end, w.keff, w.strides)]
        out[0] = _crop_to(e, dx, have, w.size)
    if _wants(g, wt):
        if _use_offsets(m, w.kernel):
            out[1] = _convt_weight_grad_offsets(g, x, dy, w, c, m)
        else:
            out[1] = _convt_weight_grad_batch_trick(g, x, dy, w, c, m)
    if b is not None and _wants(g, b):
        out[2] = _bias_grad(g, dy, g.rank(x))
    return out


# -- pooling --------------------------------------------------------------------------------------------
@register("MaxPool")
def _max_pool(g: GradContext, n, gy):
    """Scatter-add the gradient at the argmax of each window. ``Indices`` are flat over the
    whole (unpadded) input, ``((n * C + c) * H + h) * W + w``: onnxruntime's convention."""
    e = g.e
    x = n.input[0]
    if g.attr(n, "storage_order", 0):
        raise KdslError(f"Training through MaxPool with storage_order=1 (node '{n.name}') is not supported.")
    if gy[0] is None:
        return [None]
    if len(n.output) > 1 and n.output[1]:
        idx = n.output[1]
    else:   # the forward node has no Indices output: compute them with a second MaxPool
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        _, idx = e.op("MaxPool", [x], n_out=2, **attrs)
    shape = g.shape_of(x)
    w = _window(g, n, x, n.output[0])
    dy = gy[0]
    relu = g.producer.get(x)
    relu = relu if relu is not None and relu.op_type == "Relu" else None
    if relu is not None:
        # Relu -> MaxPool: the Relu's mask at the argmax is (pooled > 0), so apply it to the pooled
        # gradient (a quarter of the cells for 2x2 windows) and let the Relu rule pass it on
        dy = e.op("Mul", [dy, e.op("Cast", [e.op("Greater", [n.output[0], e.scalar(0.0)])],
                                   to=g._dtypes.get(x, onnx.TensorProto.FLOAT))])
    gx = _max_pool_scatter(g, n, x, dy, idx, shape, w)
    if relu is not None:
        g.masked_for[gx] = x
    return [gx]


def _max_pool_scatter(g: GradContext, n, x: str, dy: str, idx: str, shape: str, w: _Window) -> str:
    """``dy`` scattered to the argmax cells ``idx`` of the input ``x`` (of shape ``shape``)."""
    e = g.e
    apart = all(s >= k for s, k in zip(w.strides, w.keff))
    if apart and _np_dtype(g, x) == np.float32 and g.device == "cpu":
        # windows do not overlap: each input cell receives at most one gradient, so
        # MaxUnpool places them (measured 5.8x faster than the scatter-add on onnxruntime's
        # CPU, which has MaxUnpool for float32 only)
        # (the Reshape is free in onnxruntime and gives ONNX shape inference the output's shape)
        up = e.op("MaxUnpool", [dy, idx, shape], kernel_shape=w.kernel, strides=w.strides,
                  pads=w.begin + w.end)
        return e.op("Reshape", [up, shape])
    # onnxruntime's CUDA provider has no MaxUnpool (it would run on the CPU, with copies, and
    # keep the step from being captured as a CUDA graph); apart windows need no reduction
    zeros = _zeros_of_shape(g, e.op("ReduceProd", [shape], keepdims=1), x)
    flat = e.op("ScatterElements", [zeros, e.reshape(idx, [-1]), e.reshape(dy, [-1])], axis=0,
                **({} if apart else {"reduction": "add"}))
    return e.op("Reshape", [flat, shape])


def _pool_counts(w: _Window, include_pad: bool) -> list[np.ndarray]:
    """Per axis, how many cells each output window averages over."""
    counts = []
    for sz, o, k, s, b, a in zip(w.size, w.out, w.kernel, w.strides, w.begin, w.end):
        lo = np.arange(o) * s - b
        hi = lo + k
        lo_b, hi_b = (-b, sz + a) if include_pad else (0, sz)
        counts.append((np.minimum(hi, hi_b) - np.maximum(lo, lo_b)).astype(np.float64))
    return counts


@register("AveragePool")
def _average_pool(g: GradContext, n, gy):
    e = g.e
    x = n.input[0]
    dy = gy[0]
    w = _window(g, n, x, n.output[0])
    if any(d != 1 for d in w.dilations):
        raise KdslError(f"Training through a dilated AveragePool (node '{n.name}') is not supported.")
    r = w.rank
    counts = _pool_counts(w, bool(g.attr(n, "count_include_pad", 0)))
    inv = np.ones(())
    for cnt in counts:
        inv = np.multiply.outer(inv, 1.0 / cnt)
    if np.all(inv == inv.flat[0]):
        scaled = e.op("Mul", [dy, _const(g, inv.flat[0], x)])
    else:
        scaled = e.op("Mul", [dy, _const(g, inv.reshape([1, 1] + w.out), x)])
    xs = g.shape(x)
    if w.strides == w.kernel:
        # non-overlapping windows: repeat each cell over its window, then crop/pad to the input
        inter = [0, 0]
        for o in w.out:
            inter += [o, 1]
        rep = [1, 1]
        for k in w.kernel:
            rep += [1, k]
        up = e.op("Expand", [e.reshape(scaled, inter), e.ints(rep)])
        up = e.reshape(up, [0, 0] + [o * k for o, k in zip(w.out, w.kernel)])
        ends = [min(o * k, b + sz) for o, k, b, sz in zip(w.out, w.kernel, w.begin, w.size)]
        if any(b for b in w.begin) or any(en != o * k for en, o, k in zip(ends, w.out, w.kernel)):
            up = _slice(e, up, list(range(2, 2 + r)), w.begin, ends)
        short = [sz - (en - b) for sz, en, b in zip(w.size, ends, w.begin)]
        return [_pad(e, up, r + 2, list(range(2, 2 + r)), [0] * r, short)]
    # overlapping windows: a ConvTranspose with a ones kernel, channels folded into the batch
    c = _static_dim(g, n, x, 1)
    flat = e.reshape(scaled, [-1, 1] + w.out)
    ones = _const(g, np.ones([1, 1] + w.kernel), x)
    op = [(sz + b + a - k) % s for sz, b, a, k, s in zip(w.size, w.begin, w.end, w.kernel, w.strides)]
    dx = e.op("ConvTranspose", [flat, ones], kernel_shape=w.kernel, strides=w.strides, pads=w.begin + w.end,
              output_padding=op if any(op) else None)
    lead = [-1, c] if not isinstance(xs[0], int) else [xs[0], c]
    return [e.reshape(dx, lead + w.size)]


# -- Resize (UpSampling2D) ------------------------------------------------------------------------------
@register("Resize")
def _resize(g: GradContext, n, gy):
    e = g.e
    x = n.input[0]
    mode = _str_attr(g, n, "mode", "nearest")
    if mode != "nearest":
        raise KdslError("Training through bilinear upsampling (UpSampling2D with interpolation='bilinear', "
                        f"ONNX Resize mode='{mode}', node '{n.name}') is not supported yet; use "
                        "interpolation='nearest'.")
    ctm = _str_attr(g, n, "coordinate_transformation_mode", "half_pixel")
    nm = _str_attr(g, n, "nearest_mode", "round_prefer_floor")
    scales = g.const_value(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    if len(n.input) > 3 and n.input[3]:
        scales = None
    ok = (scales is not None and ctm == "asymmetric" and nm == "floor"
          and all(float(s) == int(s) and s >= 1 for s in np.asarray(scales).reshape(-1)))
    if not ok:
        raise KdslError(f"Training through Resize (node '{n.name}') supports only nearest upsampling by "
                        "constant integer scales (UpSampling2D interpolation='nearest').")
    scales = [int(s) for s in np.asarray(scales).reshape(-1)]
    xs = g.shape(x)
    # output[i] = input[i // s]: split each scaled axis into (size, s) and sum the repeats
    inter, axes, sym = [], [], 0
    for d, s in zip(xs, scales):
        inter.append(d if isinstance(d, int) else -1)
        sym += not isinstance(d, int)
        if s > 1:
            inter.append(s)
            axes.append(len(inter) - 1)
    if not axes:
        return [gy[0]] + [None] * (len(n.input) - 1)
    if sym > 1:   # several unknown dims: build the shape at run time
        shape = g.shape_of(x)
        pieces = []
        for i, s in enumerate(scales):
            pieces.append(e.op("Gather", [shape, e.ints([i])]))
            if s > 1:
                pieces.append(e.ints([s]))
        target = e.op("Concat", pieces, axis=0)
        r = e.op("Reshape", [gy[0], target])
    else:
        r = e.reshape(gy[0], inter)
    return [e.reduce("ReduceSum", r, axes, keepdims=False)] + [None] * (len(n.input) - 1)


# -- Gather (Embedding) -----------------------------------------------------------------------------------
@register("Gather")
def _gather(g: GradContext, n, gy):
    e = g.e
    data, idx = n.input
    axis = int(g.attr(n, "axis", 0))
    if axis % max(g.rank(data), 1) != 0:
        raise KdslError(f"Training through Gather on axis {axis} (node '{n.name}') is not supported: only "
                        "lookups along axis 0 (Embedding).")
    if g._dtypes.get(idx) != onnx.TensorProto.INT64:
        idx = e.op("Cast", [idx], to=onnx.TensorProto.INT64)
    ds = g.shape(data)
    if g.device == "cuda" and len(ds) == 2 and all(isinstance(d, int) for d in ds) and ds[0] > 1:
        return [_gather_grad_spread_zero(g, idx, gy[0], *ds), None]
    shape = e.ints(ds) if all(isinstance(d, int) for d in ds) else g.shape_of(data)
    zeros = _zeros_of_shape(g, shape, data)
    gd = e.op("ScatterND", [zeros, e.unsqueeze(idx, [-1]), gy[0]], reduction="add")
    return [gd, None]


def _gather_grad_spread_zero(g: GradContext, idx: str, gy: str, rows: int, dim: int) -> str:
    """An embedding table's gradient for onnxruntime's CUDA provider, where ``ScatterND``'s
    ``reduction="add"`` is an atomic add per element: padded text batches send most lookups to
    id 0 (Keras's padding id), and adds to one row are serialized (the text LSTM at batch 512,
    mostly padding: 11 ms of a 21 ms step). The lookups of id 0 are scattered into spare rows of
    their own below the table instead (one per lookup, ``rows + position``), summed by one
    ``ReduceSum`` into row 0, which got nothing else."""
    e = g.e
    flat = e.reshape(idx, [-1])                                                     # [N]
    gy2 = e.reshape(gy, [-1, dim])                                                  # [N, dim]
    n = e.op("Shape", [flat])                                                       # [1]
    is0 = e.op("Equal", [flat, e.const(np.array(0, np.int64))])
    first = e.const(np.array(rows, np.int64))
    spare = e.op("Range", [first, e.op("Add", [e.squeeze(n, [0]), first]), e.const(np.array(1, np.int64))])
    target = e.op("Where", [is0, spare, flat])
    table = _zeros_of_shape(g, e.op("Concat", [e.op("Add", [n, e.ints([rows])]), e.ints([dim])], axis=0), gy)
    sc = e.op("ScatterND", [table, e.unsqueeze(target, [-1]), gy2], reduction="add")   # [rows + N, dim]
    _, rest, padded = e.op("Split", [sc, e.op("Concat", [e.ints([1, rows - 1]), n], axis=0)], n_out=3, axis=0)
    return e.op("Concat", [e.reduce("ReduceSum", padded, [0], keepdims=True), rest], axis=0)


# -- normalization --------------------------------------------------------------------------------------
@register("LayerNormalization")
def _layer_norm(g: GradContext, n, gy):
    e = g.e
    x, scale = n.input[0], n.input[1]
    bias = n.input[2] if len(n.input) > 2 and n.input[2] else None
    y = n.output[0]
    dy = gy[0]
    if dy is None:
        raise KdslError(f"Training through LayerNormalization (node '{n.name}') needs the gradient of its output.")
    r = g.rank(x)
    first = int(g.attr(n, "axis", -1)) % r
    axes = list(range(first, r))
    eps = float(g.attr(n, "epsilon", 1e-5))
    xd = g._dtypes.get(x)
    if (len(n.output) > 2 and n.output[1] and n.output[2]
            and g._dtypes.get(n.output[1], xd) == xd and g._dtypes.get(n.output[2], xd) == xd):
        mean, rstd = n.output[1], n.output[2]
        xc = e.op("Sub", [x, mean])
    else:
        mean = e.reduce("ReduceMean", x, axes, keepdims=True)
        xc = e.op("Sub", [x, mean])
        var = e.reduce("ReduceMean", e.op("Mul", [xc, xc]), axes, keepdims=True)
        rstd = e.op("Reciprocal", [e.op("Sqrt", [e.op("Add", [var, _const(g, eps, x)])])])
    xhat = e.op("Mul", [xc, rstd])
    out = [None, None] + ([None] if len(n.input) > 2 else [])
    if _wants(g, x):
        gs = e.op("Mul", [dy, scale])
        a = e.reduce("ReduceMean", gs, axes, keepdims=True)
        b = e.reduce("ReduceMean", e.op("Mul", [gs, xhat]), axes, keepdims=True)
        out[0] = e.op("Mul", [e.op("Sub", [e.op("Sub", [gs, a]), e.op("Mul", [xhat, b])]), rstd])
    if _wants(g, scale):
        out[1] = g.sum_to(e.op("Mul", [dy, xhat]), g.shape(y), g.shape(scale))
    if bias is not None and _wants(g, bias):
        out[2] = g.sum_to(dy, g.shape(y), g.shape(bias))
    return out


@register("BatchNormalization")
def _batch_norm_inference(g: GradContext, n, gy):
    """Inference-mode BatchNormalization (moving statistics; channel axis 1)."""
    e = g.e
    if g.attr(n, "training_mode", 0) or len(n.output) > 1:
        raise KdslError(f"Training through BatchNormalization in training mode (node '{n.name}') is not "
                        "supported: kdsl lowers training-mode batch normalization to elementwise ops.")
    x, scale, bias, mean, var = n.input
    dy = gy[0]
    r = g.rank(x)
    eps = float(g.attr(n, "epsilon", 1e-5))
    axes = [0] + list(range(2, r))
    col = [-1] + [1] * (r - 2)

    def bc(v):
        return e.reshape(v, col)

    inv = e.op("Reciprocal", [e.op("Sqrt", [e.op("Add", [var, _const(g, eps, x)])])])   # [C]
    xc = e.op("Sub", [x, bc(mean)])
    out = [None] * 5
    if _wants(g, x):
        out[0] = e.op("Mul", [dy, bc(e.op("Mul", [scale, inv]))])
    sdy = e.reduce("ReduceSum", dy, axes, keepdims=False) if (_wants(g, bias) or _wants(g, mean)) else None
    sdyxc = (e.reduce("ReduceSum", e.op("Mul", [dy, xc]), axes, keepdims=False)
             if (_wants(g, scale) or _wants(g, var)) else None)
    if _wants(g, scale):
        out[1] = e.op("Mul", [sdyxc, inv])
    if _wants(g, bias):
        out[2] = sdy
    if _wants(g, mean):
        out[3] = e.op("Neg", [e.op("Mul", [sdy, e.op("Mul", [scale, inv])])])
    if _wants(g, var):
        inv3 = e.op("Mul", [inv, e.op("Mul", [inv, inv])])
        out[4] = e.op("Mul", [e.op("Mul", [sdyxc, scale]), e.op("Mul", [inv3, _const(g, -0.5, x)])])
    return out


# -- graph passes for the training-graph builder ------------------------------------------------------------
def _fresh_name(base: str, used: set[str], e: Emitter | None) -> str:
    if e is not None:
        name = e.fresh(base)
    else:
        name, i = base, 1
        while name in used:
            name = f"{base}_{i}"
            i += 1
    used.add(name)
    return name


def prepare_forward(nodes: Sequence[onnx.NodeProto], e: Emitter | None = None) -> list[onnx.NodeProto]:
    """Give forward nodes the optional outputs their gradient rules reuse (in place):
    ``MaxPool`` its ``Indices``, ``LayerNormalization`` its ``Mean`` and ``InvStdDev``.

    Call it on the training-mode forward graph before shape inference and :func:`backprop`;
    pass the graph's emitter so the new names are reserved there. Outputs nobody uses in the
    end are removed again by :func:`prune_dead_nodes`. Returns ``nodes``.
    """
    used = {v for nd in nodes for v in list(nd.input) + list(nd.output)}
    for nd in nodes:
        if nd.op_type == "MaxPool" and len(nd.output) == 1:
            nd.output.append(_fresh_name(f"{nd.output[0]}:indices", used, e))
        elif nd.op_type == "LayerNormalization" and len(nd.output) == 1:
            dt = None
            for a in nd.attribute:
                if a.name == "stash_type":
                    dt = a.i
            if dt in (None, 1):
                nd.output.append(_fresh_name(f"{nd.output[0]}:mean", used, e))
                nd.output.append(_fresh_name(f"{nd.output[0]}:inv_std_dev", used, e))
    return list(nodes)


#: ops whose trailing outputs are optional (dropped by prune_dead_nodes when unused)
_OPTIONAL_OUTPUTS = {"MaxPool": 1, "LayerNormalization": 1, "BatchNormalization": 1, "Dropout": 1}


def prune_dead_nodes(nodes: Sequence[onnx.NodeProto], outputs: Iterable[str]) -> list[onnx.NodeProto]:
    """The nodes that contribute to ``outputs`` (graph output names), in order.

    onnxruntime runs every node of a graph, wanted or not, so the gradients rules emit for
    values that need none (e.g. the input gradient of a model's first convolution) must be
    removed. Unused optional trailing outputs (MaxPool ``Indices``...) are dropped too.
    Nodes are modified in place.
    """
    needed = set(outputs)
    keep = []
    for nd in reversed(list(nodes)):
        if not any(o and o in needed for o in nd.output):
            continue
        keep.append(nd)
        needed.update(i for i in nd.input if i)
        for a in nd.attribute:   # subgraphs (If/Loop/Scan): keep their outer-scope inputs
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                needed.update(i for sn in sub.node for i in sn.input if i)
    keep.reverse()
    for nd in keep:
        min_out = _OPTIONAL_OUTPUTS.get(nd.op_type)
        if min_out is None:
            continue
        outs = list(nd.output)
        while len(outs) > min_out and (not outs[-1] or outs[-1] not in needed):
            outs.pop()
        if len(outs) != len(nd.output):
            del nd.output[:]
            nd.output.extend(outs)
    return keep
