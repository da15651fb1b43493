"""The onnxruntime-training engine (kdsl/runtime/ort_training.py).

Needs onnxruntime's training build (``onnxruntime-training-cpu==1.19.2``, Python <= 3.12), which
replaces plain onnxruntime: CI runs this file alone in a second environment. Elsewhere every
test that needs it is skipped with the reason; the refusal when it is missing runs everywhere.
"""
import os

import numpy as np
import pytest

import kdsl
from kdsl import KdslError
from kdsl import layers as L
from kdsl.lower.training import TrainSetup
from kdsl.runtime import ort_training as ortt
from kdsl.train.losses import LOSS_CLASSES, Loss, get_loss
from kdsl.train.optimizers import SGD, Adam

AVAILABLE, WHY = ortt.ort_training_available()
needs_ort = pytest.mark.skipif(not AVAILABLE, reason=WHY)


# -- helpers -----------------------------------------------------------------------------
def make_loss(fn: str, **kwargs) -> Loss:
    """The kdsl loss, or a stand-in with its Keras name and arguments while it is not written yet
    (the engine reads only the name and the arguments)."""
    if fn in LOSS_CLASSES:
        return LOSS_CLASSES[fn](**kwargs)

    class StandIn(Loss):
        fn_name = fn

        def __init__(self, from_logits=False, reduction="sum_over_batch_size", **kw):
            super().__init__(reduction)
            self.from_logits = from_logits
            for k, v in kw.items():
                setattr(self, k, v)

    return StandIn(**kwargs)


def setup_for(model, loss="mse", optimizer=None, metrics=None) -> TrainSetup:
    out = model.output_names[0]
    loss = get_loss(loss) if isinstance(loss, str) else loss
    return TrainSetup({out: loss}, {}, {out: list(metrics or [])}, optimizer or SGD(0.05))


def portable_losses(model, setup, x, y, steps, batch):
    """Per-step losses of the portable Trainer. Its state is copied after each step: with
    onnxruntime <= 1.19, IOBinding.get_outputs() returns views into the binding that the next
    step's clear_binding_outputs() frees (the portable Trainer then crashes on its second step)."""
    from kdsl.runtime.trainer import Trainer

    tr = Trainer(model, setup)
    data = tr.prepare(x, y)
    out = []
    for i in range(steps):
        lo = (i * batch) % data.n
        out.append(float(tr.train_batch(data, lo, min(lo + batch, data.n), None,
                                         setup.optimizer.learning_rate, i + 1)["loss"]))
        tr.state = {k: tr._ortvalue(v.numpy().copy()) for k, v in tr.state.items()}
    return np.array(out), tr


def ort_losses(model, setup, x, y, steps, batch):
    eng = ortt.OrtTrainingEngine(model, setup)
    data = eng.prepare(x, y)
    out = []
    for i in range(steps):
        lo = (i * batch) % data.n
        out.append(float(eng.train_batch(data, lo, min(lo + batch, data.n), None,
                                         setup.optimizer.learning_rate, i + 1)["loss"]))
    return np.array(out), eng


def mlp(seed=3, dropout=0.0):
    x = kdsl.Input((6,), name="x")
    h = L.Dense(16, activation="relu")(x)
    if dropout:
        h = L.Dropout(dropout)(h)
    return kdsl.Model(x, L.Dense(3)(h), seed=seed)


def conv_model(seed=4, act="tanh"):
    x = kdsl.Input((10, 10, 3), name="img")
    h = L.Conv2D(4, 3, activation=act)(x)
    h = L.MaxPooling2D(2)(h)
    h = L.Conv2D(5, 3, padding="same", activation=act)(h)
    h = L.GlobalAveragePooling2D()(h)
    return kdsl.Model(x, L.Dense(3)(h), seed=seed)


RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 6)).astype(np.float32)
Y = RNG.normal(size=(64, 3)).astype(np.float32)
IMG = RNG.normal(size=(32, 10, 10, 3)).astype(np.float32)
IMG_Y = RNG.normal(size=(32, 3)).astype(np.float32)


# -- availability ---------------------------------------------------------------------------
def test_refused_with_the_reason_when_onnxruntime_training_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(ortt, "ort_training_available", lambda: (False, ortt.NOT_INSTALLED))
    m = mlp()
    for call in (lambda: ortt.OrtTrainingEngine(m, setup_for(m)),
                 lambda: ortt.generate_ort_artifacts(m, setup_for(m), str(tmp_path))):
        with pytest.raises(KdslError) as ei:
            call()
        text = str(ei.value)
        assert 'engine="ort-training" needs onnxruntime\'s training build' in text
        assert "onnxruntime-training is not installed (it exists only for Python <= 3.12" in text
        assert 'engine="portable"' in text
    assert not list(tmp_path.iterdir())


def test_availability_reason():
    ok, why = ortt.ort_training_available()
    if ok:
        assert why.startswith("onnxruntime-training ")
    else:
        assert why.startswith(ortt.NOT_INSTALLED)


# -- same numbers as the portable engine -------------------------------------------------------
@needs_ort
@pytest.mark.parametrize("optimizer", [SGD(0.05), Adam(0.01)], ids=["sgd", "adam"])
def test_mlp_loss_trajectory_matches_portable_engine(optimizer):
    m = mlp()
    p, trainer = portable_losses(m, setup_for(m, "mse", optimizer), X, Y, steps=20, batch=8)
    o, eng = ort_losses(m, setup_for(m, "mse", optimizer), X, Y, steps=20, batch=8)
    np.testing.assert_allclose(o, p, rtol=0, atol=1e-4)
    assert o[-5:].mean() < o[:5].mean()
    # evaluation (the eval model) agrees too, and the trained weights come back in Keras layout
    pe = float(trainer.eval_batch(trainer.prepare(X, Y), 0, 64)["loss"])
    data = eng.prepare(X, Y)
    assert abs(float(eng.eval_batch(data, 0, 64)["loss"]) - pe) < 1e-4
    eng.sync_to_model()
    assert abs(float(np.mean((m.predict(X) - Y) ** 2)) - pe) < 1e-4


def _portable_refusal(model, loss="mse") -> str | None:
    """Why the portable engine cannot train ``model`` yet (``None`` when it can)."""
    import importlib

    from kdsl.lower.training import build_training

    for rules in ("kdsl.lower.autodiff_nn", "kdsl.lower.autodiff_seq"):   # VJP rules, where written
        try:
            importlib.import_module(rules)
        except ImportError:
            pass

    try:
        build_training(model, setup_for(model, loss))
    except KdslError as e:
        if "not supported yet" in str(e):
            return str(e).splitlines()[0]
        raise
    return None


@needs_ort
def test_conv_pool_loss_trajectory_matches_portable_engine():
    m = conv_model()
    why = _portable_refusal(m)
    if why:
        pytest.skip(f"the portable engine cannot train this model ({why}); "
                    "test_conv_pool_gradients_match_finite_differences checks ORT's gradients")
    p, _ = portable_losses(m, setup_for(m, "mse", SGD(0.05)), IMG, IMG_Y, steps=20, batch=8)
    o, _ = ort_losses(m, setup_for(m, "mse", SGD(0.05)), IMG, IMG_Y, steps=20, batch=8)
    np.testing.assert_allclose(o, p, rtol=0, atol=1e-4)


def assert_gradients_match_finite_differences(model, x, y, loss="mse", eps=1e-3, per_weight=5):
    """ORT's gradients (the parameters' ``grad`` after one training call) against central
    differences of its eval model's loss."""
    eng = ortt.OrtTrainingEngine(model, setup_for(model, loss, SGD(0.0)))
    data = eng.prepare(x, y)
    feeds = eng._feeds(data, 0, data.n)
    eng.module.train()
    eng.module(*feeds)
    params = eng.state.parameters

    def value() -> float:
        eng.module.eval()
        try:
            return float(eng.module(*feeds))
        finally:
            eng.module.train()

    rng = np.random.default_rng(1)
    for name in eng.art.trainable:
        grad = params[name].grad.reshape(-1).copy()
        base = params[name].data.copy()
        for i in rng.choice(base.size, size=min(per_weight, base.size), replace=False):
            values = []
            for sign in (1, -1):
                p = base.reshape(-1).astype(np.float64)
                p[i] += sign * eps
                params[name] = p.reshape(base.shape).astype(np.float32)
                values.append(value())
            params[name] = base
            numeric = (values[0] - values[1]) / (2 * eps)
            assert abs(numeric - grad[i]) <= 3e-2 * max(1.0, abs(numeric)), (name, i, numeric, grad[i])


@needs_ort
def test_conv_pool_gradients_match_finite_differences():
    assert_gradients_match_finite_differences(conv_model(), IMG, IMG_Y)


def text_model(seed=6):
    x = kdsl.Input((6,), dtype="int64", name="tokens")
    h = L.TokenAndPositionEmbedding(12, 6, 8)(x)
    h = L.Add()([h, L.MultiHeadAttention(2, 4)([h, h])])
    h = L.GlobalAveragePooling1D()(h)
    return kdsl.Model(x, L.Dense(3)(h), seed=seed)


TOKENS = np.random.default_rng(3).integers(1, 12, size=(32, 6))
TOKENS[:, 4:] = 0
TOKEN_LABELS = np.random.default_rng(4).integers(0, 3, size=(32,))


@needs_ort
def test_text_model_gradients_match_finite_differences():
    assert_gradients_match_finite_differences(
        text_model(), TOKENS, TOKEN_LABELS, make_loss("sparse_categorical_crossentropy", from_logits=True))


@needs_ort
def test_text_model_loss_trajectory_matches_portable_engine():
    m = text_model()
    loss = make_loss("sparse_categorical_crossentropy", from_logits=True)
    why = _portable_refusal(m, loss)
    if why:
        pytest.skip(f"the portable engine cannot train this model ({why}); "
                    "test_text_model_gradients_match_finite_differences checks ORT's gradients")
    p, _ = portable_losses(m, setup_for(m, loss, Adam(0.01)), TOKENS, TOKEN_LABELS, steps=20, batch=8)
    o, _ = ort_losses(m, setup_for(m, loss, Adam(0.01)), TOKENS, TOKEN_LABELS, steps=20, batch=8)
    np.testing.assert_allclose(o, p, rtol=0, atol=1e-4)


@needs_ort
def test_conv_pool_model_trains_and_syncs():
    m = conv_model(act="relu")
    before = [w.copy() for w in m.get_weights()]
    o, eng = ort_losses(m, setup_for(m, "mse", Adam(0.01)), IMG, IMG_Y, steps=30, batch=8)
    assert np.all(np.isfinite(o)) and o[-5:].mean() < o[:5].mean()
    eng.sync_to_model()
    assert all(w.shape == b.shape and not np.array_equal(w, b) for w, b in zip(m.get_weights(), before))
    data = eng.prepare(IMG, IMG_Y)
    pred_loss = float(np.mean((m.predict(IMG) - IMG_Y) ** 2))
    assert abs(float(eng.eval_batch(data, 0, data.n)["loss"]) - pred_loss) < 1e-4


# -- losses: Keras's values ---------------------------------------------------------------------
def _lse(z):
    mx = z.max(-1, keepdims=True)
    return (mx + np.log(np.exp(z - mx).sum(-1, keepdims=True)))[..., 0]


KERAS = {
    "mean_squared_error": lambda p, y: np.mean((p - y) ** 2),
    "mean_absolute_error": lambda p, y: np.mean(np.abs(p - y)),
    "sparse_categorical_crossentropy":
        lambda p, y: np.mean(_lse(p) - np.take_along_axis(p, y[..., None].astype(np.int64), -1)[..., 0]),
    "binary_crossentropy": lambda p, y: np.mean(np.maximum(p, 0) - p * y + np.log1p(np.exp(-np.abs(p)))),
}


@needs_ort
@pytest.mark.parametrize("fn,rank3,scale", [
    ("mean_squared_error", False, 1), ("mean_absolute_error", False, 1),
    ("sparse_categorical_crossentropy", False, 1), ("sparse_categorical_crossentropy", False, 60),
    ("sparse_categorical_crossentropy", True, 1),
    ("binary_crossentropy", False, 1), ("binary_crossentropy", False, 60), ("binary_crossentropy", True, 1),
])
def test_losses_equal_keras(fn, rank3, scale):
    rng = np.random.default_rng(5)
    x = kdsl.Input((5, 6) if rank3 else (6,), name="x")
    m = kdsl.Model(x, L.Dense(4)(L.Dense(8, activation="tanh")(x)), seed=2)
    k, b = m.layers[-1].get_weights()
    m.layers[-1].set_weights([k * scale, b])       # scale 60: logits far past where sigmoid saturates
    xs = rng.normal(size=(24,) + tuple(x.type.shape[1:])).astype(np.float32)
    out_shape = (24, 5, 4) if rank3 else (24, 4)
    if fn == "sparse_categorical_crossentropy":
        ys = rng.integers(0, 4, size=out_shape[:-1])
    elif fn == "binary_crossentropy":
        ys = rng.integers(0, 2, size=out_shape).astype(np.float32)
    else:
        ys = rng.normal(size=out_shape).astype(np.float32)
    loss = make_loss(fn, from_logits=True) if "entropy" in fn else make_loss(fn)
    lr = 0.1 / scale
    eng = ortt.OrtTrainingEngine(m, setup_for(m, loss, SGD(lr)))
    data = eng.prepare(xs, ys)
    ref = KERAS[fn](m.predict(xs).astype(np.float64), ys)
    assert abs(float(eng.eval_batch(data, 0, 24)["loss"]) - ref) <= 1e-5 * max(1.0, ref)
    first = float(eng.train_batch(data, 0, 24, None, lr, 1)["loss"])
    assert abs(first - ref) <= 1e-5 * max(1.0, ref)
    eng.sync_to_model()
    after = KERAS[fn](m.predict(xs).astype(np.float64), ys)
    assert np.isfinite(after) and after < ref
    assert abs(float(eng.eval_batch(data, 0, 24)["loss"]) - after) <= 1e-5 * max(1.0, after)


# -- Dropout, metrics, fit/evaluate, checkpoints ---------------------------------------------------
@needs_ort
def test_dropout_is_random_in_training_and_off_in_evaluation():
    m = mlp(dropout=0.5)
    setup = setup_for(m)
    _, trainer = portable_losses(m, setup_for(m), X, Y, steps=0, batch=8)
    eng = ortt.OrtTrainingEngine(m, setup)
    data = eng.prepare(X, Y)
    portable_eval = float(trainer.eval_batch(trainer.prepare(X, Y), 0, 64)["loss"])
    assert abs(float(eng.eval_batch(data, 0, 64)["loss"]) - portable_eval) < 1e-5
    at_lr0 = {round(float(eng.train_batch(data, 0, 64, None, 0.0, i + 1)["loss"]), 6) for i in range(4)}
    assert len(at_lr0) > 1                       # a new mask each step
    assert abs(float(eng.eval_batch(data, 0, 64)["loss"]) - portable_eval) < 1e-5   # lr 0: unchanged
    for i in range(40):
        eng.train_batch(data, 0, 64, None, 0.05, i + 5)
    assert float(eng.eval_batch(data, 0, 64)["loss"]) < portable_eval


def _compile(model, **kwargs):
    import inspect

    if "engine" in inspect.signature(model.compile).parameters:
        model.compile(engine="ort-training", **kwargs)
    else:                      # until compile(engine=...) lands: put the engine in place by hand
        model.compile(**kwargs)
        model._trainer = ortt.OrtTrainingEngine(model, model._setup, model._providers, model._opset)
    assert isinstance(model._get_trainer(), ortt.OrtTrainingEngine)


@needs_ort
def test_fit_and_evaluate_with_metrics_frozen_layer_and_two_inputs():
    rng = np.random.default_rng(2)
    a, b = kdsl.Input((6,), name="a"), kdsl.Input((3,), name="b")
    frozen = L.Dense(8, trainable=False)
    h = L.Concatenate()([frozen(a), L.Dense(4, activation="relu")(b)])
    m = kdsl.Model([a, b], L.Dense(4)(h), seed=9)
    _compile(m, optimizer=SGD(0.1), loss=make_loss("sparse_categorical_crossentropy", from_logits=True),
             metrics=["sparse_categorical_accuracy"])
    kept = frozen.get_weights()[0].copy()
    xa, xb = rng.normal(size=(64, 6)).astype(np.float32), rng.normal(size=(64, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=(64, 1))
    hist = m.fit([xa, xb], labels, epochs=3, batch_size=16, verbose=0, validation_split=0.25)
    assert set(hist.history) == {"loss", "sparse_categorical_accuracy",
                                 "val_loss", "val_sparse_categorical_accuracy"}
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert np.array_equal(frozen.get_weights()[0], kept)
    loss, acc = m.evaluate([xa, xb], labels, verbose=0, batch_size=64)
    pred = m.predict([xa, xb])
    assert abs(acc - float(np.mean(pred.argmax(-1) == labels[:, 0]))) < 1e-6
    assert abs(loss - KERAS["sparse_categorical_crossentropy"](pred.astype(np.float64), labels[:, 0])) < 1e-5


@needs_ort
def test_adam_state_resumes_on_either_engine():
    opt = lambda: Adam(0.02)  # noqa: E731
    full, _ = ort_losses(mlp(), setup_for(mlp(), "mse", opt()), X, Y, steps=10, batch=8)

    m = mlp()
    eng = ortt.OrtTrainingEngine(m, setup_for(m, "mse", opt()))
    data = eng.prepare(X, Y)
    for i in range(5):
        eng.train_batch(data, i * 8 % 64, i * 8 % 64 + 8, None, 0.02, i + 1)
    eng.sync_to_model()
    slots = eng.slot_values()
    assert set(slots) == {f"{n}:{s}" for n in ("dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias")
                          for s in ("m", "v")}
    weights = m.get_weights()

    m2 = mlp()
    m2.set_weights(weights)
    eng2 = ortt.OrtTrainingEngine(m2, setup_for(m2, "mse", opt()))
    eng2.reset_state(slots)
    data2 = eng2.prepare(X, Y)
    resumed = [float(eng2.train_batch(data2, i * 8 % 64, i * 8 % 64 + 8, None, 0.02, i + 1)["loss"])
               for i in range(5, 10)]
    np.testing.assert_allclose(resumed, full[5:], rtol=0, atol=1e-6)

    from kdsl.runtime.trainer import Trainer

    m3 = mlp()
    m3.set_weights(weights)
    tr = Trainer(m3, setup_for(m3, "mse", opt()))
    tr.reset_state(slots)
    d3 = tr.prepare(X, Y)
    portable = []
    for i in range(5, 10):
        portable.append(float(tr.train_batch(d3, i * 8 % 64, i * 8 % 64 + 8, None, 0.02, i + 1)["loss"]))
        tr.state = {k: tr._ortvalue(v.numpy().copy()) for k, v in tr.state.items()}
    np.testing.assert_allclose(portable, full[5:], rtol=0, atol=1e-4)


# -- artifacts ----------------------------------------------------------------------------------
@needs_ort
def test_generated_artifacts_load_and_train_in_orts_api(tmp_path):
    import onnx

    m = conv_model()
    paths = ortt.generate_ort_artifacts(m, setup_for(m, "mse", Adam(0.01)), str(tmp_path))
    assert [os.path.basename(p) for p in paths] == list(ortt.ARTIFACT_FILES)
    assert all(os.path.isfile(p) for p in paths)
    for p in paths[:3]:
        assert onnx.load(p).ir_version <= 10                  # ORT 1.19 loads IR <= 10
    mods = ortt._load_modules()
    state = mods.CheckpointState.load_checkpoint(paths[3])
    module = mods.Module(paths[0], state, paths[1])
    optimizer = mods.Optimizer(paths[2], module)
    assert module.input_names() == ["img", "target:dense"]
    assert sorted(n for n, _ in state.parameters) == sorted(f"{layer.name}/{w.name}" for layer in m.layers
                                                             for w in layer.weights)
    optimizer.set_learning_rate(0.01)
    losses = []
    for _ in range(15):
        losses.append(float(module(IMG, IMG_Y)))
        optimizer.step()
        module.lazy_reset_grad()
    assert losses[-1] < losses[0]
    module.eval()
    assert np.isfinite(float(module(IMG, IMG_Y)))


# -- refusals ------------------------------------------------------------------------------------
def _model_with(layer_fn, shape=(8, 8, 3)):
    x = kdsl.Input(shape, name="x")
    return kdsl.Model(x, L.Dense(2)(L.Flatten()(layer_fn(x))), seed=1)


REFUSED_LAYERS = [
    ("BatchNormalization", lambda x: L.BatchNormalization()(x), "BatchNormalization written with one output"),
    ("LayerNormalization", lambda x: L.LayerNormalization()(x), "LayerNormalization written with one output"),
    ("AveragePooling2D", lambda x: L.AveragePooling2D(2)(x), "floating point exception"),
    ("Conv2DTranspose", lambda x: L.Conv2DTranspose(2, 3)(x), "no ConvTransposeGrad kernel"),
    ("UpSampling2D", lambda x: L.UpSampling2D(2)(x), "no ResizeGrad kernel"),
    ("GlobalMaxPooling2D", lambda x: L.Reshape((1, 3))(L.GlobalMaxPooling2D()(x)), "no gradient for ReduceMax"),
    ("MultiHeadAttention", lambda x: L.MultiHeadAttention(2, 4, dropout=0.1)([x, x]), "dropout=0.1"),
    ("Dense", lambda x: L.Dense(4, activation="elu")(x),
     "activation 'elu': ORT's gradient builder has no gradient for Elu"),
]


@needs_ort
@pytest.mark.parametrize("cls,layer_fn,reason", REFUSED_LAYERS, ids=[r[0] + ("_elu" if r[0] == "Dense" else "")
                                                                      for r in REFUSED_LAYERS])
def test_unsupported_layers_are_refused(cls, layer_fn, reason):
    m = _model_with(layer_fn)
    with pytest.raises(KdslError) as ei:
        ortt.OrtTrainingEngine(m, setup_for(m))
    text = str(ei.value)
    assert 'engine="ort-training" does not support layer' in text and f"({cls})" in text
    assert reason in text
    assert 'use the portable engine (engine="portable")' in text


def test_check_supported_refuses_without_onnxruntime_training():
    """check_supported is pure Python: it refuses the same things in any environment."""
    m = _model_with(lambda x: L.BatchNormalization()(x))
    with pytest.raises(KdslError, match=r"layer 'batch_normalization' \(BatchNormalization\)"):
        ortt.check_supported(m, setup_for(m))
    ortt.check_supported(mlp(), setup_for(mlp()))


@pytest.mark.parametrize("loss,message", [
    (lambda: make_loss("categorical_crossentropy", from_logits=True), "the loss 'categorical_crossentropy'"),
    (lambda: make_loss("sparse_categorical_crossentropy"),
     "sparse_categorical_crossentropy with from_logits=False"),
    (lambda: make_loss("binary_crossentropy", from_logits=True, label_smoothing=0.1), "label_smoothing"),
    (lambda: make_loss("mean_squared_error", reduction="sum"), "reduction='sum'"),
    (lambda: make_loss("huber"), "the loss 'huber'"),
])
def test_unsupported_losses_are_refused(loss, message):
    m = mlp()
    with pytest.raises(KdslError) as ei:
        ortt.check_supported(m, setup_for(m, loss()))
    assert message in str(ei.value) and 'engine="portable"' in str(ei.value)


@pytest.mark.parametrize("opt,message", [
    (lambda: SGD(0.1, momentum=0.9), "SGD with momentum=0.9"),
    (lambda: Adam(0.1, amsgrad=True), "Adam with amsgrad=True"),
    (lambda: Adam(0.1, use_ema=True), "use_ema=True (optimizer Adam)"),
    (lambda: Adam(0.1, clipnorm=1.0), "clipnorm"),
])
def test_unsupported_optimizers_are_refused(opt, message):
    m = mlp()
    with pytest.raises(KdslError) as ei:
        ortt.check_supported(m, setup_for(m, "mse", opt()))
    assert message in str(ei.value) and 'engine="portable"' in str(ei.value)


def test_several_outputs_are_refused():
    x = kdsl.Input((4,), name="x")
    m = kdsl.Model(x, {"a": L.Dense(2)(x), "b": L.Dense(3)(x)})
    setup = TrainSetup({"a": get_loss("mse"), "b": get_loss("mse")}, {}, {}, SGD(0.1))
    with pytest.raises(KdslError, match="single-output models"):
        ortt.check_supported(m, setup)


@needs_ort
def test_sample_and_class_weights_are_refused_unless_all_ones():
    m = mlp()
    eng = ortt.OrtTrainingEngine(m, setup_for(m))
    with pytest.raises(KdslError, match="does not support sample weights"):
        eng.prepare(X, Y, sample_weight=np.linspace(0.0, 1.0, 64))
    assert eng.prepare(X, Y, sample_weight=np.ones(64)).n == 64
    c = ortt.OrtTrainingEngine(mlp(), setup_for(mlp(), make_loss("sparse_categorical_crossentropy",
                                                                    from_logits=True)))
    labels = np.arange(64) % 3
    with pytest.raises(KdslError, match="does not support class weights"):
        c.prepare(X, labels, class_weight={0: 2.0})
    assert c.prepare(X, labels, class_weight={0: 1.0}).n == 64
    with pytest.raises(KdslError, match=r"class indices in \[0, 3\)"):
        c.prepare(X, labels + 1)
