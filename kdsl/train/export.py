"""Writing the portable training graphs beside the inference model (``kdsl compile``)."""
from __future__ import annotations

import io
import json
import os
from typing import TYPE_CHECKING

import numpy as np

from ..runtime.files import atomic_write_bytes

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["export_training_graphs"]


def export_training_graphs(model: "Model", out_dir: str, opset: int = 17, device: str = "cpu") -> list[str]:
    """Write ``<model>.train.onnx``, ``<model>.eval.onnx``, ``<model>.state.npz`` and
    ``<model>.train.json`` (the signature: which output feeds which input, hyper-parameters),
    the graphs built for onnxruntime on ``device`` (``"cpu"`` or ``"cuda"``)."""
    from ..lower.training import build_training

    model._ensure_compiled()
    prog = build_training(model, model._setup, opset, device=device)
    base = os.path.join(out_dir, model.name)
    paths = [f"{base}.train.onnx", f"{base}.eval.onnx", f"{base}.state.npz", f"{base}.train.json"]
    atomic_write_bytes(paths[0], prog.train.SerializeToString())
    atomic_write_bytes(paths[1], prog.eval.SerializeToString())
    buf = io.BytesIO()
    np.savez(buf, **{s.name: s.value for s in prog.state})
    atomic_write_bytes(paths[2], buf.getvalue())
    opt = model.optimizer
    cfg = getattr(model, "train_config", None)
    signature = {
        "model": model.name,
        "device": device,
        "data_inputs": [n for n, _ in prog.data_inputs],
        "targets": {o: t for t, o, _ in prog.targets},
        "sample_weights": {o: w for w, o in prog.sample_weights},
        "state": [s.name for s in prog.state],
        "feedback": {f"{s.name}:new": s.name for s in prog.state if s.kind == "slot" or s.updated},
        "eval_state": prog.eval_state,
        "losses": {g: log for g, log in prog.losses},
        "metrics": {log: parts for _, log, parts in prog.metrics},
        "optimizer": {"name": type(opt).__name__, "learning_rate": opt.learning_rate},
        "fit": dict(cfg.fit) if cfg is not None else {},
        "step": "float32 scalar, 1-based: the number of this step (Adam's bias correction, dropout masks)",
        "lr": "float32 scalar: the learning rate of this step",
    }
    atomic_write_bytes(paths[3], json.dumps(signature, indent=2).encode("utf-8"))
    return paths
