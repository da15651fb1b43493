"""Merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate) against NumPy."""
import numpy as np
import pytest

import kdsl
from helpers import ToCF, assert_close, run_layer
from kdsl.layers import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract

RNG = np.random.default_rng(2)
OPSETS = [17, 21]


def ops_of(model, opset=17):
    return [n.op_type for n in model.to_onnx(opset).graph.node]


def keras_align(arrays):
    """Keras's rank alignment for merges: expand lower-rank inputs at axis 1."""
    rank = max(a.ndim for a in arrays)
    out = []
    for a in arrays:
        while a.ndim < rank:
            a = np.expand_dims(a, 1)
        out.append(a)
    return out


def _avg(xs):
    total = xs[0].astype(np.float64)
    for x in xs[1:]:
        total = total + x
    return total / len(xs)


REF = {
    Add: lambda xs: sum(xs[1:], xs[0]),
    Subtract: lambda xs: xs[0] - xs[1],
    Multiply: lambda xs: np.prod(np.broadcast_arrays(*xs), axis=0),
    Average: _avg,
    Maximum: lambda xs: np.max(np.broadcast_arrays(*xs), axis=0),
    Minimum: lambda xs: np.min(np.broadcast_arrays(*xs), axis=0),
}

SHAPES = [
    [(4, 5), (4, 5)],                       # rank 2
    [(3, 4, 5), (3, 4, 5)],                 # rank 3
    [(2, 3, 4, 5), (2, 3, 4, 5)],           # rank 4
    [(3, 4, 1), (3, 1, 5)],                 # broadcasting
    [(2, 3, 1, 5), (2, 1, 4, 1)],
    [(3, 5), (3, 4, 5)],                    # lower rank: expanded after the batch axis
    [(3, 4, 5), (3, 4, 5), (3, 1, 5)],      # three inputs
    [(3, 4, 5)],                            # one input (Keras 3 allows it)
]


MERGE_CASES = [pytest.param(cls, shapes, id=f"{cls.__name__}-" + "-".join("x".join(map(str, t)) for t in shapes))
               for cls in (Add, Subtract, Multiply, Average, Maximum, Minimum) for shapes in SHAPES
               if cls is not Subtract or len(shapes) == 2]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("cls,shapes", MERGE_CASES)
def test_elementwise_merge_matches_numpy(cls, shapes, opset):
    xs = [RNG.normal(size=s).astype("float32") for s in shapes]
    out, model = run_layer(cls(), xs, opset=opset)
    expected = REF[cls](keras_align(xs))
    assert out.shape == expected.shape
    assert_close(out, expected)
    assert model.layers[0].weights == [] and "Transpose" not in ops_of(model, opset)


@pytest.mark.parametrize("cls", [Add, Subtract, Multiply, Maximum, Minimum], ids=lambda c: c.__name__)
def test_elementwise_merge_on_integers(cls):
    xs = [RNG.integers(-9, 9, size=(3, 4)).astype("int32") for _ in range(2)]
    out, _ = run_layer(cls(), xs)
    assert out.dtype == np.int32
    assert (out == REF[cls](xs)).all()


def test_average_of_integers_is_float32():
    xs = [np.array([[1, 2]], "int64"), np.array([[2, 2]], "int64")]
    out, _ = run_layer(Average(), xs)
    assert out.dtype == np.float32
    assert_close(out, [[1.5, 2.0]])


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("both", [True, False])
@pytest.mark.parametrize("cls", [Add, Multiply, Average, Maximum], ids=lambda c: c.__name__)
def test_elementwise_merge_keeps_channels_first(cls, both, opset):
    a = RNG.normal(size=(2, 4, 3, 5)).astype("float32")
    b = RNG.normal(size=(2, 4, 1, 5)).astype("float32")   # broadcasts the same way in either layout

    def net(xs):
        x, y = xs
        return cls()([ToCF()(x), ToCF()(y) if both else y])

    out, model = run_layer(net, [a, b], opset=opset)
    assert_close(out, REF[cls]([a, b]))
    ops = ops_of(model, opset)
    assert ops.count("Transpose") == 3 and ops[-1] == "Transpose"   # 2 in (stand-in or merge), 1 out


def test_different_ranks_read_channels_last():
    a = RNG.normal(size=(2, 4, 3, 5)).astype("float32")
    b = RNG.normal(size=(2, 5)).astype("float32")
    out, _ = run_layer(lambda xs: Add()([ToCF()(xs[0]), xs[1]]), [a, b])
    assert_close(out, a + b[:, None, None, :])


def test_merge_errors_name_the_shapes():
    a, b = kdsl.Input((3,)), kdsl.Input((4,))
    with pytest.raises(kdsl.KdslError, match=r"incompatible shapes. Received: shapes \(None, 3\) and \(None, 4\)"):
        Add()([a, b])
    with pytest.raises(kdsl.KdslError, match=r"incompatible shapes. Received: shapes \(None, 2, 3\) and "
                                             r"\(None, 5, 3\)"):
        Multiply()([kdsl.Input((2, 3)), kdsl.Input((1, 3)), kdsl.Input((5, 3))])
    with pytest.raises(kdsl.KdslError, match=r"exactly 2 inputs. Received: 3 inputs"):
        Subtract()([a, a, a])
    with pytest.raises(kdsl.KdslError, match=r"same dtype. Received: dtypes \['float32', 'int32'\]"):
        Add()([a, kdsl.Input((3,), dtype="int32")])
    with pytest.raises(kdsl.KdslError, match="expects a list of tensors"):
        Add()(a)


# -- Concatenate ---------------------------------------------------------------------------------
CONCAT_CASES = [
    # shapes, axis
    ([(3, 4), (3, 2)], -1),
    ([(3, 4), (3, 2), (3, 1)], 1),
    ([(2, 3, 4), (2, 3, 5)], -1),
    ([(2, 3, 4), (2, 1, 4)], 1),
    ([(2, 3, 4, 5), (2, 3, 4, 2)], -1),
    ([(2, 3, 4, 5), (2, 3, 2, 5)], 2),
    ([(2, 3, 4, 5), (2, 6, 4, 5)], -3),
    ([(2, 3, 4)], -1),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("shapes,axis", CONCAT_CASES)
def test_concatenate_matches_numpy(shapes, axis, opset):
    xs = [RNG.normal(size=s).astype("float32") for s in shapes]
    out, model = run_layer(Concatenate(axis=axis), xs, opset=opset)
    assert_close(out, np.concatenate(xs, axis=axis))
    assert ops_of(model, opset) == ["Concat"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("axis,onnx_axis", [(-1, 1), (3, 1), (1, 2), (-2, 3)])
def test_concatenate_on_channels_first_values(axis, onnx_axis, opset):
    shape = [2, 3, 4, 5]
    a = RNG.normal(size=shape).astype("float32")
    shape[axis] = 2
    b = RNG.normal(size=shape).astype("float32")
    out, model = run_layer(lambda xs: Concatenate(axis=axis)([ToCF()(xs[0]), ToCF()(xs[1])]), [a, b],
                           opset=opset)
    assert_close(out, np.concatenate([a, b], axis=axis))
    proto = model.to_onnx(opset)
    concat = next(n for n in proto.graph.node if n.op_type == "Concat")
    assert concat.attribute[0].i == onnx_axis
    assert [n.op_type for n in proto.graph.node].count("Transpose") == 3


def test_concatenate_integers_and_symbolic_axis():
    a = np.arange(6, dtype="int64").reshape(1, 2, 3)
    out, _ = run_layer(Concatenate(axis=1), [a, a + 10])
    assert out.dtype == np.int64 and (out == np.concatenate([a, a + 10], 1)).all()
    x, y = kdsl.Input(("n", 3)), kdsl.Input((2, 3))
    z = Concatenate(axis=1)([x, y])
    assert z.shape == (None, "n+2", 3)
    m = kdsl.Model([x, y], z)
    from helpers import check_export
    check_export(m)
    assert m.predict([np.ones((2, 4, 3), "float32"), np.zeros((2, 2, 3), "float32")]).shape == (2, 6, 3)


def test_concatenate_errors_name_the_shapes():
    a, b = kdsl.Input((4, 5)), kdsl.Input((3, 6))
    with pytest.raises(kdsl.KdslError, match=r"matching shapes except for the concatenation axis \(axis=-1\). "
                                             r"Received: input shapes \[\(None, 4, 5\), \(None, 3, 6\)\]"):
        Concatenate()([a, b])
    with pytest.raises(kdsl.KdslError, match=r"Received: input shapes \[\(None, 4, 5\), \(None, 5\)\]"):
        Concatenate()([a, kdsl.Input((5,))])
    with pytest.raises(kdsl.KdslError, match=r"non-batch axis.*Received: axis=0"):
        Concatenate(axis=0)([a, a])
    with pytest.raises(kdsl.KdslError, match=r"Received: axis=3"):
        Concatenate(axis=3)([a, a])
    with pytest.raises(kdsl.KdslError, match=r"must be an int. Received: axis='last'"):
        Concatenate(axis="last")
    with pytest.raises(kdsl.KdslError, match=r"same dtype"):
        Concatenate()([a, kdsl.Input((4, 5), dtype="int64")])
