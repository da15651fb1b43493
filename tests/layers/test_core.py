"""Dense, Activation, Dropout (inference) and every activation against NumPy references."""
import math

import numpy as np
import pytest

import kdsl
from helpers import assert_close, run_layer
from kdsl.layers import Activation, Dense, Dropout

RNG = np.random.default_rng(0)


def _erf(x):
    return np.vectorize(math.erf)(x)


def _softmax(x, axis=-1):
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


REF_ACT = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "softmax": _softmax,
    "log_softmax": lambda x: np.log(_softmax(x)),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "softplus": lambda x: np.log1p(np.exp(x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "hard_sigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
    "hard_silu": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "exponential": np.exp,
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
}


@pytest.mark.parametrize("units,use_bias,rank", [(3, True, 2), (5, False, 2), (4, True, 3), (2, False, 4)])
def test_dense_matches_numpy(units, use_bias, rank):
    shape = (6,) + (3,) * (rank - 2) + (7,)
    x = RNG.normal(size=shape).astype("float32")
    k = RNG.normal(size=(7, units)).astype("float32")
    b = RNG.normal(size=(units,)).astype("float32")
    layer = Dense(units, use_bias=use_bias)
    out, _ = run_layer(layer, x, [k, b] if use_bias else [k])
    assert_close(out, x @ k + (b if use_bias else 0))


@pytest.mark.parametrize("opset", [17, 21])
@pytest.mark.parametrize("name", sorted(REF_ACT))
def test_activation_layer_and_dense_activation(name, opset):
    x = (RNG.normal(size=(4, 9)) * 2).astype("float32")
    out, _ = run_layer(Activation(name), x, opset=opset)
    assert_close(out, REF_ACT[name](x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    k = RNG.normal(size=(9, 5)).astype("float32")
    b = RNG.normal(size=(5,)).astype("float32")
    out, _ = run_layer(Dense(5, activation=name), x, [k, b], opset=opset)
    assert_close(out, REF_ACT[name]((x @ k + b).astype(np.float64)), rtol=1e-5, atol=1e-5)


def test_dropout_is_identity_in_inference():
    x = RNG.normal(size=(3, 4, 5)).astype("float32")
    out, model = run_layer(Dropout(0.5), x)
    assert_close(out, x)


def test_dense_shape_error_names_both_shapes():
    x = kdsl.Input((4,))
    d = Dense(3)
    d(x)
    with pytest.raises(kdsl.KdslError, match=r"expects an input whose last axis is 4. Received: input shape \(None, 5\)"):
        d(kdsl.Input((5,)))


def test_unknown_activation_has_hint():
    with pytest.raises(kdsl.KdslError) as e:
        Dense(3, activation="rleu")
    assert "Unknown activation" in e.value.message and e.value.hint.startswith("did you mean 'relu'")


def test_dense_refuses_huge_weights_before_allocating():
    x = kdsl.Input((784,))
    with pytest.raises(kdsl.KdslError, match="limit is"):
        Dense(1_000_000_000_000)(x)


def test_keras_layout_and_names_of_weights():
    x = kdsl.Input((7,), name="x")
    y = Dense(3, name="proj")(x)
    m = kdsl.Model(x, y)
    proto = m.to_onnx()
    inits = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    assert inits == {"proj/kernel": (7, 3), "proj/bias": (3,)}
    assert [w.shape for w in m.get_weights()] == [(7, 3), (3,)]


def test_glorot_uniform_is_seeded_and_in_range():
    def build():
        x = kdsl.Input((50,))
        return kdsl.Model(x, Dense(30)(x))
    a, b = build().get_weights(), build().get_weights()
    assert_close(a[0], b[0], 0, 0)
    limit = math.sqrt(6 / (50 + 30))
    assert np.abs(a[0]).max() <= limit and np.abs(a[0]).max() > 0.8 * limit
    assert (a[1] == 0).all()


# -- the dropout masks (a counter-based hash; no RNG op) ------------------------------------------------------------
def _masks(shape, rate, steps, salt=12345):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from kdsl.layers.core import dropout_mask
    from kdsl.lower.emitter import Emitter
    from kdsl.lower.export import make_model

    e = Emitter(17)
    e.reserve("step")
    out = dropout_mask(e, e.ints(list(shape)), "step", salt, rate)
    g = helper.make_graph(e.nodes, "g", [helper.make_tensor_value_info("step", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(shape))])
    sess = ort.InferenceSession(make_model(g, 17).SerializeToString(), providers=["CPUExecutionProvider"])
    return [sess.run(None, {"step": np.array(s, np.float32)})[0] for s in steps]


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_masks_keep_the_right_share_with_the_keras_scale(rate):
    a, b, a2 = _masks((256, 400), rate, [7, 8, 7])
    n = a.size
    kept = a > 0
    assert set(np.unique(a)) == {0.0, np.float32(1 / (1 - rate))}
    assert abs(kept.mean() - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / n)   # a binomial's 4 sigma
    np.testing.assert_array_equal(a, a2)                                       # a function of the step
    both = (kept & (b > 0)).mean()                                             # steps independent
    assert abs(both - (1 - rate) ** 2) < 4 * np.sqrt((1 - rate) ** 2 * (1 - (1 - rate) ** 2) / n)


def test_dropout_masks_of_neighbouring_units_are_independent():
    """Pairs and triples of neighbouring elements (and elements a row apart) fall in each cell of
    a 2x2 / 2x2x2 table as independent draws would: chi-square below its 0.999 quantile."""
    (m,) = _masks((512, 400), 0.5, [3])
    k = (m > 0).astype(int).reshape(-1)
    for a, b in ((k[:-1], k[1:]), (k[:-400], k[400:])):
        counts = np.bincount(2 * a + b, minlength=4)
        exp = len(a) / 4
        assert ((counts - exp) ** 2 / exp).sum() < 16.3, counts                # chi2(3) 0.999: 16.27
    counts = np.bincount(4 * k[:-2] + 2 * k[1:-1] + k[2:], minlength=8)
    exp = (len(k) - 2) / 8
    assert ((counts - exp) ** 2 / exp).sum() < 24.3, counts                    # chi2(7) 0.999: 24.32
