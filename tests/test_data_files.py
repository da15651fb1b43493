"""Reading data files for a model: npz/npy, IDX (MNIST), CSV/TSV; shapes, casts, corrupt files, no pickles."""
import gzip
import pickle
import struct

import numpy as np
import pytest

from kdsl.errors import KdslError
from kdsl.ir import TensorType
from kdsl.runtime.data import load_data, parse_rows, read_idx

IMG = [("image", TensorType("float32", ("batch", 4, 4, 1)))]
SOFTMAX = [("digit", TensorType("float32", ("batch", 10)))]
UNPICKLED = []


class Trap:
    """Unpickling this records it: the tests assert that never happens."""

    def __reduce__(self):
        return (UNPICKLED.append, ("unpickled",))


def write_idx(path, arr, code=0x08, gz=False, extra=b""):
    arr = np.asarray(arr)
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data += arr.astype(dtype).tobytes() + extra
    (gzip.open if gz else open)(path, "wb").write(data)
    return str(path)


def mnist_like(tmp_path, n=5, gz=True):
    images = np.arange(n * 16, dtype=np.uint8).reshape(n, 4, 4)
    labels = np.arange(n, dtype=np.uint8) % 10
    suffix = ".gz" if gz else ""
    return (write_idx(tmp_path / f"images-idx3-ubyte{suffix}", images, gz=gz),
            write_idx(tmp_path / f"labels-idx1-ubyte{suffix}", labels, gz=gz), images, labels)


# -- parse_rows ---------------------------------------------------------------------------------

def test_parse_rows():
    assert parse_rows("0:8000") == slice(0, 8000)
    assert parse_rows("8000:") == slice(8000, None)
    assert parse_rows(" -2000 : ") == slice(-2000, None)
    assert parse_rows(":100:2") == slice(None, 100, 2)
    for bad in ("", "5", "a:b", "1:2:3:4", "1.5:2"):
        with pytest.raises(KdslError, match="Expected a row range like '0:8000'"):
            parse_rows(bad)
    with pytest.raises(KdslError, match="step of a row range cannot be 0"):
        parse_rows("::0")


# -- IDX ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_images_and_labels_fill_input_then_output(tmp_path, gz):
    images_path, labels_path, images, labels = mnist_like(tmp_path, gz=gz)
    x, y = load_data([images_path, labels_path], IMG, SOFTMAX)
    assert list(x) == ["image"] and list(y) == ["digit"]
    assert x["image"].shape == (5, 4, 4, 1) and x["image"].dtype == np.float32
    np.testing.assert_array_equal(x["image"][..., 0], images.astype(np.float32))    # not rescaled
    # labels do not match the softmax output's shape: kept as int64 class indices
    assert y["digit"].dtype == np.int64 and y["digit"].tolist() == labels.tolist()


def test_read_idx_types(tmp_path):
    ints = np.array([[-300, 2], [3, 32000]], dtype=np.int16)
    assert read_idx(write_idx(tmp_path / "a.idx", ints, code=0x0B)).tolist() == ints.tolist()
    floats = np.array([1.5, -2.25, 1e30], dtype=np.float32)
    got = read_idx(write_idx(tmp_path / "b.idx", floats, code=0x0D))
    assert got.dtype == np.float32 and got.dtype.isnative and got.tolist() == floats.tolist()
    images = read_idx(write_idx(tmp_path / "c-ubyte", np.zeros((2, 3), np.uint8)))
    assert images.dtype == np.uint8 and images.shape == (2, 3) and images.flags.writeable


def test_idx_truncated(tmp_path):
    path = tmp_path / "t-idx3-ubyte"
    write_idx(path, np.zeros((3, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(KdslError, match=r"t-idx3-ubyte is truncated: its IDX header declares a 3 x 4 x 4 uint8 "
                                        r"array \(48 bytes of data\) but only 43 bytes follow the header"):
        read_idx(str(path))
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 3]))
    with pytest.raises(KdslError, match="promises 3 dimensions but the file ends after 1"):
        read_idx(str(path))


def test_idx_bad_magic_extra_bytes_and_huge_header(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(KdslError, match=r"x.idx is not an IDX file: magic number 0x504b0304"):
        read_idx(str(path))
    path.write_bytes(b"\0\0")
    with pytest.raises(KdslError, match="only 2 bytes long"):
        read_idx(str(path))
    write_idx(path, np.zeros(3, np.uint8), extra=b"\x01")
    with pytest.raises(KdslError, match="bytes after the 3 array its header declares"):
        read_idx(str(path))
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 100000, 100000, 100000))
    with pytest.raises(KdslError, match="the limit is"):
        read_idx(str(path))


def test_idx_corrupt_gzip(tmp_path):
    path = tmp_path / "images-idx3-ubyte.gz"
    write_idx(path, np.arange(2000, dtype=np.uint8).reshape(20, 10, 10), gz=True)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(KdslError, match="corrupt or truncated gzip data"):
        read_idx(str(path))
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(KdslError, match="corrupt or truncated gzip data"):
        read_idx(str(path))


def test_wrong_shape_is_refused_with_file_array_and_expected_type(tmp_path):
    path = write_idx(tmp_path / "big-idx3-ubyte", np.zeros((3, 5, 5), np.uint8))
    with pytest.raises(KdslError) as e:
        load_data([path], IMG, [])
    msg = e.value.message
    assert path in msg and "input 'image'" in msg
    assert "its shape is (3, 5, 5) (25 values per sample)" in msg
    assert "float32 (None, 4, 4, 1) (16 values per sample)" in msg


# -- npz / npy ----------------------------------------------------------------------------------

def test_npz_named_after_inputs_and_outputs(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, a=np.ones((4, 3)), b=np.arange(4), label=np.array([0, 1, 1, 0]), unused=np.zeros(1))
    inputs = [("a", TensorType("float32", ("batch", 3))), ("b", TensorType("int64", ("batch",)))]
    outputs = [("label", TensorType("float32", ("batch", 1)))]
    x, y = load_data([str(path)], inputs, outputs)
    assert x["a"].dtype == np.float32 and x["b"].dtype == np.int64 and x["b"].tolist() == [0, 1, 2, 3]
    # binary labels match the [N, 1] output: reshaped and cast to float32
    assert y["label"].shape == (4, 1) and y["label"].dtype == np.float32


def test_npz_x_y_for_single_input_single_output(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.zeros((6, 16), np.uint8), y=np.eye(10)[:6])
    x, y = load_data([str(path)], IMG, SOFTMAX)
    assert x["image"].shape == (6, 4, 4, 1) and y["digit"].shape == (6, 10) and y["digit"].dtype == np.float32


def test_npz_object_array_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([Trap(), Trap()], dtype=object), y=np.arange(2))
    with pytest.raises(KdslError, match=r"array 'x' in .*evil.npz has dtype object .*never unpickles"):
        load_data([str(path)], IMG, SOFTMAX)
    np.save(tmp_path / "evil.npy", np.array([Trap()], dtype=object), allow_pickle=True)
    with pytest.raises(KdslError, match="evil.npy has dtype object"):
        load_data([str(tmp_path / "evil.npy")], IMG, [])
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps(Trap()))
    with pytest.raises(KdslError, match="is a pickle, not an .npz archive; kdsl never unpickles"):
        load_data([str(tmp_path / "pickle.npz")], IMG, [])
    assert UNPICKLED == []


def test_npz_no_matching_names_and_single_array(tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=np.zeros((2, 16)), y_train=np.zeros(2))
    with pytest.raises(KdslError, match=r"No array in .*mnist.npz is named after the model's inputs or outputs "
                                        r"\['image', 'digit'\]. Received arrays: \['x_train', 'y_train'\]"):
        load_data([str(path)], IMG, SOFTMAX)
    np.savez(tmp_path / "images.npz", np.zeros((2, 16)))         # saved as 'arr_0': fills the next slot
    np.save(tmp_path / "labels.npy", np.array([3, 4]))
    x, y = load_data([str(tmp_path / "images.npz"), str(tmp_path / "labels.npy")], IMG, SOFTMAX)
    assert x["image"].shape == (2, 4, 4, 1) and y["digit"].tolist() == [3, 4]


def test_corrupt_npz_and_npy(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((50, 16)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(KdslError, match="Cannot read .*bad.npz"):
        load_data([str(bad)], IMG, [])
    npy = tmp_path / "t.npy"
    np.save(npy, np.zeros((50, 16)))
    npy.write_bytes(npy.read_bytes()[:-8])
    with pytest.raises(KdslError, match=r"t.npy is truncated: its header declares a \(50, 16\) float64 array"):
        load_data([str(npy)], IMG, [])
    npy.write_bytes(b"not numpy at all")
    with pytest.raises(KdslError, match="t.npy is not a valid .npy array"):
        load_data([str(npy)], IMG, [])
    with pytest.raises(KdslError, match="No such data file"):
        load_data([str(tmp_path / "missing.npz")], IMG, [])


# -- CSV / TSV ----------------------------------------------------------------------------------

def test_csv_targets_and_features(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text("sepal,petal,species\n1.5,2,0\n3,4.25,2\n\n5,6,1\n")
    inputs = [("features", TensorType("float32", ("batch", 2)))]
    outputs = [("species", TensorType("float32", ("batch", 3)))]
    x, y = load_data([str(path)], inputs, outputs)
    assert x["features"].tolist() == [[1.5, 2.0], [3.0, 4.25], [5.0, 6.0]] and x["features"].dtype == np.float32
    assert y["species"].tolist() == [0, 2, 1] and y["species"].dtype == np.int64


def test_tsv_and_y_column_and_gzip(tmp_path):
    path = tmp_path / "d.tsv.gz"
    with gzip.open(path, "wt") as f:
        f.write("a\tb\ty\n1\t2\t0.5\n3\t4\t1.5\n")
    x, y = load_data([str(path)], [("in", TensorType("float32", ("batch", 2)))],
                     [("out", TensorType("float32", ("batch", 1)))])
    assert x["in"].tolist() == [[1, 2], [3, 4]] and y["out"].tolist() == [[0.5], [1.5]]


def test_csv_parse_errors_name_file_line_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('a,b,label\n1,2,0\n3,"4",1\n')     # quotes are not special (QUOTE_NONE)
    with pytest.raises(KdslError) as e:
        load_data([str(path)], [("in", TensorType("float32", ("batch", 2)))], [])
    assert e.value.message == "Cannot parse '\"4\"' as a number in column 2 ('b')."
    assert (e.value.span.file, e.value.span.line, e.value.span.column) == (str(path), 3, 3)
    assert str(e.value).startswith(f"{path}:3:3: error:")
    path.write_text("a,b\n1,\n")
    with pytest.raises(KdslError, match=r"Cannot parse an empty value as a number in column 2 \('b'\)"):
        load_data([str(path)], [("in", TensorType("float32", ("batch", 2)))], [])
    path.write_text("a,b\n1,2\n1,2,3\n")
    with pytest.raises(KdslError, match="Expected 2 fields, as in the header. Received: 3.") as e:
        load_data([str(path)], [("in", TensorType("float32", ("batch", 2)))], [])
    assert e.value.span.line == 3
    path.write_text("a,a\n1,2\n")
    with pytest.raises(KdslError, match="must name every column once"):
        load_data([str(path)], [("in", TensorType("float32", ("batch", 2)))], [])
    path.write_text("")
    with pytest.raises(KdslError, match="is empty; expected a header row"):
        load_data([str(path)], [("in", TensorType("float32", ("batch", 2)))], [])
    path.write_bytes(b"a,b\n1,\xff\n")
    with pytest.raises(KdslError, match="is not UTF-8 text"):
        load_data([str(path)], [("in", TensorType("float32", ("batch", 2)))], [])


def test_csv_needs_a_single_input(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n")
    two = [("p", TensorType("float32", ("batch", 1))), ("q", TensorType("float32", ("batch", 1)))]
    with pytest.raises(KdslError, match="can only fill a model with one input. This model has 2"):
        load_data([str(path)], two, [])


# -- matching data to the model -----------------------------------------------------------------

def test_rows_select_samples(tmp_path):
    images_path, labels_path, images, labels = mnist_like(tmp_path, n=10)
    x, y = load_data([images_path, labels_path], IMG, SOFTMAX, rows=parse_rows("2:5"))
    assert x["image"].shape == (3, 4, 4, 1) and y["digit"].tolist() == [2, 3, 4]
    x, y = load_data([images_path, labels_path], IMG, SOFTMAX, rows=parse_rows("-2:"))
    assert y["digit"].tolist() == [8, 9]
    with pytest.raises(KdslError, match=r"rows=20:30 selects no samples of .*images-idx3-ubyte.gz \(10 samples\)"):
        load_data([images_path, labels_path], IMG, SOFTMAX, rows=parse_rows("20:30"))


def test_missing_extra_and_mismatched_data(tmp_path):
    images_path, labels_path, _, _ = mnist_like(tmp_path, n=5)
    x, y = load_data([images_path], IMG, SOFTMAX)          # outputs without data are left out
    assert list(x) == ["image"] and y == {}
    np.savez(tmp_path / "labels_only.npz", y=np.zeros(5))
    with pytest.raises(KdslError, match=r"give no data for input 'image'"):
        load_data([str(tmp_path / "labels_only.npz")], IMG, SOFTMAX)
    with pytest.raises(KdslError, match=r"More data than the model takes: .*labels-idx1-ubyte.gz is left over"):
        load_data([images_path, labels_path, labels_path], IMG, SOFTMAX)
    short = write_idx(tmp_path / "short-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(KdslError, match=r"same number of samples. Received: 5 in .*, 4 in .*short-idx1-ubyte"):
        load_data([images_path, short], IMG, SOFTMAX)
    with pytest.raises(KdslError, match="Unknown data file type: data.parquet"):
        load_data(["data.parquet"], IMG, SOFTMAX)
    np.savez(tmp_path / "both.npz", x=np.zeros((5, 16)))
    with pytest.raises(KdslError, match="Two data sources fill 'image'"):
        load_data([images_path, str(tmp_path / "both.npz")], IMG, [])


def test_casts_are_checked(tmp_path):
    tokens = [("tokens", TensorType("int32", ("batch", "seq")))]
    np.save(tmp_path / "ok.npy", np.array([[1.0, 2.0, 3.0]] * 2))
    x, _ = load_data([str(tmp_path / "ok.npy")], tokens, [])
    assert x["tokens"].dtype == np.int32 and x["tokens"].shape == (2, 3)
    np.save(tmp_path / "frac.npy", np.array([[1.5, 2.0]]))
    with pytest.raises(KdslError, match=r"for input 'tokens' \(int32\): it has non-integer values"):
        load_data([str(tmp_path / "frac.npy")], tokens, [])
    np.save(tmp_path / "big.npy", np.array([[2 ** 40]]))
    with pytest.raises(KdslError, match=r"do not fit"):
        load_data([str(tmp_path / "big.npy")], tokens, [])
    mask = [("mask", TensorType("bool", ("batch", 2)))]
    np.save(tmp_path / "m.npy", np.array([[0, 1], [1, 1]]))
    assert load_data([str(tmp_path / "m.npy")], mask, [])[0]["mask"].dtype == np.bool_
    np.save(tmp_path / "m2.npy", np.array([[0, 2]]))
    with pytest.raises(KdslError, match="values other than 0 and 1"):
        load_data([str(tmp_path / "m2.npy")], mask, [])
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    with pytest.raises(KdslError, match=r"it has dtype <U1, not numbers. The input 'mask' expects bool \(None, 2\)"):
        load_data([str(tmp_path / "s.npy")], mask, [])
    np.save(tmp_path / "rank.npy", np.zeros((2, 3, 4)))
    with pytest.raises(KdslError, match=r"its shape is \(2, 3, 4\)"):
        load_data([str(tmp_path / "rank.npy")], tokens, [])


def test_symbolic_dims_and_trailing_channel(tmp_path):
    seq = [("seq", TensorType("float32", ("batch", "t", 1)))]
    np.save(tmp_path / "s.npy", np.zeros((3, 7)))
    assert load_data([str(tmp_path / "s.npy")], seq, [])[0]["seq"].shape == (3, 7, 1)


def test_float_targets_that_do_not_fit_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 16)))
    np.save(tmp_path / "y.npy", np.array([0.5, 0.25]))
    with pytest.raises(KdslError, match=r"for output 'digit': its shape is \(2,\) \(1 values per sample\)"):
        load_data([str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], IMG, SOFTMAX)
