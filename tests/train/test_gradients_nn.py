"""Gradient checks for the neural-network layers and the VJP rules of kdsl.lower.autodiff_nn.

Two levels:

* op level (``op_check``): one ONNX op built with the Emitter, loss ``sum(y * r)`` for a
  random ``r``, every input's gradient from :func:`backprop` against central differences of
  every coordinate. This checks input gradients directly (the model-level harness sees only
  weights) and every geometry corner (pads, strides, dilations, groups, auto_pad);
* layer level (``check_gradients`` from gradcheck.py): each layer inside a small model,
  lowered in training mode, weights' gradients against finite differences. A trainable layer
  in front of a weightless layer checks the weightless layer's input gradient.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import kdsl
import kdsl.lower.autodiff_nn as nn_rules
import gradcheck
from gradcheck import check_gradients
from kdsl import layers as L
from kdsl.errors import KdslError
from kdsl.lower.autodiff import backprop
from kdsl.lower.emitter import Emitter
from kdsl.lower.export import make_model
from kdsl.lower.training import TrainSetup, _infer, build_gradient_graph
from kdsl.train.losses import get_loss
from kdsl.train.optimizers import SGD

RNG = np.random.default_rng(1)


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Each test draws the same data whether it runs alone or with the others."""
    global RNG
    RNG = np.random.default_rng(1)
_ONNX = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE, np.int64: TensorProto.INT64,
         np.int32: TensorProto.INT32}


# -- op-level harness ------------------------------------------------------------------------------------------
def _as_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """gradcheck.to_float64 without its list of float32-only ops (the op tests pick dtypes)."""
    saved = set(gradcheck.FLOAT32_ONLY)
    gradcheck.FLOAT32_ONLY.clear()
    try:
        return onnx.shape_inference.infer_shapes(gradcheck.to_float64(model))
    finally:
        gradcheck.FLOAT32_ONLY.update(saved)


def op_graph(build, inputs: dict, wrt, opset=17, prepare=False, prune=False, device="cpu"):
    """(model, grad output names, output shape): loss = sum(build(...) * r) and d loss / d wrt.

    The graph is built in float32 (as kdsl builds it) and converted to float64 when the
    inputs are float64."""
    e = Emitter(opset)
    for k in inputs:
        e.reserve(k)
    e.reserve("r")
    y = build(e, *inputs)
    loss = e.op("ReduceSum", [e.op("Mul", [y, "r"])], keepdims=0)
    f64 = any(v.dtype == np.float64 for v in inputs.values())
    vis = [helper.make_tensor_value_info(k, _ONNX[np.float32 if v.dtype == np.float64 else v.dtype.type],
                                         list(v.shape)) for k, v in inputs.items()]
    if prepare:
        nn_rules.prepare_forward(e.nodes, e)
    probe = helper.make_graph(list(e.nodes), "p", vis, [helper.make_tensor_value_info(y, TensorProto.UNDEFINED, None)])
    ysh = onnx.shape_inference.infer_shapes(make_model(probe, opset)).graph.output[0].type.tensor_type
    yshape = [d.dim_value for d in ysh.shape.dim]
    rvi = helper.make_tensor_value_info("r", TensorProto.FLOAT, yshape)
    shapes, dtypes = _infer(e, vis + [rvi], opset, [loss])
    grads = backprop(e, list(e.nodes), loss, wrt, shapes, dtypes, device=device)
    outs = [e.op("Identity", [loss], out="loss")]
    names = []
    for w in wrt:
        assert grads[w] is not None, w
        names.append(e.op("Identity", [grads[w]], out=f"grad_{w}"))
    nodes = nn_rules.prune_dead_nodes(e.nodes, outs + names) if prune else e.nodes
    g = helper.make_graph(nodes, "op", vis + [rvi], [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                      for o in outs + names])
    m = onnx.shape_inference.infer_shapes(make_model(g, opset))
    onnx.checker.check_model(m, full_check=True)
    return (_as_float64(m) if f64 else m), names, yshape


def op_check(build, inputs: dict, wrt=None, opset=17, h=None, rtol=None, prepare=False, prune=False,
             max_coords=60, device="cpu"):
    """Compare backprop's gradients of sum(build(inputs) * r) with central differences.

    The defaults suit ops linear in each input coordinate (convolutions, average pooling...),
    where a large step is exact up to rounding: float32 ``h = 0.5``, ``rtol = 1e-4`` (a 0.1%
    error in a rule fails). Piecewise-linear ops pass a step smaller than the gaps between
    values; nonlinear ones run in float64. ``device``: the graph is built for onnxruntime on that
    device (rules may pick other ops) and checked on the CPU."""
    wrt = list(inputs) if wrt is None else wrt
    m, names, yshape = op_graph(build, inputs, wrt, opset, prepare, prune, device)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    dtype = next(v.dtype for v in inputs.values() if v.dtype.kind == "f")
    feeds = dict(inputs)
    feeds["r"] = RNG.normal(size=yshape).astype(dtype)
    res = sess.run(None, feeds)
    h = h or (1e-6 if dtype == np.float64 else 0.5)
    rtol = rtol or (1e-6 if dtype == np.float64 else 1e-4)
    for w, gname, ga in zip(wrt, names, res[1:]):
        assert ga.shape == inputs[w].shape, (w, ga.shape, inputs[w].shape)
        flat = inputs[w].reshape(-1)
        idx = range(flat.size) if flat.size <= max_coords else RNG.choice(flat.size, max_coords, replace=False)
        for i in idx:
            fp, fm = flat.copy(), flat.copy()
            fp[i] += h
            fm[i] -= h
            lp = sess.run(["loss"], {**feeds, w: fp.reshape(inputs[w].shape)})[0]
            lm = sess.run(["loss"], {**feeds, w: fm.reshape(inputs[w].shape)})[0]
            fd = (float(lp) - float(lm)) / (2 * h)
            an = float(ga.reshape(-1)[i])
            assert abs(an - fd) <= rtol * max(1.0, abs(fd)), f"{w}[{i}]: analytic {an} vs finite difference {fd}"
    return m


def f32(*shape, spread=False):
    if spread:   # distinct values, far apart relative to h (for max pooling)
        n = int(np.prod(shape))
        return (RNG.permutation(n).reshape(shape) * 0.1 + RNG.uniform(-0.02, 0.02, size=shape)).astype(np.float32)
    return RNG.normal(size=shape).astype(np.float32)


# -- Conv (op level) ----------------------------------------------------------------------------------------------
CONV_CASES = [
    # x shape, w shape, attrs
    ((2, 3, 6, 7), (4, 3, 3, 3), dict()),
    ((2, 3, 6, 7), (4, 3, 3, 2), dict(pads=[1, 0, 1, 1])),
    ((2, 3, 7, 8), (4, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    ((2, 3, 8, 7), (4, 3, 3, 3), dict(strides=[2, 3], pads=[0, 1, 1, 0])),
    ((2, 3, 8, 8), (4, 3, 3, 3), dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    ((2, 3, 9, 6), (2, 3, 2, 2), dict(strides=[3, 2])),          # stride > kernel: unread cells
    ((2, 4, 6, 6), (6, 2, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    ((2, 3, 6, 6), (6, 1, 3, 3), dict(group=3, strides=[2, 2], pads=[0, 0, 1, 1])),  # depthwise, dm 2
    ((2, 3, 7, 7), (3, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((2, 3, 5, 5), (4, 3, 1, 1), dict()),                        # pointwise
    ((2, 3, 5, 5), (4, 3, 1, 1), dict(pads=[1, 0, 0, 1])),       # pad > kernel - 1: ConvTranspose
    ((2, 3, 6, 6), (6, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1])),   # depthwise, stride 1
    ((2, 3, 9), (4, 3, 3), dict(strides=[2], pads=[2, 0])),      # 1-D causal-style
    ((2, 4, 9), (4, 2, 2), dict(dilations=[3], group=2, pads=[1, 2])),
]


@pytest.mark.parametrize("input_grad", ["conv", "transpose"])
@pytest.mark.parametrize("strategy", ["offsets", "conv"])
@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
def test_conv_op(xs, ws, attrs, strategy, input_grad, monkeypatch):
    monkeypatch.setattr(nn_rules, "WEIGHT_GRAD_STRATEGY", strategy)
    monkeypatch.setattr(nn_rules, "CONV_INPUT_GRAD", input_grad)
    ins = {"x": f32(*xs), "w": f32(*ws), "b": f32(ws[0])}
    op_check(lambda e, x, w, b: e.op("Conv", [x, w, b], kernel_shape=list(ws[2:]), **attrs), ins)


CONVT_CASES = [
    ((2, 3, 4, 5), (3, 2, 3, 3), dict()),
    ((2, 3, 4, 5), (3, 2, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    ((2, 3, 3, 4), (3, 4, 2, 2), dict(strides=[2, 2])),
    ((2, 3, 3, 4), (3, 2, 1, 1), dict(strides=[2, 2], output_padding=[1, 1])),   # keff < stride
    ((2, 3, 4, 4), (3, 2, 3, 3), dict(dilations=[2, 2], pads=[1, 2, 2, 1])),
    ((2, 3, 5), (3, 2, 3), dict(strides=[2], pads=[1, 0])),
]


@pytest.mark.parametrize("strategy", ["offsets", "conv"])
@pytest.mark.parametrize("xs,ws,attrs", CONVT_CASES)
def test_conv_transpose_op(xs, ws, attrs, strategy, monkeypatch):
    monkeypatch.setattr(nn_rules, "WEIGHT_GRAD_STRATEGY", strategy)
    ins = {"x": f32(*xs), "w": f32(*ws), "b": f32(ws[1])}
    op_check(lambda e, x, w, b: e.op("ConvTranspose", [x, w, b], kernel_shape=list(ws[2:]), **attrs), ins)


def test_conv_needs_static_spatial_sizes():
    x = kdsl.Input((None, None, 3), name="x")
    m = kdsl.Model(x, {"y": L.GlobalAveragePooling2D()(L.Conv2D(2, 3)(x))})
    setup = TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, SGD(0.1))
    with pytest.raises(KdslError, match="fixed spatial sizes"):
        build_gradient_graph(m, setup)


# -- pooling (op level) ------------------------------------------------------------------------------------------
def test_onnxruntime_maxpool_indices_convention():
    """The MaxPool rule assumes Indices flat over the whole unpadded input, batch and channel
    included: ((n * C + c) * H + h) * W + w (storage_order 0), also with padding and in 1-D."""
    for shape, attrs in [((2, 3, 5, 6), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
                         ((2, 3, 4, 4), dict(kernel_shape=[2, 2], strides=[2, 2])),
                         ((2, 3, 5, 5), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
                         ((2, 3, 7), dict(kernel_shape=[3], strides=[2], pads=[1, 1]))]:
        x = f32(*shape, spread=True)
        node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
        g = helper.make_graph([node], "mp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("i", TensorProto.INT64, None)])
        sess = ort.InferenceSession(make_model(g, 17).SerializeToString(), providers=["CPUExecutionProvider"])
        y, i = sess.run(None, {"x": x})
        # NumPy reference: argmax of each window of the -inf padded input, as a flat index
        r = len(shape) - 2
        k, s = attrs["kernel_shape"], attrs["strides"]
        if attrs.get("auto_pad") == "SAME_UPPER":
            tot = [max((-(-d // st) - 1) * st + kk - d, 0) for d, st, kk in zip(shape[2:], s, k)]
            pads = [t // 2 for t in tot] + [t - t // 2 for t in tot]
        else:
            pads = attrs.get("pads", [0] * 2 * r)
        flat_idx = np.arange(x.size).reshape(shape)
        xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[j], pads[j + r]) for j in range(r)], constant_values=-np.inf)
        ip = np.pad(flat_idx, [(0, 0), (0, 0)] + [(pads[j], pads[j + r]) for j in range(r)], constant_values=-1)
        ref = np.zeros(y.shape, np.int64)
        for pos in np.ndindex(*y.shape[2:]):
            sl = tuple(slice(p * st, p * st + kk) for p, st, kk in zip(pos, s, k))
            wx = xp[(slice(None), slice(None)) + sl].reshape(shape[0], shape[1], -1)
            wi = ip[(slice(None), slice(None)) + sl].reshape(shape[0], shape[1], -1)
            ref[(slice(None), slice(None)) + pos] = np.take_along_axis(wi, wx.argmax(-1)[..., None], -1)[..., 0]
        np.testing.assert_array_equal(i, ref)
        np.testing.assert_array_equal(x.reshape(-1)[i], y)


POOL_CASES = [
    ((2, 3, 5, 6), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ((2, 3, 4, 5), dict(kernel_shape=[2, 2], strides=[2, 2])),
    ((2, 3, 5, 5), dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])),
    ((2, 2, 5, 5), dict(kernel_shape=[3, 2], strides=[1, 1], pads=[1, 0, 1, 1])),
    ((2, 3, 7, 6), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ((2, 3, 7), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
    ((2, 3, 7), dict(kernel_shape=[2], strides=[2])),
]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("prepare", [False, True])
@pytest.mark.parametrize("shape,attrs", POOL_CASES)
def test_max_pool_op(shape, attrs, prepare, device):
    """Overlapping windows scatter-add at the Indices (checked in float64: onnxruntime has the
    kernels); windows that do not overlap take MaxUnpool, which onnxruntime has for float32
    only, checked with a step smaller than the 0.06 gaps between values (the loss stays linear).
    Built for CUDA (which has no MaxUnpool), windows apart scatter without a reduction."""
    disjoint = all(s >= k for s, k in zip(attrs["strides"], attrs["kernel_shape"]))
    if disjoint:
        x, h, rtol = f32(*shape, spread=True), 0.02, 2e-3
    else:
        x, h, rtol = f32(*shape, spread=True).astype(np.float64), 1e-3, None
    m = op_check(lambda e, x: e.op("MaxPool", [x], **attrs), {"x": x}, h=h, rtol=rtol, prepare=prepare, prune=True,
                 device=device)
    pools = [n for n in m.graph.node if n.op_type == "MaxPool"]
    # prepared: the forward node outputs the Indices; else the rule adds a MaxPool for them
    assert [len(p.output) for p in pools] == ([2] if prepare else [1, 2])
    ops = {n.op_type for n in m.graph.node}
    unpool = disjoint and device == "cpu"
    assert ("MaxUnpool" in ops) == unpool and ("ScatterElements" in ops) == (not unpool)
    scatters = [n for n in m.graph.node if n.op_type == "ScatterElements"]
    assert all(any(a.name == "reduction" for a in n.attribute) == (not disjoint) for n in scatters)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("also_used", [False, True])
@pytest.mark.parametrize("shape,attrs", POOL_CASES)
def test_relu_then_max_pool(shape, attrs, also_used, device):
    """Relu -> MaxPool: the Relu's mask is applied to the pooled gradient (the argmax cell is
    positive iff the pooled value is), and the Relu rule passes the result on; with the Relu's
    output pooled twice, its gradient is a sum and its own mask applies. Half the cells are negative (many windows
    pool 0 with ties at 0)."""
    disjoint = all(s >= k for s, k in zip(attrs["strides"], attrs["kernel_shape"]))
    x = f32(*shape, spread=True)
    x = x - np.median(x)
    if not disjoint:
        x = x.astype(np.float64)

    def build(e, x):
        r = e.op("Relu", [x])
        p = e.op("MaxPool", [r], **attrs)
        return e.op("Add", [p, e.op("MaxPool", [r], **attrs)]) if also_used else p

    m = op_check(build, {"x": x}, h=0.02 if disjoint else 1e-3, rtol=2e-3 if disjoint else None, prune=True,
                 device=device)
    producer = {o: n for n in m.graph.node for o in n.output}
    relu_out = next(n.output[0] for n in m.graph.node if n.op_type == "Relu")
    full_masks = [n for n in m.graph.node if n.op_type == "Greater" and n.input[0] == relu_out]
    pooled_masks = [n for n in m.graph.node if n.op_type == "Greater" and producer[n.input[0]].op_type == "MaxPool"]
    assert (len(full_masks), len(pooled_masks)) == ((1, 2) if also_used else (0, 1))


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("shape,attrs", POOL_CASES)
def test_average_pool_op(shape, attrs, include_pad):
    op_check(lambda e, x: e.op("AveragePool", [x], count_include_pad=include_pad, **attrs), {"x": f32(*shape)})


def test_pooling_layers_take_the_fast_path_when_windows_do_not_overlap():
    m, _, _ = op_graph(lambda e, x: e.op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2]),
                       {"x": f32(2, 3, 4, 4)}, ["x"])
    assert "ConvTranspose" not in {n.op_type for n in m.graph.node}


# -- Resize, Gather (op level) -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,scales", [((2, 3, 2, 3), [1, 1, 2, 3]), ((2, 2, 3, 2), [1, 3, 2, 1]),
                                          ((1, 2, 2, 2), [1, 1, 1, 1])])
def test_resize_nearest_op(shape, scales):
    def build(e, x):
        sc = e.const(np.asarray(scales, np.float32), hint="scales")
        return e.op("Resize", [x, "", sc], mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor")
    op_check(build, {"x": f32(*shape)})


def test_resize_bilinear_is_refused():
    def build(e, x):
        sc = e.const(np.asarray([1, 1, 2, 2], np.float32), hint="scales")
        return e.op("Resize", [x, "", sc], mode="linear", coordinate_transformation_mode="half_pixel")
    with pytest.raises(KdslError, match="bilinear upsampling"):
        op_graph(build, {"x": f32(1, 2, 2, 2)}, ["x"])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("idx_dtype", [np.int64, np.int32])
@pytest.mark.parametrize("idx_shape", [(2, 4), (5,), ()])
def test_gather_op(idx_dtype, idx_shape, device):
    """An embedding lookup's gradient; built for CUDA, id 0's rows (padding) are scattered into
    spare rows and summed apart: the same values."""
    idx = RNG.integers(0, 5, size=idx_shape).astype(idx_dtype)
    if idx.size > 1:
        idx.reshape(-1)[:2] = 3   # repeated rows accumulate
        idx.reshape(-1)[-3:] = 0  # and so do the padding id's
    m = op_check(lambda e, t, i: e.op("Gather", [t, i], axis=0), {"t": f32(5, 3), "i": idx}, wrt=["t"],
                 device=device)
    ops = {n.op_type for n in m.graph.node}
    assert "ScatterND" in ops and ("Range" in ops) == (device == "cuda")


@pytest.mark.parametrize("xs,bs,gemv", [
    ((3, 2, 4), (4,), True),           # a bias over [T, batch, units]: ones @ g
    ((3, 2, 4), (1, 4), True),
    ((3, 2, 4), (1, 1, 4), True),
    ((2, 3, 2, 4), (2, 4), True),      # leading axes [2, 3] summed, the rest kept
    ((3, 4), (4,), False),             # one leading axis: ReduceSum
    ((3, 2, 4), (2, 1), False),        # a broadcast axis inside: ReduceSum
    ((3, 2, 4), (3, 1, 4), False),
])
def test_add_bias_gradient_over_leading_axes(xs, bs, gemv):
    """The gradient of a broadcast Add sums the leading axes with a GEMV where it can; the values
    are those of the finite differences either way."""
    m = op_check(lambda e, x, b: e.op("Add", [x, b]), {"x": f32(*xs), "b": f32(*bs)})
    ops = [n.op_type for n in m.graph.node if n.name.startswith("grad/")]
    assert ("MatMul" in ops) == gemv and ("ReduceSum" in ops) != gemv, ops


# -- normalization (op level) ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("prepare", [False, True])
@pytest.mark.parametrize("shape,axis", [((3, 4), -1), ((2, 3, 4), -1), ((2, 3, 4), 1)])
def test_layer_normalization_op(shape, axis, prepare):
    pshape = shape[axis % len(shape):]
    ins = {"x": RNG.normal(size=shape), "s": RNG.normal(size=pshape), "b": RNG.normal(size=pshape)}
    # the optional Mean/InvStdDev outputs are float32 whatever the input (stash_type 1): the
    # prepared graph cannot be converted to float64, so it is checked in float32
    tol = {}
    if prepare:
        ins = {k: v.astype(np.float32) for k, v in ins.items()}
        tol = dict(h=1e-2, rtol=3e-3)
    m = op_check(lambda e, x, s, b: e.op("LayerNormalization", [x, s, b], axis=axis, epsilon=1e-3), ins,
                 prepare=prepare, prune=True, **tol)
    ln = next(n for n in m.graph.node if n.op_type == "LayerNormalization")
    assert len(ln.output) == (3 if prepare else 1)


def test_layer_normalization_op_without_bias():
    ins = {"x": RNG.normal(size=(3, 5)), "s": RNG.normal(size=(5,))}
    op_check(lambda e, x, s: e.op("LayerNormalization", [x, s], axis=-1), ins)


def test_batch_normalization_inference_op():
    ins = {"x": RNG.normal(size=(2, 3, 4)), "s": RNG.normal(size=3), "b": RNG.normal(size=3),
           "mu": RNG.normal(size=3), "var": RNG.uniform(0.5, 2.0, size=3)}
    op_check(lambda e, *a: e.op("BatchNormalization", list(a), epsilon=1e-3), ins)


# -- layer level: every layer family inside a small model ------------------------------------------------------------
def _check(build, in_shape, n=3, units=2, seed=0, positive=False, **kw):
    """Input -> build(x) -> Flatten -> Dense(units), mse against random targets (data drawn
    from a per-call seed, so a test sees the same data whichever tests run)."""
    rng = np.random.default_rng(seed)
    x = kdsl.Input(in_shape, name="x")
    y = build(x)
    if y.type.rank > 2:
        y = L.Flatten()(y)
    m = kdsl.Model(x, {"y": L.Dense(units, name="head")(y)})
    data = rng.uniform(0.5, 1.5, size=(n, *in_shape)) if positive else rng.normal(size=(n, *in_shape))
    return check_gradients(m, "mse", data, rng.normal(size=(n, units)), **kw)


def _after_conv(layer, channels=2, kernel=1):
    """A Conv in front, so its kernel's gradient checks ``layer``'s input gradient."""
    return lambda x: layer(L.Conv2D(channels, kernel, name="pre")(x))


# Max-type pooling is piecewise linear: a finite-difference step must not change which cell
# wins a window. With one positive input channel and a 1x1 convolution in front, perturbing
# a kernel entry scales an output channel by a positive factor (a bias shifts it): the order
# of the cells within each channel, hence every argmax, stays put.
@pytest.mark.parametrize("kw", [dict(padding="valid"), dict(padding="same"), dict(padding="causal"),
                                dict(padding="same", strides=2), dict(padding="valid", strides=2),
                                dict(padding="causal", dilation_rate=2), dict(padding="same", dilation_rate=2),
                                dict(padding="valid", groups=2), dict(padding="same", use_bias=False)])
def test_conv1d(kw):
    _check(lambda x: L.Conv1D(4, 3, **kw)(L.Conv1D(4, 1, name="pre")(x)), (7, 2))


@pytest.mark.parametrize("kw", [dict(padding="valid"), dict(padding="same"),
                                dict(padding="valid", strides=2), dict(padding="same", strides=2),
                                dict(padding="same", strides=(2, 1)), dict(padding="same", dilation_rate=2),
                                dict(padding="valid", dilation_rate=(2, 1)), dict(padding="same", use_bias=False),
                                dict(padding="same", groups=2), dict(padding="valid", strides=2, groups=2)])
def test_conv2d(kw):
    _check(_after_conv(L.Conv2D(4, 3, **kw), channels=4), (6, 5, 2))


def test_conv2d_on_the_input_and_activation():
    _check(lambda x: L.Conv2D(3, (3, 2), padding="same", strides=2, activation="tanh")(x), (5, 6, 3))


@pytest.mark.parametrize("kw", [dict(padding="valid"), dict(padding="same"), dict(padding="valid", strides=2),
                                dict(padding="same", strides=2), dict(padding="same", strides=2, use_bias=False),
                                dict(padding="valid", kernel_size=1, strides=2)])
def test_conv2d_transpose(kw):
    kw = {"kernel_size": 3, **kw}
    _check(_after_conv(L.Conv2DTranspose(3, **kw)), (3, 4, 2))


@pytest.mark.parametrize("kw", [dict(depth_multiplier=1), dict(depth_multiplier=2),
                                dict(depth_multiplier=2, padding="same", strides=2),
                                dict(depth_multiplier=1, padding="same", dilation_rate=2, use_bias=False)])
def test_depthwise_conv2d(kw):
    _check(_after_conv(L.DepthwiseConv2D(3, **kw), channels=3), (6, 6, 2))


@pytest.mark.parametrize("kw", [dict(), dict(depth_multiplier=2, padding="same", strides=2)])
def test_separable_conv2d(kw):
    _check(_after_conv(L.SeparableConv2D(4, 3, **kw), channels=3), (6, 5, 2))


@pytest.mark.parametrize("kw", [dict(pool_size=2), dict(pool_size=2, padding="same"),
                                dict(pool_size=3, strides=2), dict(pool_size=3, strides=2, padding="same"),
                                dict(pool_size=(3, 2), strides=1, padding="same")])
@pytest.mark.parametrize("kind", ["MaxPooling2D", "AveragePooling2D"])
def test_pooling2d(kind, kw):
    _check(_after_conv(getattr(L, kind)(**kw), channels=3), (5, 7, 1), positive=True)


@pytest.mark.parametrize("kw", [dict(pool_size=2), dict(pool_size=2, padding="same"),
                                dict(pool_size=3, strides=2), dict(pool_size=3, strides=2, padding="same")])
@pytest.mark.parametrize("kind", ["MaxPooling1D", "AveragePooling1D"])
def test_pooling1d(kind, kw):
    _check(lambda x: getattr(L, kind)(**kw)(L.Conv1D(3, 1, name="pre")(x)), (7, 1), positive=True)


@pytest.mark.parametrize("kind", ["GlobalAveragePooling2D", "GlobalMaxPooling2D"])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling2d(kind, keepdims):
    _check(_after_conv(getattr(L, kind)(keepdims=keepdims), channels=3), (4, 5, 1), positive=True)


@pytest.mark.parametrize("kind", ["GlobalAveragePooling1D", "GlobalMaxPooling1D"])
def test_global_pooling1d(kind):
    # channels-last input: the reduction runs in the surface layout (float64 check)
    dtype = _check(lambda x: getattr(L, kind)()(L.Dense(3, name="pre")(x)), (5, 1), positive=True)
    assert dtype == np.float64


@pytest.mark.parametrize("padding", [1, ((1, 0), (2, 1))])
def test_zero_padding2d(padding):
    _check(_after_conv(L.ZeroPadding2D(padding)), (3, 4, 2))


@pytest.mark.parametrize("size", [2, (2, 3)])
def test_upsampling2d_nearest(size):
    _check(_after_conv(L.UpSampling2D(size)), (2, 3, 2))


def test_upsampling2d_bilinear_is_refused():
    x = kdsl.Input((2, 3, 2), name="x")
    m = kdsl.Model(x, {"y": L.Dense(2)(L.Flatten()(L.UpSampling2D(2, interpolation="bilinear")(L.Dense(2)(x))))})
    setup = TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, SGD(0.1))
    with pytest.raises(KdslError, match="bilinear upsampling"):
        build_gradient_graph(m, setup)


def test_batch_normalization_training_conv():
    # channels-first after the conv: statistics over batch and space, through the batch statistics
    _check(_after_conv(L.BatchNormalization(), channels=3), (3, 3, 2), n=4)


@pytest.mark.parametrize("kw", [dict(), dict(center=False), dict(scale=False), dict(axis=1)])
def test_batch_normalization_training_dense(kw):
    dtype = _check(lambda x: L.BatchNormalization(**kw)(L.Dense(3, name="pre")(x)), (2, 4), n=5)
    assert dtype == np.float64


@pytest.mark.parametrize("kw", [dict(axis=-1), dict(axis=[-2, -1]), dict(axis=-1, center=False),
                                dict(axis=[-1, -2])])
def test_layer_normalization(kw):
    _check(lambda x: L.LayerNormalization(**kw)(L.Dense(4, name="pre")(x)), (3, 5))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_embedding(dtype):
    x = kdsl.Input((4,), dtype=dtype, name="x")
    m = kdsl.Model(x, {"y": L.Dense(2)(L.Flatten()(L.Embedding(6, 3)(x)))})
    ids = np.array([[1, 2, 2, 5], [0, 1, 1, 1], [5, 4, 3, 2]], dtype=dtype)   # repeated ids accumulate
    check_gradients(m, "mse", ids, RNG.normal(size=(3, 2)), n_coords=12)


@pytest.mark.parametrize("kind", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"])
def test_merge(kind):
    def build(x):
        a = L.Dense(3, name="a")(x)
        b = L.Dense(3, name="b")(x)
        return getattr(L, kind)()([a, b])
    assert _check(build, (4,)) == np.float64


@pytest.mark.parametrize("kind", ["Add", "Multiply"])
def test_merge_channels_first_and_broadcast(kind):
    def build(x):
        a = L.Conv2D(2, 1, name="a")(x)
        b = L.Conv2D(2, 1, name="b")(x)
        c = L.Dense(2, name="c")(L.GlobalAveragePooling2D(keepdims=True)(x))   # (batch, 1, 1, 2)
        return getattr(L, kind)()([a, b, c])
    _check(build, (3, 3, 2))


def test_concatenate():
    def build(x):
        a = L.Conv2D(2, 1, name="a")(x)
        b = L.Conv2D(3, 1, name="b")(x)
        return L.Concatenate()([a, b, x])
    _check(build, (3, 2, 2))
    _check(lambda x: L.Concatenate(axis=1)([L.Dense(2, name="a")(x), L.Dense(2, name="b")(x)]), (3, 2))


def test_flatten_reshape_permute():
    _check(lambda x: L.Reshape((4, -1))(L.Permute((2, 1, 3))(L.Conv2D(3, 1, name="pre")(x))), (2, 4, 2))
    assert _check(lambda x: L.Permute((2, 1))(L.Reshape((2, 6))(L.Dense(3, name="pre")(x))), (4, 2)) == np.float64


def test_rescaling():
    assert _check(lambda x: L.Rescaling(0.5, offset=-1.0)(L.Dense(3, name="pre")(x)), (4,)) == np.float64


def test_dropout_rate_zero():
    assert _check(lambda x: L.Dropout(0.0)(L.Dense(3, name="pre")(x)), (4,)) == np.float64


def test_dropout_gradient_uses_the_forward_mask():
    """rate 0.5: the weights' gradients are NumPy's gradient of the model with x * mask, the mask
    recovered from a forward run of the same graph (the step input fixes the mask)."""
    x = kdsl.Input((6,), name="x")
    h = L.Dense(8, name="d1")(x)
    m = kdsl.Model(x, {"y": L.Dense(2, name="d2")(L.Dropout(0.5, seed=3)(h))})
    setup = TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, SGD(0.1))
    proto, state = build_gradient_graph(m, setup)
    nodes = list(proto.graph.node)
    head = next(n for n in nodes if n.op_type == "Gemm" and n.input[1] == "d2/kernel")
    dropped = head.input[0]
    mul = next(n for n in nodes if dropped in n.output)
    pre = next(i for i in mul.input if any(i in n.output and n.op_type == "Gemm" for n in nodes))
    for name in (pre, dropped):
        proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    n = 16
    X = RNG.normal(size=(n, 6)).astype(np.float32)
    T = RNG.normal(size=(n, 2)).astype(np.float32)
    w = {s.name: s.value for s in state}
    feeds = {"x": X, "target:y": T, "sample_weight:y": np.ones(n, np.float32), "lr": np.array(0.1, np.float32),
             "step": np.array(7, np.float32), **w}
    res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    mask = res[dropped] / res[pre]
    assert set(np.round(np.unique(mask), 5)) == {0.0, 2.0}          # dropped, or kept and scaled by 1/(1-0.5)
    assert 0.25 < (mask == 0).mean() < 0.75
    # NumPy: h = x W1 + b1, hd = h * mask, y = hd W2 + b2, loss = mean((y - t)^2)
    hh = X @ w["d1/kernel"] + w["d1/bias"]
    np.testing.assert_allclose(hh, res[pre], rtol=1e-5, atol=1e-6)
    hd = hh * mask
    y = hd @ w["d2/kernel"] + w["d2/bias"]
    dy = 2 * (y - T) / y.size
    dhd = dy @ w["d2/kernel"].T
    dh = dhd * mask
    expected = {"d2/kernel": hd.T @ dy, "d2/bias": dy.sum(0), "d1/kernel": X.T @ dh, "d1/bias": dh.sum(0)}
    for k, v in expected.items():
        np.testing.assert_allclose(res[f"grad:{k}"], v, rtol=1e-4, atol=1e-6, err_msg=k)
    # with another step, another mask
    res2 = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {**feeds, "step": np.array(8, np.float32)})))
    assert not np.array_equal(res2[dropped] / res2[pre], mask)


def test_dropout_rate_half_finite_differences():
    # the mask is a function of (step, element): fixed within a check, so finite differences apply
    assert _check(lambda x: L.Dropout(0.5)(L.Dense(6, name="pre")(x)), (4,), n=4) == np.float64


def test_small_cnn_end_to_end():
    def build(x):
        h = L.Conv2D(4, 1, name="c1")(x)
        h = L.MaxPooling2D(2)(h)
        h = L.BatchNormalization()(h)
        h = L.SeparableConv2D(4, 3, padding="same", activation="tanh")(h)
        h = L.Conv2D(3, 3, padding="same", strides=2, activation="tanh")(h)
        h = L.AveragePooling2D(2, padding="same")(h)
        return L.Dropout(0.0)(h)
    _check(build, (6, 6, 1), n=2, positive=True)


# -- the layers' ops all have rules ---------------------------------------------------------------------------------
LAYER_ZOO = [
    ((6, 6, 2), lambda x: L.Conv2D(2, 3, padding="same", strides=2, groups=2)(x)),
    ((6, 2), lambda x: L.Conv1D(2, 3, padding="causal", dilation_rate=2)(x)),
    ((3, 3, 2), lambda x: L.Conv2DTranspose(2, 3, padding="same", strides=2)(x)),
    ((6, 6, 2), lambda x: L.DepthwiseConv2D(3, depth_multiplier=2)(x)),
    ((6, 6, 2), lambda x: L.SeparableConv2D(2, 3)(x)),
    ((6, 6, 2), lambda x: L.MaxPooling2D(3, 2, padding="same")(L.Dense(2)(x))),
    ((6, 6, 2), lambda x: L.AveragePooling2D(3, 2, padding="same")(L.Dense(2)(x))),
    ((6, 2), lambda x: L.MaxPooling1D(2)(L.Dense(2)(x))),
    ((6, 2), lambda x: L.AveragePooling1D(2)(L.Dense(2)(x))),
    ((6, 6, 2), lambda x: L.GlobalMaxPooling2D()(L.Dense(2)(x))),
    ((6, 2), lambda x: L.GlobalAveragePooling1D()(L.Dense(2)(x))),
    ((3, 3, 2), lambda x: L.UpSampling2D(2)(L.ZeroPadding2D(1)(L.Dense(2)(x)))),
    ((3, 3, 2), lambda x: L.BatchNormalization()(L.Conv2D(2, 1)(x))),
    ((3, 4), lambda x: L.LayerNormalization(axis=[-2, -1])(L.Dense(4)(x))),
    ((4,), lambda x: L.Concatenate()([L.Dense(2)(x), L.Subtract()([L.Dense(4)(x), x])])),
    ((4,), lambda x: L.Average()([L.Maximum()([L.Dense(4)(x), x]), L.Minimum()([L.Dense(4)(x), x])])),
    ((2, 2, 2), lambda x: L.Permute((3, 1, 2))(L.Reshape((2, 4, 1))(L.Rescaling(2.0)(L.Dense(2)(x))))),
    ((4,), lambda x: L.Dropout(0.5)(L.Dense(4)(x))),
    ((3, 4), lambda x: L.Dropout(0.5, noise_shape=(1, 4))(L.Dense(4)(x))),
]


@pytest.mark.parametrize("opset", [17, 20])
def test_every_layer_builds_a_gradient_graph(opset):
    from kdsl.layers.activations import ACTIVATIONS

    zoo = LAYER_ZOO + [((4,), lambda x, a=a: L.Activation(a)(L.Dense(4)(x))) for a in ACTIVATIONS]
    for shape, build in zoo:
        x = kdsl.Input(shape, name="x")
        y = build(x)
        m = kdsl.Model(x, {"y": L.Dense(2)(L.Flatten()(y) if y.type.rank > 2 else y)})
        setup = TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, SGD(0.1))
        proto, state = build_gradient_graph(m, setup, opset=opset)
        outs = {o.name for o in proto.graph.output}
        assert all(f"grad:{s.name}" in outs for s in state if s.kind == "weight"), shape


# -- the graph passes for training.py: prepare_forward and prune_dead_nodes -----------------------------------------
def _gradients(proto, state, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {k: v for k, v in feeds.items()
                                           if k in {i.name for i in sess.get_inputs()}})))


def test_prepare_forward_and_prune_keep_the_gradients(monkeypatch):
    """The training-graph builder's passes (see the module doc of autodiff_nn): MaxPool reuses the
    forward's Indices, LayerNormalization its statistics, and nothing unused stays in the graph
    (no input gradient for the first convolution). Simulated around build_gradient_graph."""
    import kdsl.lower.training as training

    def model():
        x = kdsl.Input((6, 6, 1), name="x")
        h = L.Conv2D(3, 3, padding="same", name="c1")(x)
        h = L.MaxPooling2D(2)(h)
        h = L.LayerNormalization()(h)
        return kdsl.Model(x, {"y": L.Dense(2)(L.Flatten()(L.Conv2D(2, 1)(h)))})

    setup = TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, SGD(0.1))
    pruned, state2 = build_gradient_graph(model(), setup)          # training.py runs both passes
    monkeypatch.setattr(training, "prepare_forward", lambda nodes, e=None: nodes)
    monkeypatch.setattr(training, "prune_dead_nodes", lambda nodes, outputs: list(nodes))
    plain, state = build_gradient_graph(model(), setup)            # the same without them
    onnx.checker.check_model(pruned, full_check=True)

    def ops(m):
        return [n.op_type for n in m.graph.node]
    assert ops(plain).count("MaxPool") == 2 and ops(pruned).count("MaxPool") == 1
    # no input gradient for c1 (its input is data): the rules skip it, so neither graph has it;
    # an input gradient is a (transposed) convolution of dY with a kernel
    def input_grad_kernels(m):
        producer = {o: n for n in m.graph.node for o in n.output}

        def source(v):
            while v in producer and producer[v].op_type in ("Transpose", "Slice", "Reshape"):
                v = producer[v].input[0]
            return v
        return sorted(source(n.input[1]) for n in m.graph.node
                      if n.op_type in ("Conv", "ConvTranspose") and n.name.startswith("grad/")
                      and source(n.input[1]).endswith("/kernel"))
    assert input_grad_kernels(plain) == input_grad_kernels(pruned) == ["conv2d/kernel"]
    ln = next(n for n in pruned.graph.node if n.op_type == "LayerNormalization")
    assert len(ln.output) == 3
    assert len(pruned.graph.node) < len(plain.graph.node)

    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(4, 6, 6, 1)).astype(np.float32), "target:y": rng.normal(size=(4, 2)).astype(np.float32),
             "sample_weight:y": np.ones(4, np.float32), "lr": np.array(0.1, np.float32),
             "step": np.array(1, np.float32), **{s.name: s.value for s in state}}
    a, b = _gradients(plain, state, feeds), _gradients(pruned, state2, feeds)
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_prune_drops_unused_optional_outputs():
    e = Emitter(17)
    e.reserve("x")
    y = e.op("MaxPool", ["x"], kernel_shape=[2, 2])
    nn_rules.prepare_forward(e.nodes, e)
    assert len(e.nodes[0].output) == 2
    out = e.op("Relu", [y], out="out")
    e.op("Neg", [y])                                          # dead
    kept = nn_rules.prune_dead_nodes(e.nodes, [out])
    assert [n.op_type for n in kept] == ["MaxPool", "Relu"]
    assert list(kept[0].output) == [y]


@pytest.mark.parametrize("opset", [18, 21])
def test_rules_at_newer_opsets(opset):
    """Reductions take axes as inputs from opset 18: the rules' graphs still run."""
    op_check(lambda e, x: e.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             {"x": f32(2, 2, 5, 5, spread=True).astype(np.float64)}, h=1e-3, opset=opset, prepare=True)
    op_check(lambda e, x: e.op("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             {"x": f32(2, 2, 5, 5)}, opset=opset)
    op_check(lambda e, x, s, b: e.op("LayerNormalization", [x, s, b], axis=-1),
             {"x": RNG.normal(size=(3, 4)), "s": RNG.normal(size=4), "b": RNG.normal(size=4)}, opset=opset)
    op_check(lambda e, x, w: e.op("Conv", [x, w], kernel_shape=[3], group=2, pads=[1, 1]),
             {"x": f32(2, 4, 6), "w": f32(4, 2, 3)}, opset=opset)
    op_check(lambda e, t, i: e.op("Gather", [t, i], axis=0), {"t": f32(4, 2), "i": np.array([[0, 3, 3]])},
             wrt=["t"], opset=opset)
