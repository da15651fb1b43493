"""BatchNormalization and LayerNormalization (inference) against NumPy references."""
import numpy as np
import pytest

import kdsl
import kdsl.layers
from helpers import ToCF, assert_close, check_export, run_layer
from kdsl.layers import BatchNormalization, LayerNormalization

RNG = np.random.default_rng(1)
OPSETS = [17, 21]


def chain(*layers, weighted):
    """A callable for ``run_layer``: applies ``layers`` in turn; weights go to ``weighted``."""
    def f(x):
        for layer in layers:
            x = layer(x)
        return x
    f.set_weights = weighted.set_weights
    return f


def ops_of(proto):
    return [n.op_type for n in proto.graph.node]


# -- references -------------------------------------------------------------------------
def ref_batchnorm(x, axis, gamma, beta, mean, var, eps):
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    x = x.astype(np.float64)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape).astype(np.float64) + eps)
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


def ref_layernorm(x, k, gamma, beta, eps):
    axes = tuple(range(x.ndim - k, x.ndim))
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    trailing = x.shape[x.ndim - k:]
    if gamma is not None:
        y = y * gamma.reshape(trailing)
    if beta is not None:
        y = y + beta.reshape(trailing)
    return y


def bn_weights(c, scale, center):
    gamma = RNG.normal(size=c).astype("float32")
    beta = RNG.normal(size=c).astype("float32")
    mean = RNG.normal(size=c).astype("float32")
    var = RNG.uniform(0.2, 2.0, size=c).astype("float32")
    ws = ([gamma] if scale else []) + ([beta] if center else []) + [mean, var]
    return ws, (gamma if scale else None), (beta if center else None), mean, var


# -- BatchNormalization ---------------------------------------------------------------------
BN_CASES = [
    # shape, axis, center, scale, epsilon
    ((5, 6), -1, True, True, 1e-3),          # rank 2: ONNX BatchNormalization
    ((5, 6), 1, False, True, 1e-3),
    ((4, 7, 6), -1, True, True, 1e-3),       # rank 3 channels-last: primitives
    ((4, 7, 6), -1, False, False, 1e-2),
    ((3, 5, 4, 6), -1, True, False, 1e-3),   # rank 4 channels-last
    ((3, 5, 4, 6), -1, False, True, 1e-5),
    ((3, 6, 4, 5), 1, True, True, 1e-3),     # feature axis 1: ONNX BatchNormalization as is
    ((3, 5, 6, 4), 2, True, True, 1e-3),     # a middle axis: primitives broadcast on axis 2
    ((3, 5, 6, 4), -2, False, True, 1e-3),
    ((4, 6, 7), 1, True, False, 1e-3),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("shape,axis,center,scale,eps", BN_CASES)
def test_batchnorm_matches_numpy(shape, axis, center, scale, eps, opset):
    x = RNG.normal(size=shape).astype("float32")
    c = shape[axis]
    ws, gamma, beta, mean, var = bn_weights(c, scale, center)
    layer = BatchNormalization(axis=axis, center=center, scale=scale, epsilon=eps)
    out, model = run_layer(layer, x, ws, opset=opset)
    assert_close(out, ref_batchnorm(x, axis % x.ndim, gamma, beta, mean, var, eps))
    assert [w.shape for w in layer.get_weights()] == [(c,)] * len(ws)
    assert "Transpose" not in ops_of(model.to_onnx(opset))
    direct = len(shape) == 2 or axis % len(shape) == 1
    assert ("BatchNormalization" in ops_of(model.to_onnx(opset))) == direct


def test_batchnorm_weights_in_keras_order_and_layout():
    x = kdsl.Input((4, 4, 3))
    layer = BatchNormalization(name="bn")
    m = kdsl.Model(x, layer(x))
    assert [(w.name, w.shape, w.trainable) for w in layer.weights] == [
        ("gamma", (3,), True), ("beta", (3,), True),
        ("moving_mean", (3,), False), ("moving_variance", (3,), False)]
    gamma, beta, mean, var = m.get_weights()
    assert (gamma == 1).all() and (beta == 0).all() and (mean == 0).all() and (var == 1).all()
    inits = {i.name: tuple(i.dims) for i in m.to_onnx().graph.initializer}
    assert inits == {"bn/gamma": (3,), "bn/beta": (3,), "bn/moving_mean": (3,), "bn/moving_variance": (3,)}
    only = BatchNormalization(center=False, scale=False)
    only(kdsl.Input((5,)))
    assert [w.name for w in only.weights] == ["moving_mean", "moving_variance"]
    assert BatchNormalization(scale=False).non_default_config() == {"scale": False}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_batchnorm_on_channels_first_value_stays_channels_first(axis, opset):
    x = RNG.normal(size=(2, 5, 4, 3)).astype("float32")
    c = x.shape[axis]
    ws, gamma, beta, mean, var = bn_weights(c, True, True)
    bn = BatchNormalization(axis=axis)
    out, model = run_layer(chain(ToCF(), bn, weighted=bn), x, ws, opset=opset)
    assert_close(out, ref_batchnorm(x, axis, gamma, beta, mean, var, 1e-3))
    ops = ops_of(model.to_onnx(opset))
    assert ops.count("Transpose") == 2   # into channels-first (stand-in) and back at the output
    assert ops[0] == "Transpose" and ops[-1] == "Transpose"
    # the feature axis is ONNX's axis 1 exactly when it is the last channels-last axis
    assert ("BatchNormalization" in ops) == (axis == -1)


def test_batchnorm_relu_on_channels_first_value_stay_channels_first():
    x = RNG.normal(size=(2, 5, 4, 3)).astype("float32")
    ws, gamma, beta, mean, var = bn_weights(3, True, True)
    bn = BatchNormalization()
    relu = kdsl.layers.ops.FUNCTIONS["relu"]
    out, model = run_layer(chain(ToCF(), bn, relu, weighted=bn), x, ws)
    assert_close(out, np.maximum(ref_batchnorm(x, 3, gamma, beta, mean, var, 1e-3), 0))
    assert ops_of(model.to_onnx()) == ["Transpose", "BatchNormalization", "Relu", "Transpose"]


def test_conv_batchnorm_relu_conv_has_no_transpose_between_convs():
    if not hasattr(kdsl.layers, "Conv2D"):
        pytest.skip("kdsl.layers.Conv2D is not written yet")
    Conv2D = kdsl.layers.Conv2D
    relu = kdsl.layers.ops.FUNCTIONS["relu"]

    def build(with_bn):
        x = kdsl.Input((8, 8, 3))
        y = Conv2D(4, 3, padding="same")(x)
        if with_bn:
            y = BatchNormalization()(y)
        y = Conv2D(2, 3, padding="same")(relu(y))
        return kdsl.Model(x, y).to_onnx()

    proto, baseline = build(True), build(False)
    nodes = proto.graph.node
    assert ops_of(proto).count("Transpose") == ops_of(baseline).count("Transpose")
    assert "BatchNormalization" in ops_of(proto)
    producer = {o: n for n in nodes for o in n.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    path, name = [], convs[-1].input[0]
    while producer[name] is not convs[0]:
        path.append(producer[name].op_type)
        name = producer[name].input[0]
    assert "Transpose" not in path and "BatchNormalization" in path, path


def test_conv_batchnorm_relu_matches_numpy_on_the_conv_output():
    if not hasattr(kdsl.layers, "Conv2D"):
        pytest.skip("kdsl.layers.Conv2D is not written yet")
    x = kdsl.Input((6, 6, 2))
    conv, bn = kdsl.layers.Conv2D(3, 3, padding="same"), BatchNormalization()
    features = conv(x)
    model = kdsl.Model(x, [features, kdsl.layers.ops.FUNCTIONS["relu"](bn(features))])
    ws, gamma, beta, mean, var = bn_weights(3, True, True)
    bn.set_weights(ws)
    check_export(model)
    a = RNG.normal(size=(2, 6, 6, 2)).astype("float32")
    f, out = model.predict(a)
    assert_close(out, np.maximum(ref_batchnorm(f, 3, gamma, beta, mean, var, 1e-3), 0), atol=1e-5)


def test_batchnorm_casts_non_float32_inputs():
    x = RNG.normal(size=(3, 4)).astype("float16")
    ws, gamma, beta, mean, var = bn_weights(4, True, True)
    out, _ = run_layer(BatchNormalization(), x, ws)
    assert out.dtype == np.float32
    assert_close(out, ref_batchnorm(x.astype("float32"), 1, gamma, beta, mean, var, 1e-3))


def test_batchnorm_errors():
    with pytest.raises(kdsl.KdslError, match=r"must be an int. Received: axis=\[1, 2\]"):
        BatchNormalization(axis=[1, 2])
    with pytest.raises(kdsl.KdslError, match=r"non-batch axis.*Received: axis=0"):
        BatchNormalization(axis=0)(kdsl.Input((4,)))
    with pytest.raises(kdsl.KdslError, match=r"Received: axis=3 for an input of shape \(None, 4, 5\)"):
        BatchNormalization(axis=3)(kdsl.Input((4, 5)))
    with pytest.raises(kdsl.KdslError, match=r"known size. Received: input shape \(None, 4, n\)"):
        BatchNormalization()(kdsl.Input((4, "n")))
    bn = BatchNormalization()
    bn(kdsl.Input((4,)))
    with pytest.raises(kdsl.KdslError, match=r"axis -1 is 4. Received: input shape \(None, 5\)"):
        bn(kdsl.Input((5,)))
    with pytest.raises(kdsl.KdslError, match="momentum"):
        BatchNormalization(momentum="high")


def test_training_mode_uses_batch_statistics_and_updates_moving_averages():
    """In the training step, BatchNormalization normalises with the batch's mean and biased
    variance and moves the moving statistics by Keras's rule (momentum 0.9 here)."""
    import onnxruntime as ort

    from kdsl.lower.training import TrainSetup, build_training
    from kdsl.train.losses import get_loss
    from kdsl.train.optimizers import SGD

    x = kdsl.Input((3, 4), name="x")
    bn = BatchNormalization(momentum=0.9)
    model = kdsl.Model(x, {"y": bn(x)})
    gamma, beta = RNG.normal(size=4).astype("float32"), RNG.normal(size=4).astype("float32")
    mm, mv = RNG.normal(size=4).astype("float32"), RNG.uniform(0.5, 2, size=4).astype("float32")
    bn.set_weights([gamma, beta, mm, mv])
    prog = build_training(model, TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, SGD(0.0)))
    sess = ort.InferenceSession(prog.train.SerializeToString(), providers=["CPUExecutionProvider"])
    X = RNG.normal(size=(5, 3, 4)).astype("float32")
    feeds = {"x": X, "target:y": np.zeros_like(X), "sample_weight:y": np.ones(5, "float32"),
             "lr": np.array(0.0, "float32"), "step": np.array(1.0, "float32")}
    feeds.update({s.name: s.value for s in prog.state})
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    mean, var = X.mean(axis=(0, 1)), X.var(axis=(0, 1))
    y = (X - mean) / np.sqrt(var + 1e-3) * gamma + beta
    assert_close(out["loss"], np.mean((y - 0) ** 2), rtol=1e-4)
    assert_close(out["batch_normalization/moving_mean:new"], 0.9 * mm + 0.1 * mean, rtol=1e-5)
    assert_close(out["batch_normalization/moving_variance:new"], 0.9 * mv + 0.1 * var, rtol=1e-5)


# -- LayerNormalization -----------------------------------------------------------------------
LN_CASES = [
    # shape, axis, center, scale
    ((5, 8), -1, True, True),
    ((5, 8), 1, False, True),
    ((4, 3, 8), -1, True, True),
    ((4, 3, 8), -1, True, False),
    ((4, 3, 8), [1, 2], True, True),
    ((4, 3, 8), [-2, -1], False, False),
    ((4, 3, 8), [-1, -2], True, True),   # weights in the given order (8, 3), reshaped as Keras does
    ((2, 3, 4, 5), -1, False, True),
    ((2, 3, 4, 5), [1, 2, 3], True, True),
    ((2, 3, 4, 5), (-2, -1), True, False),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("shape,axis,center,scale", LN_CASES)
def test_layernorm_matches_numpy(shape, axis, center, scale, opset):
    x = (RNG.normal(size=shape) * 3 + 1).astype("float32")
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    wshape = tuple(shape[a] for a in axes)
    gamma = RNG.normal(size=wshape).astype("float32")
    beta = RNG.normal(size=wshape).astype("float32")
    ws = ([gamma] if scale else []) + ([beta] if center else [])
    layer = LayerNormalization(axis=axis, center=center, scale=scale, epsilon=1e-3)
    out, model = run_layer(layer, x, ws, opset=opset)
    assert [w.shape for w in layer.get_weights()] == [wshape] * len(ws)
    assert_close(out, ref_layernorm(x, len(axes), gamma if scale else None, beta if center else None, 1e-3),
                 atol=1e-5)
    assert "LayerNormalization" in ops_of(model.to_onnx(opset))


def test_layernorm_weights_and_channels_first_input():
    x = RNG.normal(size=(2, 4, 3, 6)).astype("float32")
    ln = LayerNormalization(name="ln")
    gamma, beta = RNG.normal(size=(2, 6)).astype("float32")
    out, model = run_layer(chain(ToCF(), ln, weighted=ln), x, [gamma, beta])
    assert [(w.name, w.shape) for w in ln.weights] == [("gamma", (6,)), ("beta", (6,))]
    assert_close(out, ref_layernorm(x, 1, gamma, beta, 1e-3), atol=1e-5)


def test_layernorm_errors():
    with pytest.raises(kdsl.KdslError, match=r"only the trailing axes.*Received: axis=1 for an input of "
                                             r"shape \(None, 3, 4\)"):
        LayerNormalization(axis=1)(kdsl.Input((3, 4)))
    with pytest.raises(kdsl.KdslError, match=r"Received: axis=\[\]"):
        LayerNormalization(axis=[])
    with pytest.raises(kdsl.KdslError, match=r"Received: axis='last'"):
        LayerNormalization(axis="last")
    ln = LayerNormalization()
    ln(kdsl.Input((3, 4)))
    with pytest.raises(kdsl.KdslError, match=r"have sizes \(4,\). Received: input shape \(None, 3, 5\)"):
        ln(kdsl.Input((3, 5)))
