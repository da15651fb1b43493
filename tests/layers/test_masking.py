"""Keras's implicit masks: Embedding(mask_zero=True) -> layers that pass masks on -> pooling over
the unmasked steps only."""
import numpy as np

import kdsl
from helpers import assert_close, check_export
from kdsl import layers as L

RNG = np.random.default_rng(5)


def model(pool):
    ids = kdsl.Input((6,), dtype="int64", name="ids")
    h = L.Embedding(10, 4, mask_zero=True)(ids)
    h = L.Dense(3, activation="tanh")(h)          # passes the mask on
    return kdsl.Model(ids, pool()(h))


def reference(m, ids):
    table = m.get_layer("embedding").get_weights()[0]
    k, b = m.get_layer("dense").get_weights()
    return np.tanh(table[ids] @ k + b), ids != 0


def test_mask_propagates_and_average_pooling_skips_padded_steps():
    m = model(L.GlobalAveragePooling1D)
    dense = next(n for n in m.graph.nodes if n.layer.name == "dense")
    assert dense.outputs[0].mask is not None
    check_export(m)
    ids = np.array([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]])
    h, mask = reference(m, ids)
    expect = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert_close(m.predict(ids), expect)


def test_max_pooling_skips_padded_steps():
    m = model(L.GlobalMaxPooling1D)
    ids = np.array([[3, 4, 0, 0, 0, 0], [0, 2, 3, 0, 5, 0]])
    h, mask = reference(m, ids)
    expect = np.where(mask[..., None], h, -np.inf).max(1)
    assert_close(m.predict(ids), expect)


def test_no_mask_without_mask_zero_and_conv_drops_the_mask():
    ids = kdsl.Input((6,), dtype="int64")
    h = L.Embedding(10, 4)(ids)
    assert h.mask is None
    h2 = L.Embedding(10, 4, mask_zero=True)(ids)
    assert h2.mask is not None
    assert L.Conv1D(2, 3)(h2).mask is None          # Conv1D does not support masking (as in Keras)


def test_masked_model_round_trips_through_kd():
    m = model(L.GlobalAveragePooling1D)
    again = kdsl.loads(m.to_kd())
    ids = RNG.integers(0, 10, size=(4, 6))
    again.set_weights(m.get_weights())
    assert_close(again.predict(ids), m.predict(ids))


def test_an_all_masked_row_pools_to_zero():
    for pool in (L.GlobalMaxPooling1D, L.GlobalAveragePooling1D):
        m = model(pool)
        out = m.predict(np.array([[0, 0, 0, 0, 0, 0], [3, 0, 0, 0, 0, 0]]))
        assert_close(out[0], np.zeros(3))           # an empty text: no step to pool (Keras: NaN for the average)
        assert np.isfinite(out[1]).all() and np.abs(out[1]).max() > 0
