"""Convolution layers against NumPy references written from the definitions (Keras/TF semantics)."""
import numpy as np
import onnx
import pytest

import kdsl
from helpers import assert_close, assert_shapes_agree, run_layer
from kdsl.layers import (Activation, Conv1D, Conv2D, Conv2DTranspose, Dense, DepthwiseConv2D,
                         GlobalAveragePooling2D, MaxPooling2D, SeparableConv2D)

RNG = np.random.default_rng(1)
OPSETS = [17, 21]


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


# -- NumPy references -------------------------------------------------------------------------
def tf_same_pads(size, k, s, d):
    """TF "same": output ceil(size / s); total pad split with the odd cell at the end."""
    keff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + keff - size, 0)
    return total // 2, total - total // 2


def conv2d_ref(x, kernel, bias=None, strides=(1, 1), padding="valid", dilation=(1, 1), groups=1):
    """Cross-correlation, channels-last: kernel [kh, kw, in/groups, out] (Keras layout)."""
    kh, kw, cin_g, cout = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation
    if padding == "same":
        pads = [tf_same_pads(x.shape[1], kh, sh, dh), tf_same_pads(x.shape[2], kw, sw, dw)]
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    n, h, w, _ = x.shape
    oh = (h - (kh - 1) * dh - 1) // sh + 1
    ow = (w - (kw - 1) * dw - 1) // sw + 1
    cout_g = cout // groups
    out = np.zeros((n, oh, ow, cout), np.float64)
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    pix = x[:, i * sh + a * dh, j * sw + b * dw, :].astype(np.float64)   # [n, in]
                    for o in range(cout):
                        g = o // cout_g
                        out[:, i, j, o] += pix[:, g * cin_g:(g + 1) * cin_g] @ kernel[a, b, :, o]
    return out + (0 if bias is None else bias)


def conv1d_ref(x, kernel, bias=None, stride=1, padding="valid", dilation=1, groups=1):
    k = kernel.shape[0]
    if padding == "causal":
        x = np.pad(x, [(0, 0), ((k - 1) * dilation, 0), (0, 0)])
        padding = "valid"
    return conv2d_ref(x[:, None], kernel[None], bias, (1, stride), padding, (1, dilation), groups)[:, 0]


def depthwise_ref(x, kernel, bias=None, strides=(1, 1), padding="valid", dilation=(1, 1)):
    """Output channel c * dm + m: channel c convolved with kernel[:, :, c, m]."""
    kh, kw, c, dm = kernel.shape
    outs = [conv2d_ref(x[..., ci:ci + 1], kernel[:, :, ci:ci + 1, :], None, strides, padding, dilation)
            for ci in range(c)]
    out = np.concatenate(outs, axis=-1)
    return out + (0 if bias is None else bias)


def conv_transpose_ref(x, kernel, bias=None, strides=(1, 1), padding="valid", dilation=(1, 1)):
    """TF's conv2d_transpose: the adjoint of the forward Conv2D (kernel [kh, kw, filters, in]
    read as a forward kernel from `filters` to `in` channels) whose input has Keras's
    deconv_output_length size; computed by applying the forward conv to a basis."""
    kh, kw, f, c = kernel.shape
    sizes = []
    for size, k, s, d in zip(x.shape[1:3], (kh, kw), strides, dilation):
        keff = (k - 1) * d + 1
        sizes.append(size * s + max(keff - s, 0) if padding == "valid" else size * s)
    oh, ow = sizes
    basis = np.eye(oh * ow * f).reshape(-1, oh, ow, f)
    columns = conv2d_ref(basis, kernel.astype(np.float64), None, strides, padding, dilation)  # A(e_p)
    assert columns.shape[1:] == x.shape[1:], (columns.shape, x.shape)
    out = np.einsum("phwc,nhwc->np", columns, x.astype(np.float64)).reshape(x.shape[0], oh, ow, f)
    return out + (0 if bias is None else bias)


def test_references_agree_on_a_hand_example():
    # 1 channel, 3x3 input, 2x2 kernel of ones: sums of 2x2 windows
    x = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    k = np.ones((2, 2, 1, 1), "float32")
    assert_close(conv2d_ref(x, k)[0, :, :, 0], [[8, 12], [20, 24]])
    # same: one zero row/col at the end (SAME_UPPER)
    assert_close(conv2d_ref(x, k, padding="same")[0, :, :, 0], [[8, 12, 7], [20, 24, 13], [13, 15, 8]])
    # transpose, stride 2, valid: each input cell stamps the 2x2 kernel
    y = conv_transpose_ref(np.ones((1, 2, 2, 1), "float32"), k, strides=(2, 2))
    assert_close(y[0, :, :, 0], np.ones((4, 4)))


# -- Conv2D -------------------------------------------------------------------------------------
CONV2D_CASES = [
    # filters, kernel, strides, padding, dilation, groups, use_bias, input shape
    (4, 3, 1, "valid", 1, 1, True, (2, 7, 8, 3)),
    (5, (3, 2), (2, 1), "same", 1, 1, False, (2, 9, 7, 2)),
    (6, 3, 1, "same", (2, 3), 1, True, (1, 10, 11, 4)),
    (6, (2, 4), 2, "same", 1, 2, True, (2, 8, 9, 4)),
    (4, 1, 3, "valid", 1, 4, True, (2, 7, 7, 8)),
    (3, (5, 1), 1, "valid", 1, 3, True, (1, 6, 5, 6)),
    (2, 3, 3, "same", 1, 1, True, (1, 7, 5, 1)),
    (8, 2, 1, "valid", 2, 1, False, (2, 5, 6, 3)),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("filters,kernel,strides,padding,dilation,groups,use_bias,shape", CONV2D_CASES)
def test_conv2d_matches_numpy(filters, kernel, strides, padding, dilation, groups, use_bias, shape, opset):
    layer = Conv2D(filters, kernel, strides=strides, padding=padding, dilation_rate=dilation, groups=groups,
                   use_bias=use_bias)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rand(*shape)
    k, b = rand(kh, kw, shape[-1] // groups, filters), rand(filters)
    out, _ = run_layer(layer, x, [k, b] if use_bias else [k], opset=opset)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    ref = conv2d_ref(x, k, b if use_bias else None, pair(strides), padding, pair(dilation), groups)
    assert out.shape == ref.shape
    assert_close(out, ref)


@pytest.mark.parametrize("activation,fn", [("relu", lambda v: np.maximum(v, 0)),
                                           ("softmax", lambda v: np.exp(v) / np.exp(v).sum(-1, keepdims=True))])
def test_conv2d_activation_acts_on_channels(activation, fn):
    x, k, b = rand(2, 5, 4, 3), rand(3, 3, 3, 4), rand(4)
    out, _ = run_layer(Conv2D(4, 3, padding="same", activation=activation), x, [k, b])
    assert_close(out, fn(conv2d_ref(x, k, b, padding="same")), atol=1e-5)


# -- Conv1D -------------------------------------------------------------------------------------
CONV1D_CASES = [
    # filters, kernel, stride, padding, dilation, groups, use_bias, input shape
    (4, 3, 1, "valid", 1, 1, True, (2, 9, 3)),
    (3, 3, 1, "causal", 2, 1, True, (2, 10, 2)),
    (5, 4, 2, "causal", 1, 1, False, (1, 11, 3)),
    (4, 2, 1, "same", 3, 2, True, (2, 8, 4)),
    (6, 5, 3, "same", 1, 3, True, (2, 13, 6)),
    (2, 1, 1, "valid", 1, 1, False, (3, 4, 5)),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("filters,kernel,stride,padding,dilation,groups,use_bias,shape", CONV1D_CASES)
def test_conv1d_matches_numpy(filters, kernel, stride, padding, dilation, groups, use_bias, shape, opset):
    layer = Conv1D(filters, kernel, strides=stride, padding=padding, dilation_rate=dilation, groups=groups,
                   use_bias=use_bias)
    x = rand(*shape)
    k, b = rand(kernel, shape[-1] // groups, filters), rand(filters)
    out, _ = run_layer(layer, x, [k, b] if use_bias else [k], opset=opset)
    ref = conv1d_ref(x, k, b if use_bias else None, stride, padding, dilation, groups)
    assert out.shape == ref.shape
    assert_close(out, ref)


def test_conv1d_causal_output_does_not_see_the_future():
    x = rand(1, 8, 2)
    layer = Conv1D(3, 3, padding="causal", dilation_rate=2)
    k, b = rand(3, 2, 3), rand(3)
    out1, _ = run_layer(layer, x, [k, b])
    x2 = x.copy()
    x2[:, 5:] += 1.0
    out2, _ = run_layer(Conv1D(3, 3, padding="causal", dilation_rate=2), x2, [k, b])
    assert_close(out1[:, :5], out2[:, :5])
    assert not np.allclose(out1[:, 5:], out2[:, 5:])


# -- Conv2DTranspose ------------------------------------------------------------------------------
TRANSPOSE_CASES = [
    # filters, kernel, strides, padding, dilation, use_bias, input shape
    (3, 3, 2, "same", 1, True, (2, 4, 5, 2)),
    (2, (3, 2), (2, 3), "valid", 1, True, (1, 3, 4, 3)),
    (4, 2, 3, "same", 1, False, (2, 3, 3, 2)),
    (2, 1, 2, "valid", 1, True, (1, 4, 3, 1)),
    (3, 3, 1, "same", 2, True, (1, 5, 6, 2)),
    (2, 4, 2, "same", 1, True, (2, 3, 4, 3)),
    (5, (5, 3), 1, "valid", (1, 2), True, (1, 4, 4, 2)),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("filters,kernel,strides,padding,dilation,use_bias,shape", TRANSPOSE_CASES)
def test_conv2d_transpose_matches_numpy(filters, kernel, strides, padding, dilation, use_bias, shape, opset):
    layer = Conv2DTranspose(filters, kernel, strides=strides, padding=padding, dilation_rate=dilation,
                            use_bias=use_bias)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    kh, kw = pair(kernel)
    x = rand(*shape)
    k, b = rand(kh, kw, filters, shape[-1]), rand(filters)
    out, _ = run_layer(layer, x, [k, b] if use_bias else [k], opset=opset)
    ref = conv_transpose_ref(x, k, b if use_bias else None, pair(strides), padding, pair(dilation))
    assert out.shape == ref.shape
    assert_close(out, ref, atol=1e-5)


# -- DepthwiseConv2D and SeparableConv2D ------------------------------------------------------------
DEPTHWISE_CASES = [
    # kernel, strides, padding, depth_multiplier, dilation, use_bias, input shape
    (3, 1, "valid", 1, 1, True, (2, 6, 7, 3)),
    ((3, 2), 2, "same", 2, 1, True, (2, 7, 6, 2)),
    (3, 1, "same", 3, 2, False, (1, 8, 9, 4)),
    (2, (1, 2), "valid", 1, 1, True, (1, 5, 5, 1)),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("kernel,strides,padding,dm,dilation,use_bias,shape", DEPTHWISE_CASES)
def test_depthwise_conv2d_matches_numpy(kernel, strides, padding, dm, dilation, use_bias, shape, opset):
    layer = DepthwiseConv2D(kernel, strides=strides, padding=padding, depth_multiplier=dm,
                            dilation_rate=dilation, use_bias=use_bias)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    kh, kw = pair(kernel)
    c = shape[-1]
    x = rand(*shape)
    k, b = rand(kh, kw, c, dm), rand(c * dm)
    out, _ = run_layer(layer, x, [k, b] if use_bias else [k], opset=opset)
    ref = depthwise_ref(x, k, b if use_bias else None, pair(strides), padding, pair(dilation))
    assert out.shape == ref.shape
    assert_close(out, ref)


SEPARABLE_CASES = [
    # filters, kernel, strides, padding, depth_multiplier, dilation, use_bias, input shape
    (4, 3, 1, "valid", 1, 1, True, (2, 6, 7, 3)),
    (5, (2, 3), 2, "same", 2, 1, True, (2, 7, 8, 2)),
    (3, 3, 1, "same", 1, 2, False, (1, 9, 8, 4)),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("filters,kernel,strides,padding,dm,dilation,use_bias,shape", SEPARABLE_CASES)
def test_separable_conv2d_matches_numpy(filters, kernel, strides, padding, dm, dilation, use_bias, shape, opset):
    layer = SeparableConv2D(filters, kernel, strides=strides, padding=padding, depth_multiplier=dm,
                            dilation_rate=dilation, use_bias=use_bias)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    kh, kw = pair(kernel)
    c = shape[-1]
    x = rand(*shape)
    dk, pk, b = rand(kh, kw, c, dm), rand(1, 1, c * dm, filters), rand(filters)
    out, _ = run_layer(layer, x, [dk, pk, b] if use_bias else [dk, pk], opset=opset)
    ref = depthwise_ref(x, dk, None, pair(strides), padding, pair(dilation)) @ pk[0, 0]
    ref = ref + (b if use_bias else 0)
    assert out.shape == ref.shape
    assert_close(out, ref)


# -- symbolic spatial dims ---------------------------------------------------------------------------
def run_symbolic(layer, shape, arrays, weights, opset=17):
    """Export with symbolic spatial dims, then run on arrays of several sizes."""
    import onnxruntime as ort

    x = kdsl.Input(shape, name="in0")
    y = layer(x)
    model = kdsl.Model(x, y)
    layer.set_weights(weights)
    proto = model.to_onnx(opset)
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return y, [sess.run(None, {"in0": a})[0] for a in arrays]


@pytest.mark.parametrize("strides,dilation,padding", [(2, 1, "same"), (1, 2, "same"), (2, 1, "valid"),
                                                      ((3, 2), 1, "same"), ((1, 3), 1, "same")])
def test_conv2d_with_symbolic_spatial_dims(strides, dilation, padding):
    k, b = rand(3, 2, 3, 4), rand(4)
    layer = Conv2D(4, (3, 2), strides=strides, padding=padding, dilation_rate=dilation)
    arrays = [rand(2, 7, 8, 3), rand(1, 10, 5, 3), rand(1, 6, 9, 3), rand(1, 5, 10, 3)]
    y, outs = run_symbolic(layer, (None, None, 3), arrays, [k, b])
    assert isinstance(y.type.shape[1], str) and y.type.shape[-1] == 4
    for a, out in zip(arrays, outs):
        strides2 = strides if isinstance(strides, tuple) else (strides, strides)
        assert_close(out, conv2d_ref(a, k, b, strides2, padding, (dilation,) * 2))


def test_conv1d_causal_and_transpose_with_symbolic_length():
    k, b = rand(3, 2, 3), rand(3)
    arrays = [rand(1, 7, 2), rand(2, 12, 2)]
    _, outs = run_symbolic(Conv1D(3, 3, strides=2, padding="causal"), (None, 2), arrays, [k, b])
    for a, out in zip(arrays, outs):
        assert_close(out, conv1d_ref(a, k, b, 2, "causal"))
    k, b = rand(3, 3, 2, 2), rand(2)
    arrays = [rand(1, 3, 4, 2), rand(1, 5, 2, 2)]
    y, outs = run_symbolic(Conv2DTranspose(2, 3, strides=2, padding="same"), ("h", "w", 2), arrays, [k, b])
    assert y.type.shape[1:3] == ("h*2", "w*2")
    for a, out in zip(arrays, outs):
        assert_close(out, conv_transpose_ref(a, k, b, (2, 2), "same"), atol=1e-5)


# -- layouts, weights, whole stacks ----------------------------------------------------------------------
def transposes(proto):
    return [n for n in proto.graph.node if n.op_type == "Transpose"]


def test_weights_are_keras_layout_and_initializers_onnx_layout():
    x = kdsl.Input((8, 8, 3))
    m = kdsl.Model(x, SeparableConv2D(5, (3, 2), depth_multiplier=2, name="sep")(
        Conv2DTranspose(3, 2, name="up")(Conv2D(6, (3, 2), groups=3, name="c")(x))))
    assert [w.shape for w in m.get_weights()] == [(3, 2, 1, 6), (6,), (2, 2, 3, 6), (3,),
                                                  (3, 2, 3, 2), (1, 1, 6, 5), (5,)]
    inits = {i.name: tuple(i.dims) for i in m.to_onnx().graph.initializer}
    assert inits == {"c/kernel": (6, 1, 3, 2), "c/bias": (6,), "up/kernel": (6, 3, 2, 2), "up/bias": (3,),
                     "sep/depthwise_kernel": (6, 1, 3, 2), "sep/pointwise_kernel": (5, 6, 1, 1),
                     "sep/bias": (5,)}


def test_conv_stack_has_one_transpose_and_matches_numpy():
    x = kdsl.Input((8, 8, 3), name="img")
    c1, c2 = Conv2D(4, 3, padding="same"), Conv2D(6, 3, padding="same", activation="relu")
    c3, dense = Conv2D(5, 1), Dense(2)
    h = c2(Activation("relu")(c1(x)))
    h = MaxPooling2D()(h)
    y = dense(GlobalAveragePooling2D()(c3(h)))
    m = kdsl.Model(x, y)
    proto = m.to_onnx(17)
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    ts = transposes(proto)
    assert len(ts) == 1 and ts[0].input[0] == "img"
    a = rand(2, 8, 8, 3)
    w = [l.get_weights() for l in (c1, c2, c3, dense)]
    h = np.maximum(conv2d_ref(a, *w[0], padding="same"), 0)
    h = np.maximum(conv2d_ref(h, *w[1], padding="same"), 0)
    h = h.reshape(2, 4, 2, 4, 2, 6).max(axis=(2, 4))
    ref = conv2d_ref(h, *w[2]).mean(axis=(1, 2)) @ w[3][0] + w[3][1]
    assert_close(m.predict(a), ref, atol=1e-5)


def test_activation_layer_after_conv_stays_channels_first():
    x = kdsl.Input((6, 5, 2), name="img")
    conv = Conv2D(3, 3)
    m = kdsl.Model(x, MaxPooling2D()(Activation("relu")(conv(x))))
    proto = m.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    assert len(transposes(proto)) == 2
    a = rand(2, 6, 5, 2)
    ref = np.maximum(conv2d_ref(a, *conv.get_weights()), 0)[:, :, :2].reshape(2, 2, 2, 1, 2, 3).max(axis=(2, 4))
    assert_close(m.predict(a), ref)


def test_two_convs_on_one_input_share_its_transpose():
    x = kdsl.Input((6, 6, 2), name="img")
    c1, c2 = Conv2D(4, 3), DepthwiseConv2D(3, depth_multiplier=2)
    m = kdsl.Model(x, c1(x) + c2(x))
    proto = m.to_onnx()
    onnx.checker.check_model(proto, full_check=True)
    ts = transposes(proto)   # one at the input, one back to channels-last at the output
    assert len(ts) == 2 and sum(t.input[0] == "img" for t in ts) == 1
    a = rand(2, 6, 6, 2)
    assert_close(m.predict(a), conv2d_ref(a, *c1.get_weights()) + depthwise_ref(a, *c2.get_weights()), atol=1e-5)


def test_conv_then_flatten_flattens_in_channels_last_order():
    Flatten = getattr(kdsl.layers, "Flatten", None)
    if Flatten is None:
        pytest.skip("kdsl.layers.Flatten is not written yet")
    x = kdsl.Input((5, 4, 2), name="img")
    conv, dense = Conv2D(3, 2, padding="same", activation="relu"), Dense(4)
    y = dense(Flatten()(conv(x)))
    m = kdsl.Model(x, y)
    proto = m.to_onnx(21)
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    assert len(transposes(proto)) == 2   # at the input, and back to channels-last before Flatten
    a = rand(3, 5, 4, 2)
    (k, b), (dk, db) = conv.get_weights(), dense.get_weights()
    ref = np.maximum(conv2d_ref(a, k, b, padding="same"), 0).reshape(3, -1) @ dk + db
    assert_close(m.predict(a), ref, atol=1e-5)


# -- argument and shape errors ----------------------------------------------------------------------
@pytest.mark.parametrize("make,message", [
    (lambda: Conv2D(4, 3, data_format="channels_first"),
     r"Only data_format='channels_last' is supported.*Received: data_format='channels_first'"),
    (lambda: Conv1D(4, 3, data_format="channels_first"), r"Received: data_format='channels_first'"),
    (lambda: Conv2D(4, 3, padding="causal"),
     r"Invalid value for argument `padding`: expected one of \['valid', 'same'\]. Received: padding='causal'"),
    (lambda: Conv1D(4, 3, padding="full"), r"expected one of \['valid', 'same', 'causal'\]"),
    (lambda: Conv2D(6, 3, groups=4),
     r"filters must be evenly divisible by the number of groups. Received: groups=4, filters=6"),
    (lambda: Conv2D(4, 3, strides=2, dilation_rate=2),
     r"`strides > 1` is not supported in conjunction with `dilation_rate > 1`. "
     r"Received: strides=\(2, 2\) and dilation_rate=\(2, 2\)"),
    (lambda: Conv2D(0, 3), r"The `filters` argument must be positive. Received: filters=0"),
    (lambda: Conv2D(4, (3, 3, 3)), r"`kernel_size` argument must be an int or a tuple of 2 ints. "
                                   r"Received: kernel_size=\(3, 3, 3\)"),
    (lambda: Conv2D(4, 3, strides=0), r"`strides` argument must be positive. Received: strides=0"),
    (lambda: Conv2D(4, 3, activation="rleu"), r"Unknown activation. Received: activation='rleu'"),
    (lambda: Conv2DTranspose(4, 3, output_padding=1),
     r"supports only output_padding=None.*Received: output_padding=1"),
    (lambda: DepthwiseConv2D(3, depth_multiplier=0),
     r"`depth_multiplier` argument must be positive. Received: depth_multiplier=0"),
    (lambda: SeparableConv2D(4, 3, depth_multiplier=1.5), r"Received: depth_multiplier=1.5"),
])
def test_argument_errors(make, message):
    with pytest.raises(kdsl.KdslError, match=message):
        make()


def test_kernel_larger_than_input_names_the_shape():
    with pytest.raises(kdsl.KdslError, match=r"kernel_size=\(5, 5\).*padding='valid'") as e:
        Conv2D(4, 5)(kdsl.Input((3, 3, 1)))
    assert "spatial shape (-1, -1)" in e.value.message
    assert e.value.message.endswith("Received: input shape (None, 3, 3, 1)")
    with pytest.raises(kdsl.KdslError, match=r"dilation_rate=\(3,\).*Received: input shape \(None, 6, 2\)"):
        Conv1D(4, 3, dilation_rate=3)(kdsl.Input((6, 2)))
    Conv2D(4, 5, padding="same")(kdsl.Input((3, 3, 1)))   # fine with "same"


@pytest.mark.parametrize("make,shape,message", [
    (lambda: Conv2D(4, 3), (5, 3), r"expects an input of rank 4 .*Received: input shape \(None, 5, 3\)"),
    (lambda: Conv1D(4, 3), (5, 5, 3), r"expects an input of rank 3 .*Received: input shape \(None, 5, 5, 3\)"),
    (lambda: Conv2D(4, 3, groups=2), (5, 5, 3),
     r"evenly divisible by groups=2. Received: input shape \(None, 5, 5, 3\)"),
    (lambda: DepthwiseConv2D(3), (5, 5, "c"),
     r"known number of channels. Received: input shape \(None, 5, 5, c\)"),
])
def test_input_shape_errors(make, shape, message):
    with pytest.raises(kdsl.KdslError, match=message):
        make()(kdsl.Input(shape))


def test_second_call_with_other_channels_names_both():
    layer = Conv2D(4, 3)
    layer(kdsl.Input((8, 8, 3)))
    with pytest.raises(kdsl.KdslError, match=r"built for inputs with 3 channels.*Received: input shape "
                                             r"\(None, 8, 8, 5\)"):
        layer(kdsl.Input((8, 8, 5)))
