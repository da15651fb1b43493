"""kdsl.datasets.sentiment: the bundled UCI Sentiment Labelled Sentences, its fixed split, its files."""
import csv
import hashlib
import io
import os
import re

import numpy as np
import pytest

from kdsl.datasets import sentiment
from kdsl.errors import KdslError

DATA = os.path.join(os.path.dirname(sentiment.__file__), "data", "sentiment")
ROOT = os.path.join(os.path.dirname(__file__), "..")
TEST_SHA256 = "3cd3088a6e6e52af134c82687ecda00c164eef75311775c0b9c7fd8808406c44"


@pytest.fixture(scope="module")
def splits():
    return sentiment.load_data()


def test_shapes_dtypes_and_balance(splits):
    (x_train, y_train), (x_test, y_test) = splits
    assert x_train.shape == (2400,) and y_train.shape == (2400,)
    assert x_test.shape == (600,) and y_test.shape == (600,)
    assert x_train.dtype == object and all(isinstance(s, str) for s in x_train)
    assert y_train.dtype == np.int64 and set(np.unique(y_train)) == {0, 1}
    assert y_train.sum() == 1200 and y_test.sum() == 300
    for i in range(3):   # sites in order, 100 positive and 100 negative each in the test split
        assert y_test[200 * i:200 * (i + 1)].sum() == 100
        assert y_train[800 * i:800 * (i + 1)].sum() == 400


def test_the_default_split_is_fixed(splits):
    (x_train, _), (x_test, y_test) = splits
    assert x_test[:3].tolist() == ["Needless to say, I wasted my money.", "Very good quality though",
                                   'The design is very odd, as the ear "clip" is not very comfortable at all.']
    assert y_test[:3].tolist() == [0, 1, 0]
    assert hashlib.sha256("\n".join(x_test).encode()).hexdigest() == TEST_SHA256
    assert TEST_SHA256 in open(os.path.join(DATA, "README.md"), encoding="utf-8").read()


def test_split_is_a_partition_and_depends_only_on_site_and_seed(splits):
    (x_train, y_train), (x_test, y_test) = splits
    for i, site in enumerate(sentiment.SOURCES):
        x, y = sentiment.load_source(site)
        (a, b), (c, d) = sentiment.load_data(sources=(site,))
        assert sorted(a.tolist() + c.tolist()) == sorted(x.tolist())
        assert c.tolist() == x_test[200 * i:200 * (i + 1)].tolist()      # same held-out rows alone
        assert a.tolist() == x_train[800 * i:800 * (i + 1)].tolist()
    (_, _), (c1, _) = sentiment.load_data(sources=("yelp", "amazon"))
    assert c1[:200].tolist() == x_test[400:].tolist() and c1[200:].tolist() == x_test[:200].tolist()
    (_, _), (c2, _) = sentiment.load_data(seed=1)
    assert c2.tolist() != x_test.tolist() and len(c2) == 600
    assert sentiment.load_data(seed=1)[1][0].tolist() == c2.tolist()     # reproducible
    (a3, _), (c3, d3) = sentiment.load_data(test_fraction=0.1)
    assert len(c3) == 300 and d3.sum() == 150 and len(a3) == 2700
    assert set(c3.tolist()) <= set(x_test.tolist())      # a smaller fraction keeps a subset of the held-out rows
    (a4, _), (c4, _) = sentiment.load_data(sources="imdb", test_fraction=0.0)
    assert len(a4) == 1000 and len(c4) == 0


def test_lines_are_split_at_the_last_tab_not_by_a_csv_reader():
    x, y = sentiment.load_source("imdb")
    assert len(x) == 1000 and y.sum() == 500
    raw = open(os.path.join(DATA, "imdb_labelled.txt"), encoding="utf-8", newline="").read()
    # the pitfall the README warns about: a quote-aware reader merges lines
    assert len(list(csv.reader(io.StringIO(raw), delimiter="\t"))) == 748
    assert len(raw.splitlines()) > 1000                                 # U+0085 counts as a line break there
    assert sum("\x85" in s for s in x) >= 1 and sum('"' in s for s in x) >= 40
    assert x[0].startswith("A very, very, very slow-moving, aimless movie")
    texts, labels = sentiment.parse_lines(b"a\tb\t1\nc \t0\r\n\n")
    assert texts == ["a\tb", "c "] and labels == [1, 0]
    with pytest.raises(KdslError, match=r"x.txt:2: expected '<sentence> TAB <0 or 1>'"):
        sentiment.parse_lines(b"ok\t1\nno tab here\n", "x.txt")


def test_non_ascii_text_is_kept():
    x_imdb, _ = sentiment.load_source("imdb")
    x_yelp, _ = sentiment.load_source("yelp")
    assert sum(any(ord(c) > 127 for c in s) for s in x_imdb) >= 10
    assert any("é" in s for s in x_yelp)


@pytest.mark.parametrize("kwargs, match", [
    ({"sources": ("amazon", "ebay")}, "Unknown sentiment source"),
    ({"sources": ()}, "at least one"),
    ({"sources": ("imdb", "imdb")}, "names a site twice"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"test_fraction": -0.1}, "test_fraction"),
    ({"seed": "0"}, "seed"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(KdslError, match=match):
        sentiment.load_data(**kwargs)


def test_bundled_files_checksums_and_readme():
    names = sorted(f for f in os.listdir(DATA) if f.endswith(".txt"))
    assert names == sorted(sentiment.FILES)
    readme = open(os.path.join(DATA, "README.md"), encoding="utf-8").read()
    for name, sha in sentiment.FILES.items():
        with open(os.path.join(DATA, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha
        assert sha in readme
    for words in ("Kotzias", "KDD 2015", "CC BY 4.0", "no license", "748", "QUOTE_NONE", "last TAB",
                  "U+0085", "archive.ics.uci.edu/dataset/331"):
        assert words in readme, words


def test_data_ships_in_the_wheel():
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    entry = re.search(r'^"kdsl.datasets" = \[(.*)\]$', text, re.M)
    assert entry and '"data/sentiment/*.txt"' in entry.group(1) and '"data/sentiment/README.md"' in entry.group(1)
