"""Each example in examples/ compiles (CLI and API) and runs in onnxruntime."""
import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kdsl
from helpers import check_export
from kdsl.cli import main

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
FILES = sorted(glob.glob(os.path.join(EXAMPLES, "*.kd")))


def test_examples_exist():
    names = {os.path.basename(f) for f in FILES}
    assert {"mnist_mlp.kd", "mnist_cnn.kd", "resnet20.kd", "two_inputs.kd"} <= names


def _cases():
    from kdsl.frontend.api import compile_file

    return [(f, name) for f in FILES for name in compile_file(f).model_names]


@pytest.mark.parametrize("path,name", _cases(), ids=lambda v: os.path.basename(v) if v.endswith(".kd") else v)
def test_example_compiles_and_runs(path, name, tmp_path):
    assert main(["compile", path, "--model", name, "-o", str(tmp_path)]) == 0
    model = kdsl.load(path, model=name)
    assert model.train_config is not None, "every example model has a train section"
    proto = onnx.load(str(tmp_path / f"{model.name}.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    opset = proto.opset_import[0].version
    check_export(model, opset)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for v in model.inputs:
        shape = (3,) + tuple(d if isinstance(d, int) else 5 for d in v.type.shape[1:])
        if v.type.dtype == "string":
            feeds[v.name] = np.array(["A fine, fine film!", "not good...", "ok"], dtype=object).reshape(shape)
        elif v.type.is_int:
            feeds[v.name] = rng.integers(0, 10, size=shape).astype(v.type.dtype)
        else:
            feeds[v.name] = rng.uniform(0, 1, size=shape).astype(v.type.dtype)
    outs = sess.run(None, feeds)
    for out, v in zip(outs, model.outputs):
        assert out.shape == (3,) + tuple(v.type.shape[1:])
        assert np.isfinite(out).all()
    api = model.predict(feeds if len(feeds) > 1 else next(iter(feeds.values())))
    api = api if isinstance(api, list) else [api]
    for a, b in zip(api, outs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cnn_has_one_transpose_at_each_boundary():
    proto = kdsl.load(os.path.join(EXAMPLES, "mnist_cnn.kd")).to_onnx()
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Transpose") == 2, ops          # into the conv stack, and out of it for Flatten
    proto = kdsl.load(os.path.join(EXAMPLES, "resnet20.kd")).to_onnx()
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Transpose") == 1, ops          # global pooling leaves the stack without one
