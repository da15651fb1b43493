"""Checkpoints: save -> load -> continue equals uninterrupted training; atomic writes; no pickles."""
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import kdsl

SRC = """
model reg {
    input x: float32[6]
    output y = x -> Dense(16, activation=relu) -> Dropout(0.25) -> BatchNormalization() -> Dense(2)
}
train reg {
    loss = mse
    optimizer = Adam(learning_rate=1e-2)
    batch_size = 32
}
"""
RNG = np.random.default_rng(3)
X = RNG.normal(size=(160, 6)).astype("float32")
Y = (X @ RNG.normal(size=(6, 2))).astype("float32")


def test_save_load_continue_equals_uninterrupted(tmp_path):
    a = kdsl.loads(SRC)
    full = a.fit(X, Y, epochs=4, verbose=0).history["loss"]

    b = kdsl.loads(SRC)
    first = b.fit(X, Y, epochs=2, verbose=0).history["loss"]
    path = str(tmp_path / "run" / "ckpt")
    b.save(path)
    c = kdsl.load_model(path)
    rest = c.fit(X, Y, epochs=2, verbose=0).history["loss"]
    np.testing.assert_allclose(first + rest, full, rtol=1e-6)
    for wa, wc in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_allclose(wa, wc, rtol=1e-5, atol=1e-6)
    assert c.optimizer.iterations == a.optimizer.iterations == 20


def test_checkpoint_holds_no_pickles_and_refuses_them(tmp_path):
    m = kdsl.loads(SRC)
    m.fit(X, Y, epochs=1, verbose=0)
    path = str(tmp_path / "c.ckpt")
    m.save(path)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["meta.json", "slots.npz", "weights.npz"]
        with np.load(io.BytesIO(z.read("weights.npz")), allow_pickle=False) as w:
            assert "dense/kernel" in w.files
    # a checkpoint whose weights need unpickling is refused, not loaded
    evil = str(tmp_path / "evil.ckpt")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(evil, "w") as dst:
        dst.writestr("meta.json", src.read("meta.json"))
        buf = io.BytesIO()
        np.savez(buf, **{"dense/kernel": np.array([{"a": 1}], dtype=object)})
        dst.writestr("weights.npz", buf.getvalue())
    with pytest.raises(kdsl.KdslError, match="unpickling"):
        kdsl.load_model(evil)
    (tmp_path / "junk").write_bytes(b"not a zip")
    with pytest.raises(kdsl.KdslError, match="is not a kdsl checkpoint"):
        kdsl.load_model(str(tmp_path / "junk"))


@pytest.mark.slow
def test_checkpoint_is_never_half_written_when_the_process_is_killed(tmp_path):
    path = tmp_path / "ckpt"
    script = textwrap.dedent(f"""
        import numpy as np, kdsl
        m = kdsl.loads({SRC!r})
        X = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
        m.fit(X, X[:, :2], epochs=1, verbose=0)
        m.save({str(path)!r})
        print("ready", flush=True)
        i = 0
        while True:
            m.get_layer("dense").set_weights([np.full((6, 16), float(i), "float32"), np.zeros(16, "float32")])
            m.save({str(path)!r})
            i += 1
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        m = kdsl.load_model(str(path))           # whole and loadable, whichever version it is
        k = m.get_layer("dense").get_weights()[0]
        assert k.shape == (6, 16)
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    assert all(p.startswith(".tmp-ckpt") for p in leftovers)   # only temporary files, never the target
