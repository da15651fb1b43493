"""A training loop over plain onnxruntime, knowing nothing of kdsl, trains the model from the
files `kdsl compile` writes (docs/training_graph.md), and matches kdsl's own fit step for step."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort

import kdsl
from kdsl.cli import main

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def mnist_subset(n: int):
    from kdsl.datasets import mnist

    (x, y), _ = mnist.load_data()
    return x[:n].reshape(n, 28, 28, 1).astype(np.float32), y[:n].astype(np.int64)


def plain_loop(out_dir: str, x, y, epochs: int, batch: int = 128, lr: float = 1e-3):
    # --- the loop a user writes from the docs: no kdsl below this line ---
    sess = ort.InferenceSession(os.path.join(out_dir, "mnist_mlp.train.onnx"), providers=["CPUExecutionProvider"])
    state = dict(np.load(os.path.join(out_dir, "mnist_mlp.state.npz")))
    names = [o.name for o in sess.get_outputs()]
    losses, step = [], 0
    for epoch in range(epochs):
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            step += 1
            feeds = {"image": xb, "target:probs": yb, "sample_weight:probs": np.ones(len(xb), np.float32),
                     "lr": np.array(lr, np.float32), "step": np.array(step, np.float32), **state}
            out = dict(zip(names, sess.run(None, feeds)))
            state.update({k[:-4]: v for k, v in out.items() if k.endswith(":new")})
            losses.append(float(out["loss"]))
    return losses, state


def test_plain_onnxruntime_loop_trains_and_matches_fit(tmp_path):
    assert main(["compile", os.path.join(EXAMPLES, "mnist_mlp.kd"), "-o", str(tmp_path)]) == 0
    for f in ("mnist_mlp.onnx", "mnist_mlp.train.onnx", "mnist_mlp.eval.onnx", "mnist_mlp.state.npz",
              "mnist_mlp.train.json"):
        assert (tmp_path / f).is_file(), f
    train = onnx.load(str(tmp_path / "mnist_mlp.train.onnx"))
    onnx.checker.check_model(train, full_check=True)
    assert {n.domain for n in train.graph.node} <= {"", "ai.onnx"}
    sig = json.loads((tmp_path / "mnist_mlp.train.json").read_text())
    assert sig["feedback"]["dense/kernel:new"] == "dense/kernel"

    x, y = mnist_subset(1024)
    losses, state = plain_loop(str(tmp_path), x, y, epochs=2)
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4])          # it learns

    model = kdsl.load(os.path.join(EXAMPLES, "mnist_mlp.kd"))
    hist_losses = []

    class Record(kdsl.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            hist_losses.append(float(model._trainer.last_loss))

    model.fit(x, y, epochs=2, batch_size=128, shuffle=False, validation_split=0.0, verbose=0,
              callbacks=[Record()])
    # dropout masks depend only on the step number, so both loops see the same masks
    np.testing.assert_allclose(hist_losses, losses, rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("dense").get_weights()[0], state["dense/kernel"], rtol=1e-5,
                               atol=1e-6)


def test_training_graphs_built_for_cuda_train_the_same(tmp_path):
    """`kdsl compile --training-device cuda`: the signature says so, the CNN's max pooling
    gradient uses ScatterElements (the CUDA provider has no MaxUnpool), and the step computes what
    the CPU build does (run here on the CPU)."""
    cpu, cuda = tmp_path / "cpu", tmp_path / "cuda"
    src = os.path.join(EXAMPLES, "mnist_cnn.kd")
    assert main(["compile", src, "-o", str(cpu)]) == 0
    assert main(["compile", src, "-o", str(cuda), "--training-device", "cuda"]) == 0
    graphs = {}
    for d in (cpu, cuda):
        sig = json.loads((d / "mnist_cnn.train.json").read_text())
        assert sig["device"] == d.name
        graphs[d.name] = onnx.load(str(d / "mnist_cnn.train.onnx"))
    ops = {k: {n.op_type for n in g.graph.node} for k, g in graphs.items()}
    assert "MaxUnpool" in ops["cpu"] and "MaxUnpool" not in ops["cuda"] and "ScatterElements" in ops["cuda"]
    x, y = mnist_subset(16)
    state = dict(np.load(str(cpu / "mnist_cnn.state.npz")))
    feeds = {"image": x, "target:probs": y, "sample_weight:probs": np.ones(16, np.float32),
             "lr": np.array(1e-3, np.float32), "step": np.array(1, np.float32), **state}
    outs = {}
    for k, g in graphs.items():
        sess = ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
        outs[k] = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    assert outs["cpu"].keys() == outs["cuda"].keys()
    for name in outs["cpu"]:
        np.testing.assert_allclose(outs["cuda"][name], outs["cpu"][name], rtol=1e-6, atol=1e-7, err_msg=name)
