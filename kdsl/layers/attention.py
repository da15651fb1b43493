"""Attention and position layers: MultiHeadAttention, PositionEmbedding, TokenAndPositionEmbedding.

``MultiHeadAttention`` follows Keras 3 (arguments, weight names, order and layouts, the
attention mask derived from the inputs' implicit masks and ``use_causal_mask``);
``PositionEmbedding`` and ``TokenAndPositionEmbedding`` follow keras_hub's layers of the
same names. All lower to plain ONNX (``MatMul``/``Reshape``/``Transpose``/``Softmax``/
``Where``/``Gather``), which the op-level autodiff differentiates for training graphs.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import KdslError
from ..ir import TensorType, Value
from ..lower import autodiff_attention  # noqa: F401  (the VJP rules these layers' ops need)
from ..lower.context import CL
from .args import ArgError, check_int, check_rate
from .base import Layer, ShapeError, register
from .core import _salt, dropout_mask
from .embedding import ids_mask

__all__ = ["MultiHeadAttention", "PositionEmbedding", "TokenAndPositionEmbedding"]

#: what Keras adds to (here: puts in place of) masked attention logits in float32
LARGE_NEGATIVE = -1e9


def _compatible(a, b) -> bool:
    """Two dims that may meet in a broadcast: equal, or one of them 1."""
    return a == b or a == 1 or b == 1


def _lowered(ctx, v: Value) -> str:
    """``v`` in ONNX (channels-last); lowers its producer on demand if the graph walk did not.

    ``Graph.trace`` follows a node's ``mask`` (the first input mask); a cross-attention whose
    query and value carry different masks needs the second one too. Mask producers are
    weightless ops (``Embedding``'s ``ids != 0``) over values already lowered.
    """
    try:
        return ctx.get(v, CL)
    except KeyError:
        pass
    node = v.node
    if node is None or node.layer.weights:
        raise KdslError("Internal: a mask read by MultiHeadAttention was not lowered.", v.span)
    for i in node.inputs:
        _lowered(ctx, i)
    if node.mask is not None:
        _lowered(ctx, node.mask)
    with ctx.e.scope(node.layer.name or "mask"):
        results = node.layer.lower(ctx, node)
    if not isinstance(results, list):
        results = [results]
    for out, r in zip(node.outputs, results):
        name, layout = (r, CL) if isinstance(r, str) else r
        ctx.place(out, name, layout)
    return ctx.get(v, CL)


def _bool(ctx, v: Value) -> str:
    x = _lowered(ctx, v)
    return x if v.type.dtype == "bool" else ctx.e.cast(x, "bool")


@register
class MultiHeadAttention(Layer):
    """Multi-head attention (Vaswani et al., 2017), as ``keras.layers.MultiHeadAttention``.

    Called on a list: ``[query, value]``, ``[query, value, key]`` (``key`` defaults to
    ``value``) or ``[query, value, key, attention_mask]``. The query, key and value are
    projected to ``num_heads`` heads, the scaled (``1/sqrt(key_dim)``) dot products of
    queries and keys are softmaxed over the keys (masked positions get a large negative
    logit), optionally dropped out in training, and weight the values; the heads are
    projected back to ``output_shape`` (default: the query's last axis).

    Args:
        num_heads: number of attention heads.
        key_dim: size of each head for query and key.
        value_dim: size of each head for value (default ``key_dim``).
        dropout: dropout rate on the attention probabilities (training only).
        use_bias: whether the projections have biases.
        output_shape: int or list of ints, the output's trailing shape (default: the
            query's last axis).
        attention_axes: only ``None`` (attention over every axis between the batch and the
            features, as Keras's default) or an equivalent explicit value.
        kernel_initializer, bias_initializer: initializer names.
        seed: optional int seed for the dropout.

    Call argument ``use_causal_mask`` (default false): whether query position ``i`` may attend
    to key positions ``j <= i`` only (decoder self-attention), e.g.
    ``MultiHeadAttention(num_heads=2, key_dim=16)([x, x], use_causal_mask=true)``.

    Masks (Keras's rule): the query's implicit mask (``Embedding(mask_zero=True)``) masks
    rows ``[B, T, 1]``, the value's (and key's) mask columns ``[B, 1, S]``, the causal mask
    ``[1, T, S]``; with the explicit ``attention_mask`` (``[B, T, S]``, true or non-zero =
    attend) they are combined with a logical and. The output carries the query's mask.

    Input shapes: query ``(batch, T, dim_q)``, value ``(batch, S, dim_v)``, key ``(batch,
    S, dim_k)``; inputs of rank > 3 attend over all their middle axes jointly (without masks).
    Output shape: ``(batch, T, *output_shape)``.
    Weights (Keras order): ``query/kernel [dim_q, num_heads, key_dim]``, ``query/bias
    [num_heads, key_dim]``, ``key/kernel [dim_k, num_heads, key_dim]``, ``key/bias``,
    ``value/kernel [dim_v, num_heads, value_dim]``, ``value/bias [num_heads, value_dim]``,
    ``attention_output/kernel [num_heads, value_dim, *output_shape]``,
    ``attention_output/bias [*output_shape]`` (biases only with ``use_bias``).
    """

    arity = "list"
    supports_masking = True
    uses_mask = True
    call_arguments = {"use_causal_mask": False}

    def __init__(self, num_heads: int, key_dim: int, value_dim: int | None = None, dropout: float = 0.0,
                 use_bias: bool = True, output_shape=None, attention_axes=None,
                 kernel_initializer: str = "glorot_uniform", bias_initializer: str = "zeros",
                 seed: int | None = None, name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self.num_heads = check_int(num_heads, "num_heads")
        self.key_dim = check_int(key_dim, "key_dim")
        self.value_dim = check_int(value_dim, "value_dim") if value_dim else self.key_dim
        self.dropout = check_rate(dropout, "dropout")
        self.use_bias = bool(use_bias)
        if output_shape is None or output_shape == [] or output_shape == ():
            self.output_shape = None
        else:
            dims = [output_shape] if isinstance(output_shape, int) and not isinstance(output_shape, bool) \
                else output_shape
            if not isinstance(dims, (list, tuple)) or not dims or not all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
                raise ArgError("The `output_shape` argument of MultiHeadAttention must be a positive int or a "
                               f"list of positive ints. Received: output_shape={output_shape!r}", "output_shape")
            self.output_shape = tuple(dims)
        if attention_axes is not None:
            axes = [attention_axes] if isinstance(attention_axes, int) and not isinstance(attention_axes, bool) \
                else attention_axes
            if not isinstance(axes, (list, tuple)) or not axes or not all(
                    isinstance(a, int) and not isinstance(a, bool) for a in axes):
                raise ArgError("The `attention_axes` argument of MultiHeadAttention must be None, an int or a "
                               f"list of ints. Received: attention_axes={attention_axes!r}", "attention_axes")
            attention_axes = list(axes) if isinstance(attention_axes, (list, tuple)) else attention_axes
        self.attention_axes = attention_axes
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        self.seed = seed

    def __call__(self, inputs, span=None, **call_args):
        if isinstance(inputs, (list, tuple)) and 2 <= len(inputs) <= 4 and all(isinstance(v, Value) for v in inputs):
            masked = [w for w, v in zip(("query", "value", "key"), inputs[:3]) if v.mask is not None]
            if masked and inputs[0].type.rank != 3:
                from .base import python_call_site

                raise ShapeError(f"MultiHeadAttention supports masked inputs (here the {masked[0]}'s mask, from "
                                 "Embedding(mask_zero=True)) only for (batch, steps, features) inputs. Received: "
                                 f"query shape {inputs[0].type.shape_str()}", span or python_call_site())
        return super().__call__(inputs, span=span, **call_args)

    # -- shapes and weights ------------------------------------------------------------------
    def _split(self, input_types):
        n = len(input_types)
        if not 2 <= n <= 4:
            raise ShapeError("MultiHeadAttention is called on [query, value], [query, value, key] or "
                             f"[query, value, key, attention_mask]. Received: {n} tensors.")
        q, v = input_types[0], input_types[1]
        k = input_types[2] if n > 2 else v
        m = input_types[3] if n > 3 else None
        return q, v, k, m

    def _check_axes(self, rank: int) -> None:
        if self.attention_axes is None:
            return
        given = self.attention_axes if isinstance(self.attention_axes, list) else [self.attention_axes]
        # Keras normalises a < 0 against the projected rank (rank + 1) as (rank + 1 - 1) + a
        norm = sorted(a if a >= 0 else rank + a for a in given)
        if norm != list(range(1, rank - 1)):
            raise ArgError("MultiHeadAttention supports only its default attention_axes (attention over every "
                           f"axis between the batch and the features, here {list(range(1, rank - 1))}). "
                           f"Received: attention_axes={self.attention_axes!r}", "attention_axes",
                           hint="leave attention_axes unset")

    def _check_inputs(self, input_types):
        q, v, k, m = self._split(input_types)
        for what, t in (("query", q), ("value", v), ("key", k)):
            if not t.is_float:
                raise ShapeError(f"The {what} of MultiHeadAttention must be a float tensor. Received: {t}")
            if t.rank < 3:
                raise ShapeError(f"The {what} of MultiHeadAttention must have rank >= 3, (batch, steps, "
                                 f"features). Received: {what} shape {t.shape_str()}")
            if not isinstance(t.shape[-1], int):
                raise ShapeError(f"The last axis of the {what} of MultiHeadAttention must have a known size. "
                                 f"Received: {what} shape {t.shape_str()}")
        if not q.rank == v.rank == k.rank:
            raise ShapeError("The query, value and key of MultiHeadAttention must have the same rank. Received: "
                             f"query {q.shape_str()}, value {v.shape_str()}, key {k.shape_str()}")
        if v.shape[1:-1] != k.shape[1:-1]:
            raise ShapeError("All dimensions of `value` and `key`, except the last one, must be equal. "
                             f"Received: value shape {v.shape_str()} and key shape {k.shape_str()}")
        self._check_axes(q.rank)
        return q, v, k, m

    def build(self, input_types):
        q, v, k, _ = self._check_inputs(input_types)
        n, kd, vd = self.num_heads, self.key_dim, self.value_dim
        out = self.output_shape or (q.shape[-1],)
        kinit, binit = self.kernel_initializer, self.bias_initializer
        for prefix, t, size in (("query", q, kd), ("key", k, kd), ("value", v, vd)):
            self.add_weight(f"{prefix}/kernel", (t.shape[-1], n, size), kinit)
            if self.use_bias:
                self.add_weight(f"{prefix}/bias", (n, size), binit)
        self.add_weight("attention_output/kernel", (n, vd, *out), kinit)
        if self.use_bias:
            self.add_weight("attention_output/bias", out, binit)

    def _w(self, wname: str):
        return next(w for w in self.weights if w.name == wname)

    def compute_output_types(self, input_types):
        q, v, k, m = self._check_inputs(input_types)
        for prefix, t in (("query", q), ("key", k), ("value", v)):
            want = self._w(f"{prefix}/kernel").shape[0]
            if t.shape[-1] != want:
                raise ShapeError(f"MultiHeadAttention '{self.display_name()}' was built for a {prefix} whose last "
                                 f"axis is {want}. Received: {prefix} shape {t.shape_str()}")
        causal = self._call_args.get("use_causal_mask", False)
        if not isinstance(causal, bool):
            raise ArgError("The call argument `use_causal_mask` of MultiHeadAttention must be true or false. "
                           f"Received: use_causal_mask={causal!r}", "use_causal_mask")
        if causal and q.rank != 3:
            raise ShapeError("use_causal_mask=true needs (batch, steps, features) inputs. Received: query shape "
                             f"{q.shape_str()}")
        if m is not None:
            if q.rank != 3:
                raise ShapeError("An attention_mask needs (batch, steps, features) inputs. Received: query shape "
                                 f"{q.shape_str()}")
            if m.rank != 3 or not _compatible(m.shape[1], q.shape[1]) or not _compatible(m.shape[2], v.shape[1]):
                raise ShapeError("The attention_mask of MultiHeadAttention must have shape (batch, T, S), with T "
                                 f"the query's steps and S the value's. Received: attention_mask shape "
                                 f"{m.shape_str()} for query {q.shape_str()} and value {v.shape_str()}")
        out = self._w("attention_output/kernel").shape[2:]
        return [TensorType(self.dtype, q.shape[:-1] + tuple(out))]

    def compute_mask(self, inputs, mask):
        return inputs[0].mask     # Keras: the output carries the query's mask

    def flops(self, input_types, output_types):
        """Per sample: the projections, scores, softmax (3 per score), weighting and output projection."""
        q, v, k, _ = self._split(input_types)
        t, s = math.prod(q.shape[1:-1]) if all(isinstance(d, int) for d in q.shape[1:-1]) else None, \
            math.prod(v.shape[1:-1]) if all(isinstance(d, int) for d in v.shape[1:-1]) else None
        if t is None or s is None:
            return None
        n, kd, vd = self.num_heads, self.key_dim, self.value_dim
        out = math.prod(self._w("attention_output/kernel").shape[2:])
        proj = 2 * n * (t * q.shape[-1] * kd + s * k.shape[-1] * kd + s * v.shape[-1] * vd)
        attend = n * t * kd + 2 * n * t * s * kd + 3 * n * t * s + 2 * n * t * s * vd
        return proj + attend + 2 * t * n * vd * out

    # -- lowering ------------------------------------------------------------------------------
    def _project(self, ctx, x: str, prefix: str, d_in: int, size: int) -> str:
        """``einsum("btd,dnh->btnh") + bias`` as one MatMul on ``[d_in, heads * size]``."""
        e, n = ctx.e, self.num_heads
        y = e.op("MatMul", [x, e.reshape(ctx.weight(self, f"{prefix}/kernel"), [d_in, n * size])])
        if self.use_bias:
            y = e.op("Add", [y, e.reshape(ctx.weight(self, f"{prefix}/bias"), [n * size])])
        return e.reshape(y, [0, 0, n, size])                              # [B, T, N, size]

    def _attention_mask(self, ctx, node, q_t, v_t) -> str | None:
        """The combined bool mask ``[B|1, T|1, S|1]`` (None when nothing is masked)."""
        e = ctx.e
        ins = node.inputs
        parts = []
        qm = ins[0].mask
        vm = ins[1].mask
        km = ins[2].mask if len(ins) > 2 else None
        if km is not None and km is vm:
            km = None
        if q_t.rank != 3 and any(m is not None for m in (qm, vm, km)):
            raise ShapeError("Internal: masked MultiHeadAttention inputs of rank > 3.", node.span)
        if qm is not None:
            parts.append(e.unsqueeze(_bool(ctx, qm), [2]))                 # [B, T, 1]
        for m in (vm, km):
            if m is not None:
                parts.append(e.unsqueeze(_bool(ctx, m), [1]))              # [B, 1, S]
        if node.call_args.get("use_causal_mask"):
            parts.append(self._causal(ctx, ins[0], ins[1]))                # [1, T, S]
        if len(ins) > 3:
            parts.append(_bool(ctx, ins[3]))                               # [B, T, S]
        if not parts:
            return None
        mask = parts[0]
        for p in parts[1:]:
            mask = e.op("And", [mask, p])
        return mask

    def _causal(self, ctx, q: Value, v: Value) -> str:
        e = ctx.e
        t, s = q.type.shape[1], v.type.shape[1]
        if isinstance(t, int) and isinstance(s, int):
            rows = np.arange(t)[:, None]
            cols = np.arange(s)[None, :]
            return e.const((rows >= cols)[None], hint="causal_mask")
        zero, one = e.const(np.asarray(0, np.int64)), e.const(np.asarray(1, np.int64))

        def steps(x):
            return e.op("Squeeze", [e.op("Shape", [ctx.get(x, CL)], start=1, end=2)])

        rows = e.unsqueeze(e.op("Range", [zero, steps(q), one]), [1])        # [T, 1]
        cols = e.unsqueeze(e.op("Range", [zero, steps(v), one]), [0])        # [1, S]
        return e.unsqueeze(e.op("GreaterOrEqual", [rows, cols]), [0])        # [1, T, S]

    def lower(self, ctx, node):
        e = ctx.e
        ins = node.inputs
        q_v, v_v = ins[0], ins[1]
        k_v = ins[2] if len(ins) > 2 else v_v
        n, kd, vd = self.num_heads, self.key_dim, self.value_dim
        q_t = q_v.type
        q = ctx.input_as(q_v, self.dtype, CL)
        v = ctx.input_as(v_v, self.dtype, CL)
        k = v if k_v is v_v else ctx.input_as(k_v, self.dtype, CL)
        d_q, d_v, d_k = q_t.shape[-1], v_v.type.shape[-1], k_v.type.shape[-1]
        q_in = q
        if q_t.rank > 3:      # attend over all middle axes jointly: flatten them into one
            q, v = e.reshape(q, [0, -1, d_q]), e.reshape(v, [0, -1, d_v])
            k = v if k_v is v_v else e.reshape(k, [0, -1, d_k])
        query = self._project(ctx, q, "query", d_q, kd)                      # [B, T, N, K]
        key = self._project(ctx, k, "key", d_k, kd)                          # [B, S, N, K]
        value = self._project(ctx, v, "value", d_v, vd)                      # [B, S, N, Hv]
        query = e.op("Mul", [query, e.scalar(1.0 / math.sqrt(float(kd)), self.dtype)])
        scores = e.op("MatMul", [e.transpose(query, [0, 2, 1, 3]), e.transpose(key, [0, 2, 3, 1])])  # [B,N,T,S]
        mask = self._attention_mask(ctx, node, q_t, v_v.type)
        if mask is not None:
            mask = e.unsqueeze(mask, [1])                                   # [B|1, 1, T|1, S|1]
            scores = e.op("Where", [mask, scores, e.scalar(LARGE_NEGATIVE, self.dtype)])
        probs = e.op("Softmax", [scores], axis=-1)
        if ctx.training and self.dropout > 0.0:
            probs = e.op("Mul", [probs, dropout_mask(e, e.op("Shape", [probs]), ctx.step, _salt(self),
                                                     self.dropout)])
        ctx_v = e.op("MatMul", [probs, e.transpose(value, [0, 2, 1, 3])])   # [B, N, T, Hv]
        ctx_v = e.reshape(e.transpose(ctx_v, [0, 2, 1, 3]), [0, 0, n * vd])  # [B, T, N*Hv]
        out = self._w("attention_output/kernel").shape[2:]
        size = int(np.prod(out))
        y = e.op("MatMul", [ctx_v, e.reshape(ctx.weight(self, "attention_output/kernel"), [n * vd, size])])
        if self.use_bias:
            y = e.op("Add", [y, e.reshape(ctx.weight(self, "attention_output/bias"), [size])])
        if q_t.rank > 3:
            lead = e.op("Shape", [q_in], start=0, end=-1)
            y = e.op("Reshape", [y, e.op("Concat", [lead, e.ints(out)], axis=0)])
        elif len(out) > 1:
            y = e.reshape(y, [0, 0, *out])
        return y


def _position_table(ctx, layer: Layer, wname: str, steps_of: str, steps, length: int) -> str:
    """The first ``steps`` rows of ``layer``'s ``[length, dim]`` table (``steps`` symbolic:
    read from ``steps_of``'s shape at run time, a ``Gather`` of ``range(steps)``)."""
    e = ctx.e
    table = ctx.weight(layer, wname)
    if isinstance(steps, int):
        if steps == length:
            return table
        return e.op("Slice", [table, e.ints([0]), e.ints([steps]), e.ints([0])])
    n = e.op("Squeeze", [steps_of])
    idx = e.op("Range", [e.const(np.asarray(0, np.int64)), n, e.const(np.asarray(1, np.int64))])
    return e.op("Gather", [table, idx], axis=0)


def _check_steps(layer: Layer, steps, length: int, shape_str: str) -> None:
    if isinstance(steps, int) and steps > length:
        raise ShapeError(f"{type(layer).__name__} '{layer.display_name()}' has sequence_length={length}, fewer "
                         f"positions than the input's {steps} steps. Received: input shape {shape_str}",
                         hint=f"use sequence_length >= {steps}")


@register
class PositionEmbedding(Layer):
    """A learned position embedding, as ``keras_hub.layers.PositionEmbedding``.

    Returns the embeddings of positions ``0 .. steps-1`` broadcast to the input's shape
    (the input's values are not used); add it to the input yourself, as in keras_hub:
    ``x + PositionEmbedding(seq_len)(x)``. The sequence axis is the second-to-last axis;
    inputs may be shorter than ``sequence_length`` (a symbolic number of steps is read at
    run time; more steps than ``sequence_length`` is an error).

    Args:
        sequence_length: the maximum number of positions.
        initializer: initializer name for the embeddings (default ``glorot_uniform``).

    Input shape: ``(batch, ..., steps, features)``, rank >= 3. Output shape: as the input.
    Weights: ``embeddings [sequence_length, features]``.
    """

    def __init__(self, sequence_length: int, initializer: str = "glorot_uniform", name: str | None = None,
                 trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self.sequence_length = check_int(sequence_length, "sequence_length")
        self.initializer = initializer

    def _check(self, t: TensorType) -> None:
        if t.rank < 3:
            raise ShapeError("PositionEmbedding needs an input of shape (batch, steps, features). Received: "
                             f"input shape {t.shape_str()}")
        if not isinstance(t.shape[-1], int):
            raise ShapeError("The last axis of the input of PositionEmbedding must have a known size. Received: "
                             f"input shape {t.shape_str()}")
        _check_steps(self, t.shape[-2], self.sequence_length, t.shape_str())

    def build(self, input_types):
        t = input_types[0]
        self._check(t)
        self.add_weight("embeddings", (self.sequence_length, t.shape[-1]), self.initializer)

    def compute_output_types(self, input_types):
        t = input_types[0]
        self._check(t)
        dim = self.weights[0].shape[1]
        if t.shape[-1] != dim:
            raise ShapeError(f"PositionEmbedding '{self.display_name()}' was built for {dim} features. "
                             f"Received: input shape {t.shape_str()}")
        return [TensorType(self.dtype, t.shape)]

    def flops(self, input_types, output_types):
        return 0                  # a lookup broadcast: moving data

    def lower(self, ctx, node):
        e = ctx.e
        v = node.inputs[0]
        x = ctx.get(v, CL)
        steps = e.op("Shape", [x], start=-2, end=-1) if not isinstance(v.type.shape[-2], int) else None
        pos = _position_table(ctx, self, "embeddings", steps, v.type.shape[-2], self.sequence_length)
        return e.op("Expand", [pos, e.op("Shape", [x])])


@register
class TokenAndPositionEmbedding(Layer):
    """Token embedding plus learned position embedding, as keras_hub's ``TokenAndPositionEmbedding``.

    ``embeddings[ids] + position_embeddings[:steps]``, the sequence axis being the last axis of
    the ids.

    Args:
        vocabulary_size: size of the vocabulary (largest id + 1).
        sequence_length: the maximum number of positions.
        embedding_dim: size of the embeddings.
        embeddings_initializer: initializer of both tables (default ``uniform``, as keras_hub).
        mask_zero: whether id 0 is padding: the output then carries the mask ``ids != 0``
            (as ``Embedding(mask_zero=True)``).

    Input shape: ``(batch, ..., steps)`` of ids (int32/int64; others are cast to int64).
    Output shape: ``(batch, ..., steps, embedding_dim)``, float32.
    Weights (keras_hub order): ``token_embedding/embeddings [vocabulary_size, embedding_dim]``,
    ``position_embedding/embeddings [sequence_length, embedding_dim]``.
    """

    def __init__(self, vocabulary_size: int, sequence_length: int, embedding_dim: int,
                 embeddings_initializer: str = "uniform", mask_zero: bool = False, name: str | None = None,
                 trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self.vocabulary_size = check_int(vocabulary_size, "vocabulary_size")
        self.sequence_length = check_int(sequence_length, "sequence_length")
        self.embedding_dim = check_int(embedding_dim, "embedding_dim")
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = bool(mask_zero)

    def compute_mask(self, inputs, mask):
        return ids_mask(inputs[0]) if self.mask_zero else None

    def _check(self, t: TensorType) -> None:
        if t.rank < 2:
            raise ShapeError("TokenAndPositionEmbedding needs ids of shape (batch, steps). Received: input shape "
                             f"{t.shape_str()}")
        _check_steps(self, t.shape[-1], self.sequence_length, t.shape_str())

    def build(self, input_types):
        self._check(input_types[0])
        self.add_weight("token_embedding/embeddings", (self.vocabulary_size, self.embedding_dim),
                        self.embeddings_initializer)
        self.add_weight("position_embedding/embeddings", (self.sequence_length, self.embedding_dim),
                        self.embeddings_initializer)

    def compute_output_types(self, input_types):
        t = input_types[0]
        self._check(t)
        return [TensorType(self.dtype, t.shape + (self.embedding_dim,))]

    def flops(self, input_types, output_types):
        t = output_types[0]       # lookups are free; the addition is one per output element
        return math.prod(t.shape[1:]) if all(isinstance(d, int) for d in t.shape[1:]) else None

    def lower(self, ctx, node):
        e = ctx.e
        v = node.inputs[0]
        ids = ctx.get(v, CL)
        if not v.type.is_int:
            ids = e.cast(ids, "int64")
        tokens = e.op("Gather", [ctx.weight(self, "token_embedding/embeddings"), ids], axis=0)
        steps = e.op("Shape", [ids], start=-1) if not isinstance(v.type.shape[-1], int) else None
        pos = _position_table(ctx, self, "position_embedding/embeddings", steps, v.type.shape[-1],
                              self.sequence_length)
        return e.op("Add", [tokens, pos])
