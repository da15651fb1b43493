"""The one error type kdsl raises for bad input, and how it renders.

Every user-facing failure (a malformed ``.kd`` file, a shape mismatch, a wrong
layer argument, a bad data file) is a :class:`KdslError` carrying a
:class:`Span`, so it can be printed as ``file.kd:LINE:COL: error: message``
followed by the source line, a caret and an optional hint.
"""
from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from typing import Iterable

__all__ = ["Span", "KdslError", "did_you_mean"]


@dataclass(frozen=True)
class Span:
    """A place in a source: file name, 1-based line and column, optional end.

    ``text`` is the whole source text (kept so an error can show the line);
    builder-API spans point at the Python call site and carry no text.
    """

    file: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None
    text: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def __repr__(self) -> str:  # keep IR dumps short
        return f"Span({self})"

    def source_line(self) -> str | None:
        if self.text is None:
            return _read_line(self.file, self.line)
        lines = self.text.splitlines()
        if 1 <= self.line <= len(lines):
            return lines[self.line - 1]
        return None


def _read_line(path: str, line: int) -> str | None:
    if not path.endswith(".py") or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for i, text in enumerate(f, 1):
                if i == line:
                    return text.rstrip("\n")
    except OSError:
        return None
    return None


class KdslError(ValueError):
    """A user error: bad source, bad argument, bad shape or bad data file.

    Args:
        message: what was received and what was expected.
        span: where in the user's source the problem is (may be ``None``).
        hint: a suggestion shown under the caret ("did you mean 'Conv2D'?").
    """

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    def __str__(self) -> str:
        return self.render(color=False)

    def with_span(self, span: Span | None) -> "KdslError":
        """Return this error, pointing at ``span`` if it has no place yet."""
        if self.span is None and span is not None:
            self.span = span
        return self

    def render(self, color: bool | None = None) -> str:
        """Format as ``file:line:col: error: message``, source line, caret, hint."""
        if color is None:
            color = _stream_wants_color(sys.stderr)
        red, bold, cyan, reset = ("\x1b[31;1m", "\x1b[1m", "\x1b[36m", "\x1b[0m") if color else ("",) * 4
        head = f"{red}error:{reset} {bold}{self.message}{reset}"
        if self.span is None:
            out = [head]
        else:
            out = [f"{bold}{self.span}:{reset} {head}"]
            src = self.span.source_line()
            if src is not None:
                src = src.expandtabs(1)
                col = max(self.span.column, 1)
                width = 1
                if self.span.end_line == self.span.line and self.span.end_column:
                    width = max(self.span.end_column - col, 1)
                width = min(width, max(len(src) - col + 1, 1))
                out.append(f"    {src}")
                out.append("    " + " " * (col - 1) + f"{red}^" + "~" * (width - 1) + reset)
        if self.hint:
            out.append(f"{cyan}hint:{reset} {self.hint}")
        return "\n".join(out)


def _stream_wants_color(stream) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidates to ``name``, or ``None``."""
    cands = sorted(set(candidates))
    lower = {c.lower(): c for c in cands}
    if name.lower() in lower and lower[name.lower()] != name:
        return f"did you mean '{lower[name.lower()]}'?"
    close = difflib.get_close_matches(name, cands, n=3, cutoff=0.6)
    if not close:
        close = [lower[c] for c in difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)]
    if not close:
        return None
    if len(close) == 1:
        return f"did you mean '{close[0]}'?"
    return "did you mean " + ", ".join(f"'{c}'" for c in close[:-1]) + f" or '{close[-1]}'?"
