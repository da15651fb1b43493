"""Flatten, Reshape, Permute against NumPy references."""
import numpy as np
import pytest

import kdsl
from helpers import ToCF, assert_close, check_export, dims_of, run_layer
from kdsl.layers import Flatten, Permute, Reshape

RNG = np.random.default_rng(3)
OPSETS = [17, 21]


def ops_of(model, opset=17):
    return [n.op_type for n in model.to_onnx(opset).graph.node]


def after_cf(layer):
    return lambda x: layer(ToCF()(x))


# -- Flatten --------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("shape", [(4,), (4, 6), (4, 3, 5), (2, 3, 4, 5), (2, 2, 3, 4, 2)])
def test_flatten_matches_numpy(shape, opset):
    x = RNG.normal(size=shape).astype("float32")
    out, model = run_layer(Flatten(), x, opset=opset)
    assert_close(out, x.reshape(shape[0], -1))
    assert model.outputs[0].shape == (None, int(np.prod(shape[1:])))
    assert dims_of(model.to_onnx(opset).graph.output[0])[0] == "batch"


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 4, 5)])
def test_flatten_reads_channels_last_order_of_channels_first_values(shape):
    x = RNG.normal(size=shape).astype("float32")
    out, model = run_layer(after_cf(Flatten()), x)
    assert_close(out, x.reshape(shape[0], -1))
    assert ops_of(model).count("Transpose") == 2


def test_flatten_channels_first_data_format_moves_axis_1_last():
    x = RNG.normal(size=(2, 3, 4, 5)).astype("float32")
    out, _ = run_layer(Flatten(data_format="channels_first"), x)
    assert_close(out, np.transpose(x, (0, 2, 3, 1)).reshape(2, -1))
    out, _ = run_layer(Flatten(data_format="channels_first"), x[:, :, 0, 0])
    assert_close(out, x[:, :, 0, 0])
    with pytest.raises(kdsl.KdslError, match=r"Received: data_format='nchw'"):
        Flatten(data_format="nchw")


def test_flatten_symbolic_dims():
    x = kdsl.Input(("n", 3))
    y = Flatten()(x)
    assert y.shape == (None, "n*3")
    m = kdsl.Model(x, y)
    check_export(m)
    for n in (1, 4):
        a = RNG.normal(size=(2, n, 3)).astype("float32")
        assert_close(m.predict(a), a.reshape(2, -1))


# -- Reshape --------------------------------------------------------------------------------
RESHAPE_CASES = [
    # input shape, target_shape, expected shape without batch
    ((3, 12), (3, 4), (3, 4)),
    ((3, 12), (-1, 2), (6, 2)),
    ((3, 12), (2, -1, 3), (2, 2, 3)),
    ((2, 3, 4), (-1,), (12,)),
    ((2, 3, 4), (4, 3), (4, 3)),
    ((2, 3, 4, 5), (6, -1), (6, 10)),
    ((2, 3, 4, 5), (5, 4, 3), (5, 4, 3)),
    ((2, 1), (), ()),
    ((2, 6), [1, 6, 1], (1, 6, 1)),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("shape,target,expected", RESHAPE_CASES)
def test_reshape_matches_numpy(shape, target, expected, opset):
    x = RNG.normal(size=shape).astype("float32")
    out, model = run_layer(Reshape(target), x, opset=opset)
    assert model.outputs[0].shape == (None,) + expected
    assert_close(out, x.reshape((shape[0],) + expected))
    proto = model.to_onnx(opset)
    assert dims_of(proto.graph.output[0]) == ["batch", *expected]
    const = next(n for n in proto.graph.node if n.op_type == "Constant")
    assert list(const.attribute[0].t.int64_data or np.frombuffer(const.attribute[0].t.raw_data, "int64")) \
        == [0, *expected]   # batch kept as 0, -1 computed statically


def test_reshape_of_channels_first_value_reads_channels_last():
    x = RNG.normal(size=(2, 3, 4, 5)).astype("float32")
    out, _ = run_layer(after_cf(Reshape((-1, 5))), x)
    assert_close(out, x.reshape(2, 12, 5))


def test_reshape_symbolic_dims():
    x = kdsl.Input(("n", 6))
    y = Reshape((-1, 3))(x)
    assert y.shape == (None, "n*2", 3)
    z = Reshape((2, 3, -1))(x)
    m = kdsl.Model(x, [y, z])
    check_export(m)
    a = RNG.normal(size=(2, 5, 6)).astype("float32")
    oy, oz = m.predict(a)
    assert_close(oy, a.reshape(2, 10, 3))
    assert_close(oz, a.reshape(2, 2, 3, 5))


def test_reshape_errors_name_both_shapes():
    x = kdsl.Input((2, 3, 4))
    with pytest.raises(kdsl.KdslError, match=r"24 values per sample, the target shape 25. Received: input shape "
                                             r"\(None, 2, 3, 4\) and target_shape=\(5, 5\)"):
        Reshape((5, 5))(x)
    with pytest.raises(kdsl.KdslError, match=r"blocks of 5. Received: input shape \(None, 2, 3, 4\) and "
                                             r"target_shape=\(-1, 5\)"):
        Reshape((-1, 5))(x)
    for bad in [(-1, -1), (0, 4), (2.0, 3), "24", (True, 3)]:
        with pytest.raises(kdsl.KdslError, match=r"at most one of which may be -1. Received: target_shape="):
            Reshape(bad)


# -- Permute --------------------------------------------------------------------------------
PERMUTE_CASES = [
    ((3, 4), (1,)),
    ((3, 4, 5), (2, 1)),
    ((3, 4, 5), (1, 2)),
    ((2, 3, 4, 5), (3, 1, 2)),
    ((2, 3, 4, 5), (2, 3, 1)),
    ((2, 3, 4, 5, 6), (4, 2, 3, 1)),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("shape,dims", PERMUTE_CASES)
def test_permute_matches_numpy(shape, dims, opset):
    x = RNG.normal(size=shape).astype("float32")
    out, model = run_layer(Permute(dims), x, opset=opset)
    assert_close(out, np.transpose(x, (0, *dims)))
    assert model.outputs[0].shape == (None,) + tuple(shape[d] for d in dims)


@pytest.mark.parametrize("dims", [(3, 1, 2), (2, 3, 1), (1, 2, 3)])
def test_permute_of_channels_first_value_is_one_transpose(dims):
    x = RNG.normal(size=(2, 3, 4, 5)).astype("float32")
    out, model = run_layer(after_cf(Permute(dims)), x)
    assert_close(out, np.transpose(x, (0, *dims)))
    assert ops_of(model) == ["Transpose", "Transpose"]   # the stand-in's, then permute composed with cf->cl


def test_permute_errors():
    for bad in [(1, 1), (0, 1), (2, 3), "21", (1.0, 2.0), 2]:
        with pytest.raises(kdsl.KdslError, match=r"Invalid permutation argument `dims`.*Received: dims="):
            Permute(bad)
    with pytest.raises(kdsl.KdslError, match=r"dims=\(2, 1\) for 2 axes, but the input has 3 axes besides the "
                                             r"batch axis. Received: input shape \(None, 2, 3, 4\)"):
        Permute((2, 1))(kdsl.Input((2, 3, 4)))
