"""Data-flow diagrams of models: ``kdsl graph`` and ``Model.plot``.

:func:`build_view` turns a model's IR into a view model (boxes, shape-labelled edges, block
clusters, shared layers, parameter and FLOP counts); :mod:`.dot` writes it as Graphviz source
(rendered to SVG/PNG by the ``dot`` program when it is installed), :mod:`.html` as one
self-contained interactive page (pan, zoom, collapse blocks, click a layer for its details).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import KdslError
from .dot import DotNotFound, find_dot, render_dot, to_dot
from .html import to_html
from .view import View, build_view

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["plot_model", "build_view", "to_dot", "to_html", "render_dot", "find_dot", "DotNotFound",
           "View", "FORMATS"]

FORMATS = ("svg", "png", "dot", "html")


def plot_model(model: "Model", path: str, show_shapes: bool = True, show_params: bool = True,
               expand_blocks: bool = False) -> str:
    """Draw ``model`` to ``path``; the extension picks the format (.svg, .png, .dot, .html).

    ``.svg`` and ``.png`` need Graphviz's ``dot``; without it :class:`DotNotFound` is raised
    (a :class:`~kdsl.errors.KdslError` saying how to install it or use ``.html``/``.dot``).
    Returns ``path``.
    """
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise KdslError(f"Cannot tell the diagram format from '{path}'. Received extension "
                        f"{'.' + ext if ext else '(none)'}; expected one of "
                        f"{', '.join('.' + f for f in FORMATS)}.")
    view = build_view(model)
    if ext == "html":
        data = to_html(view, show_shapes=show_shapes, show_params=show_params, expand_blocks=expand_blocks)
        _write(str(path), data.encode("utf-8"))
        return str(path)
    dot = to_dot(view, show_shapes=show_shapes, show_params=show_params, expand_blocks=expand_blocks)
    _write(str(path), dot.encode("utf-8") if ext == "dot" else render_dot(dot, ext))
    return str(path)


def _write(path: str, data: bytes) -> None:
    """Write atomically, readable as a normal new file would be (umask applies)."""
    from ..runtime import atomic_write_bytes

    atomic_write_bytes(path, data)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
