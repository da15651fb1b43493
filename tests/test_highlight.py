"""The Pygments lexer (alias `kdsl`, entry point) and coloured compiler errors."""
import importlib.metadata
import os
import subprocess
import sys

import pytest
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, String

from kdsl.highlight import KdslLexer, vocabulary

ROOT = os.path.join(os.path.dirname(__file__), "..")
EXAMPLES = os.path.join(ROOT, "examples")
EXAMPLE_FILES = sorted(os.path.join(d, f) for d, _, fs in os.walk(EXAMPLES) for f in fs if f.endswith(".kd"))


def tokens(text):
    return [(t, v) for t, v in KdslLexer().get_tokens(text) if v.strip()]


def test_every_example_lexes_without_errors_and_round_trips():
    for path in EXAMPLE_FILES:
        text = open(path, encoding="utf-8").read()
        toks = list(KdslLexer().get_tokens(text))
        assert not [v for t, v in toks if t in Error], path
        assert "".join(v for _, v in toks) == text


def test_token_kinds():
    src = ('from "blocks/x.kd" import res  # blocks\n'
           "model m(n: int = 3) {\n"
           "    input x: float32[seq, 8]\n"
           "    layer proj = Dense(64, activation=relu, use_bias=false)\n"
           "    y = x -> proj -> Dropout(0.5) -> relu\n"
           "    output out = concat([y, y], axis=-1) if n != 2 and true else y @ y\n"
           "}\n")
    got = tokens(src)
    assert (Keyword.Namespace, "from") in got and (String.Double, '"blocks/x.kd"') in got
    assert (Comment.Single, "# blocks") in got
    assert (Keyword.Declaration, "model") in got and (Name.Function, "m") in got
    assert (Keyword.Declaration, "layer") in got and (Name.Variable, "proj") in got
    assert (Keyword, "input") in got and (Keyword.Type, "float32") in got and (Keyword, "output") in got
    assert (Name.Class, "Dense") in got and (Name.Class, "Dropout") in got
    assert (Name.Attribute, "activation") in got and (Name.Attribute, "axis") in got
    assert (Name, "y") in got and (Name.Attribute, "y") not in got     # `y = ...` is not a keyword argument
    assert (Name.Builtin, "relu") in got and (Name.Builtin, "concat") in got
    assert (Number.Integer, "64") in got and (Number.Float, "0.5") in got
    assert (Operator, "->") in got and (Operator, "@") in got and (Operator, "!=") in got
    assert (Operator.Word, "and") in got and (Keyword.Constant, "true") in got and (Keyword.Constant, "false") in got


def test_vocabulary_comes_from_the_language():
    from kdsl.layers import LAYERS
    from kdsl.layers.ops import FUNCTIONS

    v = vocabulary()
    assert set(v["layers"]) == set(LAYERS) and set(FUNCTIONS) <= set(v["functions"])
    for name in LAYERS:
        assert (Name.Class, name) in tokens(f"x -> {name}()\n")


def test_entry_point_is_declared():
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    assert '[project.entry-points."pygments.lexers"]\nkdsl = "kdsl.highlight:KdslLexer"' in text


def _installed() -> bool:
    try:
        eps = importlib.metadata.entry_points(group="pygments.lexers")
    except TypeError:  # pragma: no cover - Python 3.9's API
        eps = importlib.metadata.entry_points().get("pygments.lexers", [])
    return any(ep.name == "kdsl" for ep in eps)


@pytest.mark.skipif(not _installed(), reason="kdsl is not installed (pip install -e .), so its entry point "
                                             "is not registered")
def test_pygments_finds_the_lexer_by_alias_and_filename(tmp_path):
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert isinstance(get_lexer_by_name("kdsl"), KdslLexer)
    assert isinstance(get_lexer_for_filename("model.kd"), KdslLexer)
    exe = os.path.join(os.path.dirname(sys.executable), "pygmentize")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "pygments"]
    out = subprocess.run(cmd + ["-l", "kdsl", "-f", "html", os.path.join(EXAMPLES, "mnist_mlp.kd")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '<span class="nc">Dense</span>' in out.stdout and '<span class="kd">model</span>' in out.stdout


BAD = "model m {\n    input x: float32[4]\n    output y = x -> Dense(3, activaton=relu)\n}\n"


def _env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(extra or {}, PYTHONPATH=os.path.abspath(ROOT))
    return env


def test_errors_are_plain_when_piped_and_coloured_on_a_terminal(tmp_path):
    bad = tmp_path / "bad.kd"
    bad.write_text(BAD)
    cmd = [sys.executable, "-m", "kdsl", "check", str(bad)]
    plain = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert plain.returncode == 1 and "\x1b[" not in plain.stderr
    assert "error: Dense has no argument 'activaton'." in plain.stderr
    forced = subprocess.run(cmd, capture_output=True, text=True, env=_env({"FORCE_COLOR": "1"}), timeout=120)
    assert "\x1b[31;1merror:\x1b[0m" in forced.stderr
    assert "\x1b[36mhint:\x1b[0m did you mean 'activation'?" in forced.stderr


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_errors_are_coloured_on_a_real_terminal(tmp_path):
    bad = tmp_path / "bad.kd"
    bad.write_text(BAD)
    master, slave = os.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "kdsl", "check", str(bad)], stdout=subprocess.DEVNULL,
                           stderr=slave, env=_env(), timeout=120)
        os.close(slave)
        data = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        os.close(master)
    assert p.returncode == 1
    assert b"\x1b[31;1merror:\x1b[0m" in data
