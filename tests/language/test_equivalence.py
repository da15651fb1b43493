"""The builder API and the language build the same IR: identical ONNX; to_kd() round-trips."""
import os

import numpy as np
import onnx
import pytest

import kdsl
from helpers import assert_close, check_export
from kdsl import layers as L

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def graph_signature(proto: onnx.ModelProto):
    """Everything that matters in a graph except value names: ops, attributes, weights, I/O types."""
    g = proto.graph
    ops = [(n.op_type, tuple(sorted((a.name, onnx.helper.get_attribute_value(a).__repr__())
                                    for a in n.attribute if a.name != "value"))) for n in g.node]
    consts = [onnx.numpy_helper.to_array(a.t).tolist() for n in g.node for a in n.attribute if a.name == "value"]
    inits = sorted((i.name, onnx.numpy_helper.to_array(i).tobytes()) for i in g.initializer)
    io = [(v.type.SerializeToString()) for v in list(g.input) + list(g.output)]
    return ops, consts, inits, io


def test_mlp_builder_and_kd_give_identical_onnx():
    kd = kdsl.loads("""
model mnist_mlp {
    input image: float32[28, 28, 1]
    output probs = image -> Rescaling(1 / 255) -> Flatten() -> Dense(128, activation=relu)
                         -> Dropout(0.2) -> Dense(10, activation=softmax)
}
""")
    x = kdsl.Input((28, 28, 1), name="image")
    y = L.Rescaling(1 / 255)(x)
    y = L.Flatten()(y)
    y = L.Dense(128, activation="relu")(y)
    y = L.Dropout(0.2)(y)
    y = L.Dense(10, activation="softmax")(y)
    built = kdsl.Model(x, {"probs": y}, name="mnist_mlp")
    assert graph_signature(kd.to_onnx()) == graph_signature(built.to_onnx())
    seq = kdsl.Sequential([kdsl.Input((28, 28, 1), name="image"), L.Rescaling(1 / 255), L.Flatten(),
                           L.Dense(128, activation="relu"), L.Dropout(0.2),
                           L.Dense(10, activation="softmax")], name="mnist_mlp")
    assert graph_signature(seq.to_onnx())[:3] == graph_signature(kd.to_onnx())[:3]


def test_cnn_with_residual_builder_and_kd_give_identical_onnx():
    kd = kdsl.loads("""
block res(x, f: int) {
    y = x -> Conv2D(f, 3, padding=same, use_bias=false) -> BatchNormalization() -> relu
    return relu(y + x)
}
model net {
    input image: float32[16, 16, 3]
    x = image -> Conv2D(8, 3, padding=same) -> relu -> res(8)
    output logits = x -> GlobalAveragePooling2D() -> Dense(10)
}
""")
    image = kdsl.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same")(image)
    x = kdsl.layers.ops.FUNCTIONS["relu"](x)
    conv = L.Conv2D(8, 3, padding="same", use_bias=False, name="res/conv2d")
    bn = L.BatchNormalization(name="res/batch_normalization")
    y = kdsl.layers.ops.FUNCTIONS["relu"](bn(conv(x)))
    x = kdsl.layers.ops.FUNCTIONS["relu"](y + x)
    out = L.Dense(10)(L.GlobalAveragePooling2D()(x))
    built = kdsl.Model(image, {"logits": out}, name="net")
    assert graph_signature(kd.to_onnx()) == graph_signature(built.to_onnx())


@pytest.mark.parametrize("path,model", [
    ("mnist_mlp.kd", None), ("mnist_cnn.kd", None), ("resnet20.kd", None), ("two_inputs.kd", None),
])
def test_to_kd_round_trips_to_the_same_graph(path, model):
    m = kdsl.load(os.path.join(EXAMPLES, path), model=model)
    src = m.to_kd()
    again = kdsl.loads(src)
    assert graph_signature(again.to_onnx()) == graph_signature(m.to_onnx())
    assert again.to_kd() == src


def test_to_kd_keeps_shared_layers_shared():
    a = kdsl.Input((4,), name="a")
    b = kdsl.Input((4,), name="b")
    d = L.Dense(3, name="proj")
    m = kdsl.Model([a, b], {"ya": d(a), "yb": d(b)}, name="pair")
    src = m.to_kd()
    assert "layer proj = Dense(3" in src
    again = kdsl.loads(src)
    assert [l.name for l in again.layers] == ["proj"]
    assert graph_signature(again.to_onnx()) == graph_signature(m.to_onnx())


def test_weights_move_between_models_in_keras_layout():
    m1 = kdsl.load(os.path.join(EXAMPLES, "mnist_cnn.kd"))
    m2 = kdsl.load(os.path.join(EXAMPLES, "mnist_cnn.kd"), seed=7)
    assert not np.allclose(m1.get_weights()[0], m2.get_weights()[0])
    m2.set_weights(m1.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, size=(3, 28, 28, 1)).astype("float32")
    assert_close(m1.predict(x), m2.predict(x))
    assert [w.shape for w in m1.get_weights()] == [(3, 3, 1, 32), (32,), (3, 3, 32, 64), (64,), (1600, 10), (10,)]


def test_set_weights_checks_shapes():
    m = kdsl.load(os.path.join(EXAMPLES, "mnist_mlp.kd"))
    w = m.get_weights()
    w[0] = w[0][:10]
    with pytest.raises(kdsl.KdslError, match=r"has shape \(784, 128\). Received: an array of shape \(10, 128\)"):
        m.set_weights(w)
    with pytest.raises(kdsl.KdslError, match="has 4 weight arrays. Received: 3"):
        m.set_weights(w[:3])
