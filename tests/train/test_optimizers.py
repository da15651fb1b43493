"""Optimizers: one step (and several for Adam) of each update rule, emitted as ONNX with the
gradients fed as graph inputs and run in onnxruntime, against NumPy implementations of Keras 3's
update rules (gradient clipping, weight decay, then the rule); the same inside a real training
step; defaults and resolution."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import kdsl
from kdsl import layers as L
from kdsl.errors import KdslError
from kdsl.lower.emitter import Emitter
from kdsl.lower.export import make_model
from kdsl.lower.training import TrainSetup, build_gradient_graph, build_training
from kdsl.train import optimizers as O
from kdsl.train.losses import get_loss
from kdsl.train.optimizers import OPTIMIZER_CLASSES, get_optimizer
from kdsl.train.specs import OPTIMIZERS, Spec

RNG = np.random.default_rng(99)
SHAPES = [(3, 4), (5,)]


def f32(x):
    """A hyperparameter as Keras uses it in a float32 graph."""
    return float(np.float32(x))


# -- NumPy references of Keras 3's rules (float64) ------------------------------------------------------
def np_clip(grads, clipnorm=None, clipvalue=None, global_clipnorm=None, **_):
    if clipnorm:
        return [g * clipnorm / max(np.sqrt(np.sum(g * g)), clipnorm) for g in grads]
    if global_clipnorm:
        n = np.sqrt(sum(np.sum(g * g) for g in grads))
        return [g * global_clipnorm * min(1 / n, 1 / global_clipnorm) for g in grads]
    if clipvalue:
        return [np.clip(g, -clipvalue, clipvalue) for g in grads]
    return grads


def np_sgd(w, g, s, lr, t, momentum=0.0, nesterov=False, **_):
    if momentum == 0:
        return w - lr * g, {}
    m = f32(momentum) * s["momentum"] - lr * g
    if nesterov:
        return w + f32(momentum) * m - lr * g, {"momentum": m}
    return w + m, {"momentum": m}


def np_adam(w, g, s, lr, t, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **_):
    alpha = lr * np.sqrt(1 - f32(beta_2) ** t) / (1 - f32(beta_1) ** t)
    m = s["m"] + (g - s["m"]) * (1 - beta_1)
    v = s["v"] + (g * g - s["v"]) * (1 - beta_2)
    new = {"m": m, "v": v}
    if amsgrad:
        v = new["vhat"] = np.maximum(s["vhat"], v)
    return w - m * alpha / (np.sqrt(v) + epsilon), new


def np_rmsprop(w, g, s, lr, t, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **_):
    vel = rho * s["velocity"] + (1 - rho) * g * g
    new = {"velocity": vel}
    if centered:
        avg = new["average_gradient"] = rho * s["average_gradient"] + (1 - rho) * g
        denom = vel - avg * avg + epsilon
    else:
        denom = vel + epsilon
    inc = lr * g / np.sqrt(denom)
    if momentum > 0:
        mom = new["momentum"] = momentum * s["momentum"] + inc
        return w - mom, new
    return w - inc, new


def np_adagrad(w, g, s, lr, t, epsilon=1e-7, **_):
    acc = s["accumulator"] + g * g
    return w - lr * g / np.sqrt(acc + epsilon), {"accumulator": acc}


RULES = {"sgd": np_sgd, "adam": np_adam, "adamw": np_adam, "rmsprop": np_rmsprop, "adagrad": np_adagrad}


def np_step(kind, cfg, ws, gs, slots, lr, t):
    """Keras's apply(): clip, weight decay (w -= w * wd * lr), then the rule."""
    gs = np_clip([g.astype(np.float64) for g in gs], **cfg)
    out = []
    for w, g, s in zip(ws, gs, slots):
        w = w.astype(np.float64)
        wd = cfg.get("weight_decay", 0.004 if kind == "adamw" else None)
        if wd is not None:
            w = w - w * f32(wd) * lr
        out.append(RULES[kind](w, g, {k: v.astype(np.float64) for k, v in s.items()}, lr, t, **cfg))
    return out


# -- the emitted update graph ----------------------------------------------------------------------------
class UpdateGraph:
    """``emit_updates`` for weights of the given shapes, gradients fed as inputs."""

    def __init__(self, opt, shapes, opset=17):
        self.opt, self.shapes = opt, shapes
        e = Emitter(opset)
        inputs, params = [], []
        for n in ("lr", "step"):
            e.reserve(n)
            inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, []))
        self.slot_names = list(opt.initial_slots((1,)))
        for i, shp in enumerate(shapes):
            w, g = f"w{i}", f"g{i}"
            slots = {s: f"w{i}:{s}" for s in self.slot_names}
            for n in [w, g, *slots.values()]:
                e.reserve(n)
                inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shp)))
            params.append((w, g, slots))
        updates = opt.emit_updates(e, params, "lr", "step")
        outputs = []
        for i, (new_w, new_slots) in enumerate(updates):
            assert set(new_slots) == set(self.slot_names)
            e.op("Identity", [new_w], out=f"w{i}:new")
            outputs.append(f"w{i}:new")
            for s in self.slot_names:
                e.op("Identity", [new_slots[s]], out=f"w{i}:{s}:new")
                outputs.append(f"w{i}:{s}:new")
        vis = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        model = make_model(helper.make_graph(e.nodes, "update", inputs, vis), opset)
        self.sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.outputs = outputs

    def run(self, ws, gs, slots, lr, step):
        feeds = {"lr": np.array(lr, np.float32), "step": np.array(step, np.float32)}
        for i, (w, g, s) in enumerate(zip(ws, gs, slots)):
            feeds[f"w{i}"], feeds[f"g{i}"] = w.astype(np.float32), g.astype(np.float32)
            for k in self.slot_names:
                feeds[f"w{i}:{k}"] = s[k].astype(np.float32)
        res = dict(zip(self.outputs, self.sess.run(None, feeds)))
        return [(res[f"w{i}:new"], {k: res[f"w{i}:{k}:new"] for k in self.slot_names}) for i in range(len(ws))]


def random_state(opt, shapes, zero_slots=False):
    ws = [RNG.normal(size=s).astype(np.float32) for s in shapes]
    gs = [(RNG.normal(size=s) * 2).astype(np.float32) for s in shapes]
    slots = []
    for s in shapes:
        d = {}
        for name, init in [(k, v.reshape(-1)[0]) for k, v in opt.initial_slots((1,)).items()]:
            if zero_slots:
                d[name] = np.full(s, init, np.float32)
            elif name in ("v", "vhat", "velocity", "accumulator"):           # second moments: >= 0
                d[name] = (RNG.random(s) * 0.5 + 0.3).astype(np.float32)
            elif name == "average_gradient":                                 # keep velocity - avg^2 > 0
                d[name] = np.clip(RNG.normal(size=s) * 0.2, -0.5, 0.5).astype(np.float32)
            else:
                d[name] = RNG.normal(size=s).astype(np.float32)
        slots.append(d)
    return ws, gs, slots


def assert_step(kind, cfg, opt, ws, gs, slots, lr, t, graph=None, rtol=2e-5, atol=1e-6):
    graph = graph or UpdateGraph(opt, [w.shape for w in ws])
    got = graph.run(ws, gs, slots, lr, t)
    want = np_step(kind, cfg, ws, gs, slots, f32(lr), t)
    for (gw, gs_), (ww, ws_) in zip(got, want):
        assert np.all(np.isfinite(ww))
        np.testing.assert_allclose(gw, ww, rtol=rtol, atol=atol)
        assert set(gs_) == set(ws_)
        for k in ws_:
            np.testing.assert_allclose(gs_[k], ws_[k], rtol=rtol, atol=atol, err_msg=k)
    return got


OPTS = [
    ("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.8, "nesterov": True}),
    ("adam", {}), ("adam", {"amsgrad": True}), ("adam", {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3}),
    ("adamw", {}), ("adamw", {"amsgrad": True, "weight_decay": 0.1}),
    ("rmsprop", {}), ("rmsprop", {"momentum": 0.5}), ("rmsprop", {"centered": True}),
    ("rmsprop", {"centered": True, "momentum": 0.3, "rho": 0.8}),
    ("adagrad", {}), ("adagrad", {"initial_accumulator_value": 0.5, "epsilon": 1e-4}),
    # large epsilons: where epsilon enters (inside / outside the sqrt) shows
    ("adam", {"epsilon": 0.5}), ("rmsprop", {"epsilon": 0.5, "centered": True}),
    ("adagrad", {"initial_accumulator_value": 0.0, "epsilon": 0.5}),
]
CLIPS = [{}, {"clipnorm": 0.5}, {"clipnorm": 100.0}, {"clipvalue": 0.3}, {"global_clipnorm": 0.7},
         {"global_clipnorm": 100.0}]


@pytest.mark.parametrize("kind,kw", OPTS)
@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("weight_decay", [None, 0.05])
def test_one_step(kind, kw, clip, weight_decay):
    cfg = dict(kw, **clip)
    if weight_decay is not None:
        cfg["weight_decay"] = weight_decay
    opt = OPTIMIZER_CLASSES[kind](learning_rate=0.03, **cfg)
    ws, gs, slots = random_state(opt, SHAPES)
    assert_step(kind, cfg, opt, ws, gs, slots, 0.03, 4)


@pytest.mark.parametrize("kind,kw", OPTS)
def test_first_step_from_initial_slots(kind, kw):
    opt = OPTIMIZER_CLASSES[kind](**kw)
    ws, gs, slots = random_state(opt, SHAPES, zero_slots=True)
    assert_step(kind, kw, opt, ws, gs, slots, opt.learning_rate, 1)


@pytest.mark.parametrize("kind,kw", [("adam", {}), ("adam", {"amsgrad": True}), ("adamw", {}),
                                     ("adamw", {"amsgrad": True, "global_clipnorm": 1.0})])
def test_adam_bias_correction_over_steps(kind, kw):
    opt = OPTIMIZER_CLASSES[kind](learning_rate=0.01, **kw)
    graph = UpdateGraph(opt, SHAPES)
    ws, _, slots = random_state(opt, SHAPES, zero_slots=True)
    ref_ws, ref_slots = [w.astype(np.float64) for w in ws], slots
    for t in (1, 2, 3):
        gs = [(RNG.normal(size=s)).astype(np.float32) for s in SHAPES]
        got = graph.run(ws, gs, slots, 0.01, t)
        want = np_step(kind, kw, ref_ws, gs, ref_slots, f32(0.01), t)
        for (gw, gsl), (ww, wsl) in zip(got, want):
            np.testing.assert_allclose(gw, ww, rtol=1e-5, atol=1e-7)
            for k in wsl:
                np.testing.assert_allclose(gsl[k], wsl[k], rtol=1e-5, atol=1e-7)
        ws, slots = [w for w, _ in got], [s for _, s in got]
        ref_ws, ref_slots = [w for w, _ in want], [s for _, s in want]


def test_adam_first_step_magnitude():
    # step 1 from zero slots moves each weight by about lr (the gradient's sign)
    opt = O.Adam(learning_rate=0.01)
    ws, gs, slots = random_state(opt, [(6,)], zero_slots=True)
    (w1, _), = UpdateGraph(opt, [(6,)]).run(ws, gs, slots, 0.01, 1)
    np.testing.assert_allclose(np.abs(w1 - ws[0]), 0.01, rtol=1e-3)


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("kind,kw", [("rmsprop", {"centered": True, "momentum": 0.5, "clipnorm": 0.5}),
                                     ("adamw", {"global_clipnorm": 0.5})])
def test_opsets(opset, kind, kw):
    opt = OPTIMIZER_CLASSES[kind](learning_rate=0.05, **kw)
    ws, gs, slots = random_state(opt, SHAPES)
    assert_step(kind, kw, opt, ws, gs, slots, 0.05, 2, graph=UpdateGraph(opt, SHAPES, opset))


def test_clipping_actually_clips():
    g = [np.array([3.0, 4.0], np.float32), np.array([12.0], np.float32)]
    for kw, want in [({"clipnorm": 1.0}, [[0.6, 0.8], [1.0]]),
                     ({"global_clipnorm": 1.3}, [[0.3, 0.4], [1.2]]),
                     ({"clipvalue": 3.5}, [[3.0, 3.5], [3.5]])]:
        opt = O.SGD(1.0, **kw)
        out = UpdateGraph(opt, [(2,), (1,)]).run([np.zeros(2), np.zeros(1)], g, [{}, {}], 1.0, 1)
        for (w, _), ww in zip(out, want):
            np.testing.assert_allclose(-w, ww, rtol=1e-6)


def test_zero_gradients_with_global_clipnorm_stay_finite():
    opt = O.SGD(0.1, global_clipnorm=1.0)
    out = UpdateGraph(opt, [(3,)]).run([np.ones(3)], [np.zeros(3)], [{}], 0.1, 1)
    np.testing.assert_array_equal(out[0][0], np.ones(3, np.float32))


def test_weight_decay_uses_decayed_weight_in_update():
    # SGD with zero gradient: only the decay acts, w * (1 - wd * lr)
    opt = O.SGD(0.5, weight_decay=0.1)
    (w, _), = UpdateGraph(opt, [(2,)]).run([np.array([1.0, -2.0])], [np.zeros(2)], [{}], 0.5, 1)
    np.testing.assert_allclose(w, [0.95, -1.9], rtol=1e-6)


# -- a real training step ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,kw", [("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
                                     ("adam", {"global_clipnorm": 0.5}),
                                     ("adamw", {"clipvalue": 0.05}),
                                     ("rmsprop", {"centered": True, "momentum": 0.2, "clipnorm": 0.3}),
                                     ("adagrad", {"weight_decay": 0.02})])
def test_training_step_applies_the_rule(kind, kw):
    x_in = kdsl.Input((4,), name="x")
    model = kdsl.Model(x_in, {"y": L.Dense(2)(L.Dense(3, activation="tanh")(x_in))})
    opt = OPTIMIZER_CLASSES[kind](learning_rate=0.02, **kw)
    setup = TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, opt)
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    y = RNG.normal(size=(6, 2)).astype(np.float32)
    base = {"x": x, "target:y": y, "sample_weight:y": np.ones(6, np.float32),
            "lr": np.array(0.02, np.float32), "step": np.array(3.0, np.float32)}
    gproto, gstate = build_gradient_graph(model, setup)
    gsess = ort.InferenceSession(gproto.SerializeToString(), providers=["CPUExecutionProvider"])
    gres = dict(zip([o.name for o in gsess.get_outputs()],
                    gsess.run(None, {**base, **{s.name: s.value for s in gstate}})))
    prog = build_training(model, setup)
    slot_entries = {s.name: s for s in prog.state if s.kind == "slot"}
    weights = [s for s in prog.state if s.kind == "weight"]
    assert {n.split(":")[-1] for n in slot_entries} == {n for n, _ in opt.slots} or not opt.slots
    feeds = dict(base)
    for s in prog.state:
        feeds[s.name] = s.value
    for name, s in slot_entries.items():                 # non-trivial slot state
        if name.endswith(":average_gradient"):           # keep velocity - average^2 > 0
            feeds[name] = (RNG.normal(size=s.value.shape) * 0.05).astype(np.float32)
        else:
            feeds[name] = (np.abs(RNG.normal(size=s.value.shape)) * 0.1 + 0.05).astype(np.float32)
    sess = ort.InferenceSession(prog.train.SerializeToString(), providers=["CPUExecutionProvider"])
    res = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    ws = [feeds[w.name] for w in weights]
    gs = [gres[f"grad:{w.name}"] for w in weights]
    slots = [{k: feeds[f"{w.name}:{k}"] for k, _ in opt.slots} for w in weights]
    want = np_step(kind, kw, ws, gs, slots, f32(0.02), 3)
    for w, (ww, wsl) in zip(weights, want):
        assert np.all(np.isfinite(ww))
        np.testing.assert_allclose(res[f"{w.name}:new"], ww, rtol=2e-5, atol=1e-6)
        for k, v in wsl.items():
            np.testing.assert_allclose(res[f"{w.name}:{k}:new"], v, rtol=2e-5, atol=1e-6)


# -- defaults, slots, resolution ---------------------------------------------------------------------------
def test_keras_defaults():
    s = O.SGD()
    assert (s.learning_rate, s.momentum, s.nesterov, s.name, s.slots) == (0.01, 0.0, False, "SGD", ())
    a = O.Adam()
    assert (a.learning_rate, a.beta_1, a.beta_2, a.epsilon, a.amsgrad, a.weight_decay, a.name) == \
        (0.001, 0.9, 0.999, 1e-7, False, None, "adam")
    w = O.AdamW()
    assert (w.learning_rate, w.weight_decay, w.beta_1, w.beta_2, w.epsilon, w.amsgrad, w.name) == \
        (0.001, 0.004, 0.9, 0.999, 1e-7, False, "adamw")
    r = O.RMSprop()
    assert (r.learning_rate, r.rho, r.momentum, r.epsilon, r.centered, r.name) == (0.001, 0.9, 0.0, 1e-7, False,
                                                                                    "rmsprop")
    g = O.Adagrad()
    assert (g.learning_rate, g.initial_accumulator_value, g.epsilon, g.name) == (0.001, 0.1, 1e-7, "adagrad")
    for o in (s, a, w, r, g):
        assert (o.clipnorm, o.clipvalue, o.global_clipnorm, o.iterations) == (None, None, None, 0)


def test_slots_and_initial_values():
    assert [n for n, _ in O.SGD(momentum=0.9).slots] == ["momentum"]
    assert [n for n, _ in O.Adam(amsgrad=True).slots] == ["m", "v", "vhat"]
    assert [n for n, _ in O.RMSprop(momentum=0.1, centered=True).slots] == ["velocity", "momentum",
                                                                           "average_gradient"]
    init = O.Adagrad(initial_accumulator_value=0.25).initial_slots((2, 3))
    assert set(init) == {"accumulator"} and init["accumulator"].shape == (2, 3)
    np.testing.assert_array_equal(init["accumulator"], 0.25)
    assert O.Adam().initial_slots((4,))["m"].dtype == np.float32


def test_registry_matches_specs():
    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS)
    import inspect
    for key, cls in OPTIMIZER_CLASSES.items():
        # every constructor argument is one the .kd train section accepts, and vice versa
        assert set(inspect.signature(cls).parameters) == set(OPTIMIZERS[key]), key


@pytest.mark.parametrize("ident,cls", [("sgd", O.SGD), ("SGD", O.SGD), ("adam", O.Adam), ("Adam", O.Adam),
                                       ("adamw", O.AdamW), ("AdamW", O.AdamW), ("rmsprop", O.RMSprop),
                                       ("RMSprop", O.RMSprop), ("adagrad", O.Adagrad), ("Adagrad", O.Adagrad)])
def test_get_optimizer_names(ident, cls):
    assert type(get_optimizer(ident)) is cls
    assert type(get_optimizer(Spec(ident))) is cls


def test_get_optimizer_specs():
    o = get_optimizer(Spec("Adam", [0.05], {"beta_1": 0.8, "amsgrad": True, "clipnorm": None}))
    assert (o.learning_rate, o.beta_1, o.amsgrad, o.clipnorm) == (0.05, 0.8, True, None)
    o = get_optimizer(Spec("SGD", [], {"learning_rate": 1, "momentum": 0.5, "nesterov": True}))
    assert (o.learning_rate, o.momentum, o.nesterov) == (1.0, 0.5, True)
    assert get_optimizer(Spec("adamw", [], {"weight_decay": 0.1})).weight_decay == 0.1
    inst = O.RMSprop()
    assert get_optimizer(inst) is inst
    assert type(get_optimizer(O.Adagrad)) is O.Adagrad


def test_get_optimizer_with_schedule():
    sched = Spec("ExponentialDecay", [0.1], {"decay_steps": 10, "decay_rate": 0.5})
    o = get_optimizer(Spec("SGD", [], {"learning_rate": sched}))
    assert o.learning_rate == pytest.approx(0.1)
    o.iterations = 10
    assert o.learning_rate == pytest.approx(0.05)
    assert o.get_config()["learning_rate"]["class_name"] == "ExponentialDecay"


def test_learning_rate_is_assignable():
    o = O.Adam(0.01)
    o.learning_rate = 0.5
    assert o.learning_rate == 0.5 and o.get_config()["learning_rate"] == 0.5


def test_get_optimizer_errors():
    with pytest.raises(KdslError, match="Unknown optimizer"):
        get_optimizer("adamm")
    with pytest.raises(KdslError, match="Only one of"):
        O.Adam(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(KdslError, match="Only one of"):
        get_optimizer(Spec("sgd", [], {"clipnorm": 1.0, "global_clipnorm": 1.0}))
    with pytest.raises(KdslError, match="weight_decay"):
        O.AdamW(weight_decay=None)
    with pytest.raises(KdslError, match="momentum"):
        O.SGD(momentum=1.5)
    with pytest.raises(KdslError, match="Unknown argument 'rho'"):
        get_optimizer(Spec("adam", [], {"rho": 0.9}))
    with pytest.raises(KdslError, match="Could not interpret"):
        get_optimizer(42)


# -- use_ema (Keras's moving average of the weights) -------------------------------------------------------
def np_ema(new_w, ema, t, momentum):
    m = 0.0 if t == 1 else momentum
    return m * ema + (1 - m) * new_w


@pytest.mark.parametrize("kind,kw", [("sgd", {}), ("adam", {}), ("rmsprop", {"momentum": 0.5})])
@pytest.mark.parametrize("t", [1, 5])
def test_ema_slot_follows_keras(kind, kw, t):
    """``ema = m * ema + (1 - m) * new_w`` after the update, m = 0 at the first step (Keras's
    _update_model_variables_moving_average); the weights themselves are Keras's update."""
    cfg = dict(kw, use_ema=True, ema_momentum=0.9)
    opt = OPTIMIZER_CLASSES[kind](learning_rate=0.03, **cfg)
    assert "ema" in opt.initial_slots((2,))
    ws, gs, slots = random_state(opt, SHAPES)
    got = UpdateGraph(opt, SHAPES).run(ws, gs, slots, 0.03, t)
    plain = [{k: v for k, v in s.items() if k != "ema"} for s in slots]
    want = np_step(kind, kw, ws, gs, plain, f32(0.03), t)
    for (gw, gslots), (ww, _), s in zip(got, want, slots):
        np.testing.assert_allclose(gw, ww, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(gslots["ema"], np_ema(ww, s["ema"], t, 0.9), rtol=2e-5, atol=1e-6)


def test_ema_overwrite_frequency_replaces_the_weights_every_n_steps():
    opt = O.SGD(0.1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=3)
    graph = UpdateGraph(opt, [(4,)])
    ws, gs, slots = random_state(opt, [(4,)])
    for t in (2, 3, 6, 7):
        (w_new, s_new), = graph.run(ws, gs, slots, 0.1, t)
        plain = ws[0] - 0.1 * gs[0]
        ema = np_ema(plain, slots[0]["ema"], t, 0.5)
        np.testing.assert_allclose(s_new["ema"], ema, rtol=1e-6)
        np.testing.assert_allclose(w_new, ema if t % 3 == 0 else plain, rtol=1e-6)


def test_fit_with_use_ema_ends_with_the_averaged_weights():
    """Keras's fit ends with finalize_variable_values: the trained weights become their averages."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x @ rng.normal(size=(3, 1))).astype("float32")
    inp = kdsl.Input((3,), name="x")
    m = kdsl.Model(inp, {"y": L.Dense(1)(inp)}, seed=0)
    m.compile(optimizer=O.SGD(0.1, use_ema=True, ema_momentum=0.8), loss="mse")
    k0, b0 = m.get_weights()
    # the same steps by hand: full-batch SGD on mse, and the average of the weights
    w, b = k0.astype(np.float64), b0.astype(np.float64)
    ew, eb = np.zeros_like(w), np.zeros_like(b)
    for t in range(1, 6):
        d = 2 * (x @ w + b - y) / len(x)
        w, b = w - 0.1 * (x.T @ d), b - 0.1 * d.sum(0)
        ew, eb = np_ema(w, ew, t, 0.8), np_ema(b, eb, t, 0.8)
    m.fit(x, y, batch_size=64, epochs=5, shuffle=False, verbose=0)
    k, bb = m.get_weights()
    np.testing.assert_allclose(k, ew, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bb, eb, rtol=1e-4, atol=1e-6)
    assert not np.allclose(k, w, atol=1e-3)           # the average, not the last weights


def test_ema_arguments_are_checked():
    with pytest.raises(KdslError, match="`ema_momentum` must be a float between"):
        O.Adam(ema_momentum=1.5)
    with pytest.raises(KdslError, match="`ema_overwrite_frequency` must be a positive integer"):
        O.Adam(use_ema=True, ema_overwrite_frequency=0)


def test_use_ema_from_a_train_section_survives_a_checkpoint(tmp_path):
    src = """
model m { input x: float32[3]
          output y = x -> Dense(1) }
train m { loss = mse
          optimizer = Adam(learning_rate=0.01, use_ema=true, ema_momentum=0.9) }
"""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = x.sum(1, keepdims=True).astype("float32")
    m = kdsl.loads(src)
    m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert m.optimizer.use_ema and m.optimizer.ema_momentum == 0.9
    m.save(str(tmp_path / "ckpt"))
    again = kdsl.load_model(str(tmp_path / "ckpt"))
    assert again.optimizer.use_ema and again.optimizer.ema_momentum == 0.9
    saved = {k: v for k, v in m._trainer.slot_values().items() if k.endswith(":ema")}
    restored = again._pending_slots            # handed to the trainer at the next fit
    assert set(saved) == {"dense/kernel:ema", "dense/bias:ema"}
    for k, v in saved.items():
        np.testing.assert_array_equal(restored[k], v)


def test_step_scalars_are_computed_once_for_all_weights():
    """Adam's bias correction depends only on the step: one copy in the training graph, however
    many weights (common subexpressions are merged)."""
    x = kdsl.Input((5,), name="x")
    m = kdsl.Model(x, {"y": L.Dense(2)(L.Dense(4)(L.Dense(3)(x)))})
    prog = build_training(m, TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, O.Adam(1e-3)))
    ops = [n.op_type for n in prog.train.graph.node if n.name.startswith("optimizer/")]
    assert ops.count("Pow") == 2                                     # beta_1^t and beta_2^t, once


@pytest.mark.parametrize("kind,kw", [("Adam", dict(amsgrad=True)), ("AdamW", {}), ("SGD", dict(momentum=0.9)),
                                     ("RMSprop", dict(centered=True, momentum=0.5)), ("Adagrad", {})])
def test_small_weights_are_updated_together_with_the_same_values(kind, kw, monkeypatch):
    """Weights of at most GROUP_MAX elements share one update (concatenated, then split back):
    the new weights and slots are exactly those of one update per weight."""
    x = kdsl.Input((5,), name="x")
    m = kdsl.Model(x, {"y": L.Dense(2)(L.Dense(30)(L.Dense(4)(x)))}, seed=3)     # kernels 20, 120, 60
    rng = np.random.default_rng(5)
    feeds = {"x": rng.normal(size=(6, 5)).astype("float32"), "target:y": rng.normal(size=(6, 2)).astype("float32"),
             "sample_weight:y": np.ones(6, np.float32), "lr": np.array(0.1, np.float32),
             "step": np.array(3, np.float32)}

    def run(group_max):
        monkeypatch.setattr(O, "GROUP_MAX", group_max)
        opt = getattr(O, kind)(use_ema=True, **kw)
        prog = build_training(m, TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, opt))
        state = {s.name: s.value if s.kind != "slot" else rng.uniform(0.1, 1, s.value.shape).astype("float32")
                 for s in prog.state}
        sess = ort.InferenceSession(prog.train.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        ops = [n.op_type for n in prog.train.graph.node if n.name.startswith("optimizer/")]
        return dict(zip(names, sess.run(None, {**feeds, **state}))), ops

    default = O.GROUP_MAX
    rng = np.random.default_rng(5)
    apart, ops_apart = run(0)
    rng = np.random.default_rng(5)
    together, ops_together = run(default)
    assert apart.keys() == together.keys() and sum(k.endswith(":new") for k in apart) >= 12
    for k in apart:
        np.testing.assert_array_equal(apart[k], together[k], err_msg=k)
    assert "Concat" in ops_together and "Concat" not in ops_apart and len(ops_together) < len(ops_apart)
