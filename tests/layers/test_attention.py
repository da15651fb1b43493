"""MultiHeadAttention, PositionEmbedding, TokenAndPositionEmbedding: onnxruntime against an independent
NumPy reference of Keras's (and keras_hub's) math, with weights set in Keras layout."""
import os

import numpy as np
import onnxruntime as ort
import pytest

import kdsl
from helpers import assert_close, check_export, run_layer
from kdsl import layers as L
from kdsl.errors import KdslError

RNG = np.random.default_rng(11)
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "transformer_text.kd")


# -- the reference: Keras 3's MultiHeadAttention, written out with einsum ------------------------------
def softmax(x, axis=-1):
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def mha_reference(query, value, key, weights, num_heads, key_dim, use_bias=True, mask=None):
    """Keras: project with EinsumDense (``abc,cde->abde``), scale the query by 1/sqrt(key_dim),
    ``einsum(aecd,abcd->acbe)`` dot product, masked softmax (masked logits -> -1e9), combine
    (``acbe,aecd->abcd``), output EinsumDense (``abcd,cde->abe``). ``mask``: bool [B, T, S]."""
    w = list(weights)
    if use_bias:
        wq, bq, wk, bk, wv, bv, wo, bo = w
    else:
        (wq, wk, wv, wo), bq = w, None
    q = np.einsum("btd,dnh->btnh", query, wq)
    k = np.einsum("bsd,dnh->bsnh", key, wk)
    v = np.einsum("bsd,dnh->bsnh", value, wv)
    if use_bias:
        q, k, v = q + bq, k + bk, v + bv
    q = q * (1.0 / np.sqrt(key_dim))
    scores = np.einsum("bsnh,btnh->bnts", k, q)
    if mask is not None:
        scores = np.where(mask[:, None], scores, -1e9)
    probs = softmax(scores)
    ctx = np.einsum("bnts,bsnh->btnh", probs, v)
    out = np.tensordot(ctx, wo, axes=([2, 3], [0, 1]))
    if use_bias:
        out = out + bo
    return out


def keras_weights(layer_shapes, scale=0.3):
    return [RNG.normal(scale=scale, size=s).astype("float32") for s in layer_shapes]


def shapes(layer):
    return [w.shape for w in layer.weights]


def run_mha(layer, inputs, call_args=None):
    """Like helpers.run_layer, with call arguments."""
    xs = [kdsl.Input(a.shape[1:], name=f"in{i}") for i, a in enumerate(inputs)]
    y = layer(xs, **(call_args or {}))
    m = kdsl.Model(xs, y)
    layer.set_weights(keras_weights(shapes(layer)))
    check_export(m)
    sess = ort.InferenceSession(m.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {f"in{i}": a for i, a in enumerate(inputs)})[0], m


# -- MultiHeadAttention ------------------------------------------------------------------------------------------
def test_self_attention_weights_in_keras_order_and_layout():
    x = RNG.normal(size=(3, 5, 8)).astype("float32")
    layer = L.MultiHeadAttention(num_heads=2, key_dim=4)
    layer([kdsl.Input((5, 8)), kdsl.Input((5, 8))])
    assert [w.name for w in layer.weights] == ["query/kernel", "query/bias", "key/kernel", "key/bias",
                                               "value/kernel", "value/bias", "attention_output/kernel",
                                               "attention_output/bias"]
    assert shapes(layer) == [(8, 2, 4), (2, 4), (8, 2, 4), (2, 4), (8, 2, 4), (2, 4), (2, 4, 8), (8,)]
    layer = L.MultiHeadAttention(num_heads=2, key_dim=4)
    weights = keras_weights([(8, 2, 4), (2, 4), (8, 2, 4), (2, 4), (8, 2, 4), (2, 4), (2, 4, 8), (8,)])
    y, model = run_layer(layer, [x, x], weights)
    assert_close(y, mha_reference(x, x, x, weights, 2, 4), rtol=1e-5, atol=1e-5)
    assert model.count_params() == 3 * (8 * 8 + 8) + 8 * 8 + 8


def test_cross_attention_with_key_value_dim_and_dims_that_differ():
    q = RNG.normal(size=(2, 3, 6)).astype("float32")
    v = RNG.normal(size=(2, 7, 5)).astype("float32")
    k = RNG.normal(size=(2, 7, 4)).astype("float32")
    layer = L.MultiHeadAttention(num_heads=3, key_dim=2, value_dim=5)
    y, _ = run_mha(layer, [q, v, k])
    assert shapes(layer) == [(6, 3, 2), (3, 2), (4, 3, 2), (3, 2), (5, 3, 5), (3, 5), (3, 5, 6), (6,)]
    assert y.shape == (2, 3, 6)
    assert_close(y, mha_reference(q, v, k, layer.get_weights(), 3, 2), rtol=1e-5, atol=1e-5)
    # [query, value]: the key is the value
    layer = L.MultiHeadAttention(num_heads=2, key_dim=3)
    y, _ = run_mha(layer, [q, v])
    assert_close(y, mha_reference(q, v, v, layer.get_weights(), 2, 3), rtol=1e-5, atol=1e-5)


def test_without_bias():
    x = RNG.normal(size=(2, 4, 6)).astype("float32")
    layer = L.MultiHeadAttention(num_heads=2, key_dim=3, use_bias=False)
    y, _ = run_mha(layer, [x, x])
    assert [w.name for w in layer.weights] == ["query/kernel", "key/kernel", "value/kernel",
                                               "attention_output/kernel"]
    assert_close(y, mha_reference(x, x, x, layer.get_weights(), 2, 3, use_bias=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output_shape,expect", [(10, (10,)), ([3, 4], (3, 4))])
def test_output_shape(output_shape, expect):
    q = RNG.normal(size=(2, 4, 6)).astype("float32")
    v = RNG.normal(size=(2, 5, 6)).astype("float32")
    layer = L.MultiHeadAttention(num_heads=2, key_dim=3, output_shape=output_shape)
    y, model = run_mha(layer, [q, v])
    assert layer.output_shape == expect
    assert shapes(layer)[-2:] == [(2, 3, *expect), expect]
    assert y.shape == (2, 4, *expect)
    assert_close(y, mha_reference(q, v, v, layer.get_weights(), 2, 3), rtol=1e-5, atol=1e-5)
    assert model.outputs[0].type.shape[1:] == (4, *expect)


def causal(t, s):
    return np.arange(t)[:, None] >= np.arange(s)[None, :]


@pytest.mark.parametrize("t,s", [(5, 5), (3, 6)])
def test_causal_mask(t, s):
    q = RNG.normal(size=(2, t, 4)).astype("float32")
    v = RNG.normal(size=(2, s, 4)).astype("float32")
    layer = L.MultiHeadAttention(num_heads=2, key_dim=2)
    y, model = run_mha(layer, [q, v], {"use_causal_mask": True})
    mask = np.broadcast_to(causal(t, s), (2, t, s))
    assert_close(y, mha_reference(q, v, v, layer.get_weights(), 2, 2, mask=mask), rtol=1e-5, atol=1e-5)
    # position 0 of a causal self-attention sees only itself: changing later steps leaves it unchanged
    if t == s:
        sess = ort.InferenceSession(model.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
        q2, v2 = q.copy(), v.copy()
        v2[:, 1:] += 1.0
        y2 = sess.run(None, {"in0": q2, "in1": v2})[0]
        assert_close(y2[:, 0], y[:, 0], rtol=1e-5, atol=1e-6)


def test_causal_mask_with_symbolic_steps():
    x = kdsl.Input(("seq", 4), name="x")
    layer = L.MultiHeadAttention(num_heads=2, key_dim=3)
    m = kdsl.Model(x, layer([x, x], use_causal_mask=True))
    check_export(m)
    for steps in (1, 4, 7):
        xs = RNG.normal(size=(2, steps, 4)).astype("float32")
        mask = np.broadcast_to(causal(steps, steps), (2, steps, steps))
        assert_close(m.predict(xs), mha_reference(xs, xs, xs, layer.get_weights(), 2, 3, mask=mask),
                     rtol=1e-5, atol=1e-5)


def masked_model(causal_mask=False):
    ids = kdsl.Input((6,), dtype="int64", name="ids")
    h = L.Embedding(12, 8, mask_zero=True)(ids)
    layer = L.MultiHeadAttention(num_heads=2, key_dim=4)
    y = layer([h, h], use_causal_mask=causal_mask) if causal_mask else layer([h, h])
    return kdsl.Model(ids, y), y


@pytest.mark.parametrize("causal_mask", [False, True])
def test_padding_mask_from_embedding_mask_zero(causal_mask):
    m, y = masked_model(causal_mask)
    assert y.mask is not None          # the output carries the query's mask (Keras)
    check_export(m)
    layer = m.get_layer("multi_head_attention")
    layer.set_weights(keras_weights(shapes(layer)))
    ids = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0], [0, 3, 0, 2, 0, 1]])
    h = m.get_layer("embedding").get_weights()[0][ids]
    present = ids != 0
    mask = present[:, :, None] & present[:, None, :]
    if causal_mask:
        mask = mask & causal(6, 6)
    expect = mha_reference(h, h, h, layer.get_weights(), 2, 4, mask=mask)
    assert_close(m.predict(ids), expect, rtol=1e-5, atol=1e-5)
    if not causal_mask:   # at unpadded positions: as if the padding were not there at all
        h0 = h[:1, :3]
        assert_close(m.predict(ids)[0, :3], mha_reference(h0, h0, h0, layer.get_weights(), 2, 4)[0],
                     rtol=1e-5, atol=1e-5)


def test_cross_attention_with_two_masks_and_masked_pooling_after():
    a = kdsl.Input((4,), dtype="int64", name="a")
    b = kdsl.Input((6,), dtype="int64", name="b")
    ha = L.Embedding(10, 6, mask_zero=True)(a)
    hb = L.Embedding(10, 6, mask_zero=True)(b)
    layer = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=2)
    y = layer([ha, hb])
    pooled = L.GlobalAveragePooling1D()(y)
    m = kdsl.Model([a, b], {"y": y, "pooled": pooled})
    check_export(m)
    layer.set_weights(keras_weights(shapes(layer)))
    ia = np.array([[1, 2, 0, 0], [3, 0, 0, 0], [4, 5, 6, 7]])
    ib = np.array([[1, 0, 2, 0, 0, 0], [3, 4, 5, 6, 7, 8], [9, 0, 0, 0, 0, 0]])
    ea, eb = m.get_layer("embedding").get_weights()[0][ia], m.get_layer("embedding_1").get_weights()[0][ib]
    mask = (ia != 0)[:, :, None] & (ib != 0)[:, None, :]
    expect = mha_reference(ea, eb, eb, layer.get_weights(), 2, 3, mask=mask)
    got = m.predict({"a": ia, "b": ib})
    assert_close(got[0], expect, rtol=1e-5, atol=1e-5)
    qm = (ia != 0)[..., None]
    assert_close(got[1], (expect * qm).sum(1) / qm.sum(1), rtol=1e-5, atol=1e-5)


def test_value_mask_only_and_key_mask():
    q = kdsl.Input((3, 6), name="q")
    ids = kdsl.Input((5,), dtype="int64", name="ids")
    hv = L.Embedding(10, 6, mask_zero=True)(ids)
    hk = L.Dense(4)(hv)                # passes the mask on: the key's mask
    layer = L.MultiHeadAttention(num_heads=2, key_dim=2)
    y = layer([q, hv, hk])
    assert y.mask is None              # the query has no mask
    m = kdsl.Model([q, ids], y)
    check_export(m)
    layer.set_weights(keras_weights(shapes(layer)))
    xq = RNG.normal(size=(2, 3, 6)).astype("float32")
    xi = np.array([[1, 2, 0, 3, 0], [4, 0, 0, 0, 0]])
    ev = m.get_layer("embedding").get_weights()[0][xi]
    kk, kb = m.get_layer("dense").get_weights()
    mask = np.broadcast_to((xi != 0)[:, None, :], (2, 3, 5))
    expect = mha_reference(xq, ev, ev @ kk + kb, layer.get_weights(), 2, 2, mask=mask)
    assert_close(m.predict({"q": xq, "ids": xi}), expect, rtol=1e-5, atol=1e-5)


def test_explicit_attention_mask():
    q = RNG.normal(size=(2, 3, 4)).astype("float32")
    v = RNG.normal(size=(2, 5, 4)).astype("float32")
    am = RNG.uniform(size=(2, 3, 5)) > 0.4
    am[:, :, 0] = True
    xs = [kdsl.Input((3, 4), name="q"), kdsl.Input((5, 4), name="v"), kdsl.Input((3, 5), dtype="bool", name="m")]
    layer = L.MultiHeadAttention(num_heads=2, key_dim=2)
    m = kdsl.Model(xs, layer([xs[0], xs[1], xs[1], xs[2]], use_causal_mask=True))
    check_export(m)
    layer.set_weights(keras_weights(shapes(layer)))
    expect = mha_reference(q, v, v, layer.get_weights(), 2, 2, mask=am & causal(3, 5))
    assert_close(m.predict({"q": q, "v": v, "m": am}), expect, rtol=1e-5, atol=1e-5)


def test_rank4_inputs_attend_over_both_middle_axes():
    x = RNG.normal(size=(2, 2, 3, 4)).astype("float32")
    layer = L.MultiHeadAttention(num_heads=2, key_dim=3, attention_axes=[1, 2])
    y, _ = run_mha(layer, [x, x])
    flat = x.reshape(2, 6, 4)
    expect = mha_reference(flat, flat, flat, layer.get_weights(), 2, 3).reshape(2, 2, 3, 4)
    assert_close(y, expect, rtol=1e-5, atol=1e-5)


def test_dropout_is_identity_in_inference_and_active_in_training():
    x = RNG.normal(size=(2, 4, 6)).astype("float32")
    layer = L.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.5)
    y, _ = run_mha(layer, [x, x])
    assert_close(y, mha_reference(x, x, x, layer.get_weights(), 2, 3), rtol=1e-5, atol=1e-5)
    xs = kdsl.Input((4, 6), name="x")
    att = L.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.5)
    m = kdsl.Model(xs, {"y": att([xs, xs])})
    xb = RNG.normal(size=(16, 4, 6)).astype("float32")
    yb = RNG.normal(size=(16, 4, 6)).astype("float32")
    m.compile(optimizer=kdsl.train.optimizers.SGD(0.0), loss="mse")
    h = m.fit(xb, yb, batch_size=16, epochs=1, shuffle=False, verbose=0)
    ev = m.evaluate(xb, yb, verbose=0)
    assert_close(ev, np.mean((mha_reference(xb, xb, xb, att.get_weights(), 2, 3) - yb) ** 2), rtol=1e-5)
    assert abs(h.history["loss"][0] - ev) > 1e-4      # the training pass dropped attention weights


def test_arguments_and_errors():
    layer = L.MultiHeadAttention(2, 4)
    assert layer.value_dim == 4 and layer.dropout == 0.0 and layer.output_shape is None
    assert layer.get_config()["kernel_initializer"] == "glorot_uniform"
    x = kdsl.Input((5, 8))
    with pytest.raises(KdslError, match="attention_axes"):
        L.MultiHeadAttention(2, 4, attention_axes=2)([x, x])
    L.MultiHeadAttention(2, 4, attention_axes=1)([x, x])        # Keras's default, written out
    L.MultiHeadAttention(2, 4, attention_axes=-2)([x, x])
    with pytest.raises(KdslError, match="attention_axes"):
        L.MultiHeadAttention(2, 4, attention_axes="time")
    with pytest.raises(KdslError, match="num_heads"):
        L.MultiHeadAttention(0, 4)
    with pytest.raises(KdslError, match="dropout"):
        L.MultiHeadAttention(2, 4, dropout=1.5)
    with pytest.raises(KdslError, match="output_shape"):
        L.MultiHeadAttention(2, 4, output_shape=[0])
    with pytest.raises(KdslError, match="list of tensors"):
        L.MultiHeadAttention(2, 4)(x)
    with pytest.raises(KdslError, match="Received: 1 tensors|Received: 5 tensors"):
        L.MultiHeadAttention(2, 4)([x, x, x, x, x])
    with pytest.raises(KdslError, match="value` and `key`"):
        L.MultiHeadAttention(2, 4)([x, x, kdsl.Input((6, 8))])
    with pytest.raises(KdslError, match="rank >= 3"):
        L.MultiHeadAttention(2, 4)([kdsl.Input((8,)), kdsl.Input((8,))])
    with pytest.raises(KdslError, match="call argument"):
        L.MultiHeadAttention(2, 4)([x, x], causal=True)
    with pytest.raises(KdslError, match="use_causal_mask"):
        L.MultiHeadAttention(2, 4)([x, x], use_causal_mask="yes")
    with pytest.raises(KdslError, match="attention_mask"):
        L.MultiHeadAttention(2, 4)([x, x, x, kdsl.Input((5, 4), dtype="bool")])
    ids = kdsl.Input((3, 4), dtype="int64")
    h = L.Embedding(10, 4, mask_zero=True)(ids)
    with pytest.raises(KdslError, match="masked inputs"):
        L.MultiHeadAttention(2, 4)([h, h])
    shared = L.MultiHeadAttention(2, 4)
    shared([x, x])
    with pytest.raises(KdslError, match="built for a query"):
        shared([kdsl.Input((5, 6)), x])


def test_shared_instance_and_kd_language():
    src = """
model enc {
    input ids: int64[seq]
    x = ids -> Embedding(50, 8, mask_zero=true)
    layer att = MultiHeadAttention(num_heads=2, key_dim=4)
    a = att([x, x], use_causal_mask=true)
    b = att([a, x])
    output y = b -> GlobalAveragePooling1D()
}
"""
    m = kdsl.loads(src)
    check_export(m)
    assert len(m.get_layer("att").weights) == 8
    ids = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
    emb = m.get_layer("embedding").get_weights()[0][ids]
    w = m.get_layer("att").get_weights()
    present = ids != 0
    pad = present[:, :, None] & present[:, None, :]
    a = mha_reference(emb, emb, emb, w, 2, 4, mask=pad & causal(4, 4))
    b = mha_reference(a, emb, emb, w, 2, 4, mask=pad)
    pm = present[..., None]
    assert_close(m.predict(ids), (b * pm).sum(1) / pm.sum(1), rtol=1e-5, atol=1e-5)


def test_to_kd_round_trip_with_call_arguments():
    ids = kdsl.Input((7,), dtype="int64", name="ids")
    h = L.TokenAndPositionEmbedding(30, 7, 8, mask_zero=True)(ids)
    a = L.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3, dropout=0.1, output_shape=8)([h, h],
                                                                                              use_causal_mask=True)
    h = L.LayerNormalization()(h + a)
    c = L.MultiHeadAttention(2, 4, use_bias=False)([h, h])
    out = L.Dense(2, activation="softmax")(L.GlobalAveragePooling1D()(c))
    m = kdsl.Model(ids, out)
    text = m.to_kd()
    assert "use_causal_mask=true" in text and "MultiHeadAttention(" in text
    again = kdsl.loads(text)
    again.set_weights(m.get_weights())
    x = RNG.integers(0, 30, size=(4, 7))
    x[:, 5:] = 0
    assert_close(again.predict(x), m.predict(x), rtol=1e-6, atol=1e-6)
    assert [w.name for w in again.get_layer("multi_head_attention").weights] == \
        [w.name for w in m.get_layer("multi_head_attention").weights]


# -- PositionEmbedding / TokenAndPositionEmbedding -------------------------------------------------------------
@pytest.mark.parametrize("steps", [6, 4])
def test_position_embedding_returns_positions_broadcast_to_the_input(steps):
    x = RNG.normal(size=(3, steps, 5)).astype("float32")
    layer = L.PositionEmbedding(sequence_length=6)
    table = RNG.normal(size=(6, 5)).astype("float32")
    y, _ = run_layer(layer, x, [table])
    assert [w.name for w in layer.weights] == ["embeddings"]
    assert_close(y, np.broadcast_to(table[:steps], x.shape))


def test_position_embedding_symbolic_steps_and_errors():
    x = kdsl.Input(("seq", 5), name="x")
    layer = L.PositionEmbedding(8)
    m = kdsl.Model(x, x + layer(x))
    check_export(m)
    table = layer.get_weights()[0]
    for steps in (1, 5, 8):
        xs = RNG.normal(size=(2, steps, 5)).astype("float32")
        assert_close(m.predict(xs), xs + table[:steps])
    assert L.PositionEmbedding(4).initializer == "glorot_uniform"
    with pytest.raises(KdslError, match="sequence_length"):
        L.PositionEmbedding(4)(kdsl.Input((6, 5)))
    with pytest.raises(KdslError, match="steps, features"):
        L.PositionEmbedding(4)(kdsl.Input((5,)))


@pytest.mark.parametrize("steps", [5, 3, "seq"])
def test_token_and_position_embedding(steps):
    ids_in = kdsl.Input((steps,), dtype="int64", name="ids")
    layer = L.TokenAndPositionEmbedding(vocabulary_size=20, sequence_length=5, embedding_dim=4, mask_zero=True)
    y = layer(ids_in)
    assert y.mask is not None
    m = kdsl.Model(ids_in, {"y": y, "pooled": L.GlobalAveragePooling1D()(y)})
    check_export(m)
    assert [w.name for w in layer.weights] == ["token_embedding/embeddings", "position_embedding/embeddings"]
    tok, pos = RNG.normal(size=(20, 4)).astype("float32"), RNG.normal(size=(5, 4)).astype("float32")
    layer.set_weights([tok, pos])
    n = 3 if steps == "seq" else steps
    ids = RNG.integers(1, 20, size=(3, n))
    ids[0, 1:] = 0
    expect = tok[ids] + pos[:n]
    got = m.predict(ids)
    assert_close(got[0], expect)
    present = (ids != 0)[..., None]
    assert_close(got[1], (expect * present).sum(1) / present.sum(1))


def test_token_and_position_embedding_defaults_and_errors():
    layer = L.TokenAndPositionEmbedding(100, 16, 8)
    assert layer.embeddings_initializer == "uniform" and layer.mask_zero is False
    assert layer(kdsl.Input((16,), dtype="int32")).mask is None
    with pytest.raises(KdslError, match="sequence_length"):
        L.TokenAndPositionEmbedding(100, 4, 8)(kdsl.Input((16,), dtype="int64"))
    with pytest.raises(KdslError, match="embedding_dim"):
        L.TokenAndPositionEmbedding(100, 4, 0)


# -- the example --------------------------------------------------------------------------------------------------
def test_transformer_example_compiles_runs_and_trains(tmp_path):
    from kdsl.cli import main

    assert main(["compile", EXAMPLE, "-o", str(tmp_path)]) == 0
    m = kdsl.load(EXAMPLE)
    assert m.train_config is not None
    check_export(m)
    kinds = {type(layer).__name__ for layer in m.layers}
    assert {"TokenAndPositionEmbedding", "MultiHeadAttention", "LayerNormalization",
            "GlobalAveragePooling1D"} <= kinds
    scoped = [layer.name for layer in m.layers if isinstance(layer, L.MultiHeadAttention)]
    assert scoped and all("/" in name for name in scoped)      # inside a block scope
    rng = np.random.default_rng(0)
    seq = 12
    x = rng.integers(1, 50, size=(96, seq))
    x[rng.uniform(size=x.shape) < 0.2] = 0                       # some padding
    y = (x[:, :4] % 2).sum(1) >= 2                               # a learnable label
    m.compile(optimizer=kdsl.train.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    before = m.evaluate(x, y.astype("int64"), verbose=0)
    before = before[0] if isinstance(before, list) else before
    h = m.fit(x, y.astype("int64"), batch_size=32, epochs=6, verbose=0, shuffle=False)
    losses = h.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    probs = m.predict(x[:5])
    assert probs.shape == (5, 2)
    assert_close(probs.sum(1), np.ones(5), rtol=1e-5, atol=1e-5)


def test_flops_per_sample():
    from kdsl.flops import node_flops

    q, v = kdsl.Input((3, 6), name="q"), kdsl.Input((5, 4), name="v")
    layer = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=4, output_shape=7)
    m = kdsl.Model([q, v], layer([q, v]))
    node = next(n for n in m.graph.nodes if n.layer is layer)
    proj = 2 * 2 * (3 * 6 * 3 + 5 * 4 * 3 + 5 * 4 * 4)
    attend = 2 * 3 * 3 + 2 * 2 * 3 * 5 * 3 + 3 * 2 * 3 * 5 + 2 * 2 * 3 * 5 * 4
    assert node_flops(node) == proj + attend + 2 * 3 * 2 * 4 * 7
    ids = kdsl.Input(("seq",), dtype="int64")
    h = L.TokenAndPositionEmbedding(10, 8, 4)(ids)
    assert node_flops(h.node) is None                  # symbolic steps
    ids = kdsl.Input((6,), dtype="int64")
    h = L.TokenAndPositionEmbedding(10, 8, 4)(ids)
    assert node_flops(h.node) == 6 * 4
    assert node_flops(L.PositionEmbedding(8)(h).node) == 0
