"""Sentiment of review sentences: the two models of examples/sentiment.kd against a bag-of-words
logistic regression, on the bundled UCI "Sentiment Labelled Sentences" (kdsl.datasets.sentiment).

Run: ``python examples/sentiment.py`` (``--seed N``, ``--export DIR`` to also write the trained
models as ONNX files that take raw strings).

1. Load the fixed split: 2,400 training sentences, 600 held out (100 positive and 100 negative
   per site; see kdsl/datasets/data/sentiment/README.md).
2. For each model (``sentiment_bilstm``, ``sentiment_cnn``): adapt its ``TextVectorization``
   vocabulary on the training sentences only, ``fit`` with the settings of the file's ``train``
   section, and ``evaluate`` on the held-out sentences.
3. The baseline, in NumPy only: binary bag-of-words features over the vocabulary of the training
   sentences (same standardization and split as the models), L2-regularised logistic regression
   (scikit-learn's default strength, ``C = 1``) fitted by full-batch Nesterov gradient descent.
4. Print the three held-out accuracies; then classify a few new sentences with the exported
   inference model, which does the text vectorization inside the ONNX graph.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import kdsl  # noqa: E402
from kdsl.datasets import sentiment  # noqa: E402
from kdsl.layers import text as text_layers  # noqa: E402
from kdsl.layers.text import TextVectorization  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KD = os.path.join(HERE, "sentiment.kd")
MODELS = ("sentiment_bilstm", "sentiment_cnn")


# -- the baseline: bag-of-words logistic regression in NumPy ----------------------------------------
def bag_of_words(vectorizer: TextVectorization, texts) -> np.ndarray:
    """Binary features: 1 where a vocabulary word occurs in the sentence (padding and OOV left out)."""
    ids = vectorizer.host_apply(texts)
    x = np.zeros((len(ids), vectorizer.vocabulary_size()), dtype=np.float64)
    x[np.arange(len(ids))[:, None], ids] = 1.0
    x[:, :2] = 0.0
    return x


def fit_logistic_regression(x: np.ndarray, y: np.ndarray, c: float = 1.0, iterations: int = 1000):
    """Minimise mean log-loss + ||w||^2 / (2 C n) (scikit-learn's objective divided by n) by
    Nesterov's accelerated gradient with step 1/L. Returns (w, b)."""
    n, d = x.shape
    lam = 1.0 / (c * n)
    lipschitz = 0.25 * np.linalg.norm(x, 2) ** 2 / n + lam
    w, b, vw, vb = np.zeros(d), 0.0, np.zeros(d), 0.0
    for _ in range(iterations):
        lw, lb = w + 0.9 * vw, b + 0.9 * vb
        p = 1.0 / (1.0 + np.exp(-(x @ lw + lb)))
        gw = x.T @ (p - y) / n + lam * lw
        gb = float(np.mean(p - y))
        vw, vb = 0.9 * vw - gw / lipschitz, 0.9 * vb - gb / lipschitz
        w, b = w + vw, b + vb
    return w, b


def baseline_accuracy(x_train, y_train, x_test, y_test) -> float:
    vectorizer = TextVectorization()
    vectorizer.adapt(x_train)
    w, b = fit_logistic_regression(bag_of_words(vectorizer, x_train), y_train.astype(np.float64))
    return float(np.mean(((bag_of_words(vectorizer, x_test) @ w + b) > 0) == (y_test == 1)))


# -- the kdsl models ---------------------------------------------------------------------------------
def train_model(name: str, data, seed: int, verbose: int = 0) -> tuple[kdsl.Model, float, float]:
    """Build ``name`` from sentiment.kd, adapt its vocabulary, train, evaluate. Returns
    (model, held-out accuracy, training seconds)."""
    (x_train, y_train), (x_test, y_test) = data
    model = kdsl.load(KD, model=name, seed=seed)
    t = time.perf_counter()
    model.get_layer("vectorize").adapt(x_train)
    model.fit(x_train, y_train.astype(np.float32), verbose=verbose)
    seconds = time.perf_counter() - t
    _, acc = model.evaluate(x_test, y_test.astype(np.float32), verbose=0)
    return model, float(acc), seconds


def raw_string_session(model: kdsl.Model):
    """An onnxruntime session on the exported inference model (strings in)."""
    import onnxruntime as ort

    proto = text_layers.add_opset_imports(model.to_onnx(opset=text_layers.MIN_OPSET))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]), proto


def run(seed: int = 0, verbose: int = 0, export: str | None = None) -> dict:
    data = sentiment.load_data()
    (x_train, y_train), (x_test, y_test) = data
    results = {"baseline": baseline_accuracy(x_train, y_train, x_test, y_test)}
    models = {}
    for name in MODELS:
        model, acc, seconds = train_model(name, data, seed, verbose)
        results[name] = acc
        results[f"{name}_seconds"] = seconds
        models[name] = model
    results["models"] = models
    if export:
        os.makedirs(export, exist_ok=True)
        for name, model in models.items():
            _, proto = raw_string_session(model)
            with open(os.path.join(export, f"{name}.onnx"), "wb") as f:
                f.write(proto.SerializeToString())
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", default=None, help="write <model>.onnx (raw strings in) to this directory")
    ap.add_argument("--verbose", type=int, default=0)
    args = ap.parse_args(argv)
    r = run(args.seed, args.verbose, args.export)
    print("Held-out accuracy on 600 sentences (Amazon, IMDb, Yelp):")
    print(f"  bag-of-words logistic regression (NumPy)   {r['baseline']:.4f}")
    for name in MODELS:
        better = "beats" if r[name] > r["baseline"] else "does NOT beat"
        print(f"  {name:42} {r[name]:.4f}  ({better} the baseline; trained in {r[f'{name}_seconds']:.0f} s)")
    sentences = np.array(["The battery died after two days. Avoid!", "Absolutely loved the food and the staff.",
                          "Not worth the money.", "Une très belle surprise, GREAT acting!"], dtype=object)
    sess, _ = raw_string_session(r["models"]["sentiment_cnn"])
    probs = sess.run(None, {"text": sentences})[0][:, 0]
    print("\nThe exported sentiment_cnn ONNX model, fed raw strings:")
    for s, p in zip(sentences, probs):
        print(f"  P(positive) = {p:.2f}  {s}")
    return 0 if all(r[name] > r["baseline"] for name in MODELS) else 1


if __name__ == "__main__":
    sys.exit(main())
