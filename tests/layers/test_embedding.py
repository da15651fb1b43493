"""Embedding against a NumPy lookup."""
import numpy as np
import pytest

import kdsl
from helpers import assert_close, run_layer
from kdsl.layers import Dense, Embedding

RNG = np.random.default_rng(4)
OPSETS = [17, 21]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("dtype", ["int32", "int64"])
@pytest.mark.parametrize("shape", [(5,), (4, 7), (2, 3, 4)])
def test_embedding_matches_numpy(shape, dtype, opset):
    idx = RNG.integers(0, 10, size=shape).astype(dtype)
    table = RNG.normal(size=(10, 3)).astype("float32")
    layer = Embedding(10, 3)
    out, model = run_layer(layer, idx, [table], opset=opset)
    assert out.dtype == np.float32 and out.shape == shape + (3,)
    assert_close(out, table[idx])
    assert model.outputs[0].shape == (None,) + shape[1:] + (3,)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bool"])
def test_non_integer_indices_are_cast_like_keras(dtype):
    idx = np.array([[0, 1.9, 3.2], [2, 0, 1]]).astype(dtype)
    table = RNG.normal(size=(4, 2)).astype("float32")
    out, _ = run_layer(Embedding(4, 2), idx, [table])
    assert_close(out, table[idx.astype("int64")])   # truncation toward zero


def test_embedding_weights_config_and_default_initializer():
    x = kdsl.Input((6,), dtype="int32")
    emb = Embedding(50, 8, mask_zero=True, name="emb")
    m = kdsl.Model(x, Dense(2)(emb(x)))
    assert [(w.name, w.shape, w.trainable) for w in emb.weights] == [("embeddings", (50, 8), True)]
    (table,) = emb.get_weights()
    assert table.shape == (50, 8) and 0 < np.abs(table).max() <= 0.05   # Keras "uniform": U(-0.05, 0.05)
    assert emb.mask_zero is True
    assert emb.non_default_config() == {"input_dim": 50, "output_dim": 8, "mask_zero": True, "name": "emb"}
    inits = {i.name: tuple(i.dims) for i in m.to_onnx().graph.initializer}
    assert inits["emb/embeddings"] == (50, 8)


def test_embedding_argument_errors():
    with pytest.raises(kdsl.KdslError, match=r"`input_dim` argument must be positive. Received: input_dim=0"):
        Embedding(0, 4)
    with pytest.raises(kdsl.KdslError, match=r"`output_dim` argument must be an int. Received: output_dim=2.5"):
        Embedding(4, 2.5)
    with pytest.raises(kdsl.KdslError, match="Unknown initializer"):
        Embedding(4, 2, embeddings_initializer="unifrom")(kdsl.Input((3,), dtype="int32"))


# -- the ids, not the embeddings, are transposed for time-major layers (kdsl.lower.rewrite) ------------------------
def _gather_transpose_graph(perm, extra_use=False, as_output=False):
    import onnx
    from onnx import TensorProto, helper

    from kdsl.lower.emitter import Emitter
    from kdsl.lower.rewrite import transpose_gather_indices

    e = Emitter(17)
    for n in ("table", "ids"):
        e.reserve(n)
    emb = e.op("Gather", ["table", "ids"], axis=0)
    y = e.op("Transpose", [emb], perm=perm)
    outs = [y] + ([e.op("Neg", [emb])] if extra_use else []) + ([emb] if as_output else [])
    before = [n.op_type for n in e.nodes]
    nodes = transpose_gather_indices(e.nodes, e, {"table": 2, "ids": 2}, outs)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("table", TensorProto.FLOAT, [10, 3]),
                                       helper.make_tensor_value_info("ids", TensorProto.INT64, [4, 5])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * 3) for o in outs])
    m = onnx.helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m, before


@pytest.mark.parametrize("perm,extra_use,as_output,rewritten", [
    ([1, 0, 2], False, False, True),       # [b, T, d] -> [T, b, d]: transpose the ids instead
    ([0, 2, 1], False, False, False),      # moves the embedding axis: left alone
    ([1, 0, 2], True, False, False),       # the embeddings feed something else too
    ([1, 0, 2], False, True, False),       # the embeddings are a graph output
])
def test_transpose_of_an_embedding_lookup_moves_to_the_ids(perm, extra_use, as_output, rewritten):
    import onnxruntime as ort

    m, before = _gather_transpose_graph(perm, extra_use, as_output)
    table = RNG.normal(size=(10, 3)).astype("float32")
    ids = RNG.integers(0, 10, size=(4, 5))
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"table": table, "ids": ids})
    assert_close(got[0], np.transpose(table[ids], perm))
    gathers = [n for n in m.graph.node if n.op_type == "Gather"]
    assert (gathers[0].input[1] != "ids") == rewritten
    assert [n.op_type for n in m.graph.node].count("Transpose") == 1 and len(m.graph.node) == len(before)


def test_embedding_then_lstm_transposes_the_token_ids():
    """Inference and training graphs of Embedding -> LSTM move [batch, T] ids, not [batch, T, dim]
    embeddings, into time-major order; the values are those of the lookup (the LSTM's own
    tests check it against NumPy)."""
    from kdsl.layers import LSTM

    x = kdsl.Input((7,), dtype="int64")
    m = kdsl.Model(x, Dense(1)(LSTM(4)(Embedding(20, 6)(x))))
    onnx_model = m.to_onnx()
    transposes = [n for n in onnx_model.graph.node if n.op_type == "Transpose"]
    assert len(transposes) == 1 and transposes[0].input[0] == onnx_model.graph.input[0].name
    ids = RNG.integers(0, 20, size=(3, 7))
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert_close(sess.run(None, {onnx_model.graph.input[0].name: ids})[0], m.predict(ids, verbose=0))
    from kdsl.losses import get as get_loss
    from kdsl.lower.training import TrainSetup, build_training
    from kdsl.optimizers import SGD

    out = m.output_names[0]
    prog = build_training(m, TrainSetup({out: get_loss("mse")}, {}, {out: []}, SGD(0.1)))
    for graph in (prog.train.graph, prog.eval.graph):
        gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0].startswith("embedding")]
        assert len(gathers) == 1 and gathers[0].name.endswith("embedding/Gather")
        producer = {o: n for n in graph.node for o in n.output}
        assert producer[gathers[0].input[1]].op_type == "Transpose"
        assert not any(n.op_type == "Transpose" and producer.get(n.input[0]) is gathers[0] for n in graph.node)

