"""Graph rewrites that keep every value (kdsl.lower.rewrite)."""
import numpy as np

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
