"""The package list in pyproject.toml names every package, and the grammar ships inside it."""
import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_pyproject_lists_every_package():
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    listed = set(re.findall(r'"(kdsl[\w.]*)"', re.search(r"packages = \[(.*?)\]", text, re.S).group(1)))
    found = {"kdsl.grammar"}
    for d, _, files in os.walk(os.path.join(ROOT, "kdsl")):
        if "__init__.py" in files:
            found.add(os.path.relpath(d, ROOT).replace(os.sep, "."))
    assert listed == found


def test_grammar_is_found():
    from kdsl.syntax import grammar_path

    assert grammar_path().name == "kdsl.lark"
