"""MNIST handwritten digits, as ``keras.datasets.mnist`` -- from the bundled 10,000 test images.

The official 60,000 training images are **not** bundled with kdsl, so :func:`load_data`
splits the MNIST *test* set: its first 8,000 images are returned as "train" and its last
2,000 as "test". See ``kdsl/datasets/data/mnist/README.md`` for the source, the citation
(LeCun et al., 1998), the license (CC BY-SA 3.0) and checksums.
"""
from __future__ import annotations

import os
from importlib import resources

import numpy as np

from ..errors import KdslError
from ..runtime.data import _Npz, read_idx

__all__ = ["load_data", "TRAIN_SIZE", "FILES"]

TRAIN_SIZE = 8000
"""How many of the 10,000 bundled images :func:`load_data` returns as the training split."""

FILES = {
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
"""The bundled files and their SHA-256 checksums."""


def _read_bundled(name: str) -> np.ndarray:
    ref = resources.files(__package__).joinpath("data", "mnist", name)
    with resources.as_file(ref) as path:
        if not os.path.isfile(path):
            raise KdslError(f"The bundled MNIST file {name} is missing from this kdsl installation.")
        return read_idx(str(path))


def load_data(path: str | os.PathLike | None = None
              ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load the MNIST digits: ``(x_train, y_train), (x_test, y_test)``.

    With no ``path``, reads the bundled MNIST **test** set (10,000 images) and returns its
    first 8,000 images as the training split and its last 2,000 as the test split; the
    official 60,000 training images are not bundled.

    Args:
        path: optionally, a Keras ``mnist.npz`` (arrays ``x_train``, ``y_train``, ``x_test``,
            ``y_test``) to read instead, e.g. a copy of the full data set.

    Returns:
        ``x_*``: uint8 arrays of shape ``(N, 28, 28)`` with values 0-255 (not rescaled);
        ``y_*``: uint8 arrays of shape ``(N,)`` with digit labels 0-9.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = kdsl.datasets.mnist.load_data()
    >>> x_train.shape, x_test.shape
    ((8000, 28, 28), (2000, 28, 28))
    """
    if path is not None:
        npz = _Npz(os.fspath(path))
        try:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz.names]
            if missing:
                raise KdslError(f"{os.fspath(path)} is not a Keras mnist.npz: it has no {missing}. "
                                f"Received arrays: {npz.names}.")
            return (npz["x_train"], npz["y_train"]), (npz["x_test"], npz["y_test"])
        finally:
            npz.close()
    x = _read_bundled("t10k-images-idx3-ubyte.gz")
    y = _read_bundled("t10k-labels-idx1-ubyte.gz")
    if x.shape != (10000, 28, 28) or y.shape != (10000,) or x.dtype != np.uint8 or y.dtype != np.uint8:
        raise KdslError(f"The bundled MNIST files are damaged: images {x.dtype}{x.shape}, "
                        f"labels {y.dtype}{y.shape}.")
    n = TRAIN_SIZE
    return (x[:n].copy(), y[:n].copy()), (x[n:].copy(), y[n:].copy())
