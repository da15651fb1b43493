"""The Keras progress bar (``keras.utils.Progbar``) printed by ``fit``/``evaluate``/``predict``."""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["Progbar"]

_BAR = "\u2501"          # ━, as Keras 3 draws it


def _now() -> float:
    return time.time()


class Progbar:
    """Displays a progress bar.

    With ``verbose=1`` on a terminal the bar is redrawn in place (``\\r``) with the
    ETA and the metrics; when stdout is not a terminal (a log file, CI) only the final
    line of each bar is printed. ``verbose=2`` prints one line when the bar finishes:
    ``"N/N - 3s - 25ms/step - loss: 0.1234 - accuracy: 0.9500"``. ``verbose=0`` is silent.

    Args:
        target: total number of steps expected, ``None`` if unknown.
        width: bar width in characters. Defaults to ``30``.
        verbose: 0 (silent), 1 (live bar) or 2 (one line per bar).
        interval: minimum seconds between two redraws of a live bar.
        stateful_metrics: names of metrics shown as given; all others are averaged over the
            steps seen (weighted by step count). Pass only one of this and ``stateless_metrics``.
        stateless_metrics: names of metrics to average; all others are shown as given.
        unit_name: display name for a step (``"step"`` or ``"sample"``).
    """

    def __init__(self, target: int | None, width: int = 30, verbose: int = 1, interval: float = 0.05,
                 stateful_metrics: Iterable[str] | None = None, unit_name: str = "step",
                 stateless_metrics: Iterable[str] | None = None) -> None:
        if stateful_metrics is not None and stateless_metrics is not None:
            raise ValueError("Pass only one of `stateful_metrics` and `stateless_metrics`.")
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self.stateful_metrics = set(stateful_metrics) if stateful_metrics is not None else None
        self.stateless_metrics = set(stateless_metrics) if stateless_metrics is not None else None
        if self.stateful_metrics is None and self.stateless_metrics is None:
            self.stateful_metrics = set()
        out = sys.stdout
        self._dynamic_display = (hasattr(out, "isatty") and out.isatty()) or "ipykernel" in sys.modules
        self._color = self._dynamic_display and not os.environ.get("NO_COLOR")
        self._seen_so_far = 0
        self._values: dict[str, list] = {}
        self._values_order: list[str] = []
        self._start = _now()
        self._last_update = 0.0
        self._time_after_first_step: float | None = None
        self._prev_total_width = 0

    def _stateless(self, name: str) -> bool:
        if self.stateful_metrics is not None:
            return name not in self.stateful_metrics
        return name in self.stateless_metrics

    def update(self, current: int, values: Sequence[tuple[str, Any]] | None = None,
               finalize: bool | None = None) -> None:
        """Update the bar.

        Args:
            current: index of the current step (1-based: steps done so far).
            values: ``[(name, value_for_last_step), ...]``; stateful metrics are shown as
                given, the others averaged over time.
            finalize: whether this is the last update; defaults to ``current >= target``.
        """
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        for k, v in values or []:
            if k not in self._values_order:
                self._values_order.append(k)
            v = float(np.mean(v))
            if self._stateless(k) and not finalize:
                base = max(current - self._seen_so_far, 1)
                if k not in self._values:
                    self._values[k] = [v * base, base]
                else:
                    self._values[k][0] += v * base
                    self._values[k][1] += base
            else:
                self._values[k] = [v, 1]
        self._seen_so_far = current

        now = _now()
        time_per_unit = self._estimate_step_duration(current, now)
        if self.verbose == 1:
            if not finalize and (not self._dynamic_display or now - self._last_update < self.interval):
                return
            self._print_bar(current, finalize, now, time_per_unit)
        elif self.verbose == 2 and finalize:
            count = self._count(current)
            line = f"{count} - {now - self._start:.0f}s -{_format_time(time_per_unit, self.unit_name)}"
            _write(line + self._metrics() + "\n")
        self._last_update = now

    def add(self, n: int, values: Sequence[tuple[str, Any]] | None = None) -> None:
        """Advance the bar by ``n`` steps."""
        self.update(self._seen_so_far + n, values)

    def _count(self, current: int) -> str:
        if self.target is None or self.target <= 0:
            return f"{current}"
        digits = int(math.log10(self.target)) + 1
        return f"{current:{digits}d}/{self.target}"

    def _print_bar(self, current: int, finalize: bool, now: float, time_per_unit: float) -> None:
        bold, green, grey, reset = ("\x1b[1m", "\x1b[32m", "\x1b[37m", "\x1b[0m") if self._color else ("",) * 4
        if self.target is not None and self.target > 0:
            filled = min(int(self.width * current / self.target), self.width)
            plain = f"{self._count(current)} {_BAR * self.width}"
            bar = (f"{bold}{self._count(current)}{reset} " + (f"{green}{_BAR * filled}{reset}" if filled else "")
                   + f"{grey}{_BAR * (self.width - filled)}{reset}")
        else:
            plain = bar = f"{current:7d}/Unknown"
        if self.target is not None and self.target > 0 and not finalize:
            eta = time_per_unit * (self.target - current)
            if eta > 3600:
                eta_text = "%d:%02d:%02d" % (eta // 3600, (eta % 3600) // 60, eta % 60)
            elif eta > 60:
                eta_text = "%d:%02d" % (eta // 60, eta % 60)
            else:
                eta_text = "%ds" % eta
        else:
            eta_text = f"{now - self._start:.0f}s"
        tail = f"{_format_time(time_per_unit, self.unit_name)}{self._metrics()}"
        width = len(f"{plain} {eta_text}{tail}")
        message = "\r" if self._dynamic_display else ""
        message += f"{bar} {bold}{eta_text}{reset}{tail}"
        if self._prev_total_width > width:
            message += " " * (self._prev_total_width - width)
        if finalize:
            message += "\n"
        _write(message)
        self._prev_total_width = width

    def _metrics(self) -> str:
        out = ""
        for k in self._values_order:
            total, count = self._values[k]
            avg = total / max(1, count)
            out += f" - {k}: {avg:.4f}" if abs(avg) > 1e-3 else f" - {k}: {avg:.4e}"
        return out

    def _estimate_step_duration(self, current: int, now: float) -> float:
        """Seconds per step, ignoring the (slow, compiling) first step once later ones exist."""
        if not current:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            per_unit = (now - self._time_after_first_step) / (current - 1)
        else:
            per_unit = (now - self._start) / current
        if current == 1:
            self._time_after_first_step = now
        return per_unit


def _format_time(time_per_unit: float, unit_name: str) -> str:
    if time_per_unit >= 1 or time_per_unit == 0:
        return f" {time_per_unit:.0f}s/{unit_name}"
    if time_per_unit >= 1e-3:
        return f" {time_per_unit * 1e3:.0f}ms/{unit_name}"
    return f" {time_per_unit * 1e6:.0f}us/{unit_name}"


def _write(message: str) -> None:
    out = sys.stdout
    try:
        out.write(message)
    except UnicodeEncodeError:      # a non-UTF-8 console: draw the bar with '='
        encoding = getattr(out, "encoding", None) or "ascii"
        out.write(message.replace(_BAR, "=").encode(encoding, errors="ignore").decode(encoding))
    out.flush()
