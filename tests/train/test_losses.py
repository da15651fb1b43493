"""Losses: the ONNX the losses emit, run in onnxruntime, against NumPy implementations of
Keras 3's formulas (written here from Keras's documented math), for several argument
combinations, sample weights, reductions and outputs of rank 2 and 3; the same losses inside
real training graphs (value and gradients); and name resolution."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import kdsl
from gradcheck import check_gradients
from kdsl import layers as L
from kdsl.errors import KdslError
from kdsl.ir import BATCH, TensorType
from kdsl.lower.emitter import ONNX_DTYPE, Emitter
from kdsl.lower.export import make_model
from kdsl.lower.training import TrainSetup, build_gradient_graph, build_training
from kdsl.train import losses as K
from kdsl.train.losses import LOSS_CLASSES, get_loss
from kdsl.train.optimizers import SGD
from kdsl.train.specs import Spec

EPS = 1e-7
# Keras clips float32 tensors: the bounds are float32 too (1 - 1e-7 rounds to 1 - 2**-23)
LO, HI = float(np.float32(EPS)), float(np.float32(1.0 - EPS))
RNG = np.random.default_rng(1234)


# -- NumPy references (Keras 3 formulas, float64) -------------------------------------------------
def np_log_softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def np_cce(yt, yp, from_logits=False, label_smoothing=0.0, axis=-1):
    yt = yt.astype(np.float64)
    yp = yp.astype(np.float64)
    if label_smoothing:
        yt = yt * (1.0 - label_smoothing) + label_smoothing / yt.shape[-1]
    if from_logits:
        logp = np_log_softmax(yp, axis)
    else:
        p = yp / np.sum(yp, axis=axis, keepdims=True)
        logp = np.log(np.clip(p, LO, HI))
    return -np.sum(yt * logp, axis=axis)


def np_scce(labels, yp, from_logits=False, ignore_class=None):
    labels = np.asarray(labels).astype(np.int64)
    if labels.ndim == yp.ndim and labels.shape[-1] == 1:
        labels = labels[..., 0]
    c = yp.shape[-1]
    valid = np.ones(labels.shape, bool) if ignore_class is None else labels != ignore_class
    onehot = (labels[..., None] == np.arange(c)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np_cce(onehot, yp, from_logits=from_logits)
    return np.where(valid, v, 0.0), (None if ignore_class is None else valid.astype(np.float64))


def np_bce(yt, yp, from_logits=False, label_smoothing=0.0, axis=-1):
    yt = yt.astype(np.float64)
    x = yp.astype(np.float64)
    if label_smoothing:
        yt = yt * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        v = np.maximum(x, 0) - x * yt + np.log1p(np.exp(-np.abs(x)))
    else:
        p = np.clip(x, LO, HI)
        v = -(yt * np.log(p) + (1 - yt) * np.log(1 - p))
    return np.mean(v, axis=axis)


def np_mse(yt, yp):
    return np.mean((yt.astype(np.float64) - yp) ** 2, axis=-1)


def np_mae(yt, yp):
    return np.mean(np.abs(yt.astype(np.float64) - yp), axis=-1)


def np_huber(yt, yp, delta=1.0):
    d = yp.astype(np.float64) - yt
    a = np.abs(d)
    return np.mean(np.where(a <= delta, 0.5 * d * d, delta * a - 0.5 * delta * delta), axis=-1)


def np_kld(yt, yp):
    t = np.clip(yt.astype(np.float64), LO, 1)
    p = np.clip(yp.astype(np.float64), LO, 1)
    return np.sum(t * np.log(t / p), axis=-1)


def np_hinge(yt, yp):
    yt = yt.astype(np.float64)
    if np.all((yt == 0) | (yt == 1)):
        yt = 2 * yt - 1
    return np.mean(np.maximum(1 - yt * yp, 0), axis=-1)


def np_reduce(values, sw, reduction, mask=None):
    """Keras's reduce_weighted_values (+ apply_mask) with [batch] weights broadcast over the values."""
    sw = sw.astype(np.float64).reshape((-1,) + (1,) * (values.ndim - 1))
    if mask is not None:
        if reduction in ("sum_over_batch_size", "mean"):
            mask = mask * (mask.size / mask.sum() if mask.sum() else 0.0)
        sw = sw * mask
    wv = values * sw
    if reduction in ("sum_over_batch_size", "mean"):
        return wv.sum() / wv.size
    if reduction == "sum":
        return wv.sum()
    d = np.broadcast_to(sw, values.shape).sum()
    return wv.sum() / d if d else 0.0


# -- running the emitted ONNX -------------------------------------------------------------------------
def run_loss(loss, y_pred, y_true, sw, opset=17, grad=False):
    """Build ``loss.emit`` into a tiny graph and run it; optionally also d(loss)/d(y_pred)."""
    from kdsl.lower.autodiff import backprop

    out = TensorType("float32", (BATCH,) + tuple(y_pred.shape[1:]))
    tt = loss.target_type(out)
    e = Emitter(opset)
    for n in ("y_pred", "y_true", "sw"):
        e.reserve(n)
    value = loss.emit(e, "y_pred", "y_true", "sw", out)
    e.op("Identity", [value], out="loss")
    inputs = [helper.make_tensor_value_info("y_pred", TensorProto.FLOAT, ["N", *y_pred.shape[1:]]),
              helper.make_tensor_value_info("y_true", ONNX_DTYPE[tt.dtype], ["N", *tt.shape[1:]]),
              helper.make_tensor_value_info("sw", TensorProto.FLOAT, ["N"])]
    outputs = ["loss"]
    if grad:
        g = helper.make_graph(list(e.nodes), "infer", inputs, [helper.make_tensor_value_info("loss", 1, [])])
        m = onnx.shape_inference.infer_shapes(make_model(g, opset))
        shapes = {vi.name: tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                                 for d in vi.type.tensor_type.shape.dim)
                  for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
        for n in e.nodes:
            if n.op_type == "Constant":
                shapes[n.output[0]] = tuple(n.attribute[0].t.dims)
        grads = backprop(e, list(e.nodes), "loss", ["y_pred"], shapes)
        e.op("Identity", [grads["y_pred"]], out="dloss")
        outputs.append("dloss")
    out_vis = [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])]
    if grad:
        out_vis.append(helper.make_tensor_value_info("dloss", TensorProto.FLOAT, ["N", *y_pred.shape[1:]]))
    model = make_model(helper.make_graph(e.nodes, "loss", inputs, out_vis), opset)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"y_pred": y_pred.astype(np.float32), "y_true": y_true.astype(tt.dtype),
             "sw": sw.astype(np.float32)}
    res = sess.run(None, feeds)
    return (float(res[0]), res[1]) if grad else float(res[0])


def probs(shape, zeros=False):
    p = RNG.random(shape) + 0.05
    if zeros:                                # some exact zeros: exercises the clip
        p[RNG.random(shape) < 0.2] = 0.0
        p[..., 0] += 0.1
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def onehot(shape):
    labels = RNG.integers(0, shape[-1], size=shape[:-1])
    return np.eye(shape[-1], dtype=np.float32)[labels]


def weights(n, kind):
    if kind == "ones":
        return np.ones(n, np.float32)
    if kind == "zeros_some":
        w = RNG.random(n).astype(np.float32) * 2
        w[::3] = 0.0
        return w
    return (RNG.random(n) * 3).astype(np.float32)


SHAPES = [(6, 4), (5, 3, 4)]
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight"]
SW_KINDS = ["ones", "random", "zeros_some"]


def check(loss, ref_values, y_pred, y_true, sw_kind, reduction, mask=None, opset=17, rtol=2e-5, atol=2e-6):
    sw = weights(len(y_pred), sw_kind)
    got = run_loss(loss, y_pred, y_true, sw, opset=opset)
    want = np_reduce(ref_values, sw, reduction, mask)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# -- categorical crossentropy ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("sw_kind", SW_KINDS)
def test_categorical_crossentropy(shape, from_logits, label_smoothing, sw_kind):
    yt = onehot(shape)
    yp = (RNG.normal(size=shape) * 3).astype(np.float32) if from_logits else probs(shape, zeros=True)
    loss = K.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
    check(loss, np_cce(yt, yp, from_logits, label_smoothing), yp, yt, sw_kind, "sum_over_batch_size")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_categorical_crossentropy_reductions(reduction):
    shape = (7, 3, 5)
    yt = onehot(shape)
    yp = probs(shape)
    loss = K.CategoricalCrossentropy(reduction=reduction)
    check(loss, np_cce(yt, yp), yp, yt, "zeros_some", reduction)


@pytest.mark.parametrize("from_logits", [False, True])
def test_categorical_crossentropy_axis(from_logits):
    shape = (4, 5, 3)             # classes on axis 1 (channels-first)
    labels = RNG.integers(0, 5, size=(4, 3))
    yt = np.moveaxis(np.eye(5, dtype=np.float32)[labels], -1, 1)
    yp = (RNG.normal(size=shape)).astype(np.float32) if from_logits else \
        np.moveaxis(probs((4, 3, 5)), -1, 1).copy()
    loss = K.CategoricalCrossentropy(from_logits=from_logits, axis=1, label_smoothing=0.2)
    # Keras smooths with the size of the last axis, whatever `axis` is
    ref = np_cce(yt, yp, from_logits, 0.2, axis=1)
    check(loss, ref, yp, yt, "random", "sum_over_batch_size")


def test_categorical_crossentropy_unnormalized_probabilities_are_rescaled():
    yp = np.array([[2.0, 1.0, 1.0], [0.0, 0.5, 0.5]], np.float32)      # rows sum to 4 and 1
    yt = np.array([[1, 0, 0], [1, 0, 0]], np.float32)
    got = run_loss(K.CategoricalCrossentropy(), yp, yt, np.ones(2, np.float32))
    assert got == pytest.approx((-np.log(0.5) - np.log(LO)) / 2, rel=1e-5)


def test_keras_documented_values():
    # values from Keras's docstrings
    yt = np.array([[0, 1, 0], [0, 0, 1]], np.float32)
    yp = np.array([[0.05, 0.95, 0], [0.1, 0.8, 0.1]], np.float32)
    assert run_loss(K.CategoricalCrossentropy(), yp, yt, np.ones(2, np.float32)) == \
        pytest.approx((0.0513 + 2.303) / 2, abs=1e-3)
    assert run_loss(K.SparseCategoricalCrossentropy(), yp, np.array([1, 2]), np.ones(2, np.float32)) == \
        pytest.approx((0.0513 + 2.303) / 2, abs=1e-3)
    yt = np.array([[0, 1], [0, 0]], np.float32)
    yp = np.array([[0.6, 0.4], [0.4, 0.6]], np.float32)
    assert run_loss(K.BinaryCrossentropy(), yp, yt, np.ones(2, np.float32)) == \
        pytest.approx((0.916 + 0.714) / 2, abs=1e-3)
    assert run_loss(K.Huber(), yp, yt, np.ones(2, np.float32)) == pytest.approx(0.155, abs=1e-3)


# -- sparse categorical crossentropy --------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("sw_kind", SW_KINDS)
def test_sparse_categorical_crossentropy(shape, from_logits, sw_kind):
    labels = RNG.integers(0, shape[-1], size=shape[:-1])
    yp = (RNG.normal(size=shape) * 2).astype(np.float32) if from_logits else probs(shape, zeros=True)
    loss = K.SparseCategoricalCrossentropy(from_logits=from_logits)
    ref, _ = np_scce(labels, yp, from_logits)
    check(loss, ref, yp, labels, sw_kind, "sum_over_batch_size")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_class", [0, -1])
def test_sparse_categorical_crossentropy_ignore_class(shape, from_logits, reduction, ignore_class):
    labels = RNG.integers(0, shape[-1], size=shape[:-1])
    labels[RNG.random(labels.shape) < 0.3] = ignore_class
    yp = (RNG.normal(size=shape)).astype(np.float32) if from_logits else probs(shape)
    loss = K.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=ignore_class, reduction=reduction)
    ref, mask = np_scce(labels, yp, from_logits, ignore_class)
    check(loss, ref, yp, labels, "random", reduction, mask=mask)


def test_sparse_categorical_crossentropy_all_ignored_is_zero_and_gradients_finite():
    yp = probs((4, 3))
    labels = np.full(4, 2)
    loss = K.SparseCategoricalCrossentropy(ignore_class=2)
    v, g = run_loss(loss, yp, labels, np.ones(4, np.float32), grad=True)
    assert v == 0.0
    assert np.all(np.isfinite(g)) and np.all(g == 0)
    labels = np.array([2, 0, 1, 2])
    v, g = run_loss(loss, yp, labels, np.ones(4, np.float32), grad=True)
    assert np.all(np.isfinite(g)) and np.all(g[[0, 3]] == 0) and np.any(g[1] != 0)


def test_sparse_categorical_crossentropy_out_of_range_labels_contribute_zero():
    yp = probs((3, 4))
    got = run_loss(K.SparseCategoricalCrossentropy(), yp, np.array([0, 7, -3]), np.ones(3, np.float32))
    assert got == pytest.approx(np_scce(np.array([0]), yp[:1])[0][0] / 3, rel=1e-5)


def test_sparse_target_type():
    loss = K.SparseCategoricalCrossentropy()
    assert loss.target_type(TensorType("float32", (BATCH, 10))) == TensorType("int64", (BATCH,))
    assert loss.target_type(TensorType("float32", (BATCH, 7, 10))) == TensorType("int64", (BATCH, 7))
    with pytest.raises(KdslError, match="axis=-1"):
        K.SparseCategoricalCrossentropy(axis=1).target_type(TensorType("float32", (BATCH, 7, 10)))
    assert K.SparseCategoricalCrossentropy(axis=2).target_type(TensorType("float32", (BATCH, 7, 10))).rank == 2
    for cls in (K.CategoricalCrossentropy, K.BinaryCrossentropy, K.MeanSquaredError, K.Hinge):
        t = TensorType("float32", (BATCH, 3))
        assert cls().target_type(t) == t


# -- binary crossentropy ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 1), (6, 4), (5, 3, 2)])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("sw_kind", SW_KINDS)
def test_binary_crossentropy(shape, from_logits, label_smoothing, sw_kind):
    yt = (RNG.random(shape) < 0.5).astype(np.float32)
    if from_logits:
        yp = (RNG.normal(size=shape) * 4).astype(np.float32)
        yp.flat[0] = 0.0                                        # the kink of max(x, 0)
    else:
        yp = RNG.random(shape).astype(np.float32)
        yp.flat[0], yp.flat[-1] = 0.0, 1.0                      # clipped to [eps, 1 - eps]
    loss = K.BinaryCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)
    check(loss, np_bce(yt, yp, from_logits, label_smoothing), yp, yt, sw_kind, "sum_over_batch_size")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_crossentropy_axis_and_reductions(reduction):
    shape = (5, 4, 3)
    yt = RNG.random(shape).astype(np.float32)                  # soft targets
    yp = RNG.random(shape).astype(np.float32)
    loss = K.BinaryCrossentropy(axis=1, reduction=reduction)
    check(loss, np_bce(yt, yp, axis=1), yp, yt, "zeros_some", reduction)


# -- regression losses, KL, hinge ----------------------------------------------------------------------
REGRESSION = [
    (K.MeanSquaredError, np_mse, {}),
    (K.MeanAbsoluteError, np_mae, {}),
    (K.Huber, np_huber, {}),
    (K.Huber, lambda t, p: np_huber(t, p, 0.3), {"delta": 0.3}),
]


@pytest.mark.parametrize("cls,ref,kw", REGRESSION)
@pytest.mark.parametrize("shape", [(6, 1), (6, 4), (5, 3, 4)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses(cls, ref, kw, shape, reduction):
    yt = RNG.normal(size=shape).astype(np.float32)
    yp = (yt + RNG.normal(size=shape) * 1.5).astype(np.float32)
    check(cls(reduction=reduction, **kw), ref(yt, yp), yp, yt, "random", reduction)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sw_kind", SW_KINDS)
def test_kl_divergence(shape, sw_kind):
    yt = probs(shape, zeros=True)
    yp = probs(shape, zeros=True)
    check(K.KLDivergence(), np_kld(yt, yp), yp, yt, sw_kind, "sum_over_batch_size")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("labels", ["01", "pm1", "soft"])
def test_hinge(shape, labels):
    u = RNG.random(shape)
    if labels == "01":
        yt = (u < 0.5).astype(np.float32)          # converted to -1/1
    elif labels == "pm1":
        yt = np.where(u < 0.5, -1.0, 1.0).astype(np.float32)
    else:
        yt = (u * 2 - 1).astype(np.float32)        # not all 0/1: used as they are
        yt.flat[0] = 1.0
    yp = RNG.normal(size=shape).astype(np.float32)
    check(K.Hinge(), np_hinge(yt, yp), yp, yt, "random", "sum_over_batch_size")


def test_hinge_conversion_is_batch_wide():
    yp = np.array([[0.3, -0.2], [0.8, 0.1]], np.float32)
    yt = np.array([[0, 1], [1, 0.5]], np.float32)    # one non-binary target: nothing converted
    got = run_loss(K.Hinge(), yp, yt, np.ones(2, np.float32))
    assert got == pytest.approx(np.mean(np.maximum(1 - yt * yp, 0)), rel=1e-6)


# -- opsets (axes as inputs from opset 18) ------------------------------------------------------------
@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("make,ref,kind", [
    (lambda: K.CategoricalCrossentropy(label_smoothing=0.1), lambda t, p: np_cce(t, p, label_smoothing=0.1), "onehot"),
    (lambda: K.BinaryCrossentropy(from_logits=True), lambda t, p: np_bce(t, p, True), "binary"),
    (lambda: K.Huber(), np_huber, "real"),
    (lambda: K.KLDivergence(), np_kld, "probs"),
    (lambda: K.Hinge(), np_hinge, "binary"),
])
def test_opsets(opset, make, ref, kind):
    shape = (5, 3, 4)
    yp = probs(shape) if kind in ("onehot", "probs") else RNG.normal(size=shape).astype(np.float32)
    yt = {"onehot": onehot(shape), "probs": probs(shape), "real": RNG.normal(size=shape).astype(np.float32),
          "binary": (RNG.random(shape) < 0.5).astype(np.float32)}[kind]
    check(make(), ref(yt, yp), yp, yt, "random", "sum_over_batch_size", opset=opset)


@pytest.mark.parametrize("opset", [18, 21])
def test_opsets_sparse_ignore_class(opset):
    labels = RNG.integers(0, 4, size=(6, 3))
    labels[0, 0] = 3
    yp = probs((6, 3, 4))
    ref, mask = np_scce(labels, yp, False, 3)
    check(K.SparseCategoricalCrossentropy(ignore_class=3), ref, yp, labels, "random", "sum_over_batch_size",
          mask=mask, opset=opset)


# -- gradients -------------------------------------------------------------------------------------------
def np_grad(f, yp, eps=1e-6):
    g = np.zeros_like(yp, dtype=np.float64)
    flat = yp.astype(np.float64).reshape(-1)
    for i in range(flat.size):
        a, b = flat.copy(), flat.copy()
        a[i] += eps
        b[i] -= eps
        g.reshape(-1)[i] = (f(a.reshape(yp.shape)) - f(b.reshape(yp.shape))) / (2 * eps)
    return g


@pytest.mark.parametrize("name,make,ref,kind", [
    ("cce", lambda: K.CategoricalCrossentropy(), np_cce, "onehot"),
    ("cce_logits", lambda: K.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
     lambda t, p: np_cce(t, p, True, 0.1), "onehot"),
    ("bce", lambda: K.BinaryCrossentropy(), np_bce, "binary"),
    ("bce_logits", lambda: K.BinaryCrossentropy(from_logits=True), lambda t, p: np_bce(t, p, True), "binary"),
    ("kld", lambda: K.KLDivergence(), np_kld, "probs"),
    ("huber", lambda: K.Huber(delta=0.5), lambda t, p: np_huber(t, p, 0.5), "real"),
    ("hinge", lambda: K.Hinge(), np_hinge, "binary"),
    ("mae", lambda: K.MeanAbsoluteError(), np_mae, "real"),
])
def test_gradient_wrt_predictions(name, make, ref, kind):
    shape = (4, 3)
    yp = probs(shape) if kind in ("onehot", "probs") else RNG.normal(size=shape).astype(np.float32)
    yt = {"onehot": onehot(shape), "probs": probs(shape), "real": RNG.normal(size=shape).astype(np.float32),
          "binary": (RNG.random(shape) < 0.5).astype(np.float32)}[kind]
    sw = weights(4, "random")
    v, g = run_loss(make(), yp, yt, sw, grad=True)
    want = np_grad(lambda p: np_reduce(ref(yt, p), sw, "sum_over_batch_size"), yp.astype(np.float64))
    np.testing.assert_allclose(g, want, rtol=2e-3, atol=2e-5)


# -- inside real training graphs --------------------------------------------------------------------------
def _model(out_shape_kind, act):
    if out_shape_kind == 2:
        x = kdsl.Input((5,), name="x")
        return kdsl.Model(x, {"y": L.Dense(4, activation=act)(L.Dense(6, activation="tanh")(x))}), (8, 5)
    x = kdsl.Input((3, 5), name="x")
    return kdsl.Model(x, {"y": L.Dense(4, activation=act)(x)}), (8, 3, 5)


TRAIN_CASES = [
    ("categorical_crossentropy", "softmax", lambda yp, y: np_cce(y, yp), "onehot"),
    (Spec("categorical_crossentropy", [], {"from_logits": True, "label_smoothing": 0.1}), "linear",
     lambda yp, y: np_cce(y, yp, True, 0.1), "onehot"),
    ("sparse_categorical_crossentropy", "softmax", lambda yp, y: np_scce(y, yp)[0], "labels"),
    (Spec("SparseCategoricalCrossentropy", [True]), "linear", lambda yp, y: np_scce(y, yp, True)[0], "labels"),
    ("binary_crossentropy", "sigmoid", lambda yp, y: np_bce(y, yp), "binary"),
    (Spec("binary_crossentropy", [], {"from_logits": True}), "linear", lambda yp, y: np_bce(y, yp, True), "binary"),
    ("mse", "linear", lambda yp, y: np_mse(y, yp), "real"),
    ("mae", "linear", lambda yp, y: np_mae(y, yp), "real"),
    ("huber", "linear", lambda yp, y: np_huber(y, yp), "real"),
    ("kld", "softmax", lambda yp, y: np_kld(y, yp), "probs"),
    ("hinge", "tanh", lambda yp, y: np_hinge(y, yp), "binary"),
]


def _targets(kind, shape):
    if kind == "onehot":
        return onehot(shape)
    if kind == "labels":
        return RNG.integers(0, shape[-1], size=shape[:-1])
    if kind == "binary":
        return (RNG.random(shape) < 0.5).astype(np.float32)
    if kind == "probs":
        return probs(shape)
    return RNG.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize("ident,act,ref,kind", TRAIN_CASES)
def test_loss_in_training_graph(rank, ident, act, ref, kind):
    model, xshape = _model(rank, act)
    loss = get_loss(ident)
    x = RNG.normal(size=xshape).astype(np.float32)
    y_pred = model.predict(x)
    y = _targets(kind, y_pred.shape)
    sw = weights(len(x), "random")
    prog = build_training(model, TrainSetup({"y": loss}, {}, {"y": []}, SGD(0.0)))
    sess = ort.InferenceSession(prog.train.SerializeToString(), providers=["CPUExecutionProvider"])
    tname, _, ttype = prog.targets[0]
    feeds = {"x": x, tname: y.astype(ttype.dtype), prog.sample_weights[0][0]: sw,
             "lr": np.array(0.0, np.float32), "step": np.array(1.0, np.float32)}
    feeds.update({s.name: s.value for s in prog.state})
    got = float(sess.run(["loss"], feeds)[0])
    np.testing.assert_allclose(got, np_reduce(ref(y_pred.astype(np.float64), y), sw, "sum_over_batch_size"),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ident,act,ref,kind", [c for c in TRAIN_CASES if c[0] not in ("mae", "hinge")])
def test_loss_gradients_in_training_graph(ident, act, ref, kind):
    model, xshape = _model(2, act)
    x = RNG.normal(size=xshape)
    y = _targets(kind, (xshape[0], 4))
    check_gradients(model, get_loss(ident), x, y, sample_weight=weights(xshape[0], "random"))


def test_ignore_class_gradient_graph_is_finite():
    model, xshape = _model(3, "softmax")
    x = RNG.normal(size=xshape).astype(np.float32)
    y = RNG.integers(0, 4, size=(xshape[0], 3))
    y[:, 0] = 1
    loss = K.SparseCategoricalCrossentropy(ignore_class=1)
    proto, state = build_gradient_graph(model, TrainSetup({"y": loss}, {}, {"y": []}, SGD(0.1)))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": x, "target:y": y, "sample_weight:y": np.ones(len(x), np.float32),
             "lr": np.array(0.1, np.float32), "step": np.array(1.0, np.float32)}
    feeds.update({s.name: s.value for s in state})
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    assert all(np.all(np.isfinite(v)) for v in outs.values())
    check_gradients(model, loss, x.astype(np.float64), y)


# -- resolution --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ident,cls", [
    ("mse", K.MeanSquaredError), ("MSE", K.MeanSquaredError), ("mean_squared_error", K.MeanSquaredError),
    ("MeanSquaredError", K.MeanSquaredError), ("mae", K.MeanAbsoluteError),
    ("MeanAbsoluteError", K.MeanAbsoluteError), ("kld", K.KLDivergence),
    ("kullback_leibler_divergence", K.KLDivergence), ("KLDivergence", K.KLDivergence),
    ("huber", K.Huber), ("huber_loss", K.Huber), ("Huber", K.Huber), ("hinge", K.Hinge), ("Hinge", K.Hinge),
    ("categorical_crossentropy", K.CategoricalCrossentropy), ("CategoricalCrossentropy", K.CategoricalCrossentropy),
    ("sparse_categorical_crossentropy", K.SparseCategoricalCrossentropy),
    ("SparseCategoricalCrossentropy", K.SparseCategoricalCrossentropy),
    ("binary_crossentropy", K.BinaryCrossentropy), ("BinaryCrossentropy", K.BinaryCrossentropy),
])
def test_get_loss_names(ident, cls):
    assert type(get_loss(ident)) is cls
    assert type(get_loss(Spec(ident))) is cls


def test_registry_and_defaults():
    assert set(LOSS_CLASSES) == {"categorical_crossentropy", "sparse_categorical_crossentropy",
                                 "binary_crossentropy", "mean_squared_error", "mean_absolute_error", "huber",
                                 "kl_divergence", "hinge"}
    for key, cls in LOSS_CLASSES.items():
        assert cls.fn_name == key
        assert cls().reduction == "sum_over_batch_size"
    c = K.CategoricalCrossentropy()
    assert (c.from_logits, c.label_smoothing, c.axis, c.name) == (False, 0.0, -1, "categorical_crossentropy")
    s = K.SparseCategoricalCrossentropy()
    assert (s.from_logits, s.ignore_class) == (False, None)
    assert K.Huber().delta == 1.0 and K.Huber().name == "huber_loss"
    assert K.BinaryCrossentropy().get_config()["label_smoothing"] == 0.0


def test_get_loss_spec_arguments():
    l = get_loss(Spec("categorical_crossentropy", [True, 0.2], {"reduction": "sum"}))
    assert (l.from_logits, l.label_smoothing, l.reduction) == (True, 0.2, "sum")
    l = get_loss(Spec("sparse_categorical_crossentropy", [], {"ignore_class": None, "from_logits": True}))
    assert l.ignore_class is None and l.from_logits
    assert get_loss(Spec("huber", [], {"delta": 2})).delta == 2.0
    assert get_loss("mse", reduction="sum").reduction == "sum"
    assert get_loss(K.Huber) is not None
    inst = K.Hinge()
    assert get_loss(inst) is inst


def test_get_loss_errors():
    with pytest.raises(KdslError, match="Unknown loss"):
        get_loss("mean_squared_eror")
    with pytest.raises(KdslError, match="Unknown argument 'label_smothing'"):
        get_loss(Spec("categorical_crossentropy", [], {"label_smothing": 0.1}))
    with pytest.raises(KdslError, match="reduction"):
        K.MeanSquaredError(reduction="avg")
    with pytest.raises(KdslError, match="Could not interpret"):
        get_loss(3)
    with pytest.raises(KdslError, match="axis"):
        K.CategoricalCrossentropy(axis=True)
