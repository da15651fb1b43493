"""Loading ``.kd`` files and their imports, confined to the root directories."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import limits
from ..errors import KdslError, Span, did_you_mean
from ..syntax import ast as A
from ..syntax import parse, read_source

__all__ = ["Loader", "LoadedModule"]


@dataclass
class LoadedModule:
    """A parsed file and the names it defines or imports (blocks and models)."""
    module: A.Module
    path: Path
    namespace: dict[str, Any] = field(default_factory=dict)   # name -> BlockDef | ModelDef
    origin: dict[str, Span] = field(default_factory=dict)


class Loader:
    """Parses a root file and everything it imports; imports may not leave ``roots``.

    Args:
        roots: directories imports may read from (default: the root file's directory).
    """

    def __init__(self, roots: list[str | os.PathLike] | None = None):
        self.roots = [Path(r).resolve() for r in (roots or [])]
        self.cache: dict[Path, LoadedModule] = {}
        self._loading: list[Path] = []

    def load_file(self, path: str | os.PathLike) -> LoadedModule:
        p = Path(path)
        if not self.roots:
            self.roots = [p.resolve().parent]
        return self._load(p.resolve(), str(path), None)

    def load_text(self, text: str, name: str = "<string>", base_dir: str | None = None) -> LoadedModule:
        if not self.roots:
            self.roots = [Path(base_dir or os.getcwd()).resolve()]
        mod = parse(text, name)
        fake = Path(base_dir or os.getcwd()).resolve() / f"<{name}>"
        return self._index(mod, fake)

    def _load(self, real: Path, shown: str, span: Span | None) -> LoadedModule:
        if real in self.cache:
            return self.cache[real]
        if real in self._loading:
            chain = " -> ".join(p.name for p in self._loading + [real])
            raise KdslError(f"Import cycle: {chain}.", span)
        if len(self.cache) >= limits.MAX_IMPORTS:
            raise KdslError(f"More than {limits.MAX_IMPORTS} files imported.", span)
        try:
            text = read_source(real)
        except KdslError as e:
            if span is not None and e.span is None:
                e.span = span
            raise
        self._loading.append(real)
        try:
            mod = parse(text, shown)
            loaded = self._index(mod, real)
        finally:
            self._loading.pop()
        self.cache[real] = loaded
        return loaded

    def _index(self, mod: A.Module, real: Path) -> LoadedModule:
        lm = LoadedModule(mod, real)
        for imp in mod.imports:
            target = self._resolve(real.parent, imp)
            sub = self._load(target, _shown(imp.path, mod.path), imp.span)
            if imp.names is None:
                for name, obj in sub.namespace.items():
                    if sub.origin[name].file == sub.module.path:   # only what it defines itself
                        self._bind(lm, name, obj, imp.span)
            else:
                for name, nspan in imp.names:
                    if name not in sub.namespace:
                        raise KdslError(f"'{imp.path}' defines no block or model named '{name}'.", nspan,
                                        did_you_mean(name, sub.namespace))
                    self._bind(lm, name, sub.namespace[name], nspan)
        for d in mod.blocks + mod.models:
            self._bind(lm, d.name, d, d.span)
        return lm

    def _bind(self, lm: LoadedModule, name: str, obj, span: Span) -> None:
        if name in lm.namespace and lm.namespace[name] is not obj:
            raise KdslError(f"'{name}' is defined twice (first at {lm.origin[name]}).", span)
        lm.namespace[name] = obj
        lm.origin[name] = obj.span if hasattr(obj, "span") else span

    def _resolve(self, base: Path, imp: A.Import) -> Path:
        if not imp.path or "\x00" in imp.path:
            raise KdslError("Import path is empty.", imp.span)
        if os.path.isabs(imp.path):
            raise KdslError(f"Import paths are relative to the importing file. Received: '{imp.path}'.",
                            imp.span)
        target = (base / imp.path).resolve()
        if not any(_inside(target, r) for r in self.roots):
            raise KdslError(f"Import '{imp.path}' leaves the allowed directories "
                            f"({', '.join(str(r) for r in self.roots)}).", imp.span,
                            "imports may only read files under the root file's directory or --root")
        if not target.is_file():
            raise KdslError(f"Imported file '{imp.path}' does not exist.", imp.span)
        return target


def _inside(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def _shown(rel: str, importer: str) -> str:
    d = os.path.dirname(importer)
    return os.path.normpath(os.path.join(d, rel)) if d and not importer.startswith("<") else rel
