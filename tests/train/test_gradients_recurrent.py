"""Gradient checks of the recurrent layers' training lowering (unrolled, differentiated op by op)
against central finite differences, with and without masks; and the Split VJP rule."""
import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import kdsl
from gradcheck import check_gradients
from kdsl import layers as L
from kdsl.lower.autodiff import backprop
from kdsl.lower.emitter import Emitter
from kdsl.lower.training import _infer

RNG = np.random.default_rng(3)
B, T, F = 3, 4, 3


def make(kind, units=3, **kw):
    if kind == "GRU_before":
        return L.GRU(units, reset_after=False, **kw)
    return getattr(L, kind)(units, **kw)


def _bias_nonzero(layer):
    """Random non-zero biases so every weight's gradient is exercised."""
    ws = layer.get_weights()
    rng = np.random.default_rng(0)
    layer.set_weights([w if i < 2 else rng.normal(0, 0.3, w.shape).astype(np.float32) for i, w in enumerate(ws)])


def masked_inputs(steps=T, vocab=9):
    ids = RNG.integers(1, vocab, size=(B, steps))
    ids[1, 2:] = 0            # right padding
    ids[2, 1] = 0             # a masked step in the middle (the unrolled form is exact for any mask)
    return ids


def dense_model(layer, head_units):
    x = kdsl.Input((T, F), name="x")
    h = layer(x)
    if isinstance(h, list):
        h = L.Concatenate()(h) if h[0].rank == 2 else h[0]
    return kdsl.Model(x, {"y": L.Dense(head_units)(h)}, seed=1), RNG.normal(size=(B, T, F))


def masked_model(layer, head_units):
    ids = kdsl.Input((T,), dtype="int64", name="ids")
    h = L.Embedding(9, F, mask_zero=True, trainable=False)(ids)   # a frozen table: the mask's source
    return kdsl.Model(ids, {"y": L.Dense(head_units)(layer(h))}, seed=1), masked_inputs()


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("flags", [{}, {"return_sequences": True}, {"go_backwards": True, "return_sequences": True}],
                         ids=["last", "seq", "backwards"])
@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU", "GRU_before"])
def test_recurrent_gradients(kind, flags, masked):
    layer = make(kind, **flags)
    m, x = (masked_model if masked else dense_model)(layer, 2)
    _bias_nonzero(layer)
    out_shape = (B, T, 2) if flags.get("return_sequences") else (B, 2)
    dtype = check_gradients(m, "mse", x, RNG.normal(size=out_shape), n_coords=8)
    assert dtype == np.float64


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("merge,kind,seq", [("concat", "LSTM", True), ("sum", "GRU", True), ("mul", "SimpleRNN", False),
                                            ("ave", "GRU_before", False), ("concat", "LSTM", False)])
def test_bidirectional_gradients(merge, kind, seq, masked):
    layer = L.Bidirectional(make(kind, return_sequences=seq), merge_mode=merge)
    m, x = (masked_model if masked else dense_model)(layer, 2)
    ws = layer.get_weights()
    rng = np.random.default_rng(1)
    layer.set_weights([rng.normal(0, 0.4, w.shape).astype(np.float32) for w in ws])
    out_shape = (B, T, 2) if seq else (B, 2)
    check_gradients(m, "mse", x, RNG.normal(size=out_shape), n_coords=6)


def test_return_state_and_activations_gradients():
    layer = L.LSTM(3, activation="relu", recurrent_activation="hard_sigmoid", return_state=True)
    m, x = dense_model(layer, 2)                 # Dense(concat([out, h, c]))
    _bias_nonzero(layer)
    check_gradients(m, "mse", x, RNG.normal(size=(B, 2)))
    layer = L.GRU(3, activation="silu", recurrent_activation="softmax", return_sequences=True)
    m, x = masked_model(layer, 2)
    _bias_nonzero(layer)
    check_gradients(m, "mse", x, RNG.normal(size=(B, T, 2)))


def test_dropout_gradients_and_stacks():
    ids = kdsl.Input((T,), dtype="int64", name="ids")
    h = L.Embedding(9, F, mask_zero=True, trainable=False)(ids)
    h = L.LSTM(3, return_sequences=True, dropout=0.3, recurrent_dropout=0.3, seed=4)(h)
    h = L.Bidirectional(L.GRU(2, return_sequences=True, dropout=0.2), merge_mode="sum")(h)
    h = L.SimpleRNN(2, recurrent_dropout=0.25)(h)
    m = kdsl.Model(ids, {"y": L.Dense(2)(h)}, seed=2)
    check_gradients(m, "mse", masked_inputs(), RNG.normal(size=(B, 2)), n_coords=5)


def test_split_rule_with_an_unused_output():
    """Split's VJP: gradients concatenated back, zeros for an output nothing uses."""
    e = Emitter(17)
    x = "x"
    e.reserve(x)
    a, b, c = e.op("Split", [x, e.ints([1, 2, 1])], n_out=3, axis=1)
    loss = e.op("Add", [e.reduce("ReduceSum", e.op("Mul", [a, a]), [0, 1]), e.reduce("ReduceSum", c, [0, 1])])
    x_info = helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", 4])
    shapes, dtypes = _infer(e, [x_info], 17, [loss])
    grads = backprop(e, list(e.nodes), loss, [x], shapes, dtypes)
    g = helper.make_graph(e.nodes, "g", [x_info],
                          [helper.make_tensor_value_info(grads[x], TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    X = RNG.normal(size=(5, 4)).astype(np.float32)
    gx = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {x: X})[0]
    want = np.zeros_like(X)
    want[:, 0] = 2 * X[:, 0]
    want[:, 3] = 1.0
    np.testing.assert_allclose(gx, want, rtol=1e-6)


# -- the LSTM's fused backward pass (kdsl.lower.autodiff_rnn) --------------------------------------
def _gradients(model, x, fused: bool, monkeypatch, device="cpu", graph=None):
    import kdsl.lower.training as training
    from kdsl.lower.training import TrainSetup, build_gradient_graph
    from kdsl.train.losses import get_loss
    from kdsl.train.optimizers import SGD

    monkeypatch.setattr(training, "FUSED_RECURRENT_BACKWARD", fused)
    out = model.output_names[0]
    setup = TrainSetup({out: get_loss("mse")}, {}, {out: []}, SGD(0.1))
    proto, state = build_gradient_graph(model, setup, device=device)
    onnx.checker.check_model(proto, full_check=True)
    if graph is not None:
        graph.append(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y = np.random.default_rng(7).normal(size=(x.shape[0],) + tuple(model.outputs[0].type.shape[1:]))
    feeds = {s.name: s.value for s in state}
    xdtype = "int64" if model.inputs[0].type.is_int else "float32"
    feeds.update({model.input_names[0]: x.astype(xdtype), f"target:{out}": y.astype(np.float32),
                  f"sample_weight:{out}": np.ones(x.shape[0], np.float32),
                  "lr": np.array(0.1, np.float32), "step": np.array(1, np.float32)})
    names = [o.name for o in proto.graph.output]
    feeds = {k: v for k, v in feeds.items() if k in {i.name for i in proto.graph.input}}
    return dict(zip(names, sess.run(None, feeds))), len(proto.graph.node)


def _rnn_models(cell):
    def single(**kw):
        x = kdsl.Input((6, F), name="x")
        h = cell(4, **kw)(x)
        if kw.get("return_state"):
            h = L.Concatenate()(h)
        elif kw.get("return_sequences"):
            h = L.Flatten()(h)
        return kdsl.Model(x, {"y": L.Dense(2)(h)}, seed=1)

    def stacked():
        x = kdsl.Input((6, F), name="x")
        h = cell(4, return_sequences=True, dropout=0.3)(x)
        h = L.Bidirectional(cell(3))(h)
        return kdsl.Model(x, {"y": L.Dense(2)(h)}, seed=1)

    return {"last": single(), "sequences": single(return_sequences=True),
            "backwards": single(return_sequences=True, go_backwards=True),
            "states": single(return_state=True), "stacked_bidirectional_dropout": stacked()}


CELLS = [L.LSTM, L.GRU, L.SimpleRNN]


@pytest.mark.parametrize("key", list(_rnn_models(L.LSTM)))
@pytest.mark.parametrize("cell", CELLS, ids=["LSTM", "GRU", "SimpleRNN"])
def test_fused_backward_equals_op_by_op(cell, key, monkeypatch):
    """The LSTM's and GRU's fused backward passes give the op-by-op gradients (themselves checked
    against finite differences above) with fewer nodes; h (and c), the sequence, both directions."""
    m = _rnn_models(cell)[key]
    for layer in m.layers:
        for inner in [layer] + [getattr(layer, k, None) for k in ("forward", "backward")]:
            if isinstance(inner, cell):
                _bias_nonzero(inner)
    x = RNG.normal(size=(B, 6, F))
    fused, n_fused = _gradients(m, x, True, monkeypatch)
    plain, n_plain = _gradients(m, x, False, monkeypatch)
    assert fused.keys() == plain.keys() and any(k.startswith("grad:") and "recurrent" in k for k in fused)
    for k in plain:
        np.testing.assert_allclose(fused[k], plain[k], rtol=2e-5, atol=1e-6, err_msg=k)
    assert n_fused < n_plain, (n_fused, n_plain)     # per step far fewer: see the next test


@pytest.mark.parametrize("lstm_op", [True, False], ids=["lstm_op", "unrolled_forward"])
@pytest.mark.parametrize("key", list(_rnn_models(L.LSTM)) + ["masked"])
def test_lstm_forward_for_cuda_equals_the_unrolled_steps(key, lstm_op, monkeypatch):
    """Built for onnxruntime's CUDA provider, an unmasked LSTM's forward steps are ONNX's LSTM op
    and a recomputation in bulk (a scan over time for the cells), and its reverse loop is two
    kernels a step (_lstm_reverse_by_gemm): the same loss and gradients as the CPU build (both run
    here on the CPU), every direction; masked layers stay unrolled. The reverse loop is also
    checked behind the unrolled forward steps (the LSTM-op rewrite turned off)."""
    m = _masked_rnn_models(L.LSTM)["bidirectional_sequences"] if key == "masked" else _rnn_models(L.LSTM)[key]
    for layer in m.layers:
        for inner in [layer] + [getattr(layer, k, None) for k in ("forward", "backward")]:
            if isinstance(inner, L.LSTM):
                _bias_nonzero(inner)
    x = masked_inputs(6) if key == "masked" else RNG.normal(size=(B, 6, F))
    graphs = []
    if not lstm_op:
        import kdsl.lower.training as training
        monkeypatch.setattr(training, "lstm_forward_as_op", lambda e, tapes: None)
    cuda, _ = _gradients(m, x, True, monkeypatch, device="cuda", graph=graphs)
    cpu, _ = _gradients(m, x, True, monkeypatch, device="cpu", graph=graphs)
    assert cuda.keys() == cpu.keys() and any("recurrent" in k for k in cuda)
    for k in cpu:
        np.testing.assert_allclose(cuda[k], cpu[k], rtol=2e-5, atol=1e-6, err_msg=k)
    ops = [collections.Counter(n.op_type for n in g.graph.node) for g in graphs]
    directions = sum(isinstance(layer, L.LSTM) + 2 * isinstance(layer, L.Bidirectional) for layer in m.layers)
    assert ops[1]["LSTM"] == 0 and ops[0]["LSTM"] == (0 if key == "masked" or not lstm_op else directions)
    if key != "masked" and lstm_op:   # the steps' Gemms are gone (the first step of each direction has none)
        assert ops[0]["Gemm"] < ops[1]["Gemm"] - 3 * directions, (ops[0]["Gemm"], ops[1]["Gemm"])


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("cell,ratios", [(L.LSTM, (0.6, 0.7)), (L.GRU, (0.6, 0.7)), (L.SimpleRNN, (0.6, 0.75))],
                         ids=["LSTM", "GRU", "SimpleRNN"])
def test_fused_backward_has_far_fewer_nodes_per_step(cell, ratios, masked, monkeypatch):
    """Nodes added by six more steps (forward and backward) with the fused backward against the
    op-by-op rules (measured: LSTM 17/30, masked 25/38; GRU 17/31, 21/33; SimpleRNN 4/7, 8/11;
    the masks' Where's are in both)."""
    ratio = ratios[masked]
    def nodes(steps, fused):
        if masked:
            ids = kdsl.Input((steps,), dtype="int64", name="ids")
            m = kdsl.Model(ids, {"y": L.Dense(2)(cell(4)(L.Embedding(9, F, mask_zero=True)(ids)))}, seed=1)
            x = RNG.integers(0, 9, size=(B, steps))
        else:
            xin = kdsl.Input((steps, F), name="x")
            m = kdsl.Model(xin, {"y": L.Dense(2)(cell(4)(xin))}, seed=1)
            x = RNG.normal(size=(B, steps, F))
        return _gradients(m, x, fused, monkeypatch)[1]

    per_step_fused = (nodes(12, True) - nodes(6, True)) / 6
    per_step_plain = (nodes(12, False) - nodes(6, False)) / 6
    assert per_step_fused < ratio * per_step_plain, (per_step_fused, per_step_plain)


@pytest.mark.parametrize("backwards", [False, True], ids=["forwards", "go_backwards"])
def test_lstm_reverse_loop_for_cuda_where_the_last_steps_get_no_gradient(backwards, monkeypatch):
    """Where no gradient reaches the last steps processed (here: their outputs' gradients dropped
    by a wrapped rule, on both builds alike), the CUDA build's reverse loop starts at the last step
    that gets one and the projection's gradient has zeros for the others, as on the CPU."""
    from kdsl.lower import autodiff

    rule = autodiff.RULES["KdslUnrolledLSTM"]

    def dropping(g, n, gy):
        gy = list(gy)
        gy[4] = gy[5] = None            # the outputs of processing steps 4 and 5 (of 6)
        return rule(g, n, gy)

    monkeypatch.setitem(autodiff.RULES, "KdslUnrolledLSTM", dropping)
    xin = kdsl.Input((6, F), name="x")
    lstm = L.LSTM(4, return_sequences=True, go_backwards=backwards)
    m = kdsl.Model(xin, {"y": L.Dense(2)(L.Flatten()(lstm(xin)))}, seed=1)
    _bias_nonzero(lstm)
    x = RNG.normal(size=(B, 6, F))
    cuda, _ = _gradients(m, x, True, monkeypatch, device="cuda")
    cpu, _ = _gradients(m, x, True, monkeypatch, device="cpu")
    assert any("recurrent" in k for k in cuda)
    for k in cpu:
        np.testing.assert_allclose(cuda[k], cpu[k], rtol=2e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("sequences", [False, True], ids=["last", "sequences"])
def test_lstm_reverse_loop_for_cuda_is_two_kernels_a_step(sequences, monkeypatch):
    """Built for CUDA, each step of an unmasked LSTM adds to the gradient graph its forward kernels
    and, in reverse, one Mul and one MatMul (plus an Add of the output's gradient for a sequence;
    Reshapes and Splits are views, constants no kernels), against well over ten on the CPU build."""
    def kernels(steps, device):
        xin = kdsl.Input((steps, F), name="x")
        m = kdsl.Model(xin, {"y": L.Dense(2)(L.Flatten()(L.LSTM(4, return_sequences=True)(xin)) if sequences
                                           else L.LSTM(4)(xin))}, seed=1)
        graphs = []
        _gradients(m, RNG.normal(size=(B, steps, F)), True, monkeypatch, device=device, graph=graphs)
        return collections.Counter(n.op_type for n in graphs[0].graph.node if n.op_type not in ("Reshape", "Split", "Constant"))

    # 5 and 7 steps: the same rounds (3) of the cells' scan in the LSTM-op forward
    per_step = {d: {k: v / 2 for k, v in (kernels(7, d) - kernels(5, d)).items()} for d in ("cuda", "cpu")}
    assert per_step["cuda"].get("LSTM", 0) == 0 and sum(per_step["cuda"].values()) == (3 if sequences else 2), \
        per_step["cuda"]
    assert per_step["cuda"]["Mul"] == 1 and per_step["cuda"]["MatMul"] == 1
    assert sum(per_step["cpu"].values()) > 10      # the CPU build's unrolled forward and six-op reverse


def _masked_rnn_models(cell):
    def build(layer, flat=False):
        ids = kdsl.Input((6,), dtype="int64", name="ids")
        h = L.Embedding(9, F, mask_zero=True)(ids)
        h = layer(h)
        if isinstance(h, list):
            h = L.Concatenate()(h)
        elif flat:
            h = L.Flatten()(h)
        return kdsl.Model(ids, {"y": L.Dense(2)(h)}, seed=1)

    return {"last": build(cell(4)), "sequences": build(cell(4, return_sequences=True), flat=True),
            "backwards": build(cell(4, go_backwards=True, return_sequences=True), flat=True),
            "states": build(cell(4, return_state=True)),
            "bidirectional": build(L.Bidirectional(cell(3))),
            "bidirectional_sequences": build(L.Bidirectional(cell(3, return_sequences=True)), flat=True)}


@pytest.mark.parametrize("key", list(_masked_rnn_models(L.LSTM)))
@pytest.mark.parametrize("cell", CELLS, ids=["LSTM", "GRU", "SimpleRNN"])
def test_fused_backward_with_masks_equals_op_by_op(cell, key, monkeypatch):
    """Masked steps keep their states (and output zeros in a Bidirectional): the fused backward
    splits each state's gradient between the step and the state before it, as the Where's do."""
    m = _masked_rnn_models(cell)[key]
    ids = RNG.integers(1, 9, size=(B, 6))
    ids[0, 3:] = 0            # right padding
    ids[1, 1] = 0             # a masked step in the middle
    ids[2, :] = 0             # an empty sequence
    fused, n_fused = _gradients(m, ids, True, monkeypatch)
    plain, n_plain = _gradients(m, ids, False, monkeypatch)
    assert fused.keys() == plain.keys()
    for k in plain:
        np.testing.assert_allclose(fused[k], plain[k], rtol=2e-5, atol=1e-6, err_msg=k)
    if cell is not L.SimpleRNN:      # its op-by-op steps are short: at 6 steps the bulk ops weigh more
        assert n_fused < n_plain, (n_fused, n_plain)     # (the LSTM's: ~0.6x at 200 steps; per step below)


@pytest.mark.parametrize("layer", [lambda: L.LSTM(3, recurrent_dropout=0.2), lambda: L.GRU(3, recurrent_dropout=0.2),
                                   lambda: L.GRU(3, reset_after=False), lambda: L.SimpleRNN(3, activation="relu")],
                         ids=["LSTM-recurrent_dropout", "GRU-recurrent_dropout", "GRU-reset_before", "SimpleRNN-relu"])
def test_fused_backward_is_not_used_outside_its_form(layer, monkeypatch):
    """A recurrent dropout mask, or the GRU's reset gate before the recurrent product, is outside
    the fused forms: that layer is differentiated op by op (the same graph either way)."""
    m, x = dense_model(layer(), 2)
    fused, n_fused = _gradients(m, np.asarray(x), True, monkeypatch)
    plain, n_plain = _gradients(m, np.asarray(x), False, monkeypatch)
    assert n_fused == n_plain
    for k in plain:
        np.testing.assert_array_equal(fused[k], plain[k])


def test_lstm_op_forward_only_for_cuda():
    """build_training picks the LSTM-op forward for the CUDA provider (at every batch size: measured
    faster from 64 to 512); the CPU keeps the unrolled steps; inference graphs use ONNX's op."""
    from kdsl.lower.training import TrainSetup, build_training
    from kdsl.train.losses import get_loss
    from kdsl.train.optimizers import SGD

    m = _rnn_models(L.LSTM)["last"]
    setup = TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, SGD(0.1))
    for device, want in [("cuda", 1), ("cpu", 0)]:
        prog = build_training(m, setup, device=device)
        assert sum(n.op_type == "LSTM" for n in prog.train.graph.node) == want, device
        assert sum(n.op_type == "LSTM" for n in prog.eval.graph.node) == 1      # inference: ONNX's op
