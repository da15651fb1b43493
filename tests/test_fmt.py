"""`kdsl fmt`: the canonical style, comments kept, idempotence, and (property test) that formatting
never changes the compiled ONNX; `kdsl fmt --check` for CI."""
import io
import os
import random
import shutil
import stat

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdsl.cli import main
from kdsl.errors import KdslError
from kdsl.fmt import _lexer, format_source
from kdsl.frontend.api import compile_text

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "examples"))
EXAMPLE_FILES = sorted(os.path.join(d, f) for d, _, fs in os.walk(EXAMPLES) for f in fs if f.endswith(".kd"))

MESSY = """\
# header


block   b( x , n:int=2 ,k : int= 3){y=x->Dense( n ,activation = relu)
  if n!=2 { y = y->relu }
  else{ y = -1*y }   # neg


  return y ->
     Dense(3)
}
model   m(  units:int=4 )  {
input x:float32[ 8 ]
\th = x ->  # trailing arrow comment
        Dense(units)
 # lone comment
 z = x->Dense(units,
   activation=relu) -> b(2,
 k=3)
 w = concat([h,
      z], axis = - 1)
 q = w if units > 2
     else h
 r = reshape(w, [
     7, 1 ]) -> flatten
 s = r + \\
   r
  output out = Dense(2)(s)   # the end
}
train m {
  loss = {
     out: mse }
  epochs=3
  # c
  batch_size=  32
}
"""

MESSY_FORMATTED = """\
# header

block b(x, n: int = 2, k: int = 3) {
    y = x -> Dense(n, activation=relu)
    if n != 2 { y = y -> relu } else { y = -1 * y }  # neg

    return y
        -> Dense(3)
}

model m(units: int = 4) {
    input x: float32[8]
    h = x ->  # trailing arrow comment
        Dense(units)
    # lone comment
    z = x -> Dense(units,
                   activation=relu) -> b(2,
                                         k=3)
    w = concat([h,
                z], axis=-1)
    q = w if units > 2 else h
    r = reshape(w, [
        7, 1]) -> flatten
    s = r + \\
        r
    output out = Dense(2)(s)  # the end
}

train m {
    loss = {
        out: mse}
    epochs = 3
    # c
    batch_size = 32
}
"""


def _strip_doc_strings(graph) -> None:
    """Source locations live in node doc strings, subgraphs (Loop bodies) included."""
    for n in graph.node:
        n.doc_string = ""
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _strip_doc_strings(a.g)


def canonical_onnx(text: str, name: str = "<string>") -> bytes:
    """The compiled ONNX without what legitimately depends on the text's layout
    (source locations in node doc strings, the source's SHA-256)."""
    cf = compile_text(text, os.path.basename(name), base_dir=os.path.dirname(name) or EXAMPLES)
    out = b""
    for model_name in cf.model_names:          # every model of the file
        proto = cf.build(model_name).to_onnx()
        _strip_doc_strings(proto.graph)
        keep = [p for p in proto.metadata_props if p.key != "kdsl.source_sha256"]
        del proto.metadata_props[:]
        proto.metadata_props.extend(keep)
        out += proto.SerializeToString()
    return out


def comments(text: str) -> list[str]:
    return [str(t).rstrip() for t in _lexer().lex(text, dont_ignore=True) if t.type == "COMMENT"]


# -- the style -------------------------------------------------------------------------------------
def test_examples_are_formatted_canonically():
    for path in EXAMPLE_FILES:
        text = open(path, encoding="utf-8").read()
        assert format_source(text, path) == text, f"{path} is not in canonical style; run kdsl fmt on it"


def test_messy_file():
    out = format_source(MESSY)
    assert out == MESSY_FORMATTED
    assert format_source(out) == out
    assert comments(out) == comments(MESSY)
    assert canonical_onnx(out) == canonical_onnx(MESSY)


@pytest.mark.parametrize("src,want", [
    # spacing: operators, commas, keyword arguments, annotated defaults, unary minus, types
    ("model m(a:int=1,b=2){\ninput x:float32[ 4 ,2]\noutput y=x->Dense(a*2,activation=relu)\n}\n",
     "model m(a: int = 1, b=2) {\n    input x: float32[4, 2]\n    output y = x -> Dense(a * 2, activation=relu)\n}\n"),
    ("model m {\n input x: float32[4]\n output y = mean(x,axis=-1,keepdims=true)\n}\n",
     "model m {\n    input x: float32[4]\n    output y = mean(x, axis=-1, keepdims=true)\n}\n"),
    # a one-line block stays on one line; blank lines collapse; none just inside a block
    ("model m {\n\n input x: float32[4]\n repeat 2 {x = x->Dense(4)}\n\n\n output x\n\n}\n",
     "model m {\n    input x: float32[4]\n    repeat 2 { x = x -> Dense(4) }\n\n    output x\n}\n"),
    # trailing '->' moves to the next line, aligned under the statement's first '->'
    ("model m {\n input x: float32[4]\n output y = x -> Dense(4) ->\n   Dense(2)\n}\n",
     "model m {\n    input x: float32[4]\n    output y = x -> Dense(4)\n                 -> Dense(2)\n}\n"),
    # `} else` joins; a multi-line block opens and closes on its own lines
    ("block b(x, s: int = 1) { if s != 1 { x = x -> relu }\nelse { x = x -> tanh }\nreturn x }\n",
     "block b(x, s: int = 1) {\n    if s != 1 { x = x -> relu } else { x = x -> tanh }\n    return x\n}\n"),
    # a comment between `}` and `else` stays at the block's level (and keeps them apart)
    ("block b(x, s: int = 1) {\n  if s == 1 {\n x = x -> relu\n }\n  # no\n else { x = x -> tanh }\n return x\n}\n",
     "block b(x, s: int = 1) {\n    if s == 1 {\n        x = x -> relu\n    }\n    # no\n"
     "    else { x = x -> tanh }\n    return x\n}\n"),
    # dicts, train sections (aligned '='), one blank line between top-level definitions
    ("model m {\n input x: float32[4]\n output y = x -> Dense(1)\n}\ntrain m {\nloss={ y : mse }\nbatch_size = 8\n}\n",
     "model m {\n    input x: float32[4]\n    output y = x -> Dense(1)\n}\n\ntrain m {\n"
     "    loss       = {y: mse}\n    batch_size = 8\n}\n"),
    # comments: own-line ones indented with the code, trailing ones aligned in a run
    ("model m {\n# inputs\n input x: float32[4] # the x\n output y = x -> Dense(1)  #  y\n}\n# end\n",
     "model m {\n    # inputs\n    input x: float32[4]       # the x\n    output y = x -> Dense(1)  #  y\n}\n# end\n"),
    # CRLF, tabs and a missing final newline
    ("model m {\r\n\tinput x: float32[4]\r\n\toutput x\r\n}", "model m {\n    input x: float32[4]\n    output x\n}\n"),
    ("", ""),
    ("# only a comment", "# only a comment\n"),
])
def test_style(src, want):
    assert format_source(src) == want
    assert format_source(want) == want


def test_syntax_errors_are_reported_not_formatted():
    with pytest.raises(KdslError) as e:
        format_source("model m {\n    input x: float32[4\n}\n", "bad.kd")
    assert str(e.value).startswith("bad.kd:")


# -- property: formatting never changes the compiled model ------------------------------------------
def perturb(text: str, rng: random.Random, layout: bool = True) -> str:
    """The same program with random whitespace; with ``layout`` also random comments, blank lines,
    line breaks inside brackets and trailing instead of leading '->'."""
    toks = list(_lexer().lex(text, dont_ignore=True))
    out: list[str] = []
    stack: list[str] = []
    prev_code = None
    for i, t in enumerate(toks):
        typ, val = t.type, str(t)
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if typ == "WS":
            out.append(rng.choice([val, " ", "  ", "\t", " \t ", "    "]) if out and out[-1] != "\n" else
                       rng.choice([val, "", " ", "\t", "        "]))
            continue
        if typ == "_NL":
            if layout and rng.random() < 0.3 and prev_code is not None:
                out.append(rng.choice(["  ", " ", "\t"]) + "# " + rng.choice(["note", "x -> y", "'q' {", "#", ""]))
            n = val.count("\n") + (rng.choice([0, 0, 1, 2]) if layout else 0)
            out.append("\n" * n)
            continue
        if typ == "ARROW" and layout and rng.random() < 0.5 and all(s == "LBRACE" for s in stack) and \
                len(out) >= 3 and out[-1].strip() == "" and "\n" in out[-2] and \
                "#" not in "".join(out[:-2]).rsplit("\n", 1)[-1]:
            # "\n    -> X"  ->  " ->\n    X"  (when the line before has no comment)
            ws = out.pop()
            nl = out.pop()
            out.extend([" ->", nl, ws])
            prev_code = typ
            continue
        out.append(val)
        if typ in ("LPAR", "LSQB", "LBRACE"):
            stack.append(typ)
        elif typ in ("RPAR", "RSQB", "RBRACE") and stack:
            stack.pop()
        if typ != "COMMENT":
            prev_code = typ
        else:
            prev_code = "COMMENT"
        if layout and typ == "COMMA" and stack and stack[-1] in ("LPAR", "LSQB") and rng.random() < 0.3:
            if rng.random() < 0.3:
                out.append("  # c")
            out.append("\n" + " " * rng.randrange(0, 12))
        elif nxt is not None and nxt.type not in ("WS", "_NL", "COMMENT") and rng.random() < 0.2:
            out.append(" ")
    return "".join(out)


SOURCES = [(p, open(p, encoding="utf-8").read()) for p in EXAMPLE_FILES] + [("messy.kd", MESSY)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SOURCES), st.integers(0, 2 ** 32 - 1))
def test_formatting_never_changes_the_onnx(source, seed):
    path, text = source
    noisy = perturb(text, random.Random(seed))
    formatted = format_source(noisy, path)
    assert format_source(formatted, path) == formatted
    assert comments(formatted) == comments(noisy)
    ref = canonical_onnx(text, path)
    assert canonical_onnx(noisy, path) == ref          # the perturbation itself is harmless
    assert canonical_onnx(formatted, path) == ref


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(SOURCES), st.integers(0, 2 ** 32 - 1))
def test_whitespace_noise_formats_back_to_the_canonical_text(source, seed):
    path, text = source
    noisy = perturb(text, random.Random(seed), layout=False)
    assert format_source(noisy, path) == format_source(text, path)


# -- the command -------------------------------------------------------------------------------------
def test_fmt_check_and_rewrite(tmp_path, capsys):
    clean = tmp_path / "clean.kd"
    shutil.copy(os.path.join(EXAMPLES, "mnist_mlp.kd"), clean)
    messy = tmp_path / "sub" / "messy.kd"
    messy.parent.mkdir()
    messy.write_text(MESSY)
    os.chmod(messy, 0o640)
    assert main(["fmt", "--check", str(clean)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(messy)] and "1 file would be reformatted" in err
    assert messy.read_text() == MESSY                      # --check writes nothing
    assert main(["fmt", str(clean), str(messy)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"reformatted {messy}"]
    assert messy.read_text() == MESSY_FORMATTED
    assert stat.S_IMODE(os.stat(messy).st_mode) == 0o640   # permissions kept
    assert main(["fmt", "--check", str(tmp_path)]) == 0
    assert main(["fmt", str(tmp_path)]) == 0
    assert "2 files already formatted" in capsys.readouterr().out


def test_fmt_examples_are_clean(capsys):
    assert main(["fmt", "--check", EXAMPLES]) == 0


def test_fmt_errors(tmp_path, capsys):
    bad = tmp_path / "bad.kd"
    bad.write_text("model m {\n    input x float32[4]\n}\n")
    assert main(["fmt", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}:2:") and "\x1b[" not in err
    assert bad.read_text() == "model m {\n    input x float32[4]\n}\n"
    assert main(["fmt", str(tmp_path / "missing.kd")]) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["fmt", str(empty)]) == 1


def test_fmt_stdin(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(MESSY))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == MESSY_FORMATTED
    monkeypatch.setattr("sys.stdin", io.StringIO(MESSY))
    assert main(["fmt", "--check", "-"]) == 1
