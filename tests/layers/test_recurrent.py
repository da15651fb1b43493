"""SimpleRNN, LSTM, GRU and Bidirectional against an independent NumPy transcription of Keras 3's
equations (weights given in Keras layout through set_weights), for the inference model (ONNX's
fused RNN ops, or the unrolled fallback) and the training-mode forward (unrolled)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kdsl
from helpers import assert_close, check_export
from kdsl import layers as L
from kdsl.errors import KdslError

RNG = np.random.default_rng(7)
B, T, F = 3, 6, 5


# -- the NumPy reference: Keras 3 cells and keras.src.backend.*.rnn ---------------------------------------
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


ACT = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0),
    "linear": lambda x: x,
    "hard_sigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
    "elu": lambda x: np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "silu": lambda x: x * _sigmoid(x),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(np.minimum(x, 0)) - 1)),
    "softmax": _softmax,
    "relu6": lambda x: np.clip(x, 0, 6),
}


def _gates(a, n):
    return np.split(a, n, axis=-1)


def simple_cell(layer, weights):
    k, rk, *b = weights
    act = ACT[layer.activation]

    def step(x, states):
        h = act(x @ k + states[0] @ rk + (b[0] if b else 0))
        return h, [h]
    return step, 1


def lstm_cell(layer, weights):
    k, rk, *b = weights
    act, ract = ACT[layer.activation], ACT[layer.recurrent_activation]

    def step(x, states):
        h, c = states
        z = x @ k + h @ rk + (b[0] if b else 0)
        zi, zf, zc, zo = _gates(z, 4)                 # Keras gate order i, f, c, o
        i, f, o = ract(zi), ract(zf), ract(zo)
        c = f * c + i * act(zc)
        h = o * act(c)
        return h, [h, c]
    return step, 2


def gru_cell(layer, weights):
    k, rk, *b = weights
    act, ract = ACT[layer.activation], ACT[layer.recurrent_activation]
    kz, kr, kh = _gates(rk, 3)

    def step(x, states):
        h = states[0]
        if layer.reset_after:
            bi, br = (b[0][0], b[0][1]) if b else (0, 0)
            xz, xr, xh = _gates(x @ k + bi, 3)
            hz, hr, hh = _gates(h @ rk + br, 3)
            z, r = ract(xz + hz), ract(xr + hr)
            cand = act(xh + r * hh)
        else:
            xz, xr, xh = _gates(x @ k + (b[0] if b else 0), 3)
            z, r = ract(xz + h @ kz), ract(xr + h @ kr)
            cand = act(xh + (r * h) @ kh)
        h = z * h + (1 - z) * cand                    # Keras: z * h_tm1 + (1 - z) * hh
        return h, [h]
    return step, 1


CELLS = {"SimpleRNN": simple_cell, "LSTM": lstm_cell, "GRU": gru_cell}


def keras_rnn(layer, weights, x, mask=None, zero_output_for_mask=False):
    """keras.src.backend.tensorflow.rnn.rnn: masked steps keep the states and output the previous
    output (zeros if ``zero_output_for_mask``); go_backwards returns the sequence in processing order.
    Returns the layer's outputs (a list with return_state)."""
    step, n_states = CELLS[type(layer).__name__](layer, weights)
    x = np.asarray(x, np.float64)
    states = [np.zeros((x.shape[0], layer.units))] * n_states
    prev = np.zeros((x.shape[0], layer.units))
    outs = []
    order = range(x.shape[1] - 1, -1, -1) if layer.go_backwards else range(x.shape[1])
    for t in order:
        out, new = step(x[:, t], states)
        if mask is not None:
            m = mask[:, t][:, None]
            out = np.where(m, out, 0.0 if zero_output_for_mask else prev)
            new = [np.where(m, n, s) for n, s in zip(new, states)]
        states, prev = new, out
        outs.append(out)
    y = np.stack(outs, axis=1) if layer.return_sequences else outs[-1]
    return [y] + states if layer.return_state else y


def keras_bidirectional(bi, fw, bw, x, mask=None):
    """keras.src.layers.rnn.bidirectional.Bidirectional.call."""
    zero = bi.return_sequences        # Keras forces zero_output_for_mask = return_sequences
    y = keras_rnn(bi.forward, fw, x, mask, zero)
    y_rev = keras_rnn(bi.backward, bw, x, mask, zero)
    states = []
    if bi.return_state:
        states = y[1:] + y_rev[1:]
        y, y_rev = y[0], y_rev[0]
    if bi.return_sequences:
        y_rev = y_rev[:, ::-1]
    merged = {"concat": lambda: [np.concatenate([y, y_rev], -1)], "sum": lambda: [y + y_rev],
              "mul": lambda: [y * y_rev], "ave": lambda: [(y + y_rev) / 2], None: lambda: [y, y_rev]}
    out = merged[bi.merge_mode]() + states
    return out[0] if len(out) == 1 else out


def keras_weights(layer, n_in, scale=0.5, seed=0):
    """Random weights in Keras layout for ``layer`` (not built yet)."""
    rng = np.random.default_rng(seed)
    g = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[type(layer).__name__]
    u = layer.units
    ws = [rng.normal(0, scale, (n_in, g * u)), rng.normal(0, scale, (u, g * u))]
    if layer.use_bias:
        shape = (2, 3 * u) if getattr(layer, "reset_after", False) else (g * u,)
        ws.append(rng.normal(0, scale, shape))
    return [w.astype(np.float32) for w in ws]


# -- running kdsl models -----------------------------------------------------------------------------
def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run_both(model, feeds):
    """(inference outputs, training-mode forward outputs), as lists."""
    check_export(model)
    inf = _session(model.to_onnx()).run(None, feeds)
    tr = _session(model.to_onnx(training=True)).run(None, feeds)
    return inf, tr


def right_padded_ids(lengths, steps=T, vocab=20, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(len(lengths), steps))
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    return ids


def masked_model(layer, steps=T, vocab=20, dim=F, ids_dtype="int64"):
    ids = kdsl.Input((steps,), dtype=ids_dtype, name="ids")
    emb = L.Embedding(vocab, dim, mask_zero=True)
    y = layer(emb(ids))
    return kdsl.Model(ids, y), emb


def _as_list(v):
    return v if isinstance(v, list) else [v]


def _compare(got, want, tol=1e-5):
    got, want = _as_list(got), _as_list(want)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert_close(a, b, rtol=tol, atol=tol)


def _op_types(model):
    return [n.op_type for n in model.to_onnx().graph.node]


# -- the configuration matrix --------------------------------------------------------------------------
def make(kind, units=4, **kw):
    if kind == "GRU_before":
        return L.GRU(units, reset_after=False, **kw)
    return getattr(L, kind)(units, **kw)


KINDS = ["SimpleRNN", "LSTM", "GRU", "GRU_before"]
FLAGS = [dict(return_sequences=rs, return_state=st, go_backwards=gb)
         for rs in (False, True) for st in (False, True) for gb in (False, True)]


def _flag_id(f):
    return "-".join(k for k, v in f.items() if v) or "default"


@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
@pytest.mark.parametrize("kind", KINDS)
def test_unmasked_matches_keras_equations(kind, flags):
    layer = make(kind, **flags)
    x = kdsl.Input((T, F), name="x")
    m = kdsl.Model(x, layer(x))
    ws = keras_weights(layer, F)
    layer.set_weights(ws)
    X = RNG.normal(size=(B, T, F)).astype(np.float32)
    want = keras_rnn(layer, ws, X)
    inf, tr = run_both(m, {"x": X})
    assert type(layer).__name__.replace("SimpleRNN", "RNN") in _op_types(m)     # the fused op
    _compare(inf, want)
    _compare(tr, want)


@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
@pytest.mark.parametrize("kind", KINDS)
def test_right_padded_mask_matches_keras(kind, flags):
    layer = make(kind, **flags)
    m, emb = masked_model(layer)
    ws = keras_weights(layer, F, seed=3)
    layer.set_weights(ws)
    ids = right_padded_ids([6, 3, 1, 0])          # full, partial, one step, fully masked
    x = emb.get_weights()[0][ids]
    want = keras_rnn(layer, ws, x, ids != 0)
    inf, tr = run_both(m, {"ids": ids})
    _compare(inf, want)
    _compare(tr, want)


def test_masked_steps_repeat_the_last_output_and_keep_the_state():
    """Keras (generic backend rnn): a padded step's output is the previous output."""
    layer = L.LSTM(3, return_sequences=True, return_state=True)
    m, emb = masked_model(layer)
    layer.set_weights(keras_weights(layer, F))
    ids = right_padded_ids([4, 2])
    seq, h, c = m.predict(ids)
    assert_close(seq[0, 4:], np.broadcast_to(seq[0, 3], (2, 3)))
    assert_close(seq[1, 2:], np.broadcast_to(seq[1, 1], (4, 3)))
    assert_close(h, seq[:, -1])
    back = L.GRU(3, return_sequences=True, go_backwards=True)
    m2, emb2 = masked_model(back)
    seq = m2.predict(ids)
    assert np.all(seq[1, :4] == 0) and np.all(seq[1, 4:] != 0)   # reversed: padding first, zeros


def test_non_prefix_mask_is_exact_in_the_unrolled_form():
    """A padding id in the middle: the training (unrolled) form follows Keras exactly; the
    inference model's sequence_lens is only exact for right padding (documented)."""
    layer = L.GRU(4, return_sequences=True)
    m, emb = masked_model(layer)
    ws = keras_weights(layer, F)
    layer.set_weights(ws)
    ids = np.array([[3, 0, 5, 6, 0, 0], [0, 2, 3, 4, 5, 6]])
    want = keras_rnn(layer, ws, emb.get_weights()[0][ids], ids != 0)
    tr = _session(m.to_onnx(training=True)).run(None, {"ids": ids})[0]
    assert_close(tr, want, rtol=1e-5, atol=1e-5)


def test_output_mask_follows_return_sequences():
    ids = kdsl.Input((T,), dtype="int64")
    h = L.Embedding(10, 4, mask_zero=True)(ids)
    seq = L.LSTM(3, return_sequences=True)(h)
    assert seq.mask is not None
    assert L.LSTM(3)(h).mask is None
    out, state = L.GRU(T, return_sequences=True, return_state=True)(h)   # units == steps: states unmasked
    assert out.mask is not None and state.mask is None
    out, state = L.GRU(3, return_state=True)(h)
    assert out.mask is None and state.mask is None
    bi = L.Bidirectional(L.LSTM(3, return_sequences=True))(h)
    assert bi.mask is not None


# -- activations: ONNX's list (fused) and the unrolled fallback ------------------------------------------------
FUSED_ACTS = ["relu", "linear", "hard_sigmoid", "elu", "leaky_relu", "softsign", "softplus", "sigmoid"]
FALLBACK_ACTS = ["silu", "selu", "relu6"]


@pytest.mark.parametrize("act", FUSED_ACTS + FALLBACK_ACTS)
@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU", "GRU_before"])
def test_activations(kind, act):
    kw = {"activation": act}
    if kind != "SimpleRNN":
        kw["recurrent_activation"] = {"relu": "hard_sigmoid", "linear": "sigmoid"}.get(act, act)
    layer = make(kind, return_sequences=True, **kw)
    x = kdsl.Input((T, F), name="x")
    m = kdsl.Model(x, layer(x))
    ws = keras_weights(layer, F, scale=0.3)
    layer.set_weights(ws)
    X = RNG.normal(size=(B, T, F)).astype(np.float32)
    want = keras_rnn(layer, ws, X)
    inf, tr = run_both(m, {"x": X})
    fused = {"SimpleRNN": "RNN", "LSTM": "LSTM", "GRU": "GRU", "GRU_before": "GRU"}[kind]
    assert (fused in _op_types(m)) == (act in FUSED_ACTS)
    _compare(inf, want)
    _compare(tr, want)


def test_softmax_gates_apply_per_gate():
    layer = L.LSTM(3, recurrent_activation="softmax", return_sequences=True)
    x = kdsl.Input((T, F), name="x")
    m = kdsl.Model(x, layer(x))
    ws = keras_weights(layer, F)
    layer.set_weights(ws)
    X = RNG.normal(size=(B, T, F)).astype(np.float32)

    def keras_softmax_lstm(X):     # softmax over each gate's units separately
        k, rk, b = ws
        h = c = np.zeros((B, 3))
        outs = []
        for t in range(T):
            zi, zf, zc, zo = _gates(X[:, t] @ k + h @ rk + b, 4)
            c = _softmax(zf) * c + _softmax(zi) * np.tanh(zc)
            h = _softmax(zo) * np.tanh(c)
            outs.append(h)
        return np.stack(outs, 1)
    inf, tr = run_both(m, {"x": X})
    _compare(inf, keras_softmax_lstm(X))
    _compare(tr, keras_softmax_lstm(X))


def test_no_bias_and_initializers():
    for kind in KINDS:
        layer = make(kind, use_bias=False, return_sequences=True)
        x = kdsl.Input((T, F), name="x")
        m = kdsl.Model(x, layer(x))
        assert len(layer.weights) == 2
        ws = keras_weights(layer, F)
        layer.set_weights(ws)
        X = RNG.normal(size=(B, T, F)).astype(np.float32)
        inf, tr = run_both(m, {"x": X})
        _compare(inf, keras_rnn(layer, ws, X))
        _compare(tr, keras_rnn(layer, ws, X))


def test_weights_in_keras_layout_and_defaults():
    x = kdsl.Input((T, 7))
    lstm, gru, gru0, rnn = L.LSTM(5), L.GRU(5), L.GRU(5, reset_after=False), L.SimpleRNN(5)
    for layer in (lstm, gru, gru0, rnn):
        layer(x)
    m = kdsl.Model(x, [lstm(x), gru(x), gru0(x), rnn(x)], seed=3)
    shapes = {layer.name: [w.shape for w in layer.get_weights()] for layer in m.layers}
    assert shapes["lstm"] == [(7, 20), (5, 20), (20,)]
    assert shapes["gru"] == [(7, 15), (5, 15), (2, 15)]
    assert shapes["gru_1"] == [(7, 15), (5, 15), (15,)]
    assert shapes["simple_rnn"] == [(7, 5), (5, 5), (5,)]
    assert [w.name for w in lstm.weights] == ["lstm_cell/kernel", "lstm_cell/recurrent_kernel", "lstm_cell/bias"]
    k, rk, b = lstm.get_weights()
    assert_close(b, np.r_[np.zeros(5), np.ones(5), np.zeros(10)])        # unit_forget_bias
    assert_close(rk @ rk.T, np.eye(5), atol=1e-5)                         # orthogonal rows
    limit = np.sqrt(6 / (7 + 20))
    assert np.abs(k).max() <= limit and np.abs(k).max() > limit / 2       # glorot_uniform
    assert np.all(gru.get_weights()[2] == 0)
    assert np.all(L.LSTM(5, unit_forget_bias=False) is not None)
    names = sorted(i.name for i in m.to_onnx().graph.initializer)
    assert "lstm/lstm_cell/kernel" in names and "gru/gru_cell/bias" in names
    assert lstm.count_params() == 4 * 5 * (7 + 5 + 1)
    assert gru.count_params() == 3 * 5 * (7 + 5 + 2)
    assert gru0.count_params() == 3 * 5 * (7 + 5 + 1)


def test_onnx_weight_is_a_permutation_the_trainer_inverts():
    from kdsl.runtime.trainer import keras_from_onnx

    x = kdsl.Input((T, 3))
    layers = [L.LSTM(2), L.GRU(2), L.GRU(2, reset_after=False), L.SimpleRNN(2),
              L.Bidirectional(L.LSTM(2))]
    kdsl.Model(x, [layer(x) for layer in layers])
    for layer in layers:
        for w in layer.weights:
            onnx_array = layer.onnx_weight(w)
            assert_close(keras_from_onnx(layer, w, onnx_array), w.value)
    lstm = layers[0]
    k = lstm.weights[0].value
    W = lstm.onnx_weight(lstm.weights[0])
    assert W.shape == (1, 8, 3)
    i, f, c, o = np.split(k, 4, axis=1)
    assert_close(W[0], np.concatenate([i, o, f, c], axis=1).T)          # ONNX gate order i, o, f, c


def test_bias_initializer_with_unit_forget_bias():
    x = kdsl.Input((T, 3))
    lstm = L.LSTM(2, bias_initializer="ones")
    lstm2 = L.LSTM(2, bias_initializer="ones", unit_forget_bias=False)
    kdsl.Model(x, [lstm(x), lstm2(x)])
    assert_close(lstm.get_weights()[2], np.ones(8))
    assert_close(lstm2.get_weights()[2], np.ones(8))


# -- Bidirectional --------------------------------------------------------------------------------------
MERGES = ["concat", "sum", "mul", "ave", None]


def bidirectional_case(bi, masked, seed=0):
    if masked:
        m, emb = masked_model(bi)
        ids = right_padded_ids([6, 4, 1, 0], seed=seed)
        x, mask, feeds = emb.get_weights()[0][ids], ids != 0, {"ids": ids}
    else:
        xin = kdsl.Input((T, F), name="x")
        m = kdsl.Model(xin, bi(xin))
        x = RNG.normal(size=(B, T, F)).astype(np.float32)
        mask, feeds = None, {"x": x}
    fw = keras_weights(bi.forward, F, seed=seed)
    bw = keras_weights(bi.backward, F, seed=seed + 1)
    bi.set_weights(fw + bw)                   # Keras order: forward, then backward
    return m, feeds, keras_bidirectional(bi, fw, bw, x, mask)


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
@pytest.mark.parametrize("merge", MERGES)
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_bidirectional(kind, merge, return_sequences, masked):
    bi = L.Bidirectional(make(kind, return_sequences=return_sequences), merge_mode=merge)
    m, feeds, want = bidirectional_case(bi, masked)
    nodes = [n for n in m.to_onnx().graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert len(nodes) == 1
    assert onnx.helper.get_attribute_value(next(a for a in nodes[0].attribute if a.name == "direction")) \
        == b"bidirectional"
    inf, tr = run_both(m, feeds)
    _compare(inf, want)
    _compare(tr, want)


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_bidirectional_return_state(masked):
    bi = L.Bidirectional(L.LSTM(3, return_sequences=True, return_state=True))
    m, feeds, want = bidirectional_case(bi, masked)
    assert len(m.outputs) == 5          # output, forward h, c, backward h, c
    inf, tr = run_both(m, feeds)
    _compare(inf, want)
    _compare(tr, want)
    bi = L.Bidirectional(L.GRU(3, return_state=True), merge_mode="sum")
    m, feeds, want = bidirectional_case(bi, masked, seed=4)
    inf, tr = run_both(m, feeds)
    _compare(inf, want)
    _compare(tr, want)


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_bidirectional_with_backward_layer_and_go_backwards(masked):
    bi = L.Bidirectional(L.GRU(4, return_sequences=True),
                         backward_layer=L.GRU(3, activation="relu", return_sequences=True, go_backwards=True))
    m, feeds, want = bidirectional_case(bi, masked)
    assert _op_types(m).count("GRU") == 2                 # different configurations: two ops
    assert [w.name for w in bi.weights][3] == "gru/gru_cell/kernel"
    inf, tr = run_both(m, feeds)
    _compare(inf, want)
    _compare(tr, want)
    bi = L.Bidirectional(L.LSTM(3, return_sequences=True, go_backwards=True))   # forward copy goes backwards
    m, feeds, want = bidirectional_case(bi, masked, seed=2)
    assert bi.forward.go_backwards and not bi.backward.go_backwards
    inf, tr = run_both(m, feeds)
    _compare(inf, want)
    _compare(tr, want)
    bi = L.Bidirectional(L.LSTM(3, activation="silu"), merge_mode="mul")       # unrolled at inference
    m, feeds, want = bidirectional_case(bi, masked, seed=5)
    assert "LSTM" not in _op_types(m)
    inf, tr = run_both(m, feeds)
    _compare(inf, want)
    _compare(tr, want)


def test_bidirectional_names_weights_like_keras():
    x = kdsl.Input((T, F))
    bi = L.Bidirectional(L.LSTM(4, name="enc"))
    m = kdsl.Model(x, bi(x))
    assert [w.name for w in bi.weights] == [
        "forward_enc/lstm_cell/kernel", "forward_enc/lstm_cell/recurrent_kernel", "forward_enc/lstm_cell/bias",
        "backward_enc/lstm_cell/kernel", "backward_enc/lstm_cell/recurrent_kernel", "backward_enc/lstm_cell/bias"]
    inits = {i.name for i in m.to_onnx().graph.initializer}
    assert "bidirectional/forward_enc/lstm_cell/kernel" in inits
    assert bi.count_params() == 2 * 4 * 4 * (F + 4 + 1)
    assert m.outputs[0].shape == (None, 8)
    assert [w.shape for w in bi.get_weights()] == [(F, 16), (4, 16), (16,)] * 2


def test_bidirectional_argument_errors():
    with pytest.raises(KdslError, match="recurrent layer"):
        L.Bidirectional(L.Dense(3))
    with pytest.raises(KdslError, match="merge_mode"):
        L.Bidirectional(L.LSTM(3), merge_mode="max")
    with pytest.raises(KdslError, match="go_backwards"):
        L.Bidirectional(L.LSTM(3), backward_layer=L.LSTM(3))
    with pytest.raises(KdslError, match="return_sequences"):
        L.Bidirectional(L.LSTM(3), backward_layer=L.LSTM(3, go_backwards=True, return_sequences=True))


# -- stacks, .kd, errors ----------------------------------------------------------------------------------
def test_stacked_recurrent_layers_with_mask():
    ids = kdsl.Input((T,), dtype="int64", name="ids")
    emb = L.Embedding(20, F, mask_zero=True)
    l1 = L.LSTM(4, return_sequences=True)
    l2 = L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="ave")
    l3 = L.SimpleRNN(2)
    m = kdsl.Model(ids, l3(l2(l1(emb(ids)))))
    w1, w2f, w2b, w3 = (keras_weights(l1, F), keras_weights(l2.forward, 4, seed=1),
                        keras_weights(l2.backward, 4, seed=2), keras_weights(l3, 3, seed=3))
    l1.set_weights(w1)
    l2.set_weights(w2f + w2b)
    l3.set_weights(w3)
    idv = right_padded_ids([6, 2, 4])
    mask = idv != 0
    h = keras_rnn(l1, w1, emb.get_weights()[0][idv], mask)
    h = keras_bidirectional(l2, w2f, w2b, h, mask)
    want = keras_rnn(l3, w3, h, mask)
    inf, tr = run_both(m, {"ids": idv})
    _compare(inf, want)
    _compare(tr, want)


def test_kd_source_with_bidirectional_lstm():
    src = """
model tagger {
    input x: int64[12]
    output y = x -> Embedding(100, 8, mask_zero=true)
                 -> Bidirectional(LSTM(16, return_sequences=true))
                 -> GlobalMaxPooling1D()
}
"""
    m = kdsl.loads(src)
    bi = m.get_layer("bidirectional")
    assert isinstance(bi.forward, L.LSTM) and bi.forward.units == 16
    table = m.get_layer("embedding").get_weights()[0]
    ids = right_padded_ids([12, 5, 1], steps=12, vocab=100)
    fw, bw = bi.get_weights()[:3], bi.get_weights()[3:]
    seq = keras_bidirectional(bi, fw, bw, table[ids], ids != 0)
    want = np.where((ids != 0)[..., None], seq, -np.inf).max(1)
    assert_close(m.predict(ids), want, rtol=1e-5, atol=1e-5)
    again = kdsl.loads(m.to_kd())                       # to_kd prints the wrapped layer
    again.set_weights(m.get_weights())
    assert_close(again.predict(ids), m.predict(ids))


def test_kd_source_return_state_and_stacking():
    src = """
model enc {
    input x: float32[6, 5]
    h = x -> GRU(8, return_sequences=true, go_backwards=true) -> LSTM(4, dropout=0.2, recurrent_dropout=0.1)
    output y = h -> Dense(2)
}
"""
    m = kdsl.loads(src)
    X = RNG.normal(size=(2, 6, 5)).astype(np.float32)
    assert m.predict(X).shape == (2, 2)


def test_builder_return_state_outputs():
    x = kdsl.Input((T, F), name="x")
    out, h, c = L.LSTM(3, return_state=True)(x)
    m = kdsl.Model(x, [out, h, c])
    X = RNG.normal(size=(B, T, F)).astype(np.float32)
    o, hh, cc = m.predict(X)
    assert_close(o, hh)
    assert cc.shape == (B, 3)


def test_symbolic_steps_infer_but_training_needs_known_length():
    x = kdsl.Input((None, F), name="x")
    layer = L.LSTM(3, return_sequences=True)
    m = kdsl.Model(x, layer(x))
    ws = keras_weights(layer, F)
    layer.set_weights(ws)
    for steps in (2, 7):
        X = RNG.normal(size=(B, steps, F)).astype(np.float32)
        _compare(m.predict(X), keras_rnn(layer, ws, X))
    with pytest.raises(KdslError, match="known number of time steps"):
        m.to_onnx(training=True)
    x = kdsl.Input((None, F), name="x")
    with pytest.raises(KdslError, match="known number of time steps"):
        kdsl.Model(x, L.GRU(3, activation="silu")(x)).to_onnx()


def test_argument_checks():
    with pytest.raises(KdslError, match="stateful"):
        L.LSTM(3, stateful=True)
    with pytest.raises(KdslError, match="units"):
        L.GRU(0)
    with pytest.raises(KdslError, match="dropout"):
        L.SimpleRNN(3, dropout=1.5)
    with pytest.raises(KdslError, match="activation"):
        L.LSTM(3, recurrent_activation="nope")
    with pytest.raises(KdslError, match="initializer"):
        L.LSTM(3, kernel_initializer="nope")
    with pytest.raises(KdslError, match="rank 3"):
        L.LSTM(3)(kdsl.Input((4,)))
    x = kdsl.Input((T, F))
    layer = L.LSTM(3)
    layer(x)
    with pytest.raises(KdslError, match="expects an input of shape"):
        layer(kdsl.Input((T, F + 1)))


def test_dropout_in_training_forward_only():
    x = kdsl.Input((T, F), name="x")
    layer = L.LSTM(4, dropout=0.5, recurrent_dropout=0.5, return_sequences=True, seed=1)
    m = kdsl.Model(x, layer(x))
    ws = keras_weights(layer, F)
    layer.set_weights(ws)
    X = RNG.normal(size=(B, T, F)).astype(np.float32)
    inf, tr = run_both(m, {"x": X})
    _compare(inf, keras_rnn(layer, ws, X))             # inference: no dropout
    assert np.abs(tr[0] - inf[0]).max() > 1e-3         # training: dropped
    # one input mask per sequence, shared by the time steps: with an identity kernel and no
    # recurrence, the output is x * mask[batch, feature] with mask values 0 or 1 / (1 - rate)
    layer0 = L.SimpleRNN(F, dropout=0.5, return_sequences=True, seed=2, activation="linear")
    m0 = kdsl.Model(x, layer0(x))
    layer0.set_weights([np.eye(F, dtype=np.float32), np.zeros((F, F), np.float32), np.zeros(F, np.float32)])
    out = _session(m0.to_onnx(training=True)).run(None, {"x": X})[0]
    ratio = out / X
    assert_close(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), atol=1e-5)
    assert set(np.round(ratio.ravel(), 4)) <= {0.0, 2.0}
    assert 0 < (ratio == 0).mean() < 1


def test_training_graph_has_a_small_step():
    """The input projection is one MatMul for all steps; each step adds one Gemm
    (``h @ recurrent_kernel + x_t``)."""
    x = kdsl.Input((T, F), name="x")
    m = kdsl.Model(x, L.LSTM(4)(x))
    nodes = m.to_onnx(training=True).graph.node
    assert sum(n.op_type == "MatMul" for n in nodes) == 1
    assert sum(n.op_type == "Gemm" for n in nodes) == T - 1
    assert len(nodes) < 14 * T


@pytest.mark.parametrize("opset", [18, 21])
def test_other_opsets(opset):
    ids = kdsl.Input((T,), dtype="int64", name="ids")
    emb = L.Embedding(20, F, mask_zero=True)
    l1 = L.Bidirectional(L.LSTM(3, return_sequences=True))
    l2 = L.GRU(2, go_backwards=True, return_sequences=True)
    m = kdsl.Model(ids, l2(l1(emb(ids))))
    ids_v = right_padded_ids([6, 3, 1])
    check_export(m, opset)
    want = _session(m.to_onnx(17)).run(None, {"ids": ids_v})[0]
    for training in (False, True):
        proto = m.to_onnx(opset, training=training)
        onnx.checker.check_model(proto, full_check=True)
        assert_close(_session(proto).run(None, {"ids": ids_v})[0], want)
