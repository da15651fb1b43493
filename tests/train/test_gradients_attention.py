"""Gradient checks (training graph vs central finite differences) for MultiHeadAttention,
PositionEmbedding and TokenAndPositionEmbedding, with and without masks."""
import numpy as np
import pytest

import kdsl
from gradcheck import check_gradients
from kdsl import layers as L

RNG = np.random.default_rng(3)


def ids_with_padding(n, steps, vocab):
    ids = RNG.integers(1, vocab, size=(n, steps))
    for i in range(n):
        ids[i, RNG.integers(1, steps + 1):] = 0          # every row keeps at least one token
    return ids


@pytest.mark.parametrize("kw,call", [
    ({}, {}),
    ({"value_dim": 3, "use_bias": False}, {}),
    ({"output_shape": [2, 3]}, {}),
    ({}, {"use_causal_mask": True}),
])
def test_self_attention(kw, call):
    x = kdsl.Input((4, 5), name="x")
    h = L.Dense(5)(x)                                     # checks the attention's input gradient too
    a = L.MultiHeadAttention(num_heads=2, key_dim=3, **kw)([h, h], **call)
    y = L.Dense(2)(kdsl.layers.Flatten()(a))
    m = kdsl.Model(x, {"y": y})
    dtype = check_gradients(m, "mse", RNG.normal(size=(3, 4, 5)), RNG.normal(size=(3, 2)), n_coords=8)
    assert dtype == np.float64


def test_cross_attention_with_separate_key():
    q = kdsl.Input((3, 4), name="q")
    v = kdsl.Input((5, 6), name="v")
    k = kdsl.Input((5, 2), name="k")
    a = L.MultiHeadAttention(num_heads=2, key_dim=2, value_dim=4)([L.Dense(4)(q), L.Dense(6)(v), L.Dense(2)(k)])
    m = kdsl.Model([q, v, k], {"y": L.Dense(1)(L.GlobalAveragePooling1D()(a))})
    x = {"q": RNG.normal(size=(3, 3, 4)), "v": RNG.normal(size=(3, 5, 6)), "k": RNG.normal(size=(3, 5, 2))}
    check_gradients(m, "mse", x, RNG.normal(size=(3, 1)), n_coords=8)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("norm", [False, True])
def test_attention_with_padding_masks(causal, norm):
    ids = kdsl.Input((6,), dtype="int64", name="ids")
    h = L.Embedding(15, 6, mask_zero=True)(ids)
    a = L.MultiHeadAttention(num_heads=2, key_dim=3)([h, h], use_causal_mask=causal)
    h = L.LayerNormalization()(h + a) if norm else h + a
    y = L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(h))
    m = kdsl.Model(ids, {"y": y})
    dtype = check_gradients(m, "sparse_categorical_crossentropy", ids_with_padding(4, 6, 15),
                            RNG.integers(0, 3, 4), n_coords=8)
    assert dtype == (np.float32 if norm else np.float64)      # onnxruntime's LayerNormalization: float32 only


def test_cross_attention_with_two_padding_masks():
    a = kdsl.Input((4,), dtype="int64", name="a")
    b = kdsl.Input((5,), dtype="int64", name="b")
    ha = L.Embedding(9, 4, mask_zero=True)(a)
    hb = L.Embedding(9, 4, mask_zero=True)(b)
    y = L.MultiHeadAttention(num_heads=2, key_dim=2)([ha, hb])
    m = kdsl.Model([a, b], {"y": L.Dense(2)(L.GlobalAveragePooling1D()(y))})
    x = {"a": ids_with_padding(3, 4, 9), "b": ids_with_padding(3, 5, 9)}
    assert check_gradients(m, "mse", x, RNG.normal(size=(3, 2)), n_coords=8) == np.float64


def test_attention_dropout_in_training():
    x = kdsl.Input((4, 3), name="x")
    a = L.MultiHeadAttention(num_heads=2, key_dim=2, dropout=0.3, seed=1)([x, x])
    m = kdsl.Model(x, {"y": L.Dense(2)(L.Flatten()(a))})
    check_gradients(m, "mse", RNG.normal(size=(3, 4, 3)), RNG.normal(size=(3, 2)), n_coords=8)


@pytest.mark.parametrize("steps", [5, 3, "seq"])
def test_position_embedding(steps):
    x = kdsl.Input((steps, 4), name="x")
    h = L.Dense(4)(x)
    y = L.Dense(2)(L.GlobalAveragePooling1D()(h * L.PositionEmbedding(5)(h) + h))
    m = kdsl.Model(x, {"y": y})
    n = 4 if steps == "seq" else steps
    check_gradients(m, "mse", RNG.normal(size=(3, n, 4)), RNG.normal(size=(3, 2)), n_coords=8)


@pytest.mark.parametrize("steps,mask_zero", [(6, False), (4, True), ("seq", True)])
def test_token_and_position_embedding(steps, mask_zero):
    ids = kdsl.Input((steps,), dtype="int64", name="ids")
    h = L.TokenAndPositionEmbedding(12, 6, 4, mask_zero=mask_zero)(ids)
    a = L.MultiHeadAttention(num_heads=1, key_dim=2)([h, h])
    m = kdsl.Model(ids, {"y": L.Dense(2)(L.GlobalAveragePooling1D()(a + h))})
    n = 5 if steps == "seq" else steps
    check_gradients(m, "mse", ids_with_padding(4, n, 12), RNG.normal(size=(4, 2)), n_coords=10)


def test_every_differentiated_op_has_a_rule():
    from kdsl.lower.autodiff import RULES
    from kdsl.lower.autodiff_attention import DIFFERENTIATED_OPS

    assert set(DIFFERENTIATED_OPS) <= set(RULES)
