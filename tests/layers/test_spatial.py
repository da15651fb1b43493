"""ZeroPadding2D and UpSampling2D against NumPy references (Keras/TF semantics)."""
import numpy as np
import onnx
import pytest

import kdsl
from helpers import assert_close, assert_shapes_agree, run_layer
from kdsl.layers import Conv2D, UpSampling2D, ZeroPadding2D

RNG = np.random.default_rng(3)
OPSETS = [17, 21]


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


def upsample_nearest_ref(x, size):
    out = np.empty((x.shape[0], x.shape[1] * size[0], x.shape[2] * size[1], x.shape[3]), x.dtype)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = x[:, i // size[0], j // size[1]]
    return out


def _bilinear_weights(n_in, n_out):
    """TF resize_bilinear, half_pixel_centers=True, antialias=False: for each output index
    the two source indices and the weight of the upper one."""
    scale = n_in / n_out
    rows = []
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        lo_f = np.floor(src)
        lo = int(max(lo_f, 0))
        hi = int(min(np.ceil(src), n_in - 1))
        rows.append((lo, hi, src - lo_f))
    return rows


def upsample_bilinear_ref(x, size):
    x = x.astype(np.float64)
    n, h, w, c = x.shape
    oh, ow = h * size[0], w * size[1]
    out = np.empty((n, oh, ow, c))
    rws, cws = _bilinear_weights(h, oh), _bilinear_weights(w, ow)
    for i, (t, b, fy) in enumerate(rws):
        for j, (l, r, fx) in enumerate(cws):
            top = x[:, t, l] * (1 - fx) + x[:, t, r] * fx
            bottom = x[:, b, l] * (1 - fx) + x[:, b, r] * fx
            out[:, i, j] = top * (1 - fy) + bottom * fy
    return out


def test_bilinear_reference_on_a_hand_example():
    x = np.array([[0.0, 4.0]]).reshape(1, 1, 2, 1)
    # output columns at source positions -0.25, 0.25, 0.75, 1.25 (clamped at the edges)
    assert_close(upsample_bilinear_ref(x, (1, 2))[0, 0, :, 0], [0.0, 1.0, 3.0, 4.0])


# -- ZeroPadding2D -----------------------------------------------------------------------------
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("padding,expected", [
    (1, ((1, 1), (1, 1))),
    ((2, 0), ((2, 2), (0, 0))),
    (((1, 2), (0, 3)), ((1, 2), (0, 3))),
    (((0, 0), (2, 1)), ((0, 0), (2, 1))),
])
def test_zero_padding2d_matches_numpy(padding, expected, opset):
    layer = ZeroPadding2D(padding)
    assert layer.padding == expected
    x = rand(2, 3, 4, 3)
    out, _ = run_layer(layer, x, opset=opset)
    assert_close(out, np.pad(x, [(0, 0), expected[0], expected[1], (0, 0)]))


def test_zero_padding_between_convs_stays_channels_first():
    x = kdsl.Input((5, 5, 2), name="img")
    c1, c2 = Conv2D(3, 1, use_bias=False), Conv2D(2, 3, use_bias=False)
    m = kdsl.Model(x, c2(ZeroPadding2D(((1, 0), (2, 1)))(c1(x))))
    proto = m.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    assert sum(n.op_type == "Transpose" for n in proto.graph.node) == 2   # input and output only
    a = rand(2, 5, 5, 2)
    (k1,), (k2,) = c1.get_weights(), c2.get_weights()
    h = np.pad(a.astype(np.float64) @ k1[0, 0], [(0, 0), (1, 0), (2, 1), (0, 0)])
    ref = np.zeros((2, 4, 6, 2))
    for i in range(4):
        for j in range(6):
            ref[:, i, j] = np.einsum("nabc,abco->no", h[:, i:i + 3, j:j + 3], k2)
    assert_close(m.predict(a), ref, atol=1e-5)


# -- UpSampling2D -------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("size,shape", [(2, (2, 3, 4, 3)), ((3, 2), (1, 4, 3, 2)), ((1, 4), (2, 5, 2, 1)),
                                        ((3, 3), (1, 1, 2, 2))])
def test_upsampling2d_matches_numpy(size, shape, interpolation, opset):
    x = rand(*shape)
    out, _ = run_layer(UpSampling2D(size, interpolation=interpolation), x, opset=opset)
    pair = (size, size) if isinstance(size, int) else size
    ref = upsample_nearest_ref(x, pair) if interpolation == "nearest" else upsample_bilinear_ref(x, pair)
    assert out.shape == ref.shape
    assert_close(out, ref)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsampling_after_conv_runs_channels_first(interpolation):
    x = kdsl.Input((3, 4, 2), name="img")
    conv = Conv2D(3, 1, use_bias=False)
    m = kdsl.Model(x, UpSampling2D((2, 3), interpolation=interpolation)(conv(x)))
    proto = m.to_onnx(21)
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    assert sum(n.op_type == "Transpose" for n in proto.graph.node) == 2
    a = rand(2, 3, 4, 2)
    h = a @ conv.get_weights()[0][0, 0]
    ref = upsample_nearest_ref(h, (2, 3)) if interpolation == "nearest" else upsample_bilinear_ref(h, (2, 3))
    assert_close(m.predict(a), ref, atol=1e-5)


def test_symbolic_spatial_dims():
    import onnxruntime as ort

    x = kdsl.Input(("h", "w", 2), name="in0")
    y = UpSampling2D((2, 3))(ZeroPadding2D(((1, 2), (0, 1)))(x))
    assert y.type.shape[1:] == ("(h+3)*2", "(w+1)*3", 2)
    proto = kdsl.Model(x, y).to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for a in (rand(1, 3, 4, 2), rand(2, 2, 5, 2)):
        ref = upsample_nearest_ref(np.pad(a, [(0, 0), (1, 2), (0, 1), (0, 0)]), (2, 3))
        assert_close(sess.run(None, {"in0": a})[0], ref)


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,message", [
    (lambda: ZeroPadding2D((1, 2, 3)), r"The `padding` argument must be an int, a tuple of 2 ints .*"
                                       r"Received: padding=\(1, 2, 3\)"),
    (lambda: ZeroPadding2D(-1), r"non-negative. Received: padding=-1"),
    (lambda: ZeroPadding2D(((1, 2), 3)), r"Received: padding=\(\(1, 2\), 3\)"),
    (lambda: ZeroPadding2D(((1, 2), (3, -1))), r"Received: padding=\(\(1, 2\), \(3, -1\)\)"),
    (lambda: ZeroPadding2D(data_format="channels_first"), r"Received: data_format='channels_first'"),
    (lambda: UpSampling2D(0), r"The `size` argument must be positive. Received: size=0"),
    (lambda: UpSampling2D(interpolation="bicubic"),
     r"supports only interpolation='nearest' or 'bilinear'. Received: interpolation='bicubic'"),
    (lambda: UpSampling2D(interpolation="nearst"),
     r"expected one of \['nearest', 'bilinear'\]. Received: interpolation='nearst'"),
    (lambda: UpSampling2D(data_format="channels_first"), r"Only data_format='channels_last' is supported"),
])
def test_argument_errors(make, message):
    with pytest.raises(kdsl.KdslError, match=message):
        make()


@pytest.mark.parametrize("layer", [ZeroPadding2D(1), UpSampling2D(2)])
def test_rank_error_names_the_shape(layer):
    with pytest.raises(kdsl.KdslError, match=r"expects an input of rank 4 \(batch, height, width, channels\). "
                                             r"Received: input shape \(None, 5, 3\)"):
        layer(kdsl.Input((5, 3)))
