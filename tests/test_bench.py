"""The benchmark scripts still run (tiny sizes; their figures are not checked here)."""
import importlib.util
import os
import re

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCH, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_train_benchmark_runs_every_model(capsys):
    bench = _load("train")
    assert bench.main(["--models", "mlp,cnn,lstm", "--samples", "64", "--epochs", "1", "--no-torch",
                       "--no-keras"]) == 0
    out = capsys.readouterr().out
    for key in ("mlp", "cnn", "lstm"):
        row = re.search(rf"^{key}\s+\|\s+([\d,]+) \|", out, re.M)
        assert row and int(row.group(1).replace(",", "")) > 0, out
    assert "torch: skipped: --no-torch" in out


def test_sst2_benchmark_reads_glue_files_and_refuses_others(tmp_path):
    bench = _load("sst2")
    good = tmp_path / "train.tsv"
    good.write_text("sentence\tlabel\na fine , moving film \t1\nflat and dull\t0\n", encoding="utf-8")
    texts, labels = bench.read_tsv(str(good))
    assert list(texts) == ["a fine , moving film ", "flat and dull"] and list(labels) == [1.0, 0.0]
    bad = tmp_path / "bad.tsv"
    bad.write_text("text,label\nx,1\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="expected the header 'sentence<TAB>label'"):
        bench.read_tsv(str(bad))
    bad.write_text("sentence\tlabel\nno label here\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bad.tsv:2: expected '<sentence> TAB <0\|1>'"):
        bench.read_tsv(str(bad))


def test_sst2_benchmark_trains_both_models_with_their_optimizers(tmp_path):
    """One epoch of each model's settings on a tiny GLUE-style set: the BiLSTM with its Nadam and
    options, the CNN with the file's Adam; dev accuracy from evaluate() and from the exported ONNX
    model on raw strings agree."""
    import json

    bench = _load("sst2")
    rows = ["sentence\tlabel"] + [f"{w} film {i}\t{int(w == 'good')}" for i in range(48)
                                   for w in ("good", "bad")]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("\n".join(rows[:17]) + "\n", encoding="utf-8")
    out = tmp_path / "r.json"
    assert bench.main(["--data", str(tmp_path), "--epochs", "1", "--json", str(out)]) == 0
    res = {r["model"]: r for r in json.loads(out.read_text())["results"]}
    assert res["bilstm"]["optimizer"] == "Nadam" and res["bilstm"]["optimizer_options"]["use_ema"]
    assert res["cnn"]["optimizer"] == "Adam"
    for r in res.values():
        assert r["epochs"] == 1 and 0.0 <= r["dev_accuracy"] <= 1.0
        assert r["dev_accuracy_onnx_raw_strings"] == pytest.approx(r["dev_accuracy"], abs=1 / 16)


def test_a_baseline_in_its_own_process_answers_setup_and_epochs():
    """IsolatedRunner drives ``bench/train.py --worker`` over pipes: PyTorch trains there when it
    is installed; otherwise the worker still answers, with the reason it skips."""
    import argparse

    import numpy as np

    bench = _load("train")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(64, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=64)
    model = bench.load_kdsl("mlp", "cpu")
    init = [np.array(w) for w in model.get_weights()]
    args = argparse.Namespace(batch_size=32, seed=0, provider="cpu", torch_loss="keras", epochs=1, samples=64)
    r = bench.IsolatedRunner(bench.TorchRunner, "mlp", init, x, y, args)
    try:
        r.setup()
        if r.available:
            r.epoch()
            assert len(r.walls) == 1 and r.walls[0] > 0 and np.isfinite(r.loss)
            assert "own process" in r.note and r.extra["threads"] >= 1
        else:
            assert r.note.startswith("skipped:") and "torch" in r.note
    finally:
        r.close()
