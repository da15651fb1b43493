#!/usr/bin/env python3
"""Generate docs/layers.md from the layer classes themselves (signatures and docstrings).

The layers reference has one source of truth: each class's ``__init__`` signature (argument
names and defaults) and its docstring (summary, ``Args:``, shapes, weights). Run

    python tools/gen_layers_doc.py            # rewrite docs/layers.md
    python tools/gen_layers_doc.py --check    # exit 1 if docs/layers.md is out of date

tests/test_docs.py fails when the committed file differs from what this script generates.
"""
from __future__ import annotations

import argparse
import inspect
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "docs", "layers.md")

FAMILIES = [
    ("core", "Core layers"), ("conv", "Convolution layers"), ("pooling", "Pooling layers"),
    ("normalization", "Normalization layers"), ("merge", "Merging layers"), ("reshaping", "Reshaping layers"),
    ("spatial", "Spatial layers"), ("embedding", "Embedding layers"),
]


def _md(text: str) -> str:
    """The docstrings' reST inline markup as Markdown."""
    text = re.sub(r":(?:class|func|meth|mod):`~?([^`]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`", text)
    return text.replace("``", "`")


def _value(v) -> str:
    from kdsl.ir.to_kd import format_value

    return format_value(v)


def _parse_doc(doc: str) -> tuple[str, list[tuple[list[str], str]], str]:
    """(summary and intro, [(names, description)], the rest) of a Google-style docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    intro, rest, args = [], [], []
    i = 0
    while i < len(lines) and lines[i].strip() != "Args:":
        intro.append(lines[i])
        i += 1
    if i < len(lines):
        i += 1
        entries: list[str] = []
        while i < len(lines) and (lines[i].startswith(" ") or not lines[i].strip()):
            line = lines[i]
            if not line.strip():
                if i + 1 < len(lines) and lines[i + 1].startswith("    "):
                    i += 1
                    continue
                break
            if len(line) - len(line.lstrip()) <= 4 and not (entries and entries[-1].rstrip().endswith(",")):
                entries.append(line.strip())
            else:
                entries[-1] += " " + line.strip()
            i += 1
        for e in entries:
            m = re.match(r"^([\w, ]+?):\s+(.*)$", e)
            if m:
                args.append(([n.strip() for n in m.group(1).split(",") if n.strip()], m.group(2)))
        rest = lines[i:]
    text_intro = "\n".join(intro).strip()
    text_rest = "\n".join(rest).strip()
    if not args and not rest:
        text_intro, text_rest = text_intro, ""
    return text_intro, args, text_rest


def _base_arg_docs() -> dict[str, str]:
    from kdsl.layers.base import Layer

    _, args, _ = _parse_doc(Layer.__doc__)
    return {n: d for names, d in args for n in names}


def _signature(cls) -> str:
    parts = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        parts.append(p.name if p.default is p.empty else f"{p.name}={_value(p.default)}")
    return f"{cls.__name__}({', '.join(parts)})"


def _layer_section(cls, base_docs: dict[str, str]) -> list[str]:
    intro, args, rest = _parse_doc(cls.__doc__ or "")
    docs = {n: d for names, d in args for n in names}
    out = [f"### {cls.__name__}", ""]
    if intro:
        out += [_md(intro), ""]
    out += ["```kdsl", _signature(cls), "```", ""]
    params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if params:
        out += ["| Argument | Default | Description |", "| --- | --- | --- |"]
        for p in params:
            default = "required" if p.default is p.empty else f"`{_value(p.default)}`"
            desc = docs.get(p.name) or base_docs.get(p.name, "")
            cell = _md(desc).replace("|", "\\|")
            out.append(f"| `{p.name}` | {default} | {cell} |")
        out.append("")
    if rest:
        out += [_md(rest), ""]
    return out


def _functions_section() -> list[str]:
    from kdsl.layers.activations import ACTIVATIONS, ALIASES
    from kdsl.layers.ops import FUNCTIONS

    acts = [a for a in ACTIVATIONS if a != "linear"]
    aliases = {k: v for k, v in ALIASES.items() if k in FUNCTIONS}
    out = ["## Functions", "",
           "Graph functions are called on tensors like layers but have no weights; a function of one",
           "tensor may stand in a pipeline by its bare name (`x -> relu`).", "",
           "Activations (also valid as `activation=` arguments): "
           + ", ".join(f"`{a}`" for a in acts) + ".",
           "Aliases: " + ", ".join(f"`{k}` = `{v}`" for k, v in sorted(aliases.items())) + ".",
           "Softmax-like activations take `axis` (default -1): `softmax(x, axis=1)`.", "",
           "| Function | Arguments |", "| --- | --- |"]
    for name in sorted(FUNCTIONS):
        if name in ACTIVATIONS or name in ALIASES:
            continue
        ps = [p for p in inspect.signature(FUNCTIONS[name]).parameters.values() if p.name != "span"]
        sig = ", ".join(p.name if p.default is p.empty else f"{p.name}={_value(p.default)}" for p in ps)
        out.append(f"| `{name}` | `{name}({sig})` |")
    out.append("")
    return out


def generate() -> str:
    """The text of docs/layers.md."""
    sys.path.insert(0, ROOT)
    from kdsl.layers import LAYERS

    base = _base_arg_docs()
    by_family: dict[str, list] = {}
    for name, cls in LAYERS.items():
        by_family.setdefault(cls.__module__.rsplit(".", 1)[-1], []).append(cls)
    known = [f for f, _ in FAMILIES]
    order = [(f, t) for f, t in FAMILIES if f in by_family] + [
        (f, f.replace("_", " ").capitalize() + " layers") for f in sorted(by_family) if f not in known]
    out = ["# Layers reference", "",
           "<!-- Generated by tools/gen_layers_doc.py from the layer classes' signatures and docstrings;",
           "     do not edit by hand: change the docstring and run `python tools/gen_layers_doc.py`. -->", "",
           "Every layer has Keras 3's name, arguments and defaults, and is written the same way in a `.kd`",
           "file (`x -> Dense(64, activation=relu)`) and in Python (`layers.Dense(64, activation=\"relu\")(x)`).",
           "In `.kd`, `true`/`false`/`none` are Python's `True`/`False`/`None`, lists stand for tuples, and a",
           "bare name stands for a string (`padding=same`). Shapes below include the batch axis.", ""]
    for fam, title in order:
        classes = by_family[fam]
        out.append(f"- [{title}](#{title.lower().replace(' ', '-')}): "
                   + ", ".join(f"[{c.__name__}](#{c.__name__.lower()})" for c in classes))
    out += ["- [Functions](#functions)", ""]
    for fam, title in order:
        out += [f"## {title}", ""]
        for cls in by_family[fam]:
            out += _layer_section(cls, base)
    out += _functions_section()
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/layers.md is out of date")
    args = ap.parse_args(argv)
    text = generate()
    current = open(OUT, encoding="utf-8").read() if os.path.exists(OUT) else None
    if args.check:
        if current != text:
            print("docs/layers.md is out of date; run: python tools/gen_layers_doc.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        with open(OUT, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(OUT, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
