"""docs/: the layers reference is generated from the layer classes (one source of truth)."""
import importlib.util
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_layers_doc", os.path.join(ROOT, "tools", "gen_layers_doc.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_layers_reference_is_up_to_date():
    want = _generator().generate()
    have = open(os.path.join(ROOT, "docs", "layers.md"), encoding="utf-8").read()
    assert have == want, "docs/layers.md is out of date: run `python tools/gen_layers_doc.py`"


def test_layers_reference_covers_every_layer_and_argument():
    import inspect

    from kdsl.layers import LAYERS

    text = open(os.path.join(ROOT, "docs", "layers.md"), encoding="utf-8").read()
    for name, cls in LAYERS.items():
        assert f"\n### {name}\n" in text
        section = text.split(f"\n### {name}\n", 1)[1].split("\n### ", 1)[0]
        for p in list(inspect.signature(cls.__init__).parameters)[1:]:
            assert f"| `{p}` |" in section, f"{name}.{p} is missing from docs/layers.md"


def test_docs_exist_and_link():
    for page in ("language.md", "layers.md", "tutorial.md"):
        assert os.path.getsize(os.path.join(ROOT, "docs", page)) > 1000
    tutorial = open(os.path.join(ROOT, "docs", "tutorial.md"), encoding="utf-8").read()
    for link in re.findall(r"\]\(([^)#]+\.md)", tutorial):
        assert os.path.exists(os.path.join(ROOT, "docs", link)), link


def _kd_blocks(page):
    text = open(os.path.join(ROOT, "docs", page), encoding="utf-8").read()
    return re.findall(r"```kdsl\n(.*?)```", text, re.S)


def test_kd_examples_in_the_docs_parse_and_are_formatted():
    from kdsl.fmt import format_source

    blocks = _kd_blocks("language.md") + _kd_blocks("tutorial.md")
    assert len(blocks) >= 8
    for b in blocks:
        assert format_source(b) == b, b


def test_the_tutorial_model_compiles():
    from kdsl.frontend.api import compile_text

    source = "\n".join(_kd_blocks("tutorial.md"))
    cf = compile_text(source, "digits.kd")
    assert cf.check() == ["digits"]
    model = cf.build()
    assert model.count_params() == 34_826 and model.train_config is not None
