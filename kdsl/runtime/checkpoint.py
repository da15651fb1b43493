"""Checkpoints: one zip file holding the architecture (as ``.kd`` source), the weights, the
compile setup and the optimizer state, written atomically. Loading never unpickles anything:
arrays are read with ``allow_pickle=False`` and the rest is JSON.

Layout of the file::

    meta.json     format, versions, model name, .kd source, seed, compile arguments,
                  optimizer iterations, epochs trained, history
    weights.npz   the weights by name (``dense/kernel``), Keras layout
    slots.npz     optimizer slots by training-graph name (``dense/kernel:m``)
"""
from __future__ import annotations

import inspect
import io
import json
import os
import zipfile
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import KdslError
from .files import atomic_write_bytes

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["save_checkpoint", "load_model", "save_weights", "load_weights"]

FORMAT = "kdsl-checkpoint"
VERSION = 1


def _ser(v: Any) -> Any:
    """Compile arguments as JSON: names, numbers, lists, dicts, and objects as specs."""
    from ..train.specs import Spec

    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_ser(x) for x in v]
    if isinstance(v, dict):
        return {"__dict__": {str(k): _ser(x) for k, x in v.items()}}
    if isinstance(v, Spec):
        return {"__spec__": v.name, "args": _ser(list(v.args)), "kwargs": {k: _ser(x) for k, x in v.kwargs.items()}}
    from ..train.optimizers import Optimizer

    name = getattr(v, "fn_name", None) or type(v).__name__
    params = inspect.signature(type(v).__init__).parameters
    kwargs = {k: _ser(getattr(v, k)) for k in params
              if k not in ("self", "kwargs", "args") and hasattr(v, k) and not callable(getattr(v, k))}
    if isinstance(v, Optimizer):
        kwargs["learning_rate"] = _ser(v._learning_rate)
    return {"__spec__": name, "args": [], "kwargs": kwargs}


def _deser(v: Any) -> Any:
    from ..train.specs import Spec

    if isinstance(v, list):
        return [_deser(x) for x in v]
    if isinstance(v, dict):
        if "__dict__" in v:
            return {k: _deser(x) for k, x in v["__dict__"].items()}
        if "__spec__" in v:
            return Spec(str(v["__spec__"]), _deser(v.get("args", [])),
                        {k: _deser(x) for k, x in v.get("kwargs", {}).items()})
        raise KdslError("Checkpoint metadata is malformed (unexpected object).")
    return v


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _weights_by_name(model: "Model") -> dict[str, np.ndarray]:
    return {f"{layer.name}/{w.name}": np.asarray(w.value) for layer in model.graph.layers() for w in layer.weights}


def save_checkpoint(model: "Model", path: str) -> str:
    meta = {
        "format": FORMAT, "version": VERSION,
        "kdsl_version": __import__("kdsl").__version__,
        "model": model.name,
        "source": model.to_kd(),
        "seed": model._train_seed(),
        "compile": {k: _ser(v) for k, v in (getattr(model, "_compile_record", None) or {}).items()},
        "iterations": int(model.optimizer.iterations) if model.optimizer is not None else 0,
        "epochs_trained": model._epochs_trained(),
        "history": getattr(model.history, "history", None) if model.history is not None else None,
    }
    trainer = getattr(model, "_trainer", None)
    slots = trainer.slot_values() if trainer is not None else (getattr(model, "_pending_slots", None) or {})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("meta.json", json.dumps(meta, indent=1, default=_json_default))
        z.writestr("weights.npz", _npz_bytes(_weights_by_name(model)))
        z.writestr("slots.npz", _npz_bytes(slots))
    atomic_write_bytes(path, buf.getvalue())
    return path


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _read(path: str) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    if not os.path.isfile(path):
        raise KdslError(f"No checkpoint at '{path}'.")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("meta.json").decode("utf-8"))
            weights = _load_npz(z.read("weights.npz"), path)
            slots = _load_npz(z.read("slots.npz"), path) if "slots.npz" in z.namelist() else {}
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KdslError(f"'{path}' is not a kdsl checkpoint ({e}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise KdslError(f"'{path}' is not a kdsl checkpoint (format {meta.get('format') if isinstance(meta, dict) else '?'}).")
    if meta.get("version", 0) > VERSION:
        raise KdslError(f"'{path}' was written by a newer kdsl (checkpoint version {meta.get('version')}).")
    return meta, weights, slots


def _load_npz(data: bytes, path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        raise KdslError(f"'{path}' holds arrays that would need unpickling; refusing to load them ({e}).") from None
    except Exception as e:  # truncated or corrupt
        raise KdslError(f"'{path}' has a corrupt array file ({e}).") from None


def _assign(model: "Model", weights: dict[str, np.ndarray], path: str, strict: bool = True) -> None:
    for layer in model.graph.layers():
        for w in layer.weights:
            key = f"{layer.name}/{w.name}"
            if key not in weights:
                if strict:
                    raise KdslError(f"'{path}' has no weight '{key}'.")
                continue
            a = weights[key]
            if a.shape != w.shape:
                raise KdslError(f"Weight '{key}' in '{path}' has shape {a.shape}; the model expects {w.shape}.")
            w.value = a.astype(w.dtype)
    model._session = None


def load_model(path: str, providers=None) -> "Model":
    """Rebuild a model from a checkpoint: architecture, weights, compile setup and optimizer state,
    so that ``fit`` continues exactly where the saved run stopped."""
    from ..frontend.api import loads

    meta, weights, slots = _read(path)
    model = loads(meta["source"], seed=meta.get("seed"), name=f"{path}:source.kd")
    _assign(model, weights, path)
    comp = {k: _deser(v) for k, v in (meta.get("compile") or {}).items()}
    if comp.get("loss") is not None:
        model.compile(optimizer=comp.get("optimizer") or "rmsprop", loss=comp["loss"],
                      loss_weights=comp.get("loss_weights"), metrics=comp.get("metrics"), providers=providers,
                      engine=comp.get("engine") or "portable")
        model.optimizer.iterations = int(meta.get("iterations", 0))
        model._pending_slots = slots
    model._epochs_done = int(meta.get("epochs_trained", 0))
    model._seed = meta.get("seed")
    return model


def save_weights(model: "Model", path: str) -> str:
    atomic_write_bytes(path, _npz_bytes(_weights_by_name(model)))
    return path


def load_weights(model: "Model", path: str) -> None:
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if "meta.json" in names and "weights.npz" in names:
                    weights = _load_npz(z.read("weights.npz"), path)
                else:
                    weights = None
        except zipfile.BadZipFile:
            weights = None
        if weights is None:
            with open(path, "rb") as f:
                weights = _load_npz(f.read(), path)
    else:
        raise KdslError(f"'{path}' is not a weights file (.npz) or a kdsl checkpoint.")
    _assign(model, weights, path)
    if getattr(model, "_trainer", None) is not None:
        model._trainer.reset_state(model._trainer.slot_values())
