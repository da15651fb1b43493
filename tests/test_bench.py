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
