"""Keras-style Progbar: verbose 1 (live on a TTY, final line only otherwise), verbose 2, formatting."""
import io
import sys

import pytest

from kdsl.runtime import progress
from kdsl.runtime.progress import Progbar

BAR = "\u2501"


@pytest.fixture
def clock(monkeypatch):
    """A fake clock: set ``clock.t`` before each call that reads the time."""
    class Clock:
        t = 0.0

    c = Clock()
    monkeypatch.setattr(progress, "_now", lambda: c.t)
    return c


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_verbose_2_prints_one_line_at_the_end(clock, capsys):
    clock.t = 100.0
    bar = Progbar(4, verbose=2)
    clock.t = 100.5
    bar.update(1, [("loss", 0.5), ("accuracy", 0.25)])
    clock.t = 101.0
    bar.update(2, [("loss", 0.5), ("accuracy", 0.25)])
    assert capsys.readouterr().out == ""
    clock.t = 102.0
    bar.update(4, [("loss", 0.1234), ("accuracy", 0.95)])
    # 2s elapsed; per step: (102 - 100.5) / 3 (the first step is not counted) = 500ms
    assert capsys.readouterr().out == "4/4 - 2s - 500ms/step - loss: 0.1234 - accuracy: 0.9500\n"


def test_verbose_1_non_tty_prints_only_the_final_line(clock, capsys):
    bar = Progbar(10, width=10)
    for i in range(1, 10):
        clock.t = float(i)
        bar.update(i, [("loss", 1.0)])
    assert capsys.readouterr().out == ""
    clock.t = 20.0
    bar.update(10, [("loss", 0.25)])
    # (20 - 1) / 9 steps = 2.111 s/step -> "2s/step"
    assert capsys.readouterr().out == f"10/10 {BAR * 10} 20s 2s/step - loss: 0.2500\n"


def test_verbose_1_tty_redraws_in_place(clock, monkeypatch):
    out = FakeTTY()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("NO_COLOR", "1")
    clock.t = 0.0
    bar = Progbar(100, width=10)
    clock.t = 1.0
    bar.update(1, [("loss", 1.0)])
    clock.t = 1.01                       # within `interval` of the last draw: skipped
    bar.update(2, [("loss", 1.0)])
    clock.t = 10.0
    bar.update(10, [("loss", 1.0)])
    clock.t = 109.0
    bar.update(100, [("loss", 0.5)])
    lines = out.getvalue().split("\r")[1:]
    assert len(lines) == 3
    # step 1: 1 s/step, ETA 99 s -> "1:39"; step 10: (10 - 1) / 9 = 1 s/step, ETA 90 s -> "1:30"
    assert lines[0] == f"  1/100 {BAR * 10} 1:39 1s/step - loss: 1.0000"
    assert lines[1] == f" 10/100 {BAR * 10} 1:30 1s/step - loss: 1.0000"
    assert lines[2] == f"100/100 {BAR * 10} 109s 1s/step - loss: 0.5000\n"


def test_tty_colors_and_padding(clock, monkeypatch):
    out = FakeTTY()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.delenv("NO_COLOR", raising=False)
    bar = Progbar(2, width=4)
    clock.t = 1.0
    bar.update(1, [("a_long_metric_name", 1.0)])
    text = out.getvalue()
    assert "\x1b[1m1/2\x1b[0m " in text and f"\x1b[32m{BAR * 2}\x1b[0m" in text and f"\x1b[37m{BAR * 2}" in text


def test_padding_clears_a_longer_previous_line(clock, monkeypatch):
    out = FakeTTY()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("NO_COLOR", "1")
    bar = Progbar(None)
    clock.t = 1.0
    bar.update(1, [("loss", 1.0)], finalize=False)
    first = out.getvalue()
    assert first == "\r      1/Unknown 1s 1s/step - loss: 1.0000"
    clock.t = 2.0
    bar.update(2, [], finalize=True)
    second = out.getvalue()[len(first):]
    assert second.startswith("\r      2/Unknown 2s 1s/step - loss: 1.0000")  # averaged value kept
    assert second.endswith("\n")


def test_averaging_of_stateless_and_stateful_metrics(clock, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdout", FakeTTY())
    bar = Progbar(10, stateful_metrics=["acc"])
    clock.t = 1.0
    bar.update(1, [("loss", 1.0), ("acc", 0.1)])
    clock.t = 2.0
    bar.update(3, [("loss", 4.0), ("acc", 0.3)])
    # loss is averaged weighting by steps: (1*1 + 4*2) / 3 = 3; acc is shown as given
    assert bar._values["loss"] == [9.0, 3] and bar._values["acc"] == [0.3, 1]
    assert "loss: 3.0000 - acc: 0.3000" in sys.stdout.getvalue()
    everything_stateful = Progbar(10, stateless_metrics=())
    everything_stateful.update(1, [("loss", 1.0)])
    everything_stateful.update(3, [("loss", 4.0)])
    assert everything_stateful._values["loss"] == [4.0, 1]
    with pytest.raises(ValueError):
        Progbar(1, stateful_metrics=["a"], stateless_metrics=["b"])


def test_small_values_and_time_units(clock, capsys):
    bar = Progbar(1000, verbose=2)
    clock.t = 0.02
    bar.update(1000, [("loss", 0.0001), ("zero", 0.0), ("neg", -0.5)])
    assert capsys.readouterr().out == \
        "1000/1000 - 0s - 20us/step - loss: 1.0000e-04 - zero: 0.0000e+00 - neg: -0.5000\n"


def test_verbose_0_is_silent_and_add(clock, capsys):
    bar = Progbar(3, verbose=0)
    bar.add(1)
    bar.add(2, [("loss", 1.0)])
    assert bar._seen_so_far == 3
    assert capsys.readouterr().out == ""


def test_non_utf8_stdout_falls_back_to_ascii_bar(clock, monkeypatch):
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", out)
    bar = Progbar(2, width=4)
    clock.t = 1.0
    bar.update(2, [("loss", 0.5)])
    out.flush()
    assert raw.getvalue().decode("ascii") == "2/2 ==== 1s 500ms/step - loss: 0.5000\n"
