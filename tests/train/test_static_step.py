"""The training step for fixed batch shapes (kdsl.runtime.trainer.StaticStep): what it computes
equals the step for any batch size, state kept across set_weights / EMA / batch sizes; and the
options that capture it as a CUDA graph."""
import numpy as np
import pytest

import kdsl
from kdsl import layers as L
from kdsl.errors import KdslError

RNG = np.random.default_rng(4)
X = RNG.normal(size=(150, 6)).astype("float32")
Y = (X @ RNG.normal(size=(6, 2))).astype("float32")


def model(**compile_kw):
    x = kdsl.Input((6,), name="x")
    h = L.Dropout(0.25)(L.BatchNormalization()(L.Dense(16, activation="relu")(x)))
    m = kdsl.Model(x, {"y": L.Dense(2)(h)}, seed=3)
    m.compile(optimizer=compile_kw.pop("optimizer", "adam"), loss="mse", metrics=["mae"], **compile_kw)
    return m


def fit(static: bool, **kw):
    m = model(optimizer=kw.pop("optimizer", "adam"))
    tr = m._get_trainer()
    tr.static_note = "" if static else "off (test)"     # a note turns the fixed-shape step off
    hist = m.fit(X, Y, batch_size=kw.pop("batch_size", 32), epochs=3, shuffle=True, verbose=0, **kw)
    return m, tr, hist.history


def test_fixed_shape_step_equals_the_step_for_any_batch_size():
    """Same losses, metrics, weights and optimizer slots, bit for bit (dropout, batch statistics
    and a last batch of 22 that runs through the other step included)."""
    m1, t1, h1 = fit(True, validation_split=0.2)
    m2, t2, h2 = fit(False, validation_split=0.2)
    assert len(t1.static_steps) == 1 and not t2.static_steps
    assert next(iter(t1.static_steps.values())).shapes["x"] == (32, 6)      # built for the full batches
    assert h1 == h2
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    s1, s2 = t1.slot_values(), t2.slot_values()
    assert s1.keys() == s2.keys()
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])


def test_state_written_in_place_keeps_the_step_valid():
    """set_weights between fits and EMA's final swap write into the step's buffers (the step
    keeps their addresses): the next fit starts from the new values, as with the other step."""
    new = [RNG.normal(size=w.shape).astype("float32") for w in model().get_weights()]
    runs = []
    for static in (True, False):
        m = model()
        tr = m._get_trainer()
        tr.static_note = "" if static else "off (test)"
        m.fit(X, Y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        step = next(iter(tr.static_steps.values()), None)
        m.set_weights(new)
        m.fit(X, Y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        assert next(iter(tr.static_steps.values()), None) is step       # not rebuilt
        runs.append(m.get_weights())
    for a, b, w in zip(*runs, new):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(runs[0][0], new[0])                            # it trained from `new`

    ema = []
    for static in (True, False):
        m = model(optimizer=kdsl.train.optimizers.Adam(use_ema=True, ema_momentum=0.5))
        m._get_trainer().static_note = "" if static else "off (test)"
        m.fit(X, Y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        m.fit(X, Y, batch_size=32, epochs=1, shuffle=False, verbose=0)   # after EMA's swap
        ema.append(m.get_weights())
    for a, b in zip(*ema):
        np.testing.assert_array_equal(a, b)


def test_one_step_per_batch_shape_and_the_oldest_goes():
    m = model()
    tr = m._get_trainer()
    for bs in (32, 50, 32, 64):
        m.fit(X, Y, batch_size=bs, epochs=1, verbose=0)
    assert sorted(st.shapes["x"][0] for st in tr.static_steps.values()) == [32, 64]


def test_cuda_graph_option_errors():
    m = model(cuda_graph=True)
    with pytest.raises(KdslError, match="cuda_graph=True needs the CUDA execution provider"):
        m.fit(X, Y, batch_size=32, epochs=1, verbose=0)
    x = kdsl.Input((6,), name="x")
    m2 = kdsl.Model(x, {"y": L.Dense(2)(x)})
    with pytest.raises(KdslError, match='needs engine="portable"'):
        m2.compile(optimizer="sgd", loss="mse", engine="ort-training", cuda_graph=True)


def test_a_provider_onnxruntime_left_out_is_an_error():
    """onnxruntime falls back to the CPU, with only a logged warning, when the CUDA provider's
    libraries cannot be loaded: kdsl says so instead of running on the wrong device."""
    from kdsl.runtime.session import check_providers_active

    class Session:
        def get_providers(self):
            return ["CPUExecutionProvider"]

    with pytest.raises(KdslError, match=r"could not start the execution provider\(s\) \['CUDAExecutionProvider'\]") as err:
        check_providers_active(Session(), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert "preload_dlls" in str(err.value)
    check_providers_active(Session(), ["CPUExecutionProvider"])       # nothing missing: no error
