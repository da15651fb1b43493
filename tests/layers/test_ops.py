"""Builder-side tensor arithmetic (``+ - * / @``, numbers) and the language's functions against NumPy."""
import numpy as np
import pytest

import kdsl
from helpers import assert_close, run_layer
from kdsl.layers.ops import FUNCTIONS, function_names

RNG = np.random.default_rng(5)
OPSETS = [17, 21]
F = FUNCTIONS


def run(fn, *arrays, opset=17):
    """Build a model ``fn(*inputs)`` on inputs shaped like ``arrays``, export, check and run it."""
    out, _ = run_layer(lambda xs: fn(*xs), list(arrays), opset=opset)
    return out


def normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def _softmax(x, axis):
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


# -- arithmetic on tensors -----------------------------------------------------------------------
BINARY = {
    "+": (lambda a, b: a + b),
    "-": (lambda a, b: a - b),
    "*": (lambda a, b: a * b),
    "/": (lambda a, b: a / b),
}
BINARY_SHAPES = [((4, 5), (4, 5)), ((3, 4, 5), (3, 4, 5)), ((3, 4, 1), (3, 1, 5)),
                 ((2, 3, 4, 5), (2, 3, 1, 5))]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("sa,sb", BINARY_SHAPES)
@pytest.mark.parametrize("sym", list(BINARY))
def test_tensor_tensor_arithmetic(sym, sa, sb, opset):
    a, b = normal(*sa), normal(*sb)
    if sym == "/":
        b = np.abs(b) + 0.5
    f = BINARY[sym]
    assert_close(run(f, a, b, opset=opset), f(a.astype(np.float64), b))


NUMBER_EXPRS = {
    "x + 2": lambda x: x + 2,
    "2 + x": lambda x: 2 + x,
    "x - 1.5": lambda x: x - 1.5,
    "3 - x": lambda x: 3 - x,
    "x * -2": lambda x: x * -2,
    "0.5 * x": lambda x: 0.5 * x,
    "x / 4": lambda x: x / 4,
    "-x": lambda x: -x,
    "(x + 1) * x - x / 2": lambda x: (x + 1) * x - x / 2,
}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("expr", list(NUMBER_EXPRS))
def test_tensor_number_arithmetic(expr, opset):
    x = normal(3, 4, 5)
    f = NUMBER_EXPRS[expr]
    assert_close(run(f, x, opset=opset), f(x.astype(np.float64)))


def test_integer_tensor_arithmetic_keeps_dtype():
    a = RNG.integers(-9, 9, size=(3, 4)).astype("int32")
    b = RNG.integers(-9, 9, size=(3, 4)).astype("int32")
    out = run(lambda x, y: (x + y) * 2 - y, a, b)
    assert out.dtype == np.int32 and (out == (a + b) * 2 - b).all()


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("sa,sb", [((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (2, 2, 4, 5)),
                                   ((2, 3, 3, 4), (2, 3, 4, 1))])
def test_matmul(sa, sb, opset):
    a, b = normal(*sa), normal(*sb)
    out = run(lambda x, y: x @ y, a, b, opset=opset)
    assert_close(out, a.astype(np.float64) @ b, atol=1e-5)


def test_result_types():
    x, y = kdsl.Input((3, 1)), kdsl.Input((1, 4))
    assert (x + y).shape == (None, 3, 4) and (x * 2).shape == (None, 3, 1)
    assert (kdsl.Input((3, 4)) @ kdsl.Input((4, 6))).shape == (None, 3, 6)
    assert (kdsl.Input((3,), dtype="int64") + 1).dtype == "int64"


# -- functions of the language --------------------------------------------------------------------
@pytest.mark.parametrize("opset", OPSETS)
def test_activation_functions(opset):
    x = normal(3, 4, 5) * 3
    xd = x.astype(np.float64)
    cases = {
        "relu": (lambda v: F["relu"](v), np.maximum(xd, 0)),
        "sigmoid": (lambda v: F["sigmoid"](v), 1 / (1 + np.exp(-xd))),
        "tanh": (lambda v: F["tanh"](v), np.tanh(xd)),
        "softmax": (lambda v: F["softmax"](v), _softmax(xd, -1)),
        "softmax axis=1": (lambda v: F["softmax"](v, axis=1), _softmax(xd, 1)),
        "log_softmax axis=-2": (lambda v: F["log_softmax"](v, axis=-2), np.log(_softmax(xd, -2))),
        "swish": (lambda v: F["swish"](v), xd / (1 + np.exp(-xd))),
    }
    for name, (fn, expected) in cases.items():
        assert_close(run(fn, x, opset=opset), expected, atol=1e-5)


@pytest.mark.parametrize("opset", OPSETS)
def test_concat_and_add_functions(opset):
    a, b, c = normal(2, 3, 4), normal(2, 3, 2), normal(2, 3, 4)
    assert_close(run(lambda x, y: F["concat"]([x, y]), a, b, opset=opset), np.concatenate([a, b], -1))
    assert_close(run(lambda x, y: F["concat"]([x, x, y], axis=2), a, b, opset=opset),
                 np.concatenate([a, a, b], 2))
    assert_close(run(lambda x, y: F["concat"]([x, y], axis=1), a, c, opset=opset), np.concatenate([a, c], 1))
    assert_close(run(lambda x, y, z: F["add"]([x, y, z]), a, c, a, opset=opset), a + c + a)


@pytest.mark.parametrize("opset", OPSETS)
def test_reshape_flatten_transpose_functions(opset):
    x = normal(2, 3, 4, 5)
    assert_close(run(lambda v: F["reshape"](v, [-1, 10]), x, opset=opset), x.reshape(2, 6, 10))
    assert_close(run(lambda v: F["reshape"](v, (4, 15)), x, opset=opset), x.reshape(2, 4, 15))
    assert_close(run(lambda v: F["flatten"](v), x, opset=opset), x.reshape(2, -1))
    assert_close(run(lambda v: F["transpose"](v, [0, 3, 1, 2]), x, opset=opset), x.transpose(0, 3, 1, 2))
    assert_close(run(lambda v: F["transpose"](v, [2, 1, 3]), x, opset=opset), x.transpose(0, 2, 1, 3))


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("kwargs,axes", [({}, (-1,)), ({"axis": 1}, (1,)), ({"axis": [1, 2]}, (1, 2)),
                                         ({"axis": -2, "keepdims": True}, (-2,)),
                                         ({"axis": [1, 3], "keepdims": True}, (1, 3))])
def test_mean(kwargs, axes, opset):
    x = normal(2, 3, 4, 5)
    out = run(lambda v: F["mean"](v, **kwargs), x, opset=opset)
    assert_close(out, x.astype(np.float64).mean(axis=axes, keepdims=kwargs.get("keepdims", False)))


def test_function_names():
    names = function_names()
    for n in ("relu", "softmax", "concat", "add", "reshape", "flatten", "transpose", "mean", "swish"):
        assert n in names
    assert "linear" not in names


# -- errors ---------------------------------------------------------------------------------------
def test_incompatible_shapes_name_both():
    a, b = kdsl.Input((3,)), kdsl.Input((4,))
    for sym, f in BINARY.items():
        with pytest.raises(kdsl.KdslError, match=rf"incompatible shapes. Received: \(None, 3\) "
                                                 rf"\{sym} \(None, 4\)") as e:
            f(a, b)
        assert e.value.hint and "broadcast" in e.value.hint
    with pytest.raises(kdsl.KdslError, match=r"incompatible shapes. Received: \(None, 2, 3\) \+ \(None, 3, 3\)"):
        kdsl.Input((2, 3)) + kdsl.Input((3, 3))


def test_errors_point_at_the_call_site():
    a, b = kdsl.Input((3,)), kdsl.Input((4,))
    with pytest.raises(kdsl.KdslError) as e:
        a + b
    assert e.value.span is not None and e.value.span.file == __file__


def test_dtype_and_operand_errors():
    f, i = kdsl.Input((3,)), kdsl.Input((3,), dtype="int32")
    with pytest.raises(kdsl.KdslError, match=r"same dtype. Received: float32\[None, 3\] \+ int32\[None, 3\]"):
        f + i
    with pytest.raises(kdsl.KdslError, match=r"Unsupported operand for '\*': expected a tensor or a number. "
                                             r"Received: str"):
        f * "2"
    with pytest.raises(kdsl.KdslError, match="Unsupported operand"):
        f + True
    with pytest.raises(kdsl.KdslError, match=r"'@' needs two tensors"):
        f @ 2


def test_matmul_errors():
    with pytest.raises(kdsl.KdslError, match=r"second-to-last axis.*Received: shapes \(None, 3, 4\) @ "
                                             r"\(None, 5, 6\)"):
        kdsl.Input((3, 4)) @ kdsl.Input((5, 6))
    with pytest.raises(kdsl.KdslError, match=r"need rank >= 2"):
        kdsl.Input(()) @ kdsl.Input((3, 4))
    with pytest.raises(kdsl.KdslError, match=r"cannot broadcast the leading axes"):
        kdsl.Input((2, 3, 4)) @ kdsl.Input((3, 4, 5))


def test_function_argument_errors():
    x = kdsl.Input((3, 4))
    with pytest.raises(kdsl.KdslError, match=r"needs a floating-point tensor. Received: int32\[None, 3\]"):
        F["relu"](kdsl.Input((3,), dtype="int32"))
    with pytest.raises(kdsl.KdslError, match=r"`axis` must be an int in \[-3, 2\].*Received: axis=3"):
        F["softmax"](x, axis=3)
    with pytest.raises(kdsl.KdslError, match=r"relu\(\) takes no `axis` argument. Received: axis=1"):
        F["relu"](x, axis=1)
    with pytest.raises(kdsl.KdslError, match=r"cannot reduce the batch axis"):
        F["mean"](x, axis=0)
    with pytest.raises(kdsl.KdslError, match=r"concat\(\) needs a list of tensors"):
        F["concat"](x)
    with pytest.raises(kdsl.KdslError, match=r"add\(\) needs a list of tensors"):
        F["add"]([])
    with pytest.raises(kdsl.KdslError, match=r"reshape\(\) needs a tensor argument. Received: list"):
        F["reshape"]([1, 2], [2])
    with pytest.raises(kdsl.KdslError, match=r"cannot reshape.*Received: input shape \(None, 3, 4\) and "
                                             r"target_shape=\(5,\)"):
        F["reshape"](x, [5])
    with pytest.raises(kdsl.KdslError, match=r"Invalid permutation argument `dims`"):
        F["transpose"](x, [0, 1, 1])
    with pytest.raises(kdsl.KdslError, match=r"matching shapes except for the concatenation axis"):
        F["concat"]([x, kdsl.Input((4, 4))])
