"""fit / evaluate semantics (Keras's), seeding, callbacks, training vs inference mode."""
import numpy as np
import pytest

import kdsl
from kdsl import layers as L

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 6)).astype("float32")
Y = (X @ RNG.normal(size=(6, 2))).astype("float32")


def mlp(dropout: float = 0.0, seed: int | None = None, bn: bool = False) -> kdsl.Model:
    x = kdsl.Input((6,), name="x")
    h = L.Dense(16, activation="relu")(x)
    if bn:
        h = L.BatchNormalization()(h)
    if dropout:
        h = L.Dropout(dropout)(h)
    return kdsl.Model(x, {"y": L.Dense(2)(h)}, seed=seed)


def test_one_sgd_step_matches_numpy():
    m = mlp()
    m.compile(optimizer=kdsl.train.optimizers.SGD(0.1), loss="mse")
    k1, b1, k2, b2 = m.get_weights()
    xb, yb = X[:8], Y[:8]
    m.fit(xb, yb, batch_size=8, epochs=1, shuffle=False, verbose=0)
    h = xb @ k1 + b1
    a = np.maximum(h, 0)
    out = a @ k2 + b2
    d = 2 * (out - yb) / out.size
    gk2, gb2 = a.T @ d, d.sum(0)
    da = d @ k2.T * (h > 0)
    gk1, gb1 = xb.T @ da, da.sum(0)
    for got, w, g in zip(m.get_weights(), [k1, b1, k2, b2], [gk1, gb1, gk2, gb2]):
        np.testing.assert_allclose(got, w - 0.1 * g, rtol=1e-4, atol=1e-6)


def test_training_never_writes_into_arrays_it_was_given():
    """The trainer's state buffers are its own: the weight arrays of the model (and of
    set_weights) keep their values while steps run (fit replaces them at the end of an epoch)."""
    m = mlp()
    m.compile(optimizer="sgd", loss="mse")
    given = [RNG.normal(size=w.shape).astype("float32") for w in m.get_weights()]
    m.set_weights(given)
    kept = [np.copy(a) for a in given]
    held = [w.value for layer in m.layers for w in getattr(layer, "weights", [])]
    held_copies = [np.copy(a) for a in held]
    m.fit(X, Y, batch_size=16, epochs=2, verbose=0)
    for a, b in zip(given + held, kept + held_copies):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(m.get_weights()[0], kept[0])      # it did train


def test_step_results_are_copies_of_the_output_buffers():
    """A step's loss and metric sums go to buffers the trainer reuses: what a step returns keeps
    its values after the next steps."""
    m = mlp()
    m.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    m.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    tr = m._trainer
    data = tr.prepare(X, Y)
    first = tr.train_batch(data, 0, 16, None, 0.1, 100)
    kept = {k: np.copy(v) for k, v in first.items()}
    later = [tr.train_batch(data, 16 * i, 16 * (i + 1), None, 0.1, 100 + i) for i in range(1, 4)]
    for k in kept:
        np.testing.assert_array_equal(first[k], kept[k])
    assert len({float(r["loss"]) for r in [first] + later}) == 4    # the steps did differ


def test_history_validation_and_last_partial_batch():
    m = mlp()
    m.compile(optimizer="adam", loss="mse", metrics=["mae"])
    h = m.fit(X, Y, batch_size=64, epochs=3, validation_split=0.25, verbose=0)
    assert set(h.history) == {"loss", "mean_absolute_error", "val_loss", "val_mean_absolute_error"} or \
        set(h.history) == {"loss", "mae", "val_loss", "val_mae"}
    assert all(len(v) == 3 for v in h.history.values())
    assert h.epoch == [0, 1, 2]
    # 150 training samples at batch 64: 3 steps per epoch (the last one of 22 samples is trained)
    assert m.optimizer.iterations == 9
    assert h.history["loss"][-1] < h.history["loss"][0]
    logs = m.evaluate(X[150:], Y[150:], verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], h.history["val_loss"][-1], rtol=1e-5)
    pred = m.predict(X[150:])
    np.testing.assert_allclose(logs["loss"], np.mean((pred - Y[150:]) ** 2), rtol=1e-5)


def test_epoch_loss_is_batch_size_weighted_mean_like_keras():
    m = mlp()
    m.compile(optimizer=kdsl.train.optimizers.SGD(0.0), loss="mse")    # weights never change
    h = m.fit(X[:100], Y[:100], batch_size=64, epochs=1, shuffle=False, verbose=0)
    pred = m.predict(X[:100])
    per = ((pred - Y[:100]) ** 2).mean(1)
    expect = (per[:64].mean() * 64 + per[64:].mean() * 36) / 100
    np.testing.assert_allclose(h.history["loss"][0], expect, rtol=1e-5)


def test_sample_weight_and_class_weight():
    m = mlp()
    m.compile(optimizer=kdsl.train.optimizers.SGD(0.0), loss="mse")
    sw = RNG.uniform(0, 2, size=100).astype("float32")
    logs = m.evaluate(X[:100], Y[:100], sample_weight=sw, verbose=0, return_dict=True)
    per = ((m.predict(X[:100]) - Y[:100]) ** 2).mean(1)
    np.testing.assert_allclose(logs["loss"], (per * sw).sum() / 100, rtol=1e-5)


def test_same_seed_same_weights_and_same_history_with_dropout():
    def run():
        kdsl.utils.set_random_seed(123)
        m = mlp(dropout=0.5)
        m.compile(optimizer="adam", loss="mse")
        h = m.fit(X, Y, batch_size=32, epochs=2, verbose=0)
        return m.get_weights(), h.history["loss"]
    try:
        (w1, l1), (w2, l2) = run(), run()
    finally:
        kdsl.utils.set_random_seed(0)
    assert l1 == l2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    kdsl.utils.set_random_seed(7)
    try:
        w3 = mlp(dropout=0.5).get_weights()
    finally:
        kdsl.utils.set_random_seed(0)
    assert not np.allclose(w1[0], w3[0])


def test_dropout_is_active_in_fit_and_off_in_evaluate_and_predict():
    m = mlp(dropout=0.5)
    m.compile(optimizer=kdsl.train.optimizers.SGD(0.0), loss="mse")
    h = m.fit(X, Y, batch_size=200, epochs=1, shuffle=False, verbose=0)
    ev = m.evaluate(X, Y, verbose=0)
    per = np.mean((m.predict(X) - Y) ** 2)
    np.testing.assert_allclose(ev, per, rtol=1e-5)
    assert abs(h.history["loss"][0] - ev) > 1e-3      # the training pass saw dropped units


def test_batchnorm_uses_batch_statistics_in_fit_and_moving_ones_after():
    m = mlp(bn=True)
    m.compile(optimizer=kdsl.train.optimizers.SGD(0.0), loss="mse")
    bn = m.get_layer("batch_normalization")
    before = [w.copy() for w in bn.get_weights()]
    m.fit(X, Y, batch_size=200, epochs=1, shuffle=False, verbose=0)
    gamma, beta, mm, mv = bn.get_weights()
    k1, b1 = m.get_layer("dense").get_weights()
    h = np.maximum(X @ k1 + b1, 0)
    np.testing.assert_allclose(mm, 0.99 * before[2] + 0.01 * h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mv, 0.99 * before[3] + 0.01 * h.var(0), rtol=1e-4, atol=1e-6)


def test_early_stopping_restores_best_weights():
    m = mlp()
    m.compile(optimizer=kdsl.train.optimizers.SGD(0.5), loss="mse")   # too large: diverges
    es = kdsl.callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True)
    h = m.fit(X, Y * 100, batch_size=200, epochs=30, shuffle=False, verbose=0, callbacks=[es])
    losses = h.history["loss"]
    assert len(losses) < 30
    best = int(np.argmin(losses))
    assert es.best == pytest.approx(losses[best])


def test_fit_errors_are_clear():
    m = mlp()
    with pytest.raises(kdsl.KdslError, match="not compiled"):
        m.fit(X, Y)
    m.compile(optimizer="adam", loss="mse")
    with pytest.raises(kdsl.KdslError, match=r"Input 'x' expects arrays of shape \(None, 6\)"):
        m.fit(X[:, :5], Y)
    with pytest.raises(kdsl.KdslError, match=r"Targets for output 'y' must have shape \(None, 2\)"):
        m.fit(X, Y[:, :1].repeat(3, 1))
    with pytest.raises(kdsl.KdslError, match="has 10 samples; the inputs have 200"):
        m.fit(X, Y[:10])


def test_arrays_by_name_errors_for_inputs_and_targets():
    a, b = kdsl.Input((3,), name="a"), kdsl.Input((3,), name="b")
    m = kdsl.Model([a, b], {"p": L.Dense(1)(a), "q": L.Dense(1)(b)})
    m.compile(optimizer="sgd", loss="mse")
    xa = np.zeros((4, 3), "float32")
    ya = np.zeros((4, 1), "float32")
    with pytest.raises(kdsl.KdslError, match=r"The model has 2 inputs \['a', 'b'\]; pass `x` as a list or a dict"):
        m.predict(xa)
    with pytest.raises(kdsl.KdslError, match=r"`x` has keys \['c'\] that are not model inputs"):
        m.predict({"a": xa, "b": xa, "c": xa})
    with pytest.raises(kdsl.KdslError, match=r"`x` lacks arrays for the inputs \['b'\]"):
        m.predict({"a": xa})
    with pytest.raises(kdsl.KdslError, match=r"`y` must be a list of 2 arrays. Received: 3"):
        m.fit([xa, xa], [ya, ya, ya], verbose=0)
    with pytest.raises(kdsl.KdslError, match=r"`y` lacks arrays for the outputs \['q'\]"):
        m.fit([xa, xa], {"p": ya}, verbose=0)
