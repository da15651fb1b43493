"""The front end's public entry points: ``kdsl.load`` / ``kdsl.loads`` and file checking."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from ..errors import KdslError, Span, did_you_mean
from ..model import Model
from ..syntax import ast as A
from ..train.specs import TrainConfig, build_train_config
from .elaborate import Elaborator, Frame
from .modules import LoadedModule, Loader

__all__ = ["load", "loads", "CompiledFile", "compile_file", "parse_param_value"]


@dataclass
class CompiledFile:
    """A loaded ``.kd`` file: its models, blocks and train sections, ready to build."""
    loader: Loader
    root: LoadedModule
    source_text: str
    path: str

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.root.module.models]

    def train_def(self, model: str) -> A.TrainDef | None:
        for t in self.root.module.trains:
            if t.model == model:
                return t
        return None

    def default_model(self) -> str:
        names = self.model_names
        if len(names) == 1:
            return names[0]
        if not names:
            raise KdslError(f"'{self.path}' defines no model.", Span(self.path, 1, 1, text=self.source_text))
        trained = [t.model for t in self.root.module.trains]
        if len(trained) == 1:
            return trained[0]
        raise KdslError(f"'{self.path}' defines several models ({', '.join(names)}); choose one.",
                        Span(self.path, 1, 1, text=self.source_text), "pass model=NAME (CLI: --model NAME)")

    def build(self, model: str | None = None, params: dict[str, Any] | None = None,
              seed: int | None = None) -> Model:
        name = model or self.default_model()
        mdef = next((m for m in self.root.module.models if m.name == name), None)
        if mdef is None:
            raise KdslError(f"'{self.path}' has no model named '{name}'. Its models: {self.model_names}.",
                            hint=did_you_mean(name, self.model_names))
        modules = {id(lm.module): lm for lm in list(self.loader.cache.values()) + [self.root]}
        el = Elaborator(modules)
        graph = el.build(mdef, _coerce_params(mdef, params or {}))
        tdef = self.train_def(name)
        cfg = self._train_config(el, tdef, [n for n, _ in graph.outputs]) if tdef else None
        source = {"file": os.path.basename(self.path),
                  "sha256": hashlib.sha256(self.source_text.encode("utf-8")).hexdigest()}
        return Model(_graph=graph, source=source, train_config=cfg, seed=seed)

    def _train_config(self, el: Elaborator, tdef: A.TrainDef, outputs: list[str]) -> TrainConfig:
        frame = Frame("train", tdef.model, self.root)
        entries: dict[str, tuple[Any, Span]] = {}
        for st in tdef.entries:
            if not isinstance(st, A.Assign) or st.is_output or len(st.targets) != 1:
                raise KdslError("A train section holds `key = value` lines only.", st.span)
            key = st.targets[0]
            if key in entries:
                raise KdslError(f"'{key}' is set twice in this train section.", st.span)
            entries[key] = (el.eval_train_value(st.value, frame), st.value.span)
        return build_train_config(tdef.model, entries, tdef.span, outputs)

    def check(self) -> list[str]:
        """Build every model whose parameters all have defaults, and validate train sections."""
        names = set(self.model_names)
        for t in self.root.module.trains:
            if t.model not in names:
                raise KdslError(f"train section names model '{t.model}', which this file does not define.",
                                t.model_span or t.span, did_you_mean(t.model, names))
        seen = set()
        for t in self.root.module.trains:
            if t.model in seen:
                raise KdslError(f"Model '{t.model}' has two train sections.", t.span)
            seen.add(t.model)
        built = []
        for m in self.root.module.models:
            if all(p.default is not None for p in m.params):
                self.build(m.name)
                built.append(m.name)
        return built


def compile_file(path: str | os.PathLike, roots: list[str] | None = None) -> CompiledFile:
    """Parse ``path`` and its imports (confined to ``roots``, default its directory)."""
    loader = Loader(roots)
    root = loader.load_file(path)
    return CompiledFile(loader, root, root.module.text, str(path))


def compile_text(text: str, name: str = "<string>", base_dir: str | None = None,
                 roots: list[str] | None = None) -> CompiledFile:
    loader = Loader(roots)
    root = loader.load_text(text, name, base_dir)
    return CompiledFile(loader, root, text, name)


def load(path: str | os.PathLike, model: str | None = None, params: dict[str, Any] | None = None,
         seed: int | None = None, roots: list[str] | None = None) -> Model:
    """Compile a ``.kd`` file into a :class:`kdsl.Model`.

    Args:
        path: the ``.kd`` file.
        model: which model to build, when the file defines several.
        params: compile-time parameters, e.g. ``{"num_classes": 5}``.
        seed: weight-initialisation seed (default: ``kdsl.utils.set_random_seed``'s).
        roots: directories imports may read from (default: the file's directory).
    """
    return compile_file(path, roots).build(model, params, seed)


def loads(text: str, model: str | None = None, params: dict[str, Any] | None = None,
          seed: int | None = None, name: str = "<string>") -> Model:
    """Compile ``.kd`` source text into a :class:`kdsl.Model` (imports relative to the cwd)."""
    return compile_text(text, name).build(model, params, seed)


def parse_param_value(text: str) -> Any:
    """A ``--param k=v`` value: a number, true/false, a JSON list, or else a string."""
    t = text.strip()
    if t in ("true", "false"):
        return t == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if t.startswith("["):
        try:
            return json.loads(t)
        except json.JSONDecodeError:
            raise KdslError(f"Cannot read parameter value {text!r} as a list.") from None
    return t


def _coerce_params(mdef: A.ModelDef, params: dict[str, Any]) -> dict[str, Any]:
    """Strings from the command line become the declared parameter type."""
    types = {p.name: p.type for p in mdef.params}
    out = {}
    for k, v in params.items():
        t = types.get(k)
        if isinstance(v, str) and t and t != "str":
            v = parse_param_value(v)
        if t == "float" and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        out[k] = v
    return out
