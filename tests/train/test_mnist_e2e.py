"""End to end: the example models trained with the CLI on real MNIST images (8,000 of the
10,000 bundled test-set images), evaluated on the other 2,000."""
import json
import os

import pytest

from kdsl.cli import main

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DATA = os.path.join(ROOT, "kdsl", "datasets", "data", "mnist")
IMAGES = os.path.join(DATA, "t10k-images-idx3-ubyte.gz")
LABELS = os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")


@pytest.mark.slow
@pytest.mark.parametrize("name,target", [("mnist_mlp", 0.94), ("mnist_cnn", 0.97)])
def test_cli_training_reaches_accuracy(name, target, tmp_path, capsys):
    kd = os.path.join(ROOT, "examples", f"{name}.kd")
    rc = main(["train", kd, "--data", IMAGES, "--data", LABELS, "--rows", "0:8000", "--epochs", "5",
               "--verbose", "0", "-o", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / f"{name}.ckpt").is_file() and (tmp_path / f"{name}.onnx").is_file()
    assert (tmp_path / "history.csv").read_text().count("\n") == 6      # header + 5 epochs
    capsys.readouterr()
    rc = main(["evaluate", str(tmp_path / f"{name}.ckpt"), "--data", IMAGES, "--data", LABELS,
               "--rows", "8000:", "--json"])
    assert rc == 0
    logs = json.loads(capsys.readouterr().out)
    print(name, logs)
    assert logs["accuracy"] >= target, logs
    # the exported inference model agrees with the checkpoint
    rc = main(["predict", str(tmp_path / f"{name}.ckpt"), "--data", IMAGES, "--rows", "8000:8100",
               "-o", str(tmp_path / "pred.npz")])
    assert rc == 0
    import numpy as np
    import onnxruntime as ort

    from kdsl.runtime.data import read_idx
    x = read_idx(IMAGES)[8000:8100].reshape(100, 28, 28, 1).astype("float32")
    sess = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"image": x})[0], np.load(tmp_path / "pred.npz")["probs"],
                               rtol=1e-4, atol=1e-6)
