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
