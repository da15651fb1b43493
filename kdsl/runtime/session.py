"""onnxruntime inference sessions: providers, input checking, batching."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import KdslError
from ..ir import DTYPES, TensorType

__all__ = ["InferenceSession", "resolve_providers", "as_feeds", "check_providers_active"]

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


def resolve_providers(providers: str | Sequence[str] | None) -> list[str]:
    """Map short names (``"cpu"``, ``"cuda"``) to onnxruntime provider names, checking availability."""
    import onnxruntime as ort

    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    out = [_PROVIDER_ALIASES.get(p.lower(), p) for p in providers]
    available = ort.get_available_providers()
    missing = [p for p in out if p not in available]
    if missing:
        hint = "install onnxruntime-gpu for CUDA" if "CUDAExecutionProvider" in missing else None
        raise KdslError(f"Execution provider not available in this onnxruntime. Received: {missing}; "
                        f"available: {available}.", hint=hint)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def check_providers_active(session, providers: Sequence[str]) -> None:
    """Raise if onnxruntime left out an execution provider that was asked for: it falls back to
    the CPU with no more than a logged warning when, say, the CUDA libraries cannot be loaded."""
    missing = [p for p in providers if p != "CPUExecutionProvider" and p not in session.get_providers()]
    if missing:
        hint = None
        if "CUDAExecutionProvider" in missing:
            hint = ("onnxruntime-gpu needs the CUDA and cuDNN libraries of its build on the library path; "
                    "with them installed from pip (as PyTorch's are), `import torch` first or call "
                    "onnxruntime.preload_dlls()")
        raise KdslError(f"onnxruntime could not start the execution provider(s) {missing}: the session runs on "
                        f"{session.get_providers()}.", hint=hint)


def arrays_by_name(value, names: list[str], what: str, kind: str) -> list:
    """``value`` (one array, a list of arrays, or a dict by name) as one array per name, in order.

    ``kind`` says what the names are ("input", "output") for the error messages.
    """
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        missing = [n for n in names if n not in value]
        if unknown:
            raise KdslError(f"`{what}` has keys {unknown} that are not model {kind}s {names}.")
        if missing:
            raise KdslError(f"`{what}` lacks arrays for the {kind}s {missing}.")
        return [value[n] for n in names]
    if isinstance(value, (list, tuple)) and len(names) > 1:
        if len(value) != len(names):
            raise KdslError(f"The model has {len(names)} {kind}s {names}; `{what}` must be a list of "
                            f"{len(names)} arrays. Received: {len(value)}.")
        return list(value)
    if len(names) != 1:
        raise KdslError(f"The model has {len(names)} {kind}s {names}; pass `{what}` as a list or a dict by "
                        f"{kind} name. Received: one array.")
    return [value]


def as_feeds(x: Any, inputs: Sequence[tuple[str, TensorType]], what: str = "x") -> dict[str, np.ndarray]:
    """Turn ``x`` (array, list of arrays, or dict by input name) into checked feeds."""
    arrays = arrays_by_name(x, [n for n, _ in inputs], what, "input")
    feeds = {}
    n = None
    for (name, t), a in zip(inputs, arrays):
        a = np.asarray(a)
        if t.dtype == "string":
            if a.dtype.kind not in "UO" or not all(isinstance(s, str) for s in a.reshape(-1)):
                raise KdslError(f"Input '{name}' expects strings. Received: an array of dtype {a.dtype}.")
            a = a.astype(object)
        elif a.dtype == object:
            raise KdslError(f"Input '{name}' must be a numeric array. Received dtype object.")
        if a.ndim != t.rank:
            raise KdslError(f"Input '{name}' expects arrays of shape {t.shape_str()}. "
                            f"Received: shape {a.shape}.")
        for i, (got, want) in enumerate(zip(a.shape[1:], t.shape[1:]), 1):
            if isinstance(want, int) and got != want:
                raise KdslError(f"Input '{name}' expects arrays of shape {t.shape_str()}. "
                                f"Received: shape {a.shape} (axis {i} is {got}, expected {want}).")
        if n is not None and a.shape[0] != n:
            raise KdslError(f"All inputs must have the same number of samples. Received: "
                            f"{n} and {a.shape[0]} (input '{name}').")
        n = a.shape[0]
        feeds[name] = np.ascontiguousarray(a.astype(DTYPES[t.dtype], copy=False))
    return feeds


class InferenceSession:
    """An onnxruntime session over a serialized model, run in batches."""

    def __init__(self, model_bytes: bytes, providers=None, intra_op_threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        providers = resolve_providers(providers)
        self.session = ort.InferenceSession(model_bytes, opts, providers=providers)
        check_providers_active(self.session, providers)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_batched(self, feeds: dict[str, np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise KdslError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
        n = next(iter(feeds.values())).shape[0] if feeds else 0
        chunks: list[list[np.ndarray]] = [[] for _ in self.output_names]
        for start in range(0, n, batch_size):
            part = {k: v[start:start + batch_size] for k, v in feeds.items()}
            for i, out in enumerate(self.session.run(self.output_names, part)):
                chunks[i].append(out)
        return [np.concatenate(c, axis=0) if c else np.zeros((0,)) for c in chunks]
