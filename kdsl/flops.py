"""Floating-point operations per sample of each layer call, from its types and its config.

Counting convention (the one ``summary`` and performance goals use):

- a multiply-accumulate is 2 FLOPs: ``Dense`` is ``2 * in * units`` (times any middle axes),
  a convolution ``2 * kh * kw * (cin / groups) * cout * Hout * Wout``; the bias addition and an
  activation fused into a Dense or convolution layer are not counted (they are O(outputs)
  against O(outputs x fan-in));
- elementwise work is counted per output element: ``+ - * /`` and merges 1 per element and
  input after the first, activations 1 (softmax / log_softmax 3), ``Rescaling`` 1 (2 with an
  offset), ``BatchNormalization`` 2 (folded scale and shift), ``LayerNormalization`` 5 plus 1
  each for scale and centre, pooling one per window cell, bilinear upsampling 4;
- moving data costs nothing: Flatten, Reshape, Permute, Dropout (inference), ZeroPadding2D,
  nearest upsampling, Concatenate, Embedding lookups;
- recurrent layers count their gates' matmuls per step (``2 * gates * units * (in + units)``,
  gates: SimpleRNN 1, GRU 3, LSTM 4; twice for Bidirectional); MultiHeadAttention its four
  projections, the scores, softmax (3 per score) and weighted sum.

Counts are per sample (the batch axis is left out). A count is ``None`` when a non-batch axis
is symbolic (e.g. a sequence length) or the layer is unknown; a layer class may define
``flops(input_types, output_types) -> int | None`` to give its own count.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from .ir import Node, TensorType

if TYPE_CHECKING:
    from .ir import Graph
    from .layers.base import Layer

__all__ = ["layer_flops", "node_flops", "graph_flops", "format_flops"]


def _per_sample(t: TensorType) -> int | None:
    n = 1
    for d in t.shape[1:]:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def _spatial(t: TensorType) -> int | None:
    """Product of the axes between batch and channels."""
    n = 1
    for d in t.shape[1:-1]:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def _mul(*xs) -> int | None:
    return None if any(x is None for x in xs) else math.prod(xs)


def _activation_cost(name: str | None) -> int:
    if name in (None, "linear", "none"):
        return 0
    return 3 if name in ("softmax", "log_softmax") else 1


def _dense(layer, ins, outs):
    t = ins[0]
    k = t.shape[-1]
    middle = _spatial(outs[0])
    return _mul(2, k, layer.units, middle) if isinstance(k, int) else None


def _conv(layer, ins, outs):
    cin = ins[0].shape[-1]
    return _mul(2, math.prod(layer.kernel_size), cin // layer.groups, layer.filters, _spatial(outs[0]))


def _conv_transpose(layer, ins, outs):
    return _mul(2, math.prod(layer.kernel_size), ins[0].shape[-1], layer.filters, _spatial(ins[0]))


def _depthwise(layer, ins, outs):
    return _mul(2, math.prod(layer.kernel_size), ins[0].shape[-1], layer.depth_multiplier, _spatial(outs[0]))


def _separable(layer, ins, outs):
    cin, m, hw = ins[0].shape[-1], layer.depth_multiplier, _spatial(outs[0])
    dw = _mul(2, math.prod(layer.kernel_size), cin, m, hw)
    pw = _mul(2, cin * m, layer.filters, hw)
    return None if dw is None or pw is None else dw + pw


def _elementwise(per: int | Callable) -> Callable:
    def rule(layer, ins, outs):
        cost = per(layer) if callable(per) else per
        return _mul(cost, _per_sample(outs[0]))
    return rule


def _pool(layer, ins, outs):
    return _mul(math.prod(layer.pool_size), _per_sample(outs[0]))


def _global_pool(layer, ins, outs):
    return _per_sample(ins[0])


def _merge(extra: int) -> Callable:
    def rule(layer, ins, outs):
        return _mul(len(ins) - 1 + extra, _per_sample(outs[0]))
    return rule


def _binary(layer, ins, outs):
    if layer.op == "matmul":
        k = ins[0].shape[-1]
        return _mul(2, k, _per_sample(outs[0])) if isinstance(k, int) else None
    return _per_sample(outs[0])


def _layer_norm(layer, ins, outs):
    return _mul(5 + int(layer.scale) + int(layer.center), _per_sample(outs[0]))


def _zero(layer, ins, outs):
    return 0


def _recurrent(layer, ins, outs):
    """Per step, the input and recurrent matmuls of every gate: 2 * gates * units * (in + units)."""
    gates = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}.get(type(layer).__name__)
    t = ins[0]
    steps, features = t.shape[1], t.shape[-1]
    if gates is None or t.rank != 3 or not isinstance(steps, int) or not isinstance(features, int):
        return None
    return 2 * gates * layer.units * (features + layer.units) * steps


def _bidirectional(layer, ins, outs):
    f, b = layer_flops(layer.forward, ins, outs), layer_flops(layer.backward, ins, outs)
    return None if f is None or b is None else f + b


def _attention(layer, ins, outs):
    """Projections of query, key and value, scores, softmax, weighted sum, output projection."""
    q, v = ins[0], ins[1]
    k = ins[2] if len(ins) > 2 and ins[2].rank == v.rank else v
    if q.rank != 3 or v.rank != 3:
        return None
    tq, dq, tv, dv, dk = q.shape[1], q.shape[2], v.shape[1], v.shape[2], k.shape[2]
    dout = _per_sample(outs[0])
    if not all(isinstance(d, int) for d in (tq, dq, tv, dv, dk)) or dout is None:
        return None
    h, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
    return (2 * tq * dq * h * kd + 2 * tv * dk * h * kd + 2 * tv * dv * h * vd     # projections
            + 2 * h * tq * tv * kd + 3 * h * tq * tv + 2 * h * tq * tv * vd        # scores, softmax, sum
            + 2 * h * vd * dout)                                                    # output projection


_RULES: dict[str, Callable] = {
    "Dense": _dense,
    "Conv1D": _conv, "Conv2D": _conv,
    "Conv2DTranspose": _conv_transpose,
    "DepthwiseConv2D": _depthwise,
    "SeparableConv2D": _separable,
    "MaxPooling1D": _pool, "MaxPooling2D": _pool, "AveragePooling1D": _pool, "AveragePooling2D": _pool,
    "GlobalAveragePooling1D": _global_pool, "GlobalAveragePooling2D": _global_pool,
    "GlobalMaxPooling1D": _global_pool, "GlobalMaxPooling2D": _global_pool,
    "BatchNormalization": _elementwise(2),
    "LayerNormalization": _layer_norm,
    "Rescaling": _elementwise(lambda l: 2 if l.offset else 1),
    "Activation": _elementwise(lambda l: _activation_cost(l.activation)),
    "ActivationOp": _elementwise(lambda l: _activation_cost(l.activation)),
    "UpSampling2D": _elementwise(lambda l: 4 if l.interpolation == "bilinear" else 0),
    "Add": _merge(0), "Subtract": _merge(0), "Multiply": _merge(0), "Maximum": _merge(0),
    "Minimum": _merge(0), "Average": _merge(1),
    "Binary": _binary,
    "Mean": _global_pool,
    "Dropout": _zero, "Flatten": _zero, "Reshape": _zero, "Permute": _zero, "ZeroPadding2D": _zero,
    "Concatenate": _zero, "Embedding": _zero,
    "SimpleRNN": _recurrent, "GRU": _recurrent, "LSTM": _recurrent, "Bidirectional": _bidirectional,
    "MultiHeadAttention": _attention,
    "PositionEmbedding": _zero, "TokenAndPositionEmbedding": _elementwise(1), "TextVectorization": _zero,
}


def layer_flops(layer: "Layer", input_types: list[TensorType], output_types: list[TensorType]) -> int | None:
    """FLOPs per sample of one call of ``layer`` with these input and output types."""
    own = getattr(layer, "flops", None)
    if callable(own):
        return own(list(input_types), list(output_types))
    for cls in type(layer).__mro__:
        rule = _RULES.get(cls.__name__)
        if rule is not None:
            try:
                return rule(layer, list(input_types), list(output_types))
            except (AttributeError, TypeError, IndexError, ZeroDivisionError):
                return None
    return None


def node_flops(node: Node) -> int | None:
    """FLOPs per sample of one node (one layer call) of the IR."""
    return layer_flops(node.layer, [v.type for v in node.inputs], [v.type for v in node.outputs])


def graph_flops(graph: "Graph") -> tuple[list[int | None], int | None]:
    """Per-node counts (in ``graph.nodes`` order) and the total (``None`` if any is unknown)."""
    per = [node_flops(n) for n in graph.nodes]
    total = None if any(f is None for f in per) else sum(per)
    return per, total


def format_flops(n: int | None) -> str:
    """``1234567`` -> ``"1.23 MFLOPs"``, ``512`` -> ``"512 FLOPs"``; ``None`` -> ``"?"``."""
    if n is None:
        return "?"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}FLOPs"
    return f"{n} FLOPs"
