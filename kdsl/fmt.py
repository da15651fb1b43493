"""``kdsl fmt``: rewrite ``.kd`` source in one canonical style, keeping comments.

The formatter works on the token stream of kdsl's own lark lexer (the grammar in
``grammar/kdsl.lark``, lexed with ``dont_ignore=True`` so comments, blank lines and
``\\`` continuations survive), never on regular expressions over the text. Like
``gofmt`` it keeps the line breaks you chose and normalises everything else:

- 4-space indentation per ``{ }`` block; a multi-line block has ``{`` at the end of its
  line and ``}`` on its own line; a one-line block stays ``{ stmt }``.
- one space around ``=`` (statements), ``->``, arithmetic, comparisons and ``and``/``or``;
  keyword arguments are tight (``activation=relu``), annotated parameter defaults spaced
  (``stride: int = 1``); a space after ``,`` and ``:``, none inside brackets.
- a pipeline broken over lines puts ``->`` first on each continuation line, aligned under
  the statement's first ``->``; ``} else`` and ternary ``else`` join the previous line.
- inside brackets, continuation lines align after the opening bracket (or, when the bracket
  ends its line, indent 4 from the line that opened it).
- ``key = value`` lines of a ``train`` section align their ``=``; consecutive trailing
  comments align two spaces after the longest line.
- at most one blank line in a row, none just inside a block, one before each top-level
  ``model``/``block``/``train``; one newline at the end of the file.

The result is checked before it is returned: it must parse to the same syntax tree as the
input (spans aside), so formatting can never change what a file means.
"""
from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import KdslError, Span

__all__ = ["format_source", "format_file", "FormatResult", "kd_files"]

INDENT = 4
_BREAKS = ("_NL", "COMMENT", "LINE_CONT")
_OPEN = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_VALUE_END = {"NAME", "INT", "FLOAT", "STRING", "RPAR", "RSQB", "RBRACE", "TRUE", "FALSE", "NONE"}


@dataclass
class _T:
    """One token: lark's type and text, and whether a brace delimits a block (vs a dict)."""
    type: str
    value: str
    block: bool = False


@dataclass
class _Bracket:
    kind: str                 # LPAR, LSQB or LBRACE (a dict)
    line_indent: int          # indentation of the line that opened it
    cont: int                 # column of continuation lines
    arrow: int | None = None  # column of the first '->' directly inside it
    seg_colon: bool = False   # the current comma-separated segment has a ':' (an annotated param)


@dataclass
class _Line:
    indent: int
    code: str = ""
    comment: str | None = None
    kind: str = "stmt"        # stmt | cont | comment (statement level) | ccomment (inside a statement)
    blank: int = 0            # blank lines before it in the source
    depth: int = 0            # block depth at its start
    opens_block: bool = False
    closes_block: bool = False
    top_def: bool = False
    key_len: int | None = None   # `key = value` in a train section: the key's length
    types: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def _lexer():
    from lark import Lark

    from .syntax.parser import grammar_path

    return Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", lexer="basic")


def _tokens(text: str) -> list[_T]:
    out = []
    for t in _lexer().lex(text, dont_ignore=True):
        if t.type == "WS":
            continue
        v = str(t)
        if t.type == "COMMENT":
            v = v.rstrip()
        elif t.type == "_NL":
            v = "\n" * v.count("\n")
        out.append(_T(t.type, v))
    return out


def _mark_braces(toks: list[_T]) -> None:
    """Tell block braces from dict braces exactly as the parser's post-lexer does."""
    stack, prev = [], None
    for t in toks:
        if t.type in _BREAKS:
            continue
        if t.type == "LBRACE":
            t.block = not (prev is not None and prev.type in ("EQUAL", "COLON", "COMMA", "LPAR", "LSQB"))
            stack.append(t)
        elif t.type == "RBRACE" and stack:
            t.block = stack.pop().block
        prev = t


def _next_code(toks: list[_T], i: int) -> _T | None:
    """The next token that is not a line break or a comment."""
    while i < len(toks):
        if toks[i].type not in _BREAKS:
            return toks[i]
        i += 1
    return None


def _normalize(toks: list[_T]) -> list[_T]:
    """Line-structure rewrites that never change meaning: trailing '->' moves to the next line,
    'else' joins the line before it, multi-line blocks open and close on their own lines."""
    out: list[_T] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.type == "ARROW" and i + 1 < len(toks) and toks[i + 1].type == "_NL":
            j = i + 1
            while j < len(toks) and toks[j].type == "_NL":
                j += 1
            if j < len(toks) and toks[j].type not in _BREAKS:
                if out and out[-1].type != "_NL":
                    out.append(_T("_NL", "\n"))
                out.append(t)
                i = j
                continue
        if t.type == "_NL" and out and out[-1].type not in _BREAKS:
            j = i
            while j < len(toks) and toks[j].type == "_NL":
                j += 1
            if j < len(toks) and toks[j].type == "ELSE":
                i = j
                continue
        out.append(t)
        i += 1
    # blocks: find each block brace's partner and whether the block spans lines
    after, before = set(), set()
    stack: list[int] = []
    for k, t in enumerate(out):
        if t.type == "LBRACE" and t.block:
            stack.append(k)
        elif t.type == "RBRACE" and t.block and stack:
            o = stack.pop()
            if any(x.type in _BREAKS for x in out[o + 1:k]):
                if out[o + 1].type not in ("_NL", "COMMENT"):
                    after.add(o)
                if out[k - 1].type != "_NL":
                    before.add(k)
    if not after and not before:
        return out
    res = []
    for k, t in enumerate(out):
        if k in before:
            res.append(_T("_NL", "\n"))
        res.append(t)
        if k in after:
            res.append(_T("_NL", "\n"))
    return res


class _Builder:
    def __init__(self, toks: list[_T]):
        self.toks = toks
        self.lines: list[_Line] = []
        self.cur: _Line | None = None
        self.depth = 0
        self.stack: list[_Bracket] = []
        self.stmt_open = False
        self.stmt_arrow: int | None = None
        self.prev: _T | None = None        # previous code token of the statement
        self.line_prev: _T | None = None   # previous code token on the current line
        self.newlines = 0                  # newlines since the last finished line
        self.item = None                   # the top-level item we are in (its keyword)

    # -- lines -------------------------------------------------------------------------
    def _start(self, t: _T | None) -> _Line:
        comment_only = t is None
        if self.stack:
            top = self.stack[-1]
            if t is not None and t.type == _OPEN[top.kind] and not (t.type == "RBRACE" and t.block):
                col = top.line_indent
            elif t is not None and t.type == "ARROW" and top.arrow is not None:
                col = top.arrow
            else:
                col = top.cont
            kind = "ccomment" if comment_only else "cont"
        elif self.stmt_open:
            if t is not None and t.type == "ARROW":
                col = self.stmt_arrow if self.stmt_arrow is not None else self.depth * INDENT + INDENT
            elif (t is None or t.type == "ELSE") and self.prev is not None and self.prev.type == "RBRACE":
                col = self.depth * INDENT     # `}`, comment lines, then `else`: all at the block's level
            else:
                col = self.depth * INDENT + INDENT
            kind = "ccomment" if comment_only else "cont"
        else:
            d = self.depth - 1 if (t is not None and t.type == "RBRACE" and t.block) else self.depth
            col = max(d, 0) * INDENT
            kind = "comment" if comment_only else "stmt"
            if not comment_only:
                self.stmt_arrow, self.prev = None, None
                if self.depth == 0:
                    self.item = t.type
        line = _Line(indent=col, kind=kind, blank=max(self.newlines - 1, 0), depth=self.depth)
        line.closes_block = t is not None and t.type == "RBRACE" and t.block
        line.top_def = kind == "stmt" and self.depth == 0 and t.type in ("MODEL", "BLOCK", "TRAIN")
        self.cur, self.line_prev = line, None
        return line

    def _finish(self) -> None:
        ln = self.cur
        if ln is None:
            return
        if (ln.kind == "stmt" and self.item == "TRAIN" and ln.depth == 1 and len(ln.types) > 2
                and ln.types[0] == "NAME" and ln.types[1] == "EQUAL"):
            ln.key_len = ln.code.index(" ")
        self.lines.append(ln)
        self.cur = None
        self.newlines = 0

    def _col(self) -> int:
        return self.cur.indent + len(self.cur.code)

    # -- spacing -----------------------------------------------------------------------
    def _tight_equal(self) -> bool:
        return bool(self.stack) and self.stack[-1].kind == "LPAR" and not self.stack[-1].seg_colon

    def _space(self, p: _T | None, t: _T) -> bool:
        if p is None:
            return False
        a, b = p.type, t.type
        if b in ("COMMA", "COLON", "RPAR", "RSQB") or a in ("LPAR", "LSQB"):
            return False
        if b == "RBRACE":
            return t.block and not (a == "LBRACE")
        if a == "LBRACE":
            return p.block
        if a == "EQUAL" or b == "EQUAL":
            return not self._tight_equal()
        if a == "ADD_OP" and getattr(p, "unary", False):
            return False
        if b in ("LPAR", "LSQB"):
            return a not in ("NAME", "RPAR", "RSQB")
        return True

    # -- tokens ------------------------------------------------------------------------
    def _code(self, i: int, t: _T) -> None:
        if self.cur is None:
            self._start(t)
        if t.type == "ADD_OP":
            t.unary = self.prev is None or self.prev.type not in _VALUE_END or (
                self.prev.type == "RBRACE" and self.prev.block)
        ln = self.cur
        if self._space(self.line_prev, t):
            ln.code += " "
        col = self._col()
        ln.code += t.value
        ln.types.append(t.type)
        typ = t.type
        if typ in ("LPAR", "LSQB") or (typ == "LBRACE" and not t.block):
            nxt = self.toks[i + 1] if i + 1 < len(self.toks) else None
            hanging = nxt is None or nxt.type in _BREAKS
            self.stack.append(_Bracket(typ, ln.indent, ln.indent + INDENT if hanging else col + 1))
        elif typ in ("RPAR", "RSQB") or (typ == "RBRACE" and not t.block):
            if self.stack:
                self.stack.pop()
        elif typ == "LBRACE":
            self.depth += 1
        elif typ == "RBRACE":
            self.depth -= 1
        elif typ == "ARROW":
            if self.stack:
                if self.stack[-1].arrow is None:
                    self.stack[-1].arrow = col
            elif self.stmt_arrow is None:
                self.stmt_arrow = col
        elif typ == "COMMA" and self.stack:
            self.stack[-1].seg_colon = False
        elif typ == "COLON" and self.stack:
            self.stack[-1].seg_colon = True
        self.line_prev = t
        if typ == "LBRACE" and t.block:
            self.stmt_open, self.prev = False, None
        else:
            self.stmt_open, self.prev = True, t
        ln.opens_block = typ == "LBRACE" and t.block

    def build(self) -> list[_Line]:
        toks = self.toks
        for i, t in enumerate(toks):
            if t.type == "_NL":
                self._finish()
                self.newlines += len(t.value)
                if not self.stack and self.stmt_open:
                    nxt = _next_code(toks, i + 1)
                    if not ((self.prev is not None and self.prev.type == "ARROW")
                            or (nxt is not None and nxt.type in ("ARROW", "ELSE"))):
                        self.stmt_open = False
            elif t.type == "COMMENT":
                if self.cur is None:
                    self._start(None)
                self.cur.comment = t.value
            elif t.type == "LINE_CONT":
                if self.cur is None:
                    self._start(None)
                self.cur.code += " \\" if self.cur.code else "\\"
                self._finish()
                self.newlines = 1
            else:
                self._code(i, t)
        self._finish()
        return self.lines


def _render(lines: list[_Line]) -> str:
    for k, ln in enumerate(lines):
        blank = min(ln.blank, 1)
        if k == 0 or ln.kind in ("cont", "ccomment") or ln.closes_block or lines[k - 1].opens_block:
            blank = 0
        ln.blank = blank
    for k, ln in enumerate(lines):
        if ln.top_def:
            j = k
            while j > 0 and lines[j].blank == 0 and lines[j - 1].kind == "comment" \
                    and lines[j - 1].depth == 0:
                j -= 1
            if j > 0:
                lines[j].blank = 1
    # train sections: align the '=' of consecutive one-line `key = value` entries
    def single(k):
        return lines[k].key_len is not None and (k + 1 >= len(lines) or lines[k + 1].kind not in ("cont", "ccomment"))

    k = 0
    while k < len(lines):
        if not single(k):
            k += 1
            continue
        j = k + 1
        while j < len(lines) and single(j) and lines[j].blank == 0:
            j += 1
        width = max(lines[m].key_len for m in range(k, j))
        for m in range(k, j):
            ln = lines[m]
            ln.code = ln.code[:ln.key_len] + " " * (width - ln.key_len) + ln.code[ln.key_len:]
        k = j
    # trailing comments: align runs of consecutive lines that carry one
    k = 0
    while k < len(lines):
        if not (lines[k].code and lines[k].comment):
            k += 1
            continue
        j = k + 1
        while j < len(lines) and lines[j].code and lines[j].comment and lines[j].blank == 0:
            j += 1
        col = max(lines[m].indent + len(lines[m].code) for m in range(k, j)) + 2
        for m in range(k, j):
            ln = lines[m]
            ln.comment_col = col
        k = j
    out = []
    for ln in lines:
        out.extend([""] * ln.blank)
        text = " " * ln.indent + ln.code
        if ln.comment:
            if ln.code:
                text += " " * (getattr(ln, "comment_col", len(text) + 2) - len(text)) + ln.comment
            else:
                text += ln.comment
        out.append(text.rstrip())
    return "\n".join(out) + "\n" if out else ""


# -- meaning check --------------------------------------------------------------------------
_SKIP = {"span", "module", "path", "text"}


def _ast_key(obj):
    if isinstance(obj, Span):
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj).__name__,) + tuple(
            _ast_key(getattr(obj, f.name)) for f in dataclasses.fields(obj)
            if f.name not in _SKIP and not f.name.endswith("_span"))
    if isinstance(obj, (list, tuple)):
        return tuple(_ast_key(x) for x in obj)
    if isinstance(obj, float):
        return ("float", repr(obj))
    return obj


def format_source(text: str, path: str = "<string>") -> str:
    """``text`` in the canonical style. Raises :class:`KdslError` if it does not parse."""
    from .syntax import parse

    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    before = parse(text, path)
    toks = _tokens(text)
    _mark_braces(toks)
    out = _render(_Builder(_normalize(toks)).build())
    try:
        after = parse(out, path)
    except KdslError as e:  # pragma: no cover - a formatter bug
        raise RuntimeError(f"kdsl fmt produced text that does not parse ({e.message}); "
                           f"the file was left unchanged. Please report this with {path}.") from None
    if _ast_key(before) != _ast_key(after):  # pragma: no cover - a formatter bug
        raise RuntimeError(f"kdsl fmt would change the meaning of {path}; the file was left unchanged. "
                           "Please report this.")
    return out


@dataclass
class FormatResult:
    path: str
    changed: bool
    text: str


def format_file(path: str | os.PathLike, write: bool = True) -> FormatResult:
    """Format one file; with ``write`` rewrite it (atomically) when it changes."""
    from .syntax import read_source

    raw = read_source(path)
    new = format_source(raw, str(path))
    changed = new != raw
    if changed and write:
        from .runtime import atomic_write_bytes

        mode = stat.S_IMODE(os.stat(path).st_mode)
        atomic_write_bytes(str(path), new.encode("utf-8"))
        os.chmod(path, mode)      # keep the file's permissions
    return FormatResult(str(path), changed, new)


def kd_files(paths) -> list[str]:
    """Files named on the command line; directories contribute their ``*.kd`` files (recursively)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(sorted(str(f) for f in Path(p).rglob("*.kd") if f.is_file()))
        else:
            out.append(str(p))
    return out
