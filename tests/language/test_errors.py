"""Every error kind of the language: file, line, column, message and hint are asserted."""
import textwrap

import pytest

import kdsl
from kdsl.frontend.api import compile_text


def err(src: str, **kw) -> kdsl.KdslError:
    src = textwrap.dedent(src).lstrip("\n")
    with pytest.raises(kdsl.KdslError) as e:
        compile_text(src, "m.kd").build(**kw)
    return e.value


def where(e):
    return (e.span.line, e.span.column)


CASES = [
    # (source, line, col, message fragment, hint fragment or None)
    ("""
     model m {
         input x: float32[4]
         output y = x -> Dens(3)
     }
     """, 3, 21, "Unknown layer or function 'Dens'", "did you mean 'Dense'"),
    ("""
     model m {
         input x: float32[4]
         output y = x -> Dense(3, activaton=relu)
     }
     """, 3, 30, "Dense has no argument 'activaton'", "did you mean 'activation'"),
    ("""
     model m {
         input x: float32[4]
         output y = xx -> Dense(3)
     }
     """, 3, 16, "Undefined value 'xx'", "did you mean 'x'"),
    ("""
     model m {
         input x: float32[4]
         output y = x -> Dense("three")
     }
     """, 3, 27, "Argument 'units' of Dense expects int. Received: units=the string 'three'", None),
    ("""
     model m {
         input a: float32[4]
         input b: float32[5]
         output y = a + b
     }
     """, 4, 16, "incompatible shapes. Received: (None, 4) + (None, 5)", "broadcast"),
    ("""
     model m {
         input a: float32[4]
         h = a -> Dense(8)
         output y = h -> Dense(2, activation=reluu)
     }
     """, 4, 30, "Unknown activation", "did you mean 'relu'"),
    ("""
     model m {
         input x: float32[4]
         if x {
             y = x
         }
         output y = x
     }
     """, 3, 8, "condition on a tensor is not allowed", "compile-time"),
    ("""
     model m {
         input x: float32[4]
         repeat 100000000 { x = x -> Dense(4) }
         output y = x
     }
     """, 3, 12, "exceeds the limit", None),
    ("""
     model m {
         input x: float32[4]
         output y = x -> Dense()
     }
     """, 3, 21, "Dense is missing its required argument 'units'", None),
    ("""
     model m {
         input x: flaot32[4]
         output y = x
     }
     """, 2, 14, "Unknown dtype 'flaot32'", "did you mean 'float32'"),
    ("""
     model m {
         input x: float32[4]
         h = x -> Dense(3)
     }
     """, 1, 1, "Model 'm' has no output", "output"),
    ("""
     block b(x, n: int) {
         y = x -> Dense(n)
     }
     model m {
         input x: float32[4]
         output y = b(x, 3)
     }
     """, 1, 1, "Block 'b' ended without `return`", None),
    ("""
     block b(x, n: int) {
         return x -> Dense(n)
     }
     model m {
         input x: float32[4]
         output y = b(x, 2.5)
     }
     """, 6, 21, "Parameter 'n' of block 'b' expects int. Received: float 2.5", None),
    ("""
     block b(x) {
         return b(x)
     }
     model m {
         input x: float32[4]
         output y = b(x)
     }
     """, 2, 12, "Calls nest deeper than 64", "recursive"),
    ("""
     model m {
         input x: float32[4]
         output y = x -> Dense(3) -> Dense(2)(x)
     }
     """, 3, 33, "must be a layer, a block, a model or a function", None),
    ("""
     model m(k: int = 2) {
         input x: float32[4]
         output y = x -> Dense(k)
     }
     """, 1, 1, "Model 'm' has no parameter 'kk'", "did you mean 'k'"),
    ("""
     model m {
         input x: float32[4]
         layer p = x -> Dense(2)
         output y = p
     }
     """, 3, 15, "`layer p = ...` needs a layer such as Dense(64)", "p = ..."),
    ("""
     model m {
         input x: float32[4]
         output y = x -> Conv2D(8, 3)
     }
     """, 3, 21, "", None),
    ("""
     model m {
         input x: float32[784]
         output y = x -> Dense(1000000000000)
     }
     """, 3, 21, "limit is", None),
    ("""
     model m {
         input x: float32[4]
         output y = x -> Dense(2, name="d") -> Dense(2, name="d")
     }
     """, 3, 43, "Two layers in model 'm' are named 'd'", None),
]


@pytest.mark.parametrize("src,line,col,msg,hint", CASES)
def test_error_points_at_the_source(src, line, col, msg, hint):
    kw = {"params": {"kk": 1}} if "'kk'" in msg else {}
    e = err(src, **kw)
    assert e.span is not None and e.span.file == "m.kd"
    assert where(e) == (line, col), e.render(color=False)
    assert msg in e.message, e.message
    if hint:
        assert e.hint and hint in e.hint, e.hint


SYNTAX = [
    ("model m {\n    input x: float32[4]\n    output y = x -> Dense(3\n}\n", 4, 1, "unexpected '}'"),
    ("model m {\n    input x float32[4]\n}\n", 2, 13, "unexpected name 'float32'; expected ':'"),
    ("model m {\n    input x: float32[4]\n    output y = x ->\n}\n", 4, 1, "unexpected '}'"),
    ("model m \n    input x: float32[4]\n}\n", 1, 9, "unexpected end of line; expected '('"),
    ("model m {\n    input x: float32[4]\n    y = x -> Dense(units: 3)\n}\n", 3, 25, "unexpected ':'"),
    ("model m {\n    input x: float32[4]\n    y = x $ 2\n}\n", 3, 11, "unexpected character '$'"),
    ("model m {\n    input x: float32[4]\n", 2, 24, "unexpected end of file"),
    ("model m {\n    input x: float32[4]\n    model = x\n}\n", 3, 5, "unexpected 'model'"),
]


@pytest.mark.parametrize("src,line,col,msg", SYNTAX)
def test_syntax_errors_point_at_the_token(src, line, col, msg):
    with pytest.raises(kdsl.KdslError) as e:
        compile_text(src, "m.kd").build()
    assert where(e.value) == (line, col), e.value.render(color=False)
    assert msg in e.value.message


def test_syntax_hints():
    e = err("model m {\n    input x: float32[4]\n    y = x -> Dense(units: 3)\n}\n")
    assert e.hint == "keyword arguments are written name=value"
    e = err("model m {\n    input x: float32[4]\n")
    assert e.hint == "a '{' was not closed with '}'"
    e = err("model m {\n    input x: float32[4]\n    model = x\n}\n")
    assert "keyword" in e.hint


def test_rendered_error_has_line_and_caret():
    e = err("""
        model m {
            input x: float32[4]
            output y = x -> Dense(3, activaton=relu)
        }
        """)
    text = e.render(color=False)
    lines = text.splitlines()
    assert lines[0] == "m.kd:3:30: error: Dense has no argument 'activaton'."
    assert lines[1] == "        output y = x -> Dense(3, activaton=relu)"
    assert lines[2] == "    " + " " * 29 + "^" + "~" * 13
    assert lines[3] == "hint: did you mean 'activation'?"


def test_import_may_not_leave_the_root(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "secret.kd").write_text("block b(x) { return x }\n")
    main = tmp_path / "sub" / "main.kd"
    main.write_text('import "../secret.kd"\nmodel m {\n    input x: float32[2]\n    output y = b(x)\n}\n')
    with pytest.raises(kdsl.KdslError) as e:
        kdsl.load(main)
    assert "leaves the allowed directories" in e.value.message
    assert where(e.value) == (1, 1)
    # explicitly allowed root: fine
    m = kdsl.load(main, roots=[str(tmp_path)])
    assert m.output_names == ["y"]


def test_import_cycle_is_an_error(tmp_path):
    (tmp_path / "a.kd").write_text('import "b.kd"\nblock fa(x) { return x }\n')
    (tmp_path / "b.kd").write_text('import "a.kd"\nblock fb(x) { return x }\n')
    with pytest.raises(kdsl.KdslError, match="Import cycle: a.kd -> b.kd -> a.kd"):
        kdsl.load(tmp_path / "a.kd")


def test_missing_import_and_unknown_name(tmp_path):
    (tmp_path / "lib.kd").write_text("block residual(x) { return x }\n")
    (tmp_path / "m.kd").write_text('from "lib.kd" import residul\n')
    with pytest.raises(kdsl.KdslError) as e:
        kdsl.load(tmp_path / "m.kd")
    assert "defines no block or model named 'residul'" in e.value.message
    assert e.value.hint == "did you mean 'residual'?"
    assert where(e.value) == (1, 22)
    (tmp_path / "n.kd").write_text('import "nope.kd"\n')
    with pytest.raises(kdsl.KdslError, match="does not exist"):
        kdsl.load(tmp_path / "n.kd")


def test_non_utf8_file(tmp_path):
    p = tmp_path / "bad.kd"
    p.write_bytes(b"model m {\n  input x: float32[4] # \xff\xfe\n}\n")
    with pytest.raises(kdsl.KdslError) as e:
        kdsl.load(p)
    assert "not valid UTF-8" in e.value.message and e.value.span.line == 2


def test_train_section_errors():
    base = "model m {\n    input x: float32[4]\n    output y = x -> Dense(2)\n}\n"
    cases = [
        ("train m {\n    loss = categorical_crossentropyy\n}\n", 6, 12, "Unknown loss", "categorical_crossentropy"),
        ("train m {\n    loss = mse\n    optimizer = Adamm(learning_rate=0.1)\n}\n", 7, 17, "Unknown optimizer",
         "Adam"),
        ("train m {\n    loss = mse\n    optimizer = Adam(lr=0.1)\n}\n", 7, 17, "Unknown argument 'lr'", None),
        ("train m {\n    loss = mse\n    epochz = 3\n}\n", 7, 14, "Unknown key 'epochz'", "epochs"),
        ("train m {\n    loss = mse\n    batch_size = 0.5\n}\n", 7, 18, "batch_size expects a int", None),
        ("train m {\n    loss = { z: mse }\n}\n", 6, 12, "loss names output 'z'", None),
        ("train q {\n    loss = mse\n}\n", 5, 7, "train section names model 'q'", None),
    ]
    for train, line, col, msg, hint in cases:
        cf = compile_text(base + train, "m.kd")
        with pytest.raises(kdsl.KdslError) as e:
            cf.check()
        assert where(e.value) == (line, col), (train, e.value.render(color=False))
        assert msg in e.value.message, e.value.message
        if hint:
            assert hint in (e.value.hint or ""), e.value.hint


def test_builder_errors_point_at_the_python_line():
    x = kdsl.Input((4,))
    with pytest.raises(kdsl.KdslError) as e:
        kdsl.layers.Dense(3)(x) + kdsl.layers.Dense(4)(x)
    assert e.value.span.file == __file__
    assert "incompatible shapes" in e.value.message
