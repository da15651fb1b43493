"""examples/sentiment.py end to end: both models of examples/sentiment.kd, trained on the bundled
sentences, beat the NumPy bag-of-words baseline on the fixed held-out split."""
import importlib.util
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "examples", "sentiment.py")


def _load_example():
    spec = importlib.util.spec_from_file_location("sentiment_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_baseline_logistic_regression_is_a_proper_fit():
    ex = _load_example()
    rng = np.random.default_rng(0)
    x = (rng.random((300, 20)) < 0.3).astype(np.float64)
    w_true = rng.normal(size=20) * 2
    y = (x @ w_true + rng.logistic(size=300) > 0.5).astype(np.float64)
    w, b = ex.fit_logistic_regression(x, y, c=1.0, iterations=3000)
    # the gradient of the regularised objective vanishes at the solution
    p = 1 / (1 + np.exp(-(x @ w + b)))
    assert np.abs(x.T @ (p - y) / len(y) + w / len(y)).max() < 1e-6 and abs(np.mean(p - y)) < 1e-6


@pytest.mark.slow
def test_both_models_beat_the_bag_of_words_baseline(tmp_path, capsys):
    ex = _load_example()
    assert ex.main(["--export", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    accs = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in ("sentiment_bilstm", "sentiment_cnn"):
            accs[parts[0]] = float(parts[1])
        elif line.strip().startswith("bag-of-words"):
            accs["baseline"] = float(parts[-1])
    assert set(accs) == {"baseline", "sentiment_bilstm", "sentiment_cnn"}, out
    assert 0.75 < accs["baseline"] < accs["sentiment_bilstm"] and accs["baseline"] < accs["sentiment_cnn"], accs
    assert "beats the baseline" in out and "NOT" not in out
    assert sorted(os.listdir(tmp_path)) == ["sentiment_bilstm.onnx", "sentiment_cnn.onnx"]
    # the exported model classifies raw strings; its predictions agree with the trained graphs'
    import onnxruntime as ort

    from kdsl.datasets import sentiment

    (_, _), (x_test, y_test) = sentiment.load_data()
    sess = ort.InferenceSession(str(tmp_path / "sentiment_cnn.onnx"), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"text": x_test})[0][:, 0]
    assert np.mean((probs > 0.5) == (y_test == 1)) == pytest.approx(accs["sentiment_cnn"], abs=2e-3)
