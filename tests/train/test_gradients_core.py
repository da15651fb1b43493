"""Gradient checks for the core layers and ops (conv/pool/norm are in test_gradients_nn.py)."""
import numpy as np
import pytest

import kdsl
from gradcheck import check_gradients
from kdsl import layers as L

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "leaky_relu",
                                 "silu", "softplus", "softsign", "hard_sigmoid", "gelu", "exponential",
                                 "mish", "log_softmax", "relu6", "hard_silu"])
def test_dense_with_each_activation(act):
    x = kdsl.Input((5,), name="x")
    m = kdsl.Model(x, {"y": L.Dense(3, activation=act)(L.Dense(4)(x))})
    X = RNG.normal(size=(6, 5))
    Y = RNG.normal(size=(6, 3))
    dtype = check_gradients(m, "mse", X, Y)
    if act in ("linear", "relu", "sigmoid", "tanh", "softmax"):
        assert dtype == np.float64


def test_dense_on_rank3_and_ops():
    x = kdsl.Input((3, 4), name="x")
    h = L.Dense(5)(x)
    from kdsl.layers.ops import FUNCTIONS as F
    y = F["mean"](F["relu"](h * 2.0 + h) - h / 3.0, axis=1)
    m = kdsl.Model(x, {"y": L.Dense(2)(y)})
    check_gradients(m, "mse", RNG.normal(size=(4, 3, 4)), RNG.normal(size=(4, 2)))
