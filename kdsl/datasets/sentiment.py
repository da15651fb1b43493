"""UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD 2015): 3 x 1,000 review sentences.

1,000 sentences from each of Amazon (cell phones), IMDb (movies) and Yelp (restaurants),
each labelled 1 (positive) or 0 (negative), 500 of each per site. The three files are
bundled unmodified; see ``kdsl/datasets/data/sentiment/README.md`` for the source, the
citation, the license note (CC BY 4.0 as listed by UCI) and checksums.

Each line is ``<sentence>\\t<label>\\n``. The files are read as bytes, split at ``\\n`` and each
line at its **last** TAB: a quote-aware CSV reader loses rows (``imdb_labelled.txt`` has
unbalanced double quotes: Python's ``csv`` or pandas' defaults give 748 rows instead of
1,000), and ``str.splitlines()`` would also break lines at the U+0085 characters in IMDb.

The held-out split is fixed: within each (site, label) group of 500 sentences, the
sentences are ordered by ``sha256(f"{seed}:{site}:{line}")`` (``line`` the 0-based line
number in the file) and the first ``round(500 * test_fraction)`` form the test set. So
with the defaults (``test_fraction=0.2, seed=0``) the test set is 600 sentences (100
positive and 100 negative per site) and never depends on the NumPy version, on the order
of ``sources`` or on which other sites are loaded.
"""
from __future__ import annotations

import hashlib
import os
from importlib import resources
from typing import Sequence

import numpy as np

from ..errors import KdslError

__all__ = ["load_data", "load_source", "SOURCES", "FILES", "DEFAULT_SEED"]

SOURCES = {"amazon": "amazon_cells_labelled.txt", "imdb": "imdb_labelled.txt", "yelp": "yelp_labelled.txt"}
"""The three sites and their bundled files."""

FILES = {
    "amazon_cells_labelled.txt": "47003fc0a0d4840b00e96e715b6189bad09e7443a3da41c4cbe12ffc79f86ae3",
    "imdb_labelled.txt": "aef2e49e3da25714d61175e3a6e68eeef74a20a2f914318dc3be9947ea86512d",
    "yelp_labelled.txt": "c76468b7b5c6e56a0804d728345c5f84aa2142ddb214420f61cc9cfd4c00d2ea",
    "readme.txt": "736c26aa54e3614459e50314ece0698051f0923d108ed53938dcb1aa0483bfd4",
}
"""The bundled files and their SHA-256 checksums (unmodified copies of the UCI files)."""

DEFAULT_SEED = 0
"""The seed of the documented, fixed held-out split."""


def _read_bundled(name: str) -> bytes:
    ref = resources.files(__package__).joinpath("data", "sentiment", name)
    with resources.as_file(ref) as path:
        if not os.path.isfile(path):
            raise KdslError(f"The bundled sentiment file {name} is missing from this kdsl installation.")
        with open(path, "rb") as f:
            return f.read()


def parse_lines(data: bytes, name: str = "<data>") -> tuple[list[str], list[int]]:
    """``<sentence>\\t<0|1>`` lines -> (sentences, labels), splitting each line at its last TAB."""
    texts, labels = [], []
    for i, raw in enumerate(data.split(b"\n"), 1):
        line = raw.decode("utf-8").removesuffix("\r")
        if not line:
            continue
        text, tab, label = line.rpartition("\t")
        if not tab or label.strip() not in ("0", "1"):
            raise KdslError(f"{name}:{i}: expected '<sentence> TAB <0 or 1>'. Received: {line!r:.80}")
        texts.append(text)
        labels.append(int(label.strip()))
    return texts, labels


def load_source(source: str) -> tuple[np.ndarray, np.ndarray]:
    """All 1,000 sentences of one site, in file order: ``(texts, labels)``."""
    if source not in SOURCES:
        raise KdslError(f"Unknown sentiment source. Received: {source!r}; expected one of {list(SOURCES)}.")
    name = SOURCES[source]
    texts, labels = parse_lines(_read_bundled(name), name)
    if len(texts) != 1000 or labels.count(1) != 500:
        raise KdslError(f"The bundled file {name} is damaged: {len(texts)} rows, {labels.count(1)} positive "
                        "(expected 1,000 rows, 500 positive).")
    return np.array(texts, dtype=object), np.array(labels, dtype=np.int64)


def _test_rows(source: str, labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of the held-out rows of one site (see the module docstring)."""
    test = np.zeros(len(labels), dtype=bool)
    for label in (0, 1):
        rows = np.flatnonzero(labels == label)
        key = [hashlib.sha256(f"{seed}:{source}:{int(r)}".encode()).hexdigest() for r in rows]
        order = rows[np.argsort(np.array(key), kind="stable")]
        test[order[:int(round(len(rows) * test_fraction))]] = True
    return test


def load_data(sources: Sequence[str] = ("amazon", "imdb", "yelp"), test_fraction: float = 0.2,
              seed: int = DEFAULT_SEED) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load the labelled sentences: ``(x_train, y_train), (x_test, y_test)``.

    Args:
        sources: which sites, any of ``"amazon"``, ``"imdb"``, ``"yelp"`` (or one name).
        test_fraction: the share of each (site, label) group held out, in [0, 1).
        seed: selects the held-out sentences; the default gives the documented split
            (600 test sentences for all three sites).

    Returns:
        ``x_*``: arrays of Python strings (dtype object), each the raw text before the line's
        last TAB (trailing spaces included), site by site in ``sources`` order and file order
        within a site; ``y_*``: int64 arrays of labels, 1 = positive, 0 = negative.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = kdsl.datasets.sentiment.load_data()
    >>> len(x_train), len(x_test)
    (2400, 600)
    """
    if isinstance(sources, str):
        sources = (sources,)
    sources = list(sources)
    if not sources:
        raise KdslError("`sources` must name at least one of ['amazon', 'imdb', 'yelp']. Received: [].")
    if len(set(sources)) != len(sources):
        raise KdslError(f"`sources` names a site twice. Received: {sources}.")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
        raise KdslError(f"`test_fraction` must be a number in [0, 1). Received: test_fraction={test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise KdslError(f"`seed` must be an int. Received: seed={seed!r}")
    xs_train, ys_train, xs_test, ys_test = [], [], [], []
    for source in sources:
        x, y = load_source(source)
        test = _test_rows(source, y, float(test_fraction), seed)
        xs_train.append(x[~test])
        ys_train.append(y[~test])
        xs_test.append(x[test])
        ys_test.append(y[test])
    return ((np.concatenate(xs_train), np.concatenate(ys_train)),
            (np.concatenate(xs_test), np.concatenate(ys_test)))
