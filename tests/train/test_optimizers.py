"""Optimizers: one step (and several for Adam, Adadelta, Adamax, Nadam, Lion and Ftrl) of each
update rule, emitted as ONNX with the gradients fed as graph inputs and run in onnxruntime, against
NumPy implementations of Keras 3's update rules (gradient clipping, weight decay, then the rule);
the same inside a real training step and with the small weights updated together; defaults and
resolution."""
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


def np_adadelta(w, g, s, lr, t, rho=0.95, epsilon=1e-7, **_):
    acc_g = rho * s["accumulated_grad"] + (1 - rho) * g * g
    delta = -np.sqrt(s["accumulated_delta_var"] + epsilon) * g / np.sqrt(acc_g + epsilon)
    acc_d = rho * s["accumulated_delta_var"] + (1 - rho) * delta * delta
    return w + lr * delta, {"accumulated_grad": acc_g, "accumulated_delta_var": acc_d}


def np_adamax(w, g, s, lr, t, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **_):
    m = s["m"] + (g - s["m"]) * (1 - beta_1)
    u = np.maximum(beta_2 * s["u"], np.abs(g))
    return w - lr * m / ((1 - f32(beta_1) ** t) * (u + epsilon)), {"m": m, "u": u}


def np_nadam(w, g, s, lr, t, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **_):
    """Keras's u_product is a running product, one factor per step: here the loop."""
    def u(k):
        return f32(beta_1) * (1 - 0.5 * f32(0.96) ** k)
    u_product = 1.0
    for k in range(1, t + 1):
        u_product *= u(k)
    u_product_next = u_product * u(t + 1)
    m = s["m"] + (g - s["m"]) * (1 - beta_1)
    v = s["v"] + (g * g - s["v"]) * (1 - beta_2)
    m_hat = u(t + 1) * m / (1 - u_product_next) + (1 - u(t)) * g / (1 - u_product)
    v_hat = v / (1 - f32(beta_2) ** t)
    return w - m_hat * lr / (np.sqrt(v_hat) + epsilon), {"m": m, "v": v}


def np_lion(w, g, s, lr, t, beta_1=0.9, beta_2=0.99, **_):
    mom = s["momentum"]
    new_w = w - lr * np.sign(mom * beta_1 + g * (1 - beta_1))
    return new_w, {"momentum": mom * beta_2 + g * (1 - beta_2)}


def np_ftrl(w, g, s, lr, t, learning_rate_power=-0.5, l1_regularization_strength=0.0,
            l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0, beta=0.0, **_):
    p, l1 = learning_rate_power, l1_regularization_strength
    l2 = l2_regularization_strength + beta / (2 * lr)
    g_s = g + 2 * l2_shrinkage_regularization_strength * w
    n, z = s["accumulator"], s["linear"]
    n_new = n + g * g
    z = z + g_s - (n_new ** -p - n ** -p) / lr * w
    quadratic = n_new ** -p / lr + 2 * l2
    return (np.clip(z, -l1, l1) - z) / quadratic, {"accumulator": n_new, "linear": z}


RULES = {"sgd": np_sgd, "adam": np_adam, "adamw": np_adam, "rmsprop": np_rmsprop, "adagrad": np_adagrad,
         "adadelta": np_adadelta, "adamax": np_adamax, "nadam": np_nadam, "lion": np_lion, "ftrl": np_ftrl}


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

    def __init__(self, opt, shapes, opset=17, grouped=False):
        """``grouped``: pass the shapes to emit_updates, so that the weights of at most GROUP_MAX
        elements are updated together (concatenated)."""
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
        updates = opt.emit_updates(e, params, "lr", "step",
                                   {f"w{i}": tuple(s) for i, s in enumerate(shapes)} if grouped else None)
        self.op_types = [n.op_type for n in e.nodes]
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
            elif name in ("v", "vhat", "velocity", "accumulator", "u", "accumulated_grad",
                          "accumulated_delta_var"):                          # second moments, norms: >= 0
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
        np.testing.assert_allclose(gw, ww, rtol=rtol, atol=scaled_atol(atol, ww))
        assert set(gs_) == set(ws_)
        for k in ws_:
            np.testing.assert_allclose(gs_[k], ws_[k], rtol=rtol, atol=scaled_atol(atol, ws_[k]), err_msg=k)
    return got


def scaled_atol(atol, want):
    """``atol``, or float32's resolution of the array's largest element if larger: an element
    that is the difference of large terms (Ftrl's ``linear``: ``g - sigma * w`` with ``sigma`` ~
    1/lr) carries float32 rounding of those terms."""
    return max(atol, 1e-7 * float(np.max(np.abs(want), initial=0.0)))


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
    ("adadelta", {}), ("adadelta", {"rho": 0.8, "epsilon": 1e-6}), ("adadelta", {"epsilon": 0.5}),
    ("adamax", {}), ("adamax", {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 0.5}),
    ("nadam", {}), ("nadam", {"beta_1": 0.5, "beta_2": 0.67, "epsilon": 1e-5}), ("nadam", {"epsilon": 0.5}),
    ("lion", {}), ("lion", {"beta_1": 0.5, "beta_2": 0.8}),
    ("ftrl", {}), ("ftrl", {"learning_rate_power": -0.2, "initial_accumulator_value": 0.4,
                            "l1_regularization_strength": 0.05, "l2_regularization_strength": 0.15,
                            "l2_shrinkage_regularization_strength": 0.01, "beta": 0.3}),
    ("ftrl", {"learning_rate_power": 0.0, "initial_accumulator_value": 0.0, "l1_regularization_strength": 0.5}),
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
                                     ("adagrad", {"weight_decay": 0.02}),
                                     ("adadelta", {"rho": 0.9, "clipvalue": 0.05}),
                                     ("adamax", {"weight_decay": 0.02, "global_clipnorm": 0.5}),
                                     ("nadam", {"clipnorm": 0.3}), ("lion", {"weight_decay": 0.1}),
                                     ("ftrl", {"l1_regularization_strength": 0.001, "beta": 0.1})])
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
                                       ("RMSprop", O.RMSprop), ("adagrad", O.Adagrad), ("Adagrad", O.Adagrad),
                                       ("adadelta", O.Adadelta), ("Adadelta", O.Adadelta), ("adamax", O.Adamax),
                                       ("Adamax", O.Adamax), ("nadam", O.Nadam), ("Nadam", O.Nadam),
                                       ("lion", O.Lion), ("Lion", O.Lion), ("ftrl", O.Ftrl), ("Ftrl", O.Ftrl)])
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
                                     ("RMSprop", dict(centered=True, momentum=0.5)), ("Adagrad", {}),
                                     ("Adadelta", {}), ("Adamax", {}), ("Nadam", {}), ("Lion", {}),
                                     ("Ftrl", dict(l1_regularization_strength=0.01))])
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


# -- Adadelta, Adamax, Nadam, Lion, Ftrl ---------------------------------------------------------------------
NEW_OPTS = [("adadelta", {"rho": 0.9}), ("adadelta", {"weight_decay": 0.05, "clipnorm": 0.5}),
            ("adamax", {}), ("adamax", {"weight_decay": 0.05, "global_clipnorm": 0.7}),
            ("nadam", {}), ("nadam", {"weight_decay": 0.05, "clipnorm": 0.5}), ("nadam", {"clipvalue": 0.3}),
            ("lion", {}), ("lion", {"weight_decay": 0.5, "clipnorm": 0.5}),
            ("ftrl", {"l1_regularization_strength": 0.01, "l2_regularization_strength": 0.1, "beta": 0.2}),
            ("ftrl", {"weight_decay": 0.05, "clipnorm": 0.5, "l2_shrinkage_regularization_strength": 0.1})]
#: small weights (updated together when grouped) and one above GROUP_MAX (updated on its own)
GROUP_SHAPES = [(3, 4), (5,), (2, 3, 2), (7, 1), (90, 100)]


@pytest.mark.parametrize("grouped", [False, True], ids=["apart", "grouped"])
@pytest.mark.parametrize("kind,kw", NEW_OPTS)
def test_new_optimizers_over_several_steps(kind, kw, grouped):
    """Six steps from the initial slots, new gradients each step, against the NumPy rules fed
    their own (float64) state; ``grouped``: the four small weights are updated together."""
    assert int(np.prod(GROUP_SHAPES[-1])) > O.GROUP_MAX
    lr = 0.1 if kind == "ftrl" else 0.01
    # Ftrl's ``linear`` sums ``g - sigma * w`` over the steps: float32 rounding at the scale of its terms
    rel_atol = 2e-6 if kind == "ftrl" else 1e-7
    opt = OPTIMIZER_CLASSES[kind](learning_rate=lr, **kw)
    graph = UpdateGraph(opt, GROUP_SHAPES, grouped=grouped)
    assert ("Concat" in graph.op_types) == grouped
    ws, _, slots = random_state(opt, GROUP_SHAPES, zero_slots=True)
    ref_ws, ref_slots = [w.astype(np.float64) for w in ws], slots
    for t in range(1, 7):
        gs = [RNG.normal(size=s).astype(np.float32) for s in GROUP_SHAPES]
        got = graph.run(ws, gs, slots, lr, t)
        want = np_step(kind, kw, ref_ws, gs, ref_slots, f32(lr), t)
        for (gw, gsl), (ww, wsl) in zip(got, want):
            atol = max(1e-7, rel_atol * float(np.max(np.abs(ww))))
            np.testing.assert_allclose(gw, ww, rtol=2e-6, atol=atol, err_msg=f"step {t}")
            for k in wsl:
                atol = max(1e-7, rel_atol * float(np.max(np.abs(wsl[k]))))
                np.testing.assert_allclose(gsl[k], wsl[k], rtol=2e-6, atol=atol, err_msg=f"{k}, step {t}")
        ws, slots = [w for w, _ in got], [s for _, s in got]
        ref_ws, ref_slots = [w for w, _ in want], [s for _, s in want]


def test_nadam_u_product_follows_keras_running_product():
    """Keras's ``u_product`` is one variable multiplied every step by ``beta_1 * (1 - 0.5 * 0.96^t)``;
    here it is computed from the step (a table of the products, constant past its end). Keras's
    beta_1 and 0.96 are float32 (the product is taken in float64 here)."""
    opt = O.Nadam(beta_1=0.999)
    e = Emitter(17)
    e.reserve("step")
    outs = opt._momentum_schedule(e, "step")
    for o, name in zip(outs, ("u_t", "u_next", "u_product", "u_product_next")):
        e.op("Identity", [o], out=name)
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
           for n in ("u_t", "u_next", "u_product", "u_product_next")]
    model = make_model(helper.make_graph(e.nodes, "nadam", [helper.make_tensor_value_info(
        "step", TensorProto.FLOAT, [])], vis), 17)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    running, checked = 1.0, (1, 2, 3, 10, 100, O.NADAM_TABLE - 1, O.NADAM_TABLE, O.NADAM_TABLE + 1, 1000, 5000)
    b1, decay = f32(0.999), f32(0.96)
    for t in range(1, 5001):
        u_t = b1 * (1 - 0.5 * decay ** t)
        running *= u_t
        if t in checked:
            u_next = b1 * (1 - 0.5 * decay ** (t + 1))
            got = sess.run(None, {"step": np.array(t, np.float32)})
            np.testing.assert_allclose([float(x) for x in got], [u_t, u_next, running, running * u_next],
                                       rtol=2e-6, atol=1e-30, err_msg=f"step {t}")


@pytest.mark.parametrize("t", [1, 2, 599, 600, 601, 2000])
def test_nadam_steps_around_the_end_of_the_table(t):
    opt = O.Nadam(learning_rate=0.01, beta_1=0.999, beta_2=0.9999)
    ws, gs, slots = random_state(opt, SHAPES)
    assert_step("nadam", {"beta_1": 0.999, "beta_2": 0.9999}, opt, ws, gs, slots, 0.01, t, rtol=2e-6, atol=1e-7)


#: Keras 3's own test numbers (keras/src/optimizers/*_test.py): one step of lr=0.5 from
#: w = [1, 2, 3, 4] with g = [1, 6, 7, 2]; then a first step with g = 0.01 and five with
#: g = [0.1, ..., 1.0], the weights before each of the five
KERAS_SINGLE_STEP = {
    "adadelta": [0.9993, 1.9993, 2.9993, 3.9993], "adamax": [0.5, 1.5, 2.5, 3.5],
    "nadam": [0.4686, 1.4686, 2.4686, 3.4686], "lion": [0.5, 1.5, 2.5, 3.5],
    "ftrl": [0.2218, 1.3954, 2.3651, 2.8814],
}
KERAS_GOLDEN = {
    "adadelta": (dict(learning_rate=1.0, rho=0.8, epsilon=1e-6),
                 np.tile([[0.9978], [0.9947], [0.9915], [0.9882], [0.9849]], (1, 10))),
    "adamax": (dict(learning_rate=0.2, beta_1=0.85, beta_2=0.95, epsilon=1e-6), np.array(
        [[0.8] * 10,
         [0.6827, 0.6873, 0.6888, 0.6896, 0.6901, 0.6904, 0.6906, 0.6908, 0.6909, 0.691],
         [0.5333, 0.5407, 0.5431, 0.5444, 0.5451, 0.5456, 0.546, 0.5462, 0.5464, 0.5466],
         [0.368, 0.3773, 0.3804, 0.382, 0.3829, 0.3835, 0.384, 0.3843, 0.3846, 0.3848],
         [0.1933, 0.204, 0.2076, 0.2094, 0.2105, 0.2112, 0.2117, 0.2121, 0.2124, 0.2126]])),
    "nadam": (dict(learning_rate=0.5, beta_1=0.5, beta_2=0.67, epsilon=1e-5), np.array(
        [[0.4281] * 10,
         [-0.1738, -0.1731, -0.1726, -0.1723, -0.1721, -0.172, -0.1719, -0.1718, -0.1718, -0.1717],
         [-0.7115, -0.7103, -0.7096, -0.7092, -0.709, -0.7088, -0.7086, -0.7085, -0.7085, -0.7084],
         [-1.2335, -1.2322, -1.2313, -1.2309, -1.2306, -1.2304, -1.2302, -1.2301, -1.23, -1.2299],
         [-1.7492, -1.7478, -1.7469, -1.7464, -1.7461, -1.7459, -1.7457, -1.7456, -1.7455, -1.7454]])),
    "lion": ({}, np.tile([[0.999], [0.998], [0.997], [0.996], [0.995]], (1, 10))),
    "ftrl": (dict(learning_rate=0.05, learning_rate_power=-0.2, initial_accumulator_value=0.4,
                  l1_regularization_strength=0.05, l2_regularization_strength=0.15,
                  l2_shrinkage_regularization_strength=0.01, beta=0.3), np.array(
        [[0.0] * 10,
         [-0.0034, -0.0077, -0.0118, -0.0157, -0.0194, -0.023, -0.0263, -0.0294, -0.0325, -0.0354],
         [-0.0078, -0.0162, -0.0242, -0.0317, -0.0387, -0.0454, -0.0516, -0.0575, -0.0631, -0.0685],
         [-0.0121, -0.0246, -0.0363, -0.0472, -0.0573, -0.0668, -0.0757, -0.0842, -0.0922, -0.0999],
         [-0.0164, -0.0328, -0.0481, -0.0623, -0.0753, -0.0875, -0.099, -0.1098, -0.1201, -0.1299]])),
}


@pytest.mark.parametrize("kind", sorted(KERAS_GOLDEN))
def test_new_optimizers_reproduce_keras_numbers(kind):
    opt = OPTIMIZER_CLASSES[kind](learning_rate=0.5)
    init = {k: v.reshape(-1)[0] for k, v in opt.initial_slots((1,)).items()}
    (w, _), = UpdateGraph(opt, [(4,)]).run([np.array([1.0, 2, 3, 4])], [np.array([1.0, 6, 7, 2])],
                                          [{k: np.full(4, v) for k, v in init.items()}], 0.5, 1)
    np.testing.assert_allclose(w, KERAS_SINGLE_STEP[kind], rtol=1e-4, atol=1e-4)

    kw, golden = KERAS_GOLDEN[kind]
    opt = OPTIMIZER_CLASSES[kind](**kw)
    graph = UpdateGraph(opt, [(10,)])
    (x, slots), = graph.run([np.ones(10)], [np.full(10, 0.01)], [opt.initial_slots((10,))], opt.learning_rate, 1)
    for i in range(5):
        np.testing.assert_allclose(x, golden[i], rtol=5e-4, atol=5e-4, err_msg=f"step {i + 2}")
        (x, slots), = graph.run([x], [np.arange(1, 11) / 10], [slots], opt.learning_rate, i + 2)


@pytest.mark.parametrize("kind", ["adadelta", "adamax", "nadam"])
def test_new_optimizers_agree_with_torch(kind):
    """Where torch's rule is Keras's: Adadelta; Adamax with epsilon=0 (torch adds epsilon to |g|
    inside the max, Keras to the norm after it); NAdam with momentum_decay=1 (torch's
    ``0.96^(t * momentum_decay)``, Keras 3's ``0.96^t``)."""
    torch = pytest.importorskip("torch")
    shape, lr = (4, 5), 0.05
    if kind == "adadelta":
        opt, make = O.Adadelta(lr, rho=0.9, epsilon=1e-6), lambda p: torch.optim.Adadelta(p, lr, rho=0.9, eps=1e-6)
    elif kind == "adamax":
        opt, make = O.Adamax(lr, beta_1=0.8, beta_2=0.95, epsilon=0.0), \
            lambda p: torch.optim.Adamax(p, lr, betas=(0.8, 0.95), eps=0.0)
    else:
        opt, make = O.Nadam(lr, beta_1=0.85, beta_2=0.99), \
            lambda p: torch.optim.NAdam(p, lr, betas=(0.85, 0.99), eps=1e-7, momentum_decay=1.0)
    w0 = RNG.normal(size=shape)
    param = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    topt = make([param])
    graph = UpdateGraph(opt, [shape])
    ws, slots = [w0.astype(np.float32)], [opt.initial_slots(shape)]
    for t in range(1, 9):
        g = RNG.normal(size=shape)
        param.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
        (w, s), = graph.run(ws, [g], slots, lr, t)
        np.testing.assert_allclose(w, param.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=f"step {t}")
        ws, slots = [w], [s]


KD_SPELLINGS = [
    ("Adadelta(learning_rate=1.0)", "adadelta", {"learning_rate": 1.0}),
    ("Adadelta(0.5, rho=0.9, epsilon=1e-6)", "adadelta", {"learning_rate": 0.5, "rho": 0.9, "epsilon": 1e-6}),
    ("Adamax(learning_rate=0.01, beta_2=0.99, weight_decay=0.01)", "adamax",
     {"learning_rate": 0.01, "beta_2": 0.99, "weight_decay": 0.01}),
    ("nadam", "nadam", {}),
    ("Nadam(0.01, beta_1=0.8, clipnorm=0.5)", "nadam", {"learning_rate": 0.01, "beta_1": 0.8, "clipnorm": 0.5}),
    ("Lion(learning_rate=0.003, beta_1=0.8, weight_decay=0.1)", "lion",
     {"learning_rate": 0.003, "beta_1": 0.8, "weight_decay": 0.1}),
    ("Ftrl(0.1, l1_regularization_strength=0.01, learning_rate_power=-0.3)", "ftrl",
     {"learning_rate": 0.1, "l1_regularization_strength": 0.01, "learning_rate_power": -0.3}),
]


@pytest.mark.parametrize("spelling,kind,kw", KD_SPELLINGS, ids=[s for s, _, _ in KD_SPELLINGS])
def test_new_optimizers_from_a_train_section(spelling, kind, kw):
    """``optimizer = Adadelta(learning_rate=1.0)`` in a ``.kd`` train section: the optimizer and
    three steps of fit, against the NumPy rule on the hand-computed gradients of a linear model."""
    src = f"""
model m {{ input x: float32[3]
          output y = x -> Dense(1) }}
train m {{ loss = mse
          optimizer = {spelling} }}
"""
    m = kdsl.loads(src)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(24, 3)).astype("float32")
    y = (x @ rng.normal(size=(3, 1)) + 0.5).astype("float32")
    k0, b0 = m.get_weights()
    ws = [k0.astype(np.float64), b0.astype(np.float64)]
    ref = OPTIMIZER_CLASSES[kind](**kw)
    slots = [{k: v.astype(np.float64) for k, v in ref.initial_slots(w.shape).items()} for w in ws]
    lr = f32(ref.learning_rate)
    for t, i in enumerate(range(0, 24, 8), start=1):
        xb, yb = x[i:i + 8].astype(np.float64), y[i:i + 8].astype(np.float64)
        d = 2 * (xb @ ws[0] + ws[1] - yb) / len(xb)
        out = np_step(kind, kw, ws, [xb.T @ d, d.sum(0)], slots, lr, t)
        ws, slots = [w for w, _ in out], [s for _, s in out]
    m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert type(m.optimizer) is OPTIMIZER_CLASSES[kind] and m.optimizer.iterations == 3
    for k, v in kw.items():
        assert (m.optimizer.learning_rate if k == "learning_rate" else getattr(m.optimizer, k)) == pytest.approx(v)
    for got, want in zip(m.get_weights(), ws):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_new_optimizers_keras_defaults_and_slots():
    d = O.Adadelta()
    assert (d.learning_rate, d.rho, d.epsilon, d.name) == (0.001, 0.95, 1e-7, "adadelta")
    assert [n for n, _ in d.slots] == ["accumulated_grad", "accumulated_delta_var"]
    a = O.Adamax()
    assert (a.learning_rate, a.beta_1, a.beta_2, a.epsilon, a.name) == (0.001, 0.9, 0.999, 1e-7, "adamax")
    assert [n for n, _ in a.slots] == ["m", "u"]
    na = O.Nadam()
    assert (na.learning_rate, na.beta_1, na.beta_2, na.epsilon, na.name) == (0.001, 0.9, 0.999, 1e-7, "nadam")
    assert [n for n, _ in na.slots] == ["m", "v"]
    lion = O.Lion()
    assert (lion.learning_rate, lion.beta_1, lion.beta_2, lion.name) == (0.001, 0.9, 0.99, "lion")
    assert [n for n, _ in lion.slots] == ["momentum"]
    f = O.Ftrl()
    assert (f.learning_rate, f.learning_rate_power, f.initial_accumulator_value, f.l1_regularization_strength,
            f.l2_regularization_strength, f.l2_shrinkage_regularization_strength, f.beta, f.name) == \
        (0.001, -0.5, 0.1, 0.0, 0.0, 0.0, 0.0, "ftrl")
    init = O.Ftrl(initial_accumulator_value=0.3).initial_slots((2, 2))
    np.testing.assert_array_equal(init["accumulator"], np.float32(0.3))
    np.testing.assert_array_equal(init["linear"], 0.0)
    for o in (d, a, na, lion, f):
        assert (o.weight_decay, o.clipnorm, o.clipvalue, o.global_clipnorm, o.use_ema, o.iterations) == \
            (None, None, None, None, False, 0)
        cfg = o.get_config()
        assert cfg["name"] == o.name and cfg["learning_rate"] == 0.001
        assert type(o)(**cfg).get_config() == cfg                                # round trip
    assert O.Nadam(beta_1=0.5).get_config()["beta_1"] == 0.5
    assert O.Lion(beta_2=0.7).get_config() | {"beta_2": 0.99} == O.Lion().get_config()
    for name in ("Adadelta", "Adamax", "Nadam", "Lion", "Ftrl"):
        assert getattr(kdsl.optimizers, name) is getattr(O, name)
        assert name in kdsl.optimizers.__all__ and name in O.__all__


@pytest.mark.parametrize("make,message", [
    (lambda: O.Adadelta(rho=1.5), "`rho` must be a float between [0, 1]. Received: rho=1.5"),
    (lambda: O.Adadelta(epsilon=-1e-7), "`epsilon` must be a non-negative float. Received: epsilon=-1e-07"),
    (lambda: O.Adamax(beta_1=-0.1), "`beta_1` must be a float between [0, 1]. Received: beta_1=-0.1"),
    (lambda: O.Nadam(beta_2="high"), "`beta_2` must be a float. Received: beta_2='high'"),
    (lambda: O.Nadam(beta_2=True), "`beta_2` must be a float. Received: beta_2=True"),
    (lambda: O.Lion(beta_1=0.0), "`beta_1` must be a float in the range (0, 1]; with beta_1=0 Lion degenerates "
                                 "to SignSGD. Received: beta_1=0.0"),
    (lambda: O.Lion(beta_1=1.1), "Received: beta_1=1.1"),
    (lambda: O.Lion(beta_2=2), "`beta_2` must be a float between [0, 1]. Received: beta_2=2"),
    (lambda: O.Ftrl(learning_rate_power=0.5), "`learning_rate_power` must be a float less than or equal to 0. "
                                              "Received: learning_rate_power=0.5"),
    (lambda: O.Ftrl(initial_accumulator_value=-0.1),
     "`initial_accumulator_value` must be a non-negative float. Received: initial_accumulator_value=-0.1"),
    (lambda: O.Ftrl(l1_regularization_strength=-1),
     "`l1_regularization_strength` must be a non-negative float. Received: l1_regularization_strength=-1"),
    (lambda: O.Ftrl(l2_shrinkage_regularization_strength=-1), "l2_shrinkage_regularization_strength=-1"),
    (lambda: O.Adadelta(clipnorm=1.0, global_clipnorm=1.0), "Only one of"),
    (lambda: get_optimizer(Spec("Lion", [], {"epsilon": 1e-7})), "Unknown argument 'epsilon' for optimizer 'lion'"),
    (lambda: get_optimizer(Spec("Nadam", [], {"amsgrad": True})), "Unknown argument 'amsgrad' for optimizer 'nadam'"),
    (lambda: get_optimizer(Spec("Adadelta", [], {"rho": "x"})), "adadelta(rho=...) expects a float. Received: 'x'"),
    (lambda: get_optimizer("Nadamm"), "Unknown optimizer 'Nadamm'"),
])
def test_new_optimizers_argument_errors(make, message):
    with pytest.raises(KdslError) as ei:
        make()
    assert message in str(ei.value)


def test_new_optimizer_errors_in_a_train_section_name_the_place():
    src = "model m { input x: float32[3]\n          output y = x -> Dense(1) }\n" \
          "train m { loss = mse\n          optimizer = Lion(learning_rate=0.1, rho=0.9) }\n"
    with pytest.raises(KdslError) as ei:
        kdsl.loads(src)
    assert "Unknown argument 'rho' for optimizer 'lion'" in str(ei.value) and ":4:" in str(ei.value)


@pytest.mark.parametrize("name", ["Adadelta", "Adamax", "Nadam", "Lion", "Ftrl"])
def test_ort_training_engine_refuses_the_new_optimizers(name):
    from kdsl.runtime import ort_training as ortt

    x = kdsl.Input((4,), name="x")
    m = kdsl.Model(x, {"y": L.Dense(2)(x)})
    setup = TrainSetup({"y": get_loss("mse")}, {}, {"y": []}, getattr(O, name)())
    with pytest.raises(KdslError) as ei:
        ortt.check_supported(m, setup)
    text = str(ei.value)
    assert f'engine="ort-training" does not support the optimizer {name}' in text and 'engine="portable"' in text


@pytest.mark.parametrize("make", [lambda: O.Nadam(0.01, beta_1=0.8), lambda: O.Ftrl(0.05, beta=0.2,
                                                                                     l1_regularization_strength=0.01)],
                         ids=["nadam", "ftrl"])
def test_new_optimizers_survive_a_checkpoint(make, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = x.sum(1, keepdims=True).astype("float32")
    inp = kdsl.Input((3,), name="x")
    m = kdsl.Model(inp, {"y": L.Dense(1)(inp)}, seed=0)
    m.compile(optimizer=make(), loss="mse")
    m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    m.save(str(tmp_path / "ckpt"))
    again = kdsl.load_model(str(tmp_path / "ckpt"))
    assert type(again.optimizer) is type(m.optimizer)
    assert again.optimizer.get_config() == m.optimizer.get_config()
    assert again.optimizer.iterations == 2
    saved = m._trainer.slot_values()
    assert set(saved) == {f"dense/{w}:{s}" for w in ("kernel", "bias") for s, _ in m.optimizer.slots}
    for k, v in saved.items():
        np.testing.assert_array_equal(again._pending_slots[k], v)
