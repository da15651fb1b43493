"""Gradient checks: the training graph's gradients against central finite differences.

``check_gradients(model, loss, x, y)`` builds the gradient graph (``grad:<weight>`` outputs),
converts it to float64 when every op allows it (several onnxruntime CPU kernels, e.g. Conv,
Elu, Softplus, Erf, are float32-only: such graphs are checked in float32 with a looser tolerance),
and compares each weight's gradient with central differences of the loss, on a random
subset of coordinates.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

from kdsl.lower.training import TrainSetup, build_gradient_graph
from kdsl.train.losses import get_loss
from kdsl.train.optimizers import SGD

FLOAT32_ONLY = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "Resize", "LayerNormalization", "Gelu"}


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The same graph computing in float64, or None if an op has no float64 kernel here."""
    if any(n.op_type in FLOAT32_ONLY for n in model.graph.node):
        return None
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64), init.name))
    for n in g.node:
        for a in n.attribute:
            if a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
    del g.value_info[:]
    return m


def check_gradients(model, loss, x, y, sample_weight=None, n_coords: int = 6, seed: int = 0,
                    rtol64: float = 1e-5, rtol32: float = 2e-2):
    """Assert every trainable weight's gradient agrees with central finite differences."""
    out_name = model.output_names[0]
    setup = TrainSetup({out_name: get_loss(loss) if isinstance(loss, str) else loss}, {}, {out_name: []}, SGD(0.1))
    proto, state = build_gradient_graph(model, setup)
    onnx.checker.check_model(proto, full_check=True)
    p64 = to_float64(proto)
    sess = None
    if p64 is not None:
        try:
            sess = ort.InferenceSession(p64.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception as err:   # an op without a float64 kernel in onnxruntime: check in float32
            if "NOT_IMPLEMENTED" not in str(err):
                raise
    dtype = np.float64 if sess is not None else np.float32
    if sess is None:
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    xs = x if isinstance(x, dict) else {model.input_names[0]: x}
    n = next(iter(xs.values())).shape[0]
    base = {k: (v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v) for k, v in xs.items()}
    yt = y if np.issubdtype(np.asarray(y).dtype, np.integer) else np.asarray(y, dtype)
    base[f"target:{out_name}"] = yt
    base[f"sample_weight:{out_name}"] = (np.ones(n) if sample_weight is None else sample_weight).astype(dtype)
    base["lr"] = np.array(0.1, dtype)
    base["step"] = np.array(1, dtype)
    for s in state:
        base[s.name] = s.value.astype(dtype) if s.value.dtype.kind == "f" else s.value

    def loss_at(feeds):
        return float(sess.run(["loss"], feeds)[0])

    res = dict(zip(outs, sess.run(None, base)))
    rng = np.random.default_rng(seed)
    checked = 0
    for s in state:
        if s.kind != "weight":
            continue
        g = res[f"grad:{s.name}"]
        assert g.shape == s.value.shape, (s.name, g.shape, s.value.shape)
        flat = base[s.name].reshape(-1)
        idx = rng.choice(flat.size, size=min(n_coords, flat.size), replace=False)
        for i in idx:
            h = 1e-6 if dtype == np.float64 else 1e-2 * max(1.0, abs(float(flat[i])))
            plus, minus = flat.copy(), flat.copy()
            plus[i] += h
            minus[i] -= h
            fp = dict(base)
            fp[s.name] = plus.reshape(s.value.shape)
            fm = dict(base)
            fm[s.name] = minus.reshape(s.value.shape)
            fd = (loss_at(fp) - loss_at(fm)) / (2 * h)
            an = float(g.reshape(-1)[i])
            tol = rtol64 if dtype == np.float64 else rtol32
            assert abs(an - fd) <= tol * max(1.0, abs(fd), abs(an)) + (1e-7 if dtype == np.float64 else 1e-3), \
                f"{s.name}[{i}]: analytic {an} vs finite difference {fd}"
            checked += 1
    assert checked > 0
    return dtype
