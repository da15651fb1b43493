"""Pooling layers against NumPy references written from the definitions (Keras/TF semantics)."""
import numpy as np
import onnx
import pytest

import kdsl
from helpers import assert_close, assert_shapes_agree, run_layer
from kdsl.layers import (AveragePooling1D, AveragePooling2D, Conv2D, GlobalAveragePooling1D,
                         GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D,
                         MaxPooling2D)

RNG = np.random.default_rng(2)
OPSETS = [17, 21]


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


def pool2d_ref(x, pool, strides, padding, kind):
    """Sliding windows over (height, width); padded cells (TF "same": the odd one at the end)
    are NaN, so max ignores them and the average excludes them."""
    x = x.astype(np.float64)
    pads = [(0, 0)]
    for size, k, s in zip(x.shape[1:3], pool, strides):
        if padding == "same":
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        else:
            pads.append((0, 0))
    x = np.pad(x, pads + [(0, 0)], constant_values=np.nan)
    n, h, w, c = x.shape
    oh, ow = (h - pool[0]) // strides[0] + 1, (w - pool[1]) // strides[1] + 1
    out = np.empty((n, oh, ow, c))
    reduce = np.nanmax if kind == "max" else np.nanmean
    for i in range(oh):
        for j in range(ow):
            window = x[:, i * strides[0]:i * strides[0] + pool[0], j * strides[1]:j * strides[1] + pool[1], :]
            out[:, i, j, :] = reduce(window, axis=(1, 2))
    return out


def pool1d_ref(x, pool, stride, padding, kind):
    return pool2d_ref(x[:, None], (1, pool), (1, stride), padding, kind)[:, 0]


def test_reference_on_a_hand_example():
    x = np.arange(1, 10, dtype="float32").reshape(1, 3, 3, 1)
    assert_close(pool2d_ref(x, (2, 2), (2, 2), "same", "avg")[0, :, :, 0], [[3, 4.5], [7.5, 9]])
    assert_close(pool2d_ref(x, (2, 2), (1, 1), "valid", "max")[0, :, :, 0], [[5, 6], [8, 9]])


POOL2D_CASES = [
    # pool_size, strides, padding, input shape
    ((2, 2), None, "valid", (2, 6, 8, 3)),
    ((3, 3), None, "valid", (2, 7, 8, 2)),
    ((3, 2), (1, 2), "same", (2, 5, 7, 3)),
    (2, 2, "same", (1, 7, 5, 4)),
    (3, 2, "same", (2, 8, 9, 1)),
    ((2, 3), (3, 1), "valid", (1, 9, 6, 2)),
    (1, 2, "same", (1, 6, 5, 2)),
    (4, 3, "same", (1, 10, 7, 3)),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("pool,strides,padding,shape", POOL2D_CASES)
def test_pooling2d_matches_numpy(pool, strides, padding, shape, kind, opset):
    cls = MaxPooling2D if kind == "max" else AveragePooling2D
    x = rand(*shape)
    out, _ = run_layer(cls(pool, strides=strides, padding=padding), x, opset=opset)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    ref = pool2d_ref(x, pair(pool), pair(strides or pool), padding, kind)
    assert out.shape == ref.shape
    assert_close(out, ref)


POOL1D_CASES = [
    # pool_size, strides, padding, input shape
    (2, None, "valid", (2, 9, 3)),
    (3, 1, "same", (2, 7, 2)),
    (4, 3, "same", (1, 11, 4)),
    (3, 2, "valid", (3, 8, 1)),
    (2, 3, "same", (1, 10, 2)),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("pool,strides,padding,shape", POOL1D_CASES)
def test_pooling1d_matches_numpy(pool, strides, padding, shape, kind, opset):
    cls = MaxPooling1D if kind == "max" else AveragePooling1D
    x = rand(*shape)
    out, _ = run_layer(cls(pool, strides=strides, padding=padding), x, opset=opset)
    ref = pool1d_ref(x, pool, strides or pool, padding, kind)
    assert out.shape == ref.shape
    assert_close(out, ref)


def test_average_pooling_same_excludes_padding():
    x = np.ones((1, 3, 3, 1), "float32")
    out, _ = run_layer(AveragePooling2D(2, padding="same"), x)
    assert_close(out, np.ones((1, 2, 2, 1)))   # corners see 1, 2 or 4 real cells: all averages are 1


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("cls,reduce,rank", [
    (GlobalAveragePooling2D, np.mean, 2), (GlobalMaxPooling2D, np.max, 2),
    (GlobalAveragePooling1D, np.mean, 1), (GlobalMaxPooling1D, np.max, 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling_matches_numpy(cls, reduce, rank, keepdims, opset):
    shape = (3, 5, 7, 4) if rank == 2 else (3, 9, 5)
    x = rand(*shape)
    out, _ = run_layer(cls(keepdims=keepdims), x, opset=opset)
    axes = tuple(range(1, rank + 1))
    assert_close(out, reduce(x.astype(np.float64), axis=axes, keepdims=keepdims))


@pytest.mark.parametrize("cls,reduce", [(GlobalAveragePooling2D, np.mean), (GlobalMaxPooling2D, np.max)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling_after_conv_needs_no_transpose_back(cls, reduce, keepdims):
    x = kdsl.Input((6, 5, 2), name="img")
    conv = Conv2D(3, 1, use_bias=False)
    m = kdsl.Model(x, cls(keepdims=keepdims)(conv(x)))
    proto = m.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    n_transposes = sum(n.op_type == "Transpose" for n in proto.graph.node)
    assert n_transposes == (2 if keepdims else 1)   # keepdims output goes back to channels-last
    a = rand(2, 6, 5, 2)
    (k,) = conv.get_weights()
    assert_close(m.predict(a), reduce(a.astype(np.float64) @ k[0, 0], axis=(1, 2), keepdims=keepdims))


def test_pooling_with_symbolic_spatial_dims():
    import onnxruntime as ort

    for cls, kind in [(MaxPooling2D, "max"), (AveragePooling2D, "avg")]:
        for pool, strides in [(3, 2), (2, 2), (1, 3), (2, 3), (3, 3), (4, 1)]:
            x = kdsl.Input((None, None, 2), name="in0")
            y = cls(pool, strides=strides, padding="same")(x)
            proto = kdsl.Model(x, y).to_onnx()
            onnx.checker.check_model(proto, full_check=True)
            assert_shapes_agree(proto)
            sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            for a in (rand(1, 7, 8, 2), rand(2, 5, 9, 2), rand(1, 6, 6, 2)):
                ref = pool2d_ref(a, (pool, pool), (strides, strides), "same", kind)
                assert_close(sess.run(None, {"in0": a})[0], ref)


@pytest.mark.parametrize("make,message", [
    (lambda: MaxPooling2D(padding="full"),
     r"Invalid value for argument `padding`: expected one of \['valid', 'same'\]. Received: padding='full'"),
    (lambda: AveragePooling2D(data_format="channels_first"),
     r"Only data_format='channels_last' is supported.*Received: data_format='channels_first'"),
    (lambda: MaxPooling1D(0), r"The `pool_size` argument must be positive. Received: pool_size=0"),
    (lambda: AveragePooling1D(2, strides=(1, 1)),
     r"The `strides` argument must be an int or a tuple of 1 ints. Received: strides=\(1, 1\)"),
    (lambda: GlobalMaxPooling2D(data_format="channels_first"), r"Received: data_format='channels_first'"),
])
def test_argument_errors(make, message):
    with pytest.raises(kdsl.KdslError, match=message):
        make()


def test_shape_errors_name_the_input_shape():
    with pytest.raises(kdsl.KdslError, match=r"pool_size=\(4, 4\) and padding='valid' does not fit") as e:
        MaxPooling2D(4)(kdsl.Input((3, 5, 1)))
    assert e.value.message.endswith("Received: input shape (None, 3, 5, 1)")
    with pytest.raises(kdsl.KdslError, match=r"expects an input of rank 4 .*Received: input shape \(None, 8, 3\)"):
        GlobalAveragePooling2D()(kdsl.Input((8, 3)))
    with pytest.raises(kdsl.KdslError,
                       match=r"expects an input of rank 3 .*Received: input shape \(None, 4, 4, 3\)"):
        MaxPooling1D()(kdsl.Input((4, 4, 3)))
    MaxPooling2D(4, padding="same")(kdsl.Input((3, 5, 1)))   # fine with "same"


def test_same_padding_on_symbolic_dims_with_window_narrower_than_stride_is_refused():
    with pytest.raises(kdsl.KdslError, match=r"pool_size=\(3, 3\), strides=\(4, 4\) and padding='same' on a "
                                             r"symbolic spatial size") as e:
        MaxPooling2D(3, strides=4, padding="same")(kdsl.Input(("h", 8, 2)))
    assert e.value.message.endswith("Received: input shape (None, h, 8, 2)")
    MaxPooling2D(3, strides=4, padding="same")(kdsl.Input((8, 8, 2)))   # fine with fixed sizes
