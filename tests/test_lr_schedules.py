"""Learning-rate schedules against values computed by hand from Keras 3's formulas."""
import math

import numpy as np
import pytest

from kdsl.errors import KdslError, Span
from kdsl.optimizers import schedules
from kdsl.optimizers.schedules import CosineDecay, ExponentialDecay, PiecewiseConstantDecay, from_spec
from kdsl.train.specs import SCHEDULES, Spec


def test_package_exports_schedules_beside_the_optimizers():
    import kdsl.optimizers

    assert kdsl.optimizers.schedules is schedules
    assert {"schedules", "Adam", "SGD"} <= set(kdsl.optimizers.__all__)


def test_exponential_decay():
    lr = ExponentialDecay(0.1, decay_steps=100, decay_rate=0.5)
    assert lr(0) == pytest.approx(0.1)
    assert lr(50) == pytest.approx(0.1 * math.sqrt(0.5))          # 0.0707106781
    assert lr(100) == pytest.approx(0.05)
    assert lr(250) == pytest.approx(0.01767766953, rel=1e-9)        # 0.1 * 0.5 ** 2.5
    assert lr(np.int64(100)) == pytest.approx(0.05)
    assert isinstance(lr(1), float)
    stair = ExponentialDecay(0.1, 100, 0.5, staircase=True)
    assert [stair(s) for s in (0, 99, 100, 199, 250)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_piecewise_constant_decay():
    lr = PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    # values[0] up to and including boundaries[0], then values[1] up to boundaries[1], then values[2]
    assert [lr(s) for s in (0, 10, 10.5, 11, 20, 21, 10 ** 6)] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.1, 0.1]
    assert PiecewiseConstantDecay([], [0.3])(5) == 0.3


def test_cosine_decay():
    lr = CosineDecay(1.0, decay_steps=100)
    assert [lr(s) for s in (0, 50, 100, 150)] == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-12)
    assert lr(25) == pytest.approx(0.8535533906, rel=1e-9)          # 0.5 * (1 + cos(pi / 4))
    floor = CosineDecay(2.0, 100, alpha=0.1)
    assert [floor(s) for s in (0, 50, 100, 1000)] == pytest.approx([2.0, 1.1, 0.2, 0.2])   # 2 * (0.9 * c + 0.1)


def test_cosine_decay_with_warmup():
    lr = CosineDecay(0.0, decay_steps=100, warmup_target=1.0, warmup_steps=10)
    # linear from 0 to 1 over 10 steps, then cosine from 1.0 over 100 steps, then flat
    assert [lr(s) for s in (0, 5, 10, 60, 110, 500)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0], abs=1e-12)
    lr = CosineDecay(0.1, decay_steps=10, alpha=0.5, warmup_target=0.3, warmup_steps=4)
    assert lr(2) == pytest.approx(0.2)
    assert lr(9) == pytest.approx(0.3 * (0.5 * 0.5 * (1 + math.cos(math.pi * 0.5)) + 0.5))   # 0.225
    assert lr(14) == pytest.approx(0.15)
    no_warmup_steps = CosineDecay(0.1, 10, warmup_target=0.3)
    assert no_warmup_steps(0) == pytest.approx(0.3)      # warmup_steps=0: decays from the target at once


def test_config_round_trip():
    for s in (ExponentialDecay(0.1, 10, 0.9, staircase=True), PiecewiseConstantDecay([5], [0.1, 0.01]),
              CosineDecay(0.1, 100, alpha=0.05, warmup_target=0.2, warmup_steps=7)):
        cfg = s.get_config()
        again = type(s).from_config(cfg)
        assert again.get_config() == cfg
        assert [again(i) for i in range(0, 120, 7)] == [s(i) for i in range(0, 120, 7)]
    assert ExponentialDecay(0.1, 10, 0.9).get_config() == {
        "initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.9, "staircase": False,
        "name": "ExponentialDecay"}
    assert PiecewiseConstantDecay([5], [1, 2]).get_config()["name"] == "PiecewiseConstant"
    assert set(CosineDecay(0.1, 10).get_config()) == {"initial_learning_rate", "decay_steps", "alpha", "name",
                                                       "warmup_target", "warmup_steps"}
    assert repr(ExponentialDecay(0.1, 10, 0.9)) == \
        "ExponentialDecay(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.9, staircase=False)"


def test_argument_errors():
    with pytest.raises(KdslError, match=r"Argument `decay_steps` must be > 0, received: decay_steps=0"):
        ExponentialDecay(0.1, 0, 0.9)
    with pytest.raises(KdslError, match=r"must be > 0, received: decay_steps=-5"):
        CosineDecay(0.1, -5)
    with pytest.raises(KdslError, match="must be a finite number. Received: initial_learning_rate='a'"):
        CosineDecay("a", 5)
    with pytest.raises(KdslError, match="length of boundaries should be 1 less than the length of values"):
        PiecewiseConstantDecay([1, 2], [0.1, 0.2])
    with pytest.raises(KdslError, match="boundaries must be increasing"):
        PiecewiseConstantDecay([2, 1], [0.1, 0.2, 0.3])


def test_from_spec_builds_every_schedule_the_language_accepts():
    assert set(SCHEDULES) == {"ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay"}
    lr = from_spec(Spec("ExponentialDecay", [0.1, 100], {"decay_rate": 0.5, "staircase": True}))
    assert isinstance(lr, ExponentialDecay) and lr(150) == pytest.approx(0.05)
    lr = from_spec(Spec("PiecewiseConstantDecay", [], {"boundaries": [10], "values": [1.0, 0.1]}))
    assert lr(11) == 0.1
    lr = from_spec(Spec("CosineDecay", [], {"initial_learning_rate": 0.0, "decay_steps": 100,
                                             "warmup_target": 1.0, "warmup_steps": 10}))
    assert lr(5) == pytest.approx(0.5)


def test_from_spec_errors_point_at_the_spec():
    span = Span("model.kd", 3, 17)
    with pytest.raises(KdslError, match="Unknown learning-rate schedule 'CosineDecy'") as e:
        from_spec(Spec("CosineDecy", [0.1], {}, span))
    assert e.value.span == span and e.value.hint == "did you mean 'CosineDecay'?"
    with pytest.raises(KdslError, match="Unknown argument 'decay_step' for learning-rate schedule") as e:
        from_spec(Spec("ExponentialDecay", [0.1], {"decay_step": 10, "decay_rate": 0.5}, span))
    assert e.value.hint.startswith("did you mean 'decay_steps'")
    with pytest.raises(KdslError, match="ExponentialDecay is missing required argument 'decay_rate'."):
        from_spec(Spec("ExponentialDecay", [0.1, 10], {}, span))
    with pytest.raises(KdslError, match="got two values for argument 'decay_steps'"):
        from_spec(Spec("ExponentialDecay", [0.1, 10], {"decay_steps": 10, "decay_rate": 0.5}, span))
    with pytest.raises(KdslError, match="at most 5 positional arguments"):
        from_spec(Spec("ExponentialDecay", [0.1, 10, 0.5, False, "n", 1], {}, span))
    with pytest.raises(KdslError, match="`decay_steps` must be > 0") as e:
        from_spec(Spec("CosineDecay", [0.1, 0], {}, span))
    assert e.value.span == span
