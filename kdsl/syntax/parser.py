"""``.kd`` text -> AST, with every syntax error reported as ``file:line:col`` + caret + hint.

Lark (LALR, positions on) parses the grammar in ``grammar/kdsl.lark``; a small
post-lexer makes newlines insignificant where the language says so; a
``Transformer`` builds the dataclass AST of :mod:`kdsl.syntax.ast`. Lark's
exceptions never escape: they become :class:`~kdsl.errors.KdslError`.
"""
from __future__ import annotations

import ast as pyast
import os
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from .. import limits
from ..errors import KdslError, Span
from . import ast as A

__all__ = ["parse", "grammar_path"]

KEYWORDS = _KEYWORDS = {"model", "block", "train", "import", "from", "input", "output", "layer", "return", "repeat",
             "for", "in", "if", "else", "and", "or", "not", "true", "false", "none"}

_FRIENDLY = {
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "EQUAL": "'='", "COLON": "':'", "COMMA": "','", "ARROW": "'->'", "NAME": "a name", "INT": "an integer",
    "FLOAT": "a number", "STRING": "a string", "_NL": "end of line", "$END": "end of file",
    "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "an operator",
}


def grammar_path() -> Path:
    """The grammar file: inside the installed package, or ``grammar/`` of a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for p in (here / "grammar" / "kdsl.lark", here.parent / "grammar" / "kdsl.lark"):
        if p.is_file():
            return p
    raise KdslError("kdsl's grammar file (grammar/kdsl.lark) is missing from the installation.")


class _PostLex:
    """Drop newlines inside ( ) [ ] and dict braces, around '->', and before 'else'."""

    always_accept = ("_NL",)

    def process(self, stream):
        stack: list[str] = []          # "(", "[", "dict", "block"
        pending = None                 # a held-back _NL token
        prev = None
        for tok in stream:
            t = tok.type
            if t == "_NL":
                if stack and stack[-1] != "block":
                    continue
                if prev is not None and prev.type == "ARROW":
                    continue
                if pending is None:
                    pending = tok
                continue
            if pending is not None:
                if t not in ("ARROW", "ELSE"):
                    yield pending
                pending = None
            if t in ("LPAR", "LSQB"):
                stack.append(t)
            elif t == "LBRACE":
                is_dict = prev is not None and prev.type in ("EQUAL", "COLON", "COMMA", "LPAR", "LSQB")
                stack.append("dict" if is_dict else "block")
            elif t in ("RPAR", "RSQB", "RBRACE") and stack:
                stack.pop()
            yield tok
            prev = tok
        if pending is not None:
            yield pending


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", lexer="basic",
                postlex=_PostLex(), propagate_positions=True, maybe_placeholders=True)


class _ToAst(Transformer):
    def __init__(self, path: str, text: str):
        super().__init__()
        self.path, self.text = path, text

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.path, 1, 1, text=self.text)
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column, self.text)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.path, tok.line, tok.column, tok.end_line, tok.end_column, self.text)

    # -- top level -----------------------------------------------------------------
    @v_args(meta=True)
    def start(self, meta, items):
        mod = A.Module(self.path, self.text, [], [], [], [])
        for it in items:
            {A.ModelDef: mod.models, A.BlockDef: mod.blocks, A.TrainDef: mod.trains,
             A.Import: mod.imports}[type(it)].append(it)
        return mod

    @v_args(meta=True)
    def import_all(self, meta, c):
        return A.Import(_unquote(c[0], self._tspan(c[0])), None, self._span(meta))

    @v_args(meta=True)
    def import_from(self, meta, c):
        return A.Import(_unquote(c[0], self._tspan(c[0])), [(str(t), self._tspan(t)) for t in c[1:]],
                        self._span(meta))

    @v_args(meta=True)
    def model(self, meta, c):
        name, params, body = c
        return A.ModelDef(str(name), params or [], body, self._span(meta))

    @v_args(meta=True)
    def block(self, meta, c):
        name, params, body = c
        return A.BlockDef(str(name), params or [], body, self._span(meta))

    def params(self, c):
        return [p for p in c if p is not None]

    @v_args(meta=True)
    def param(self, meta, c):
        name, typ, default = c
        return A.Param(str(name), str(typ) if typ is not None else None, default, self._span(meta))

    @v_args(meta=True)
    def train(self, meta, c):
        name, body = c
        return A.TrainDef(str(name), body, self._span(meta), self._tspan(name))

    def body(self, c):
        return [s for s in c if s is not None]

    # -- statements ---------------------------------------------------------------------
    @v_args(meta=True)
    def input_decl(self, meta, c):
        name, dtype, *dims = c
        return A.InputDecl(str(name), str(dtype), [d for d in dims if d is not None], self._span(meta),
                           self._tspan(dtype))

    def dim(self, c):
        t = c[0]
        return (int(t) if t.type == "INT" else str(t)), self._tspan(t)

    @v_args(meta=True)
    def output_assign(self, meta, c):
        *names, value = c
        return A.Assign([str(n) for n in names], value, self._span(meta), is_output=True)

    @v_args(meta=True)
    def output_names(self, meta, c):
        return A.OutputNames([(str(n), self._tspan(n)) for n in c], self._span(meta))

    @v_args(meta=True)
    def assign(self, meta, c):
        *names, value = c
        return A.Assign([str(n) for n in names], value, self._span(meta))

    @v_args(meta=True)
    def layer_decl(self, meta, c):
        return A.LayerDecl(str(c[0]), c[1], self._span(meta))

    @v_args(meta=True)
    def return_stmt(self, meta, c):
        return A.Return(list(c), self._span(meta))

    @v_args(meta=True)
    def repeat_stmt(self, meta, c):
        return A.Repeat(c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def for_stmt(self, meta, c):
        return A.For(str(c[0]), c[1], c[2], self._span(meta))

    @v_args(meta=True)
    def if_stmt(self, meta, c):
        cond, body, *rest = c
        rest = [r for r in rest if r is not None]
        orelse = [] if not rest else (rest[0] if isinstance(rest[0], list) else [rest[0]])
        return A.If(cond, body, orelse, self._span(meta))

    @v_args(meta=True)
    def expr_stmt(self, meta, c):
        return A.ExprStmt(c[0], self._span(meta))

    # -- expressions -----------------------------------------------------------------------
    @v_args(meta=True)
    def conditional(self, meta, c):
        return A.Conditional(c[0], c[1], c[2], self._span(meta))

    @v_args(meta=True)
    def pipeline(self, meta, c):
        return A.Pipeline([x for x in c if not isinstance(x, Token)], self._span(meta))

    @v_args(meta=True)
    def or_op(self, meta, c):
        return A.BoolOp("or", c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def and_op(self, meta, c):
        return A.BoolOp("and", c[0], c[1], self._span(meta))

    @v_args(meta=True)
    def not_op(self, meta, c):
        return A.Not(c[0], self._span(meta))

    @v_args(meta=True)
    def compare(self, meta, c):
        return A.Compare(str(c[1]), c[0], c[2], self._span(meta))

    @v_args(meta=True)
    def binop(self, meta, c):
        return A.BinOp(str(c[1]), c[0], c[2], self._span(meta))

    @v_args(meta=True)
    def unary(self, meta, c):
        return A.Unary(str(c[0]), c[1], self._span(meta))

    @v_args(meta=True)
    def call(self, meta, c):
        func, args = c
        pos, kws = [], []
        for a in args or []:
            if isinstance(a, A.Kwarg):
                if any(k.name == a.name for k in kws):
                    raise KdslError(f"Argument '{a.name}' is given twice.", a.span)
                kws.append(a)
            elif kws:
                raise KdslError("A positional argument cannot follow a keyword argument.", _span_of(a))
            else:
                pos.append(a)
        return A.Call(func, pos, kws, self._span(meta))

    def arguments(self, c):
        return [a for a in c if a is not None]

    @v_args(meta=True)
    def kwarg(self, meta, c):
        return A.Kwarg(str(c[0]), c[1], self._span(meta))

    def name(self, c):
        return A.Name(str(c[0]), self._tspan(c[0]))

    def int_lit(self, c):
        return A.Literal(int(c[0]), self._tspan(c[0]))

    def float_lit(self, c):
        return A.Literal(float(c[0]), self._tspan(c[0]))

    def string(self, c):
        return A.Literal(_unquote(c[0], self._tspan(c[0])), self._tspan(c[0]))

    @v_args(meta=True)
    def true(self, meta, c):
        return A.Literal(True, self._span(meta))

    @v_args(meta=True)
    def false(self, meta, c):
        return A.Literal(False, self._span(meta))

    @v_args(meta=True)
    def none(self, meta, c):
        return A.Literal(None, self._span(meta))

    @v_args(meta=True)
    def list(self, meta, c):
        return A.ListExpr([x for x in c if x is not None], self._span(meta))

    @v_args(meta=True)
    def dict(self, meta, c):
        items = [x for x in c if x is not None]
        keys = [k for k, _, _ in items]
        for k, _, sp in items:
            if keys.count(k) > 1:
                raise KdslError(f"Key '{k}' appears twice in this dict.", sp)
        return A.DictExpr(items, self._span(meta))

    def pair(self, c):
        k = c[0]
        key = _unquote(k, self._tspan(k)) if k.type == "STRING" else str(k)
        return key, c[1], self._tspan(k)


def _span_of(node) -> Span | None:
    return getattr(node, "span", None)


def _unquote(tok: Token, span: Span) -> str:
    try:
        return pyast.literal_eval(str(tok))
    except (ValueError, SyntaxError) as e:
        raise KdslError(f"Invalid string literal: {e}.", span)


# -- errors ------------------------------------------------------------------------------------
def _describe(tok) -> str:
    if tok is None or getattr(tok, "type", None) == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type in ("INT", "FLOAT"):
        return f"number {tok}"
    if tok.type == "STRING":
        return f"string {tok}"
    return f"'{tok}'"


def _expected(names) -> str:
    out = []
    for n in sorted(names):
        if n in _FRIENDLY:
            out.append(_FRIENDLY[n])
        elif n.isupper() and n.lower() in _KEYWORDS:
            out.append(f"'{n.lower()}'")
        elif n.startswith("__") or n.startswith("_"):
            continue
        else:
            out.append(n.lower())
    out = sorted(set(out))
    if len(out) > 6:
        return "an expression or statement"
    return " or ".join([", ".join(out[:-1]), out[-1]] if len(out) > 1 else out)


def _syntax_error(e: UnexpectedInput, path: str, text: str) -> KdslError:
    line, col = getattr(e, "line", 1), getattr(e, "column", 1)
    if not isinstance(line, int) or line < 1:
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
    span = Span(path, line, col, text=text)
    hint = None
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else "?"
        msg = f"unexpected character {ch!r}"
        if ch == "=" and text[e.pos_in_stream:e.pos_in_stream + 2] == "==":
            msg = "unexpected '=='"
        if ch in "'\"":
            hint = "strings must be closed on the same line"
        elif ch == "!":
            hint = "use '!=' for 'not equal', or 'not' for negation"
        elif ch in ";":
            hint = "statements end at a newline; no ';' is needed"
        return KdslError(msg, span, hint)
    tok = getattr(e, "token", None)
    expected = getattr(e, "expected", None) or set()
    if isinstance(e, UnexpectedEOF) or (tok is not None and tok.type == "$END"):
        msg = "unexpected end of file"
        if "RBRACE" in expected:
            hint = "a '{' was not closed with '}'"
        elif "RPAR" in expected:
            hint = "a '(' was not closed with ')'"
        elif "RSQB" in expected:
            hint = "a '[' was not closed with ']'"
        return KdslError(msg + (f"; expected {_expected(expected)}" if expected else ""), span, hint)
    got = _describe(tok)
    msg = f"unexpected {got}; expected {_expected(expected)}" if expected else f"unexpected {got}"
    if tok is not None:
        if tok.type == "_NL" and "RBRACE" not in expected and (
                {"RPAR", "RSQB"} & expected or "ARROW" in expected):
            hint = "the line ends in the middle of an expression"
        elif tok.type in ("COLON",) and "EQUAL" in expected:
            hint = "keyword arguments are written name=value"
        elif tok.type == "EQUAL" and "COLON" in expected:
            hint = "an input is declared as: input NAME: DTYPE[DIMS]"
        elif tok.type.lower() in _KEYWORDS and tok.type == tok.type.upper():
            hint = f"'{tok}' is a keyword and cannot be used as a name"
        elif tok.type == "LBRACE" and "LPAR" in expected:
            hint = "a block needs its parameter list: block NAME(x) { ... }"
        elif tok.type == "EQUAL" and "RPAR" in expected:
            hint = "compare with '==', not '='"
    return KdslError(msg, span, hint)


def parse(text: str, path: str = "<string>") -> A.Module:
    """Parse ``.kd`` source into a :class:`~kdsl.syntax.ast.Module`."""
    if len(text.encode("utf-8", errors="replace")) > limits.MAX_SOURCE_BYTES:
        raise KdslError(f"Source file is larger than {limits.MAX_SOURCE_BYTES:,} bytes.",
                        Span(path, 1, 1, text=""))
    if "\x00" in text:
        line = text[:text.index("\x00")].count("\n") + 1
        raise KdslError("Source contains a NUL byte; a .kd file must be UTF-8 text.",
                        Span(path, line, 1, text=text))
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, path, text) from None
    except RecursionError:
        raise KdslError("Expression is nested too deeply.", Span(path, 1, 1, text=text)) from None
    try:
        mod = _ToAst(path, text).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, KdslError):
            raise e.orig_exc from None
        raise
    except RecursionError:
        raise KdslError("Expression is nested too deeply.", Span(path, 1, 1, text=text)) from None
    for item in mod.models + mod.blocks:
        item.module = mod
    return mod


def read_source(path: str | os.PathLike) -> str:
    """Read a ``.kd`` file as UTF-8, refusing oversized or non-text files with a clear error."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise KdslError(f"Cannot read '{path}': {e.strerror}.") from None
    if not p.is_file():
        raise KdslError(f"'{path}' is not a file.")
    if size > limits.MAX_SOURCE_BYTES:
        raise KdslError(f"'{path}' is {size:,} bytes; the limit for a .kd file is "
                        f"{limits.MAX_SOURCE_BYTES:,} bytes.")
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise KdslError("File is not valid UTF-8 text.", Span(str(path), line, col)) from None
