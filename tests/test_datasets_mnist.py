"""kdsl.datasets.mnist: the bundled MNIST test set, split 8,000 / 2,000, and its files' integrity."""
import hashlib
import os
import re

import numpy as np
import pytest

import kdsl.datasets
from kdsl.datasets import mnist
from kdsl.errors import KdslError

DATA = os.path.join(os.path.dirname(mnist.__file__), "data", "mnist")
ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.fixture(scope="module")
def splits():
    return mnist.load_data()


def test_shapes_and_dtypes(splits):
    (x_train, y_train), (x_test, y_test) = splits
    assert x_train.shape == (8000, 28, 28) and y_train.shape == (8000,)
    assert x_test.shape == (2000, 28, 28) and y_test.shape == (2000,)
    for a in (x_train, y_train, x_test, y_test):
        assert a.dtype == np.uint8
    assert x_train.min() == 0 and x_train.max() == 255


def test_labels(splits):
    (_, y_train), (_, y_test) = splits
    assert y_train[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert y_test[:10].tolist() == [4, 9, 9, 7, 1, 1, 9, 0, 7, 8]
    train_counts = np.bincount(y_train, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    assert train_counts.sum() == 8000 and test_counts.sum() == 2000
    # the published distribution of the 10,000 MNIST test labels
    assert (train_counts + test_counts).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_pixels_match_the_published_mean(splits):
    (x_train, _), (x_test, _) = splits
    assert np.concatenate([x_train, x_test]).mean() == pytest.approx(33.791224489795916)


def test_bundled_files_checksums():
    assert sorted(f for f in os.listdir(DATA) if f.endswith(".gz")) == sorted(mnist.FILES)
    assert mnist.FILES == {
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }
    readme = open(os.path.join(DATA, "README.md"), encoding="utf-8").read()
    for name, sha in mnist.FILES.items():
        with open(os.path.join(DATA, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha
        assert sha in readme
    for words in ("CC BY-SA 3.0", "LeCun", "not bundled", "first 8,000"):
        assert words in readme


def test_data_ships_in_the_wheel():
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    entry = re.search(r'^"kdsl.datasets" = \[(.*)\]$', text, re.M)
    assert entry and '"data/mnist/*.gz"' in entry.group(1) and '"data/mnist/README.md"' in entry.group(1)


def test_keras_npz_path(tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=np.zeros((3, 28, 28), np.uint8), y_train=np.arange(3, dtype=np.uint8),
             x_test=np.ones((1, 28, 28), np.uint8), y_test=np.array([7], np.uint8))
    (x_train, y_train), (x_test, y_test) = mnist.load_data(path=str(path))
    assert x_train.shape == (3, 28, 28) and y_test.tolist() == [7]
    np.savez(path, x_train=np.zeros(1))
    with pytest.raises(KdslError, match=r"is not a Keras mnist.npz: it has no \['y_train', 'x_test', 'y_test'\]"):
        mnist.load_data(path=str(path))


def test_package_exports():
    assert kdsl.datasets.mnist is mnist and kdsl.datasets.__all__ == ["mnist", "sentiment"]
