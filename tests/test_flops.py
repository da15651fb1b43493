"""FLOPs per sample: the formulas of kdsl.flops, checked against an independent count from the
exported ONNX graph, and their place in `summary` (table, totals, --json)."""
import json
import math
import os

import onnx
import pytest

import kdsl
from kdsl import layers
from kdsl.cli import main
from kdsl.flops import format_flops, graph_flops, layer_flops, node_flops
from kdsl.ir import TensorType
from kdsl.summary import summary_json, summary_rows, summary_text

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


def one(layer, *shape, dtype="float32"):
    """FLOPs of ``layer`` applied to an input of ``shape`` (without batch)."""
    x = kdsl.Input(shape, dtype=dtype)
    y = layer(x)
    return node_flops(y.node), y


def test_dense_is_2_in_out():
    f, _ = one(layers.Dense(7), 5)
    assert f == 2 * 5 * 7
    f, _ = one(layers.Dense(7, activation="relu", use_bias=False), 3, 5)   # middle axes multiply
    assert f == 2 * 5 * 7 * 3


@pytest.mark.parametrize("kw,shape", [
    (dict(filters=8, kernel_size=3), (10, 12, 4)),
    (dict(filters=8, kernel_size=(3, 1), strides=2, padding="same"), (11, 9, 4)),
    (dict(filters=6, kernel_size=3, groups=2, dilation_rate=2), (16, 16, 4)),
])
def test_conv2d_formula(kw, shape):
    f, y = one(layers.Conv2D(**kw), *shape)
    _, hout, wout, cout = y.type.shape
    kh, kw_ = layers.Conv2D(**kw).kernel_size
    assert f == 2 * kh * kw_ * (shape[-1] // kw.get("groups", 1)) * cout * hout * wout


def test_other_convolutions():
    f, y = one(layers.Conv1D(5, 3), 20, 4)
    assert f == 2 * 3 * 4 * 5 * 18
    f, y = one(layers.DepthwiseConv2D(3, depth_multiplier=2), 8, 8, 3)
    assert f == 2 * 9 * 3 * 2 * 6 * 6
    f, y = one(layers.SeparableConv2D(16, 3), 8, 8, 3)
    assert f == 2 * 9 * 3 * 6 * 6 + 2 * 3 * 16 * 6 * 6
    f, y = one(layers.Conv2DTranspose(4, 3, strides=2), 5, 5, 3)
    assert f == 2 * 9 * 3 * 4 * 5 * 5


def test_elementwise_pooling_and_free_layers():
    assert one(layers.MaxPooling2D(2), 8, 8, 3)[0] == 4 * 4 * 4 * 3
    assert one(layers.GlobalAveragePooling2D(), 8, 8, 3)[0] == 8 * 8 * 3
    assert one(layers.BatchNormalization(), 4, 4, 2)[0] == 2 * 32
    assert one(layers.Rescaling(1 / 255), 10)[0] == 10
    assert one(layers.Rescaling(2.0, offset=1.0), 10)[0] == 20
    assert one(layers.Activation("softmax"), 10)[0] == 30
    assert one(layers.LayerNormalization(), 6)[0] == 7 * 6
    for free in (layers.Flatten(), layers.Dropout(0.5), layers.Reshape((2, 3))):
        assert one(free, 6)[0] == 0
    a, b = kdsl.Input((4,)), kdsl.Input((4,))
    assert node_flops(layers.Add()([a, b, a]).node) == 2 * 4
    assert node_flops(layers.Average()([a, b]).node) == 2 * 4
    assert node_flops(layers.Concatenate()([a, b]).node) == 0
    assert node_flops((a + b).node) == 4
    m = kdsl.Input((3, 5))
    w = kdsl.Input((5, 2))
    assert node_flops((m @ w).node) == 2 * 5 * 3 * 2
    assert node_flops(layers.Embedding(100, 8)(kdsl.Input((7,), dtype="int64")).node) == 0


def test_symbolic_dims_are_unknown_and_totals_say_so():
    x = kdsl.Input(("seq", 8))
    y = layers.Dense(4)(x)
    assert node_flops(y.node) is None
    model = kdsl.Model(x, y)
    assert graph_flops(model.graph) == ([None], None)
    rows = summary_rows(model)
    assert rows[1]["flops"] is None
    text = summary_text(model)
    assert "FLOPs per sample: at least 0 (some layers have a symbolic size)" in text
    dense_row = next(line for line in text.splitlines() if line.startswith("│ dense"))
    assert dense_row.split("│")[4].strip() == "?"


def test_a_layer_can_count_its_own_flops():
    class Custom(layers.Dense):
        def flops(self, input_types, output_types):
            return 42

    assert one(Custom(3), 4)[0] == 42
    assert layer_flops(layers.Dense(3), [TensorType("float32", ("batch", 4))],
                       [TensorType("float32", ("batch", 3))]) == 24


def test_format_flops():
    assert format_flops(None) == "?"
    assert format_flops(512) == "512 FLOPs"
    assert format_flops(40_590_336) == "40.59 MFLOPs"
    assert format_flops(2_500_000_000) == "2.50 GFLOPs"


def _onnx_conv_gemm_flops(proto) -> int:
    """Independent count: 2 * weight elements * output positions for every Conv, and
    2 * K * N for every Gemm/MatMul, read from the exported ONNX graph."""
    inits = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    total = 0
    for n in proto.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            out = shapes[n.output[0]]
            total += 2 * math.prod(w) * math.prod(out[2:])
        elif n.op_type in ("Gemm", "MatMul") and n.input[1] in inits:
            k, units = inits[n.input[1]]
            rows = math.prod(shapes[n.output[0]][1:-1] or [1])
            total += 2 * k * units * rows
    return total


def test_conv_and_dense_flops_agree_with_the_onnx_graph():
    model = kdsl.load(os.path.join(EXAMPLES, "resnet20.kd"))
    ours = sum(node_flops(n) for n in model.graph.nodes if type(n.layer).__name__ in ("Conv2D", "Dense"))
    assert ours == _onnx_conv_gemm_flops(model.to_onnx())
    per, total = graph_flops(model.graph)
    assert total == sum(per) and total > ours


def test_summary_table_has_flops_column_and_total(capsys):
    model = kdsl.load(os.path.join(EXAMPLES, "mnist_cnn.kd"))
    text = summary_text(model)
    header = text.splitlines()[2]
    assert header.split("┃")[1:5] == [" Layer (type)                   ", " Output Shape       ", " Param # ",
                                      "     FLOPs "]
    assert "│ conv2d (Conv2D)                │ (None, 26, 26, 32) │     320 │   389,376 │" in text
    total = sum(r["flops"] for r in summary_rows(model))
    assert f" FLOPs per sample: {total:,} ({format_flops(total)})" in text
    assert " Total params: 34,826 (136.04 KB)" in text   # the existing totals are unchanged


def test_summary_json_cli(capsys):
    path = os.path.join(EXAMPLES, "two_inputs.kd")
    assert main(["summary", path, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model = kdsl.load(path)
    assert data == json.loads(json.dumps(summary_json(model)))
    assert data["model"] == "review_model"
    assert [i["name"] for i in data["inputs"]] == ["tokens", "meta"]
    assert data["outputs"][0] == {"name": "rating", "dtype": "float32", "shape": [None, 5]}
    names = [r["name"] for r in data["layers"]]
    assert names.count("proj") == 2 and [r["shared"] for r in data["layers"] if r["name"] == "proj"] == [False, True]
    t = data["totals"]
    assert t["params"] == model.count_params() == sum(r["params"] for r in data["layers"])
    assert t["flops"] == sum(r["flops"] for r in data["layers"])
    assert t["params_bytes"] == 4 * t["params"]
    assert data["layers"][2]["connected_to"] == ["tokens"] and data["layers"][2]["output_shapes"] == [[None, 64, 32]]
    assert main(["summary", path]) == 0
    assert "FLOPs" in capsys.readouterr().out


def test_model_summary_still_prints(capsys):
    x = kdsl.Input((4,))
    kdsl.Model(x, layers.Dense(2)(x)).summary()
    out = capsys.readouterr().out
    assert "Param #" in out and "FLOPs per sample: 16 (16 FLOPs)" in out


def test_recurrent_layers_count_their_gates_per_step():
    if not hasattr(layers, "LSTM"):
        pytest.skip("the recurrent layers are not in this build")
    for cls, gates in (("SimpleRNN", 1), ("GRU", 3), ("LSTM", 4)):
        f, _ = one(getattr(layers, cls)(4), 10, 8)
        assert f == 2 * gates * 4 * (8 + 4) * 10, cls
    f, _ = one(layers.Bidirectional(layers.LSTM(4)), 10, 8)
    assert f == 2 * 2 * 4 * 4 * (8 + 4) * 10
    assert one(layers.LSTM(4), None, 8)[0] is None           # a symbolic number of steps
