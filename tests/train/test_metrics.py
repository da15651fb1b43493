"""Metrics: the partial sums each batch's ONNX emits, run in onnxruntime and added up over an
epoch of uneven batches, give the number Keras reports, computed here in NumPy over the whole
epoch at once from Keras's documented formulas; Keras's docstring examples; resolution."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import kdsl
from kdsl import layers as L
from kdsl.errors import KdslError
from kdsl.ir import BATCH, TensorType
from kdsl.lower.emitter import ONNX_DTYPE, Emitter
from kdsl.lower.export import make_model
from kdsl.lower.training import TrainSetup, build_training
from kdsl.train import losses as LS
from kdsl.train import metrics as M
from kdsl.train.metrics import METRIC_CLASSES, get_metric
from kdsl.train.optimizers import SGD
from kdsl.train.specs import METRICS, Spec

RNG = np.random.default_rng(7)
EPS = 1e-7


# -- running a metric over an epoch ------------------------------------------------------------------
class MetricRunner:
    """One graph with the metric's parts as outputs; ``epoch`` runs it per batch and sums parts."""

    def __init__(self, metric, pred_shape, true_type: TensorType, opset=17):
        self.metric = metric
        out = TensorType("float32", (BATCH,) + tuple(pred_shape[1:]))
        e = Emitter(opset)
        for n in ("y_pred", "y_true", "sw"):
            e.reserve(n)
        parts = metric.emit(e, "y_pred", "y_true", "sw", out, true_type)
        assert set(parts) == set(metric.parts)
        self.names = list(parts)
        for p, src in parts.items():
            e.op("Identity", [src], out=f"part:{p}")
        inputs = [helper.make_tensor_value_info("y_pred", TensorProto.FLOAT, ["N", *pred_shape[1:]]),
                  helper.make_tensor_value_info("y_true", ONNX_DTYPE[true_type.dtype], ["N", *true_type.shape[1:]]),
                  helper.make_tensor_value_info("sw", TensorProto.FLOAT, ["N"])]
        outputs = [helper.make_tensor_value_info(f"part:{p}", TensorProto.FLOAT, None) for p in self.names]
        model = make_model(helper.make_graph(e.nodes, "metric", inputs, outputs), opset)
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model)
        self.sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.true_type = true_type

    def epoch(self, y_pred, y_true, sw, batch_sizes=(5, 7, 3, 9)):
        sums, lo = {}, 0
        bounds = []
        while lo < len(y_pred):
            for b in batch_sizes:
                if lo >= len(y_pred):
                    break
                bounds.append((lo, min(lo + b, len(y_pred))))
                lo += b
        for lo, hi in bounds:
            res = self.sess.run(None, {"y_pred": y_pred[lo:hi].astype(np.float32),
                                       "y_true": y_true[lo:hi].astype(self.true_type.dtype),
                                       "sw": sw[lo:hi].astype(np.float32)})
            for p, v in zip(self.names, res):
                v = np.asarray(v, np.float64)
                sums[p] = sums[p] + v if p in sums else v
        return self.metric.result(sums), sums


def run_epoch(metric, y_pred, y_true, sw, true_dtype="float32", opset=17):
    tt = TensorType(true_dtype, (BATCH,) + tuple(np.shape(y_true)[1:]))
    return MetricRunner(metric, y_pred.shape, tt, opset).epoch(y_pred, y_true, sw)[0]


def weights(n, kind):
    if kind == "none":
        return np.ones(n, np.float32)
    w = (RNG.random(n) * 2).astype(np.float32)
    if kind == "zeros_some":
        w[::4] = 0.0
    return w


def np_weighted_mean(values, sw):
    """Keras's Mean with [batch] weights: average each sample's values, then weight."""
    v = values.reshape(len(values), -1).mean(axis=1)
    return float(np.sum(v * sw) / np.sum(sw)) if np.sum(sw) else 0.0


SW = ["none", "random", "zeros_some"]
N = 37


# -- mean metrics ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(N, 1), (N, 3), (N, 4, 2)])
@pytest.mark.parametrize("sw_kind", SW)
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_accuracy(shape, sw_kind, threshold):
    yt = (RNG.random(shape) < 0.5).astype(np.float32)
    yp = RNG.random(shape).astype(np.float32)
    yp.flat[0] = threshold                                   # not above the threshold: predicts 0
    sw = weights(N, sw_kind)
    want = np_weighted_mean(np.mean(yt == (yp > threshold), axis=-1), sw)
    assert run_epoch(M.BinaryAccuracy(threshold=threshold), yp, yt, sw) == pytest.approx(want, rel=1e-6)


def test_binary_accuracy_integer_and_rank1_targets():
    yp = RNG.random((N, 1)).astype(np.float32)
    labels = (RNG.random(N) < 0.5).astype(np.int64)        # [batch] ints for a [batch, 1] output
    sw = weights(N, "random")
    want = np_weighted_mean((labels == (yp[:, 0] > 0.5)).astype(np.float64), sw)
    assert run_epoch(M.BinaryAccuracy(), yp, labels, sw, "int64") == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("shape", [(N, 5), (N, 3, 4)])
@pytest.mark.parametrize("sw_kind", SW)
def test_categorical_accuracy(shape, sw_kind):
    yt = np.eye(shape[-1], dtype=np.float32)[RNG.integers(0, shape[-1], size=shape[:-1])]
    yp = RNG.random(shape).astype(np.float32)
    sw = weights(N, sw_kind)
    want = np_weighted_mean((yt.argmax(-1) == yp.argmax(-1)).astype(np.float64), sw)
    assert run_epoch(M.CategoricalAccuracy(), yp, yt, sw) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("shape,label_shape", [((N, 5), (N,)), ((N, 5), (N, 1)), ((N, 3, 4), (N, 3))])
@pytest.mark.parametrize("sw_kind", SW)
@pytest.mark.parametrize("dtype", ["int64", "float32"])
def test_sparse_categorical_accuracy(shape, label_shape, sw_kind, dtype):
    labels = RNG.integers(0, shape[-1], size=label_shape)
    yp = RNG.random(shape).astype(np.float32)
    sw = weights(N, sw_kind)
    flat = labels.reshape(shape[:-1])
    want = np_weighted_mean((flat == yp.argmax(-1)).astype(np.float64), sw)
    got = run_epoch(M.SparseCategoricalAccuracy(), yp, labels.astype(dtype), sw, dtype)
    assert got == pytest.approx(want, rel=1e-6)


def np_in_top_k(labels, yp, k):
    at = np.take_along_axis(yp, labels[..., None], axis=-1)
    return (np.sum(yp > at, axis=-1) < k).astype(np.float64)


@pytest.mark.parametrize("shape", [(N, 8), (N, 3, 6)])
@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("sw_kind", SW)
def test_top_k_categorical_accuracy(shape, k, sw_kind):
    labels = RNG.integers(0, shape[-1], size=shape[:-1])
    yt = np.eye(shape[-1], dtype=np.float32)[labels]
    yp = np.round(RNG.random(shape), 1).astype(np.float32)          # ties straddle the top-k boundary
    sw = weights(N, sw_kind)
    want = np_weighted_mean(np_in_top_k(labels, yp, k), sw)
    assert run_epoch(M.TopKCategoricalAccuracy(k=k), yp, yt, sw) == pytest.approx(want, rel=1e-6)
    got = run_epoch(M.SparseTopKCategoricalAccuracy(k=k), yp, labels, sw, "int64")
    assert got == pytest.approx(want, rel=1e-6)


def test_top_k_defaults_and_out_of_range():
    assert M.TopKCategoricalAccuracy().k == 5 and M.SparseTopKCategoricalAccuracy().k == 5
    yp = RNG.random((4, 3)).astype(np.float32)
    # k >= classes: every valid label is in the top k, an out-of-range label never is
    got = run_epoch(M.SparseTopKCategoricalAccuracy(k=5), yp, np.array([0, 2, 3, -1]), np.ones(4, np.float32),
                    "int64")
    assert got == pytest.approx(0.5)


@pytest.mark.parametrize("cls,fn", [(M.MeanSquaredError, lambda d: d * d), (M.MeanAbsoluteError, np.abs)])
@pytest.mark.parametrize("shape", [(N, 1), (N, 4), (N, 3, 2)])
@pytest.mark.parametrize("sw_kind", SW)
def test_regression_metrics(cls, fn, shape, sw_kind):
    yt = RNG.normal(size=shape).astype(np.float32)
    yp = RNG.normal(size=shape).astype(np.float32)
    sw = weights(N, sw_kind)
    want = np_weighted_mean(np.mean(fn(yt.astype(np.float64) - yp), axis=-1), sw)
    assert run_epoch(cls(), yp, yt, sw) == pytest.approx(want, rel=1e-5)


def test_mean_metric_all_zero_weights_is_zero():
    yp = RNG.random((6, 2)).astype(np.float32)
    assert run_epoch(M.MeanSquaredError(), yp, yp + 1, np.zeros(6, np.float32)) == 0.0


# -- precision / recall ------------------------------------------------------------------------------------
def np_counts(yt, yp, sw, thresholds):
    label = (yt != 0).astype(np.float64).reshape(len(yt), -1)
    pred = yp.astype(np.float64).reshape(len(yp), -1)
    w = sw.astype(np.float64)[:, None]
    out = {k: [] for k in ("tp", "fp", "fn", "tn")}
    for t in thresholds:
        pos = pred > np.float32(t)
        out["tp"].append(np.sum(w * label * pos))
        out["fp"].append(np.sum(w * (1 - label) * pos))
        out["fn"].append(np.sum(w * label * ~pos))
        out["tn"].append(np.sum(w * (1 - label) * ~pos))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("shape", [(N, 1), (N, 4), (N, 3, 2)])
@pytest.mark.parametrize("sw_kind", SW)
@pytest.mark.parametrize("thresholds", [None, 0.3, 0.0, [0.2, 0.5, 0.9]])
def test_precision_recall(shape, sw_kind, thresholds):
    yt = (RNG.random(shape) < 0.4).astype(np.float32)
    yp = RNG.random(shape).astype(np.float32)
    yp.flat[:3] = 0.5                                         # exactly at the default threshold
    sw = weights(N, sw_kind)
    ts = [0.5] if thresholds is None else (thresholds if isinstance(thresholds, list) else [thresholds])
    c = np_counts(yt, yp, sw, ts)
    prec = np.where(c["tp"] + c["fp"] > 0, c["tp"] / np.maximum(c["tp"] + c["fp"], 1e-300), 0.0)
    rec = np.where(c["tp"] + c["fn"] > 0, c["tp"] / np.maximum(c["tp"] + c["fn"], 1e-300), 0.0)
    got_p = run_epoch(M.Precision(thresholds=thresholds), yp, yt, sw)
    got_r = run_epoch(M.Recall(thresholds=thresholds), yp, yt, sw)
    if len(ts) == 1:
        assert isinstance(got_p, float) and isinstance(got_r, float)
        prec, rec = prec[0], rec[0]
    np.testing.assert_allclose(got_p, prec, rtol=1e-6)
    np.testing.assert_allclose(got_r, rec, rtol=1e-6)


def test_precision_soft_and_integer_labels():
    yp = RNG.random((N, 1)).astype(np.float32)
    soft = RNG.random((N, 1)).astype(np.float32)
    soft[::3] = 0.0                                           # any non-zero target is positive
    sw = weights(N, "random")
    c = np_counts(soft, yp, sw, [0.5])
    assert run_epoch(M.Precision(), yp, soft, sw) == pytest.approx(c["tp"][0] / (c["tp"][0] + c["fp"][0]))
    ints = (soft[:, 0] != 0).astype(np.int64)                # [batch] ints for a [batch, 1] output
    assert run_epoch(M.Recall(), yp, ints, sw, "int64") == pytest.approx(c["tp"][0] / (c["tp"][0] + c["fn"][0]))


def test_precision_recall_nothing_predicted_is_zero():
    yp = np.zeros((5, 1), np.float32)
    yt = np.ones((5, 1), np.float32)
    assert run_epoch(M.Precision(), yp, yt, np.ones(5, np.float32)) == 0.0
    assert run_epoch(M.Recall(), yp, np.zeros((5, 1), np.float32), np.ones(5, np.float32)) == 0.0


def test_thresholds_validated():
    with pytest.raises(KdslError, match=r"\[0, 1\]"):
        M.Precision(thresholds=1.5)
    with pytest.raises(KdslError, match="interval"):
        M.BinaryAccuracy(threshold=1.0)


# -- AUC --------------------------------------------------------------------------------------------------
def keras_thresholds(n):
    return [0.0 - EPS] + [(i + 1) * 1.0 / (n - 1) for i in range(n - 2)] + [1.0 + EPS]


def np_auc(yt, yp, sw, n=200, curve="ROC", summation="interpolation", from_logits=False):
    """Keras's AUC from its definition: tp/fp/tn/fn at each threshold (y_pred > t, predictions
    clipped to [0, 1]), then the summation rule (ROC mid-point, PR Davis-Goadrich interpolation)."""
    p = yp.astype(np.float64)
    if from_logits:
        p = 1 / (1 + np.exp(-p))
    p = np.clip(p, 0, 1).reshape(-1)
    label = (yt.reshape(-1) != 0).astype(np.float64)
    w = np.broadcast_to(sw.astype(np.float64).reshape((-1,) + (1,) * (yt.ndim - 1)), yt.shape).reshape(-1)
    ts = np.array(keras_thresholds(n))
    pos = p[None, :] > ts[:, None]
    tp = (pos * label * w).sum(1)
    fp = (pos * (1 - label) * w).sum(1)
    fn = (~pos * label * w).sum(1)
    tn = (~pos * (1 - label) * w).sum(1)

    def dnn(a, b):
        return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))

    if curve == "PR" and summation == "interpolation":
        total = 0.0
        for i in range(n - 1):
            dtp = tp[i] - tp[i + 1]
            pa, pb = tp[i] + fp[i], tp[i + 1] + fp[i + 1]
            slope = dtp / (pa - pb) if pa - pb > 0 else 0.0
            intercept = tp[i + 1] - slope * pb
            ratio = pa / pb if pa > 0 and pb > 0 else 1.0
            den = tp[i + 1] + fn[i + 1]
            total += slope * (dtp + intercept * np.log(ratio)) / den if den > 0 else 0.0
        return total
    rec = dnn(tp, tp + fn)
    x, y = (dnn(fp, fp + tn), rec) if curve == "ROC" else (rec, dnn(tp, tp + fp))
    h = {"interpolation": (y[:-1] + y[1:]) / 2, "minoring": np.minimum(y[:-1], y[1:]),
         "majoring": np.maximum(y[:-1], y[1:])}[summation]
    return float(np.sum((x[:-1] - x[1:]) * h))


@pytest.mark.parametrize("shape", [(N, 1), (N, 3), (N, 2, 3)])
@pytest.mark.parametrize("curve", ["ROC", "PR"])
@pytest.mark.parametrize("num_thresholds", [200, 7])
@pytest.mark.parametrize("sw_kind", SW)
def test_auc(shape, curve, num_thresholds, sw_kind):
    yt = (RNG.random(shape) < 0.4).astype(np.float32)
    yp = np.clip(yt * 0.3 + RNG.random(shape) * 0.8, 0, 1.2).astype(np.float32)   # some above 1: clipped
    yp.flat[:2] = 0.0
    sw = weights(N, sw_kind)
    got = run_epoch(M.AUC(num_thresholds=num_thresholds, curve=curve), yp, yt, sw)
    assert got == pytest.approx(np_auc(yt, yp, sw, num_thresholds, curve), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("curve", ["ROC", "PR"])
@pytest.mark.parametrize("summation", ["minoring", "majoring"])
def test_auc_summation_methods(curve, summation):
    yt = (RNG.random((N, 2)) < 0.5).astype(np.float32)
    yp = RNG.random((N, 2)).astype(np.float32)
    sw = weights(N, "random")
    got = run_epoch(M.AUC(num_thresholds=50, curve=curve, summation_method=summation), yp, yt, sw)
    assert got == pytest.approx(np_auc(yt, yp, sw, 50, curve, summation), rel=1e-6, abs=1e-9)


def test_auc_from_logits_and_rank_based_value():
    yt = (RNG.random((400, 1)) < 0.5).astype(np.float32)
    logits = (yt * 1.5 + RNG.normal(size=(400, 1))).astype(np.float32)
    sw = np.ones(400, np.float32)
    got = run_epoch(M.AUC(from_logits=True, num_thresholds=1000), logits, yt, sw)
    assert got == pytest.approx(np_auc(yt, logits, sw, 1000, from_logits=True), rel=1e-6)
    # with many thresholds ROC AUC approaches the Mann-Whitney statistic
    pos, neg = logits[yt == 1], logits[yt == 0]
    mw = np.mean(pos[:, None] > neg[None, :])
    assert got == pytest.approx(mw, abs=5e-3)


def test_auc_parts_are_vectors():
    m = M.AUC(num_thresholds=11)
    yt = (RNG.random((8, 1)) < 0.5).astype(np.float32)
    _, sums = MetricRunner(m, (8, 1), TensorType("float32", (BATCH, 1))).epoch(
        RNG.random((8, 1)).astype(np.float32), yt, np.ones(8, np.float32))
    assert set(sums) == {"tp", "fp", "tn", "fn"} and all(v.shape == (11,) for v in sums.values())
    np.testing.assert_allclose(sums["tp"] + sums["fn"], yt.sum())      # every threshold sees every point
    assert sums["tp"][-1] == 0 and sums["fp"][-1] == 0                # nothing is above 1 + eps
    assert len(m.thresholds) == 11 and m.thresholds[0] == -EPS


@pytest.mark.parametrize("opset", [18, 21])
def test_opsets(opset):
    yt = (RNG.random((N, 3)) < 0.5).astype(np.float32)
    yp = RNG.random((N, 3)).astype(np.float32)
    sw = weights(N, "random")
    got = MetricRunner(M.AUC(), yp.shape, TensorType("float32", (BATCH, 3)), opset).epoch(yp, yt, sw)[0]
    assert got == pytest.approx(np_auc(yt, yp, sw), rel=1e-6)
    labels = RNG.integers(0, 3, size=N)
    got = MetricRunner(M.SparseTopKCategoricalAccuracy(k=2), yp.shape, TensorType("int64", (BATCH,)),
                       opset).epoch(yp, labels, sw)[0]
    assert got == pytest.approx(np_weighted_mean(np_in_top_k(labels, yp, 2), sw), rel=1e-6)


# -- Keras's docstring examples -----------------------------------------------------------------------------
def _ex(metric, yt, yp, sw=None, dtype="float32"):
    yt, yp = np.asarray(yt), np.asarray(yp, np.float32)
    sw = np.ones(len(yp), np.float32) if sw is None else np.asarray(sw, np.float32)
    return run_epoch(metric, yp, yt.astype(dtype), sw, dtype)


def test_keras_docstring_examples():
    assert _ex(M.BinaryAccuracy(), [[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]]) == pytest.approx(0.75)
    assert _ex(M.BinaryAccuracy(), [[1], [1], [0], [0]], [[0.98], [1], [0], [0.6]], [1, 0, 0, 1]) == \
        pytest.approx(0.5)
    ca_t, ca_p = [[0, 0, 1], [0, 1, 0]], [[0.1, 0.9, 0.8], [0.05, 0.95, 0]]
    assert _ex(M.CategoricalAccuracy(), ca_t, ca_p) == pytest.approx(0.5)
    assert _ex(M.CategoricalAccuracy(), ca_t, ca_p, [0.7, 0.3]) == pytest.approx(0.3)
    sp = [[0.1, 0.6, 0.3], [0.05, 0.95, 0]]
    assert _ex(M.SparseCategoricalAccuracy(), [[2], [1]], sp, dtype="int64") == pytest.approx(0.5)
    assert _ex(M.SparseCategoricalAccuracy(), [[2], [1]], sp, [0.7, 0.3], "int64") == pytest.approx(0.3)
    assert _ex(M.TopKCategoricalAccuracy(k=1), ca_t, ca_p) == pytest.approx(0.5)
    assert _ex(M.TopKCategoricalAccuracy(k=1), ca_t, ca_p, [0.7, 0.3]) == pytest.approx(0.3)
    assert _ex(M.SparseTopKCategoricalAccuracy(k=1), [2, 1], ca_p, dtype="int64") == pytest.approx(0.5)
    assert _ex(M.SparseTopKCategoricalAccuracy(k=1), [2, 1], ca_p, [0.7, 0.3], "int64") == pytest.approx(0.3)
    assert _ex(M.Precision(), [0, 1, 1, 1], [1, 0, 1, 1]) == pytest.approx(2 / 3)
    assert _ex(M.Precision(), [0, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0]) == pytest.approx(1.0)
    assert _ex(M.Recall(), [0, 1, 1, 1], [1, 0, 1, 1]) == pytest.approx(2 / 3)
    assert _ex(M.Recall(), [0, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0]) == pytest.approx(1.0)
    assert _ex(M.AUC(num_thresholds=3), [0, 0, 1, 1], [0, 0.5, 0.3, 0.9]) == pytest.approx(0.75)
    assert _ex(M.AUC(num_thresholds=3), [0, 0, 1, 1], [0, 0.5, 0.3, 0.9], [1, 0, 0, 1]) == pytest.approx(1.0)
    assert _ex(M.MeanSquaredError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]]) == pytest.approx(0.25)
    assert _ex(M.MeanAbsoluteError(), [[0, 1], [0, 0]], [[1, 1], [0, 0]], [1, 0]) == pytest.approx(0.5)


# -- inside a real training program ------------------------------------------------------------------------
def test_metrics_in_training_and_eval_graphs():
    x_in = kdsl.Input((4,), name="x")
    model = kdsl.Model(x_in, {"p": L.Dense(1, activation="sigmoid")(L.Dense(5, activation="relu")(x_in))})
    loss = LS.get_loss("binary_crossentropy")
    out = TensorType("float32", (BATCH, 1))
    mets = [get_metric(m, loss, out) for m in ("accuracy", "auc", "precision", Spec("Recall", [], {"thresholds": 0.4}),
                                               "mse")]
    assert [m.name for m in mets] == ["accuracy", "auc", "precision", "recall", "mse"]
    prog = build_training(model, TrainSetup({"p": loss}, {}, {"p": mets}, SGD(0.0)))
    assert [log for _, log, _ in prog.metrics] == ["accuracy", "auc", "precision", "recall", "mse"]
    x = RNG.normal(size=(N, 4)).astype(np.float32)
    y = (RNG.random((N, 1)) < 0.5).astype(np.float32)
    sw = weights(N, "random")
    p = model.predict(x)
    sess = ort.InferenceSession(prog.eval.SerializeToString(), providers=["CPUExecutionProvider"])
    state = {s.name: s.value for s in prog.state if s.name in prog.eval_state}
    sums = {log: {} for _, log, _ in prog.metrics}
    for lo in range(0, N, 10):
        hi = min(lo + 10, N)
        feeds = {"x": x[lo:hi], "target:p": y[lo:hi], "sample_weight:p": sw[lo:hi], **state}
        res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        for _, log, parts in prog.metrics:
            for part, g in parts.items():
                sums[log][part] = sums[log].get(part, 0) + np.asarray(res[g], np.float64)
    got = {log: m.result(sums[log]) for m, log, _ in prog.metrics}
    assert got["accuracy"] == pytest.approx(np_weighted_mean((y == (p > 0.5)).astype(np.float64)[:, 0], sw))
    assert got["auc"] == pytest.approx(np_auc(y, p, sw), rel=1e-5)
    c5, c4 = np_counts(y, p, sw, [0.5]), np_counts(y, p, sw, [0.4])
    assert got["precision"] == pytest.approx(c5["tp"][0] / (c5["tp"][0] + c5["fp"][0]), rel=1e-5)
    assert got["recall"] == pytest.approx(c4["tp"][0] / (c4["tp"][0] + c4["fn"][0]), rel=1e-5)
    assert got["mse"] == pytest.approx(np_weighted_mean(((y - p) ** 2)[:, 0], sw), rel=1e-5)


# -- resolution -------------------------------------------------------------------------------------------
def T(*shape, dtype="float32"):
    return TensorType(dtype, (BATCH,) + shape)


@pytest.mark.parametrize("loss,out,want", [
    ("binary_crossentropy", T(1), M.BinaryAccuracy),
    ("mse", T(1), M.BinaryAccuracy),                              # last dim 1: binary, whatever the loss
    ("sparse_categorical_crossentropy", T(10), M.SparseCategoricalAccuracy),
    ("sparse_categorical_crossentropy", T(5, 10), M.SparseCategoricalAccuracy),
    ("categorical_crossentropy", T(10), M.CategoricalAccuracy),
    ("binary_crossentropy", T(3), M.CategoricalAccuracy),         # Keras decides from shapes only
    (None, T(4), M.CategoricalAccuracy),
])
def test_accuracy_resolution(loss, out, want):
    l = LS.get_loss(loss) if loss else None
    for ident in ("accuracy", "acc", "ACC", Spec("accuracy")):
        m = get_metric(ident, l, out)
        assert type(m) is want
        assert m.name == (ident.name if isinstance(ident, Spec) else ident)


def test_accuracy_resolution_without_output_type():
    assert type(get_metric("accuracy", LS.get_loss("binary_crossentropy"))) is M.BinaryAccuracy
    assert type(get_metric("accuracy", LS.get_loss("sparse_categorical_crossentropy"))) is \
        M.SparseCategoricalAccuracy
    assert type(get_metric("accuracy", LS.get_loss("categorical_crossentropy"))) is M.CategoricalAccuracy


@pytest.mark.parametrize("ident,cls,name", [
    ("mae", M.MeanAbsoluteError, "mae"), ("mse", M.MeanSquaredError, "mse"),
    ("mean_squared_error", M.MeanSquaredError, "mean_squared_error"),
    ("MeanAbsoluteError", M.MeanAbsoluteError, "MeanAbsoluteError"),
    ("auc", M.AUC, "auc"), ("AUC", M.AUC, "AUC"), ("precision", M.Precision, "precision"),
    ("Recall", M.Recall, "Recall"), ("binary_accuracy", M.BinaryAccuracy, "binary_accuracy"),
    ("categorical_accuracy", M.CategoricalAccuracy, "categorical_accuracy"),
    ("sparse_categorical_accuracy", M.SparseCategoricalAccuracy, "sparse_categorical_accuracy"),
    ("top_k_categorical_accuracy", M.TopKCategoricalAccuracy, "top_k_categorical_accuracy"),
    ("SparseTopKCategoricalAccuracy", M.SparseTopKCategoricalAccuracy, "SparseTopKCategoricalAccuracy"),
])
def test_get_metric_names_log_as_given(ident, cls, name):
    m = get_metric(ident)
    assert type(m) is cls and m.name == name


def test_registry_matches_specs_and_default_names():
    assert set(METRIC_CLASSES) | {"accuracy"} == METRICS
    for key, cls in METRIC_CLASSES.items():
        assert cls.fn_name == key
        assert cls().name == key


def test_get_metric_spec_arguments():
    m = get_metric(Spec("top_k_categorical_accuracy", [3]))
    assert m.k == 3 and m.name == "top_k_categorical_accuracy"
    m = get_metric(Spec("AUC", [], {"curve": "PR", "num_thresholds": 50, "from_logits": None}))
    assert (m.curve, m.num_thresholds, m.from_logits, m.name) == ("PR", 50, False, "auc")
    m = get_metric(Spec("precision", [], {"thresholds": 0.7, "name": "p70"}))
    assert m.thresholds == 0.7 and m.name == "p70"
    # Python-side Keras arguments beyond the .kd ones
    assert get_metric(Spec("binary_accuracy", [], {"threshold": 0.2})).threshold == 0.2
    assert get_metric(Spec("auc", [], {"summation_method": "majoring"})).summation_method == "majoring"
    inst = M.AUC()
    assert get_metric(inst) is inst
    assert type(get_metric(M.Recall)) is M.Recall


def test_get_metric_errors():
    with pytest.raises(KdslError, match="Unknown metric"):
        get_metric("acuracy")
    with pytest.raises(KdslError, match="Unknown argument 'kk'"):
        get_metric(Spec("top_k_categorical_accuracy", [], {"kk": 3}))
    with pytest.raises(KdslError, match="expects a int"):
        get_metric(Spec("top_k_categorical_accuracy", [], {"k": 2.5}))
    with pytest.raises(KdslError, match="curve"):
        M.AUC(curve="ROCK")
    with pytest.raises(KdslError, match="num_thresholds"):
        M.AUC(num_thresholds=1)
    with pytest.raises(KdslError, match="Could not interpret"):
        get_metric(3.5)
