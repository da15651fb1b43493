"""Graph rewrites that keep every value (kdsl.lower.rewrite)."""
import numpy as np
import pytest

from helpers import assert_close


def test_repeated_nodes_are_merged_and_the_values_kept():
    """eliminate_common_subexpressions: a repeat of an earlier node (after renaming) goes; random
    ops, nodes that write a graph output and optional outputs the first node lacks stay."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from kdsl.lower.rewrite import eliminate_common_subexpressions

    n = helper.make_node
    nodes = [n("Abs", ["x"], ["a1"]), n("Abs", ["x"], ["a2"]),              # a2 repeats a1
             n("Neg", ["a1"], ["b1"]), n("Neg", ["a2"], ["b2"]),            # b2 repeats b1 once a2 -> a1
             n("Add", ["b1", "b2"], ["y"]),
             n("Abs", ["x"], ["out2"]),                                     # writes a graph output: stays
             n("RandomUniformLike", ["x"], ["r1"], seed=1.0), n("RandomUniformLike", ["x"], ["r2"], seed=1.0),
             n("Sub", ["r1", "r2"], ["z"])]
    kept = eliminate_common_subexpressions(nodes, ["y", "out2", "z"])
    assert [k.output[0] for k in kept] == ["a1", "b1", "y", "out2", "r1", "r2", "z"]
    assert list(kept[2].input) == ["b1", "b1"]
    g = helper.make_graph(kept, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, [3]) for o in ("y", "out2")])
    x = np.array([-1.5, 0.0, 2.0], np.float32)
    y, out2 = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
                                   .SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert_close(y, -2 * np.abs(x))
    assert_close(out2, np.abs(x))


@pytest.mark.parametrize("opset", [17, 18])
def test_wide_concat_and_split_become_two_levels(opset):
    """limit_arity: Concats of more than 32 inputs and Splits of more than 32 outputs (equal, or
    with constant sizes) become nodes of at most 32 over consecutive pieces, with the same values;
    an equal Split whose count does not factor (37) stays; 1,100 inputs take three levels."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from kdsl.lower.rewrite import limit_arity

    n = helper.make_node
    eq = {"num_outputs": 200} if opset >= 18 else {}
    sizes = [1] * 60 + [14] * 10
    nodes = [n("Split", ["x"], [f"s{i}" for i in range(200)], axis=0, name="eq", **eq),
             n("Concat", [f"s{199 - i}" for i in range(200)], ["y"], axis=0, name="rev"),
             n("Constant", [], ["sz"], value=helper.make_tensor("sz", TensorProto.INT64, [70], sizes)),
             n("Split", ["y", "sz"], [f"t{i}" for i in range(70)], axis=0, name="sized"),
             n("Concat", [f"t{69 - i}" for i in range(70)], ["z"], axis=0, name="back"),
             n("Split", ["w"], [f"p{i}" for i in range(37)], axis=1, name="prime",
               **({"num_outputs": 37} if opset >= 18 else {})),
             n("Concat", [f"p{i % 37}" for i in range(1100)], ["v"], axis=1, name="wide"),
             n("Shape", ["x"], ["xs"]), n("Slice", ["xs", "zero", "one"], ["rows"]),   # sizes computed: stays
             n("Div", ["rows", "forty"], ["q"]), n("Expand", ["q", "forty"], ["qs"]),
             n("Split", ["x", "qs"], [f"c{i}" for i in range(40)], axis=0, name="computed"),
             n("Concat", [f"c{i}" for i in range(40)], ["u"], axis=0, name="again")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [200, 3]),
                                       helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 37])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [200, 3]),
                           helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 1100]),
                           helper.make_tensor_value_info("u", TensorProto.FLOAT, [200, 3])],
                          initializer=[helper.make_tensor(k, TensorProto.INT64, [1], [v])
                                       for k, v in (("zero", 0), ("one", 1), ("forty", 40))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {"x": np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32),
             "w": np.arange(74, dtype=np.float32).reshape(2, 37)}
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    limit_arity(m.graph)
    onnx.checker.check_model(m, full_check=True)
    wide = [(nd.name, len(nd.input), len(nd.output)) for nd in m.graph.node if max(len(nd.input), len(nd.output)) > 32]
    assert wide == [("prime", 1, 37), ("computed", 2, 40)]
    # 200 inputs: 7 parts + 1; 70: 3 + 1; 1,100: 35 parts, whose 35 take 2 more + 1; 40: 2 + 1
    assert len([nd for nd in m.graph.node if nd.op_type == "Concat"]) == (7 + 1) + (3 + 1) + (35 + 2 + 1) + (2 + 1)
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
