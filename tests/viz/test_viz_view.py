"""The diagram's view model: boxes, shape-labelled edges, shortcuts, shared layers, block clusters."""
import os

import pytest

import kdsl
from kdsl import layers
from kdsl.viz import build_view

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def resnet():
    return kdsl.load(os.path.join(EXAMPLES, "resnet20.kd"))


def test_one_box_per_call_plus_inputs_and_outputs():
    m = resnet()
    v = build_view(m)
    kinds = [n.kind for n in v.nodes]
    assert kinds.count("input") == 1 and kinds.count("output") == 1
    assert kinds.count("layer") == len(m.layers) == 45
    assert kinds.count("layer") + kinds.count("op") == len(m.graph.nodes)
    assert v.totals["params"] == m.count_params() and v.totals["layers"] == 45
    assert v.totals["flops"] == sum(n.flops for n in v.nodes)
    conv = next(n for n in v.nodes if n.name == "residual_3/conv_bn/conv2d")
    assert conv.label == "conv2d" and conv.type == "Conv2D" and conv.family == "conv"
    assert conv.call == "Conv2D(32, 3, strides=2, padding=same, use_bias=false, kernel_initializer=he_normal)"
    assert ("kernel", "(3, 3, 16, 32)", True) in conv.weights and conv.params == 3 * 3 * 16 * 32
    assert conv.out_shapes == ["(batch, 16, 16, 32)"] and conv.in_shapes == ["(batch, 32, 32, 16)"]
    assert conv.source["loc"].endswith("blocks/resnet.kd:4:17")
    assert conv.source["text"].startswith("return x -> Conv2D(filters, kernel_size")
    bn = next(n for n in v.nodes if n.name == "conv_bn/batch_normalization")
    assert [w[2] for w in bn.weights] == [True, True, False, False]      # moving stats are not trainable


def test_edges_carry_shapes_and_shortcuts_are_marked():
    v = build_view(resnet())
    ids = {n.id for n in v.nodes}
    assert all(e.src in ids and e.dst in ids for e in v.edges)
    assert all(e.shape.startswith("(batch, ") for e in v.edges)
    skips = [e for e in v.edges if e.skip]
    assert len(skips) == 7                       # the identity shortcuts (stride-1 residual blocks)
    assert all(v.node(e.dst).type == "add" for e in skips)


def test_block_calls_are_clusters_and_ops_land_in_their_call():
    m = resnet()
    v = build_view(m)
    top = [c for c in v.clusters if not c.parent]
    assert [c.id for c in top] == ["conv_bn"] + ["residual" + ("_%d" % i if i else "") for i in range(9)]
    nested = {c.id: c for c in v.clusters}
    assert nested["residual_3/conv_bn_2"].parent == "residual_3" and nested["residual_3/conv_bn_2"].block == "conv_bn"
    ops = {n.name: n.cluster for n in v.nodes if n.kind == "op"}
    assert ops["relu"] == ""                                   # after conv_bn(16), in the model itself
    assert ops["relu_1"] == "residual" and ops["add"] == "residual" and ops["relu_2"] == "residual"
    assert ops["add_8"] == "residual_8"
    # a cluster's parameters are its layers' parameters
    top_level = sum(n.params for n in v.nodes if not n.cluster)
    assert sum(c.params for c in top) + top_level == m.count_params()
    assert nested["residual"].layers == 4 and nested["residual_3"].layers == 6


def test_shared_layers_symbolic_dims_and_dtypes():
    v = build_view(kdsl.load(os.path.join(EXAMPLES, "two_inputs.kd")))
    assert len(v.shared) == 1
    a, b = (v.node(i) for i in v.shared[0])
    assert a.name == b.name == "proj" and (a.shared["index"], b.shared["index"]) == (1, 2)
    assert a.params == 1056 and b.params == 0                  # counted once
    assert any(e.shape == "int64 (batch, 64)" for e in v.edges)
    m = kdsl.loads("model m {\n    input t: int64[seq]\n    output y = t -> Embedding(10, 4) -> Dense(2)\n}\n")
    v = build_view(m)
    assert [e.shape for e in v.edges][:2] == ["int64 (batch, seq)", "(batch, seq, 4)"]
    dense = next(n for n in v.nodes if n.type == "Dense")
    assert dense.flops is None and v.totals["flops"] is None


def test_builder_models_point_at_their_python_source():
    x = kdsl.Input((8,), name="x")
    y = layers.Dense(4, activation="relu")(x)
    m = kdsl.Model(x, {"y": layers.Dense(2)(y)}, name="b")
    v = build_view(m)
    dense = next(n for n in v.nodes if n.name == "dense")
    assert dense.source["file"] == __file__ and dense.call == "Dense(4, activation=relu)"
    assert dense.source["text"].startswith("y = layers.Dense(4")
    assert v.clusters == [] and v.to_json()["nodes"][0]["kind"] == "input"


def test_keras_masks_are_drawn_as_mask_edges():
    try:
        m = kdsl.loads("model m {\n    input t: int64[12]\n"
                       "    output y = t -> Embedding(50, 8, mask_zero=true) -> GlobalAveragePooling1D()\n}\n")
    except kdsl.KdslError:
        pytest.skip("this build has no Keras masks")
    if not any(getattr(n, "mask", None) is not None for n in m.graph.nodes):
        pytest.skip("this build has no Keras masks")
    v = build_view(m)
    masks = [e for e in v.edges if e.mask]
    assert len(masks) == 1 and v.node(masks[0].dst).type == "GlobalAveragePooling1D" and not masks[0].skip
    from kdsl.viz import to_dot
    assert 'label=" mask "' in to_dot(v)
