"""Writers and the `kdsl graph` command: .dot always, .svg/.png through Graphviz when it is there,
.html without anything; `Model.plot` in the builder API."""
import json
import os
import re
import shutil
import subprocess

import pytest

import kdsl
from kdsl import layers
from kdsl.cli import main
from kdsl.errors import KdslError
from kdsl.viz import DotNotFound, build_view, to_dot, to_html

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
RESNET = os.path.join(EXAMPLES, "resnet20.kd")
TWO = os.path.join(EXAMPLES, "two_inputs.kd")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


@pytest.fixture
def no_dot(monkeypatch):
    monkeypatch.setenv("KDSL_DOT", "")


def test_dot_collapsed_and_expanded():
    v = build_view(kdsl.load(RESNET))
    collapsed = to_dot(v)
    assert collapsed.startswith('digraph "resnet20" {')
    assert "subgraph" not in collapsed
    # 9 boxes; the chain relu -> residual -> ... -> residual_8 -> pooling has 10 edges naming 18 ends
    assert collapsed.count('"block:residual') == 9 + 18
    assert '"block:residual_3" [label=<' in collapsed and "6 layers" in collapsed
    assert 'label=" (batch, 32, 32, 3) "' in collapsed
    expanded = to_dot(v, expand_blocks=True)
    assert expanded.count("subgraph") == len(v.clusters) == 30
    assert expanded.count('tooltip="shortcut"') == 7 and "#e8590c" in expanded
    bare = to_dot(v, expand_blocks=True, show_shapes=False, show_params=False)
    assert "(batch," not in bare and "params" not in bare


def test_dot_shared_link_and_escaping():
    v = build_view(kdsl.load(TWO))
    text = to_dot(v)
    assert text.count("shared weights") == 1 and "shared 2/2" in text
    assert '"in0"' in text and '"out1"' in text and "int64 (batch, 64)" in text
    x = kdsl.Input((4,), name="a<b>&c")
    y = layers.Dense(3)(x)
    text = to_dot(build_view(kdsl.Model(x, y, name='q"uote')))
    assert "a&lt;b&gt;&amp;c" in text and 'digraph "q\\"uote"' in text


@needs_dot
def test_svg_and_png_render(tmp_path):
    m = kdsl.load(RESNET)
    svg = m.plot(str(tmp_path / "m.svg"), expand_blocks=True)
    text = open(svg, encoding="utf-8").read()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert text.count('class="node"') == len(m.graph.nodes) + 2
    assert text.count('class="cluster"') == 30
    png = m.plot(str(tmp_path / "m.png"))
    data = open(png, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert oct(os.stat(png).st_mode & 0o777) != oct(0o600)       # not a private temp file
    dot = subprocess.run(["dot", "-Tsvg"], input=to_dot(build_view(kdsl.load(TWO))).encode(),
                         capture_output=True, timeout=120)
    assert dot.returncode == 0 and not dot.stderr.strip(), dot.stderr


def test_without_graphviz_svg_is_refused_with_a_way_out(tmp_path, no_dot, capsys):
    m = kdsl.load(TWO)
    with pytest.raises(DotNotFound) as e:
        m.plot(str(tmp_path / "m.svg"))
    assert "apt-get install graphviz" in e.value.hint
    assert m.plot(str(tmp_path / "m.dot")) and m.plot(str(tmp_path / "m.html"))   # these need no Graphviz
    out = str(tmp_path / "cli.svg")
    assert main(["graph", TWO, "-o", out]) == 1
    err = capsys.readouterr().err
    assert "wrote " + str(tmp_path / "cli.dot") in err
    assert f"dot -Tsvg {tmp_path / 'cli.dot'} -o {out}" in err and "cli.html" in err
    assert os.path.exists(tmp_path / "cli.dot") and not os.path.exists(out)
    assert "\x1b[" not in err and "Traceback" not in err


def test_graph_command(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["graph", RESNET]) == 0                       # default: <model>.html here
    assert "wrote resnet20.html  (45 layers, 274,042 parameters)" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "resnet20.html")
    assert main(["graph", RESNET, "-o", "sub/r.dot", "--expand-blocks", "--no-shapes", "--no-params"]) == 0
    text = open(tmp_path / "sub" / "r.dot", encoding="utf-8").read()
    assert "subgraph" in text and "(batch" not in text
    assert main(["graph", RESNET, "-o", "r.pdf"]) == 1
    assert "Received: -o r.pdf" in capsys.readouterr().err
    assert main(["graph", os.path.join(EXAMPLES, "blocks", "resnet.kd"), "--param", "n=1", "-o", "c.html"]) == 0
    assert main(["graph", "--help"]) == 0
    with pytest.raises(KdslError):
        kdsl.load(TWO).plot(str(tmp_path / "x.jpeg"))


def test_html_is_self_contained():
    m = kdsl.load(TWO)
    page = to_html(build_view(m))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing is fetched at view time: no external scripts, styles, images, fonts or requests
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "url(http" not in page and "@import" not in page and "fetch(" not in page
    assert "XMLHttpRequest" not in page and "<link" not in page
    assert 'data-layer-count="8"' in page and 'data-call-count="9"' in page
    data = json.loads(re.search(r'<script type="application/json" id="kdsl-data">(.*?)</script>', page, re.S)
                      .group(1))
    assert data["model"] == "review_model" and len(data["nodes"]) == 2 + 9 + 2 and data["expand"] is False
    assert data["shared"] == [["n2", "n4"]]


def test_html_escapes_hostile_names():
    x = kdsl.Input((4,), name="</script><script>alert(1)</script>")
    y = layers.Dense(3)(x)
    page = to_html(build_view(kdsl.Model(x, y, name="<b>m</b>")))
    assert page.count("</script>") == 2       # the JSON block and the code block, nothing injected
    assert "<script>alert" not in page and "&lt;b&gt;m&lt;/b&gt;" in page
