"""fit / evaluate on onnxruntime with the portable training graphs.

The trainer owns the sessions and the training state. Weights, non-trainable state and
optimizer slots live as OrtValues between steps and are bound with IOBinding, so a step
copies the batch in and the loss and metric sums out; ``X:new`` outputs become the next
step's ``X`` inputs. Weights go back into the model (Keras layout) at the end of each epoch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from ..errors import KdslError
from ..ir import DTYPES, TensorType
from .session import arrays_by_name, as_feeds, resolve_providers

if TYPE_CHECKING:
    from ..lower.training import TrainingProgram, TrainSetup
    from ..model import Model

__all__ = ["Trainer", "keras_from_onnx", "prepare_targets"]


def keras_from_onnx(layer, w, array: np.ndarray) -> np.ndarray:
    """Invert ``layer.onnx_weight`` (a permutation/reshape of the Keras array) for one weight."""
    probe_src = np.arange(w.size, dtype=np.float64).reshape(w.shape)
    saved = w.value
    w.value = probe_src
    try:
        probe = np.asarray(layer.onnx_weight(w))
    finally:
        w.value = saved
    if probe.size != w.size:
        raise KdslError(f"Internal: weight layout of {layer.name}/{w.name} is not a permutation.")
    index = probe.reshape(-1).astype(np.int64)
    out = np.empty(w.size, dtype=array.dtype)
    out[index] = np.asarray(array).reshape(-1)
    return out.reshape(w.shape)


def prepare_targets(y, outputs: list[tuple[str, TensorType]], n: int, what: str = "y") -> dict[str, np.ndarray]:
    """Targets by output name, reshaped/cast to the loss's target type, checked against ``n``."""
    arrays = arrays_by_name(y, [o for o, _ in outputs], what, "output")
    out = {}
    for (name, t), a in zip(outputs, arrays):
        a = np.asarray(a)
        if a.shape[:1] != (n,):
            raise KdslError(f"`{what}` for output '{name}' has {a.shape[0] if a.ndim else 0} samples; "
                            f"the inputs have {n}.")
        want = tuple(t.shape[1:])
        if a.ndim == t.rank + 1 and a.shape[-1] == 1:
            a = a.reshape(a.shape[:-1])
        if a.ndim == t.rank - 1 and t.rank >= 2 and t.shape[-1] == 1:
            a = a.reshape(a.shape + (1,))
        if a.ndim != t.rank or any(isinstance(w_, int) and g != w_ for g, w_ in zip(a.shape[1:], want)):
            raise KdslError(f"Targets for output '{name}' must have shape {t.shape_str()} ({t.dtype}). "
                            f"Received: shape {a.shape}.",
                            hint="for sparse_categorical_crossentropy pass integer labels; for "
                                 "categorical_crossentropy one-hot rows (kdsl.utils.to_categorical)")
        if t.is_int and a.dtype.kind == "f":
            if not np.all(np.mod(a, 1) == 0):
                raise KdslError(f"Targets for output '{name}' must be integer class labels. Received: "
                                f"non-integer values.")
        out[name] = np.ascontiguousarray(a.astype(DTYPES[t.dtype], copy=False))
    return out


@dataclass
class _Data:
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]          # by output name
    sw: dict[str, np.ndarray]         # by output name, float32 [N]
    n: int

    def take(self, idx) -> "_Data":
        return _Data({k: v[idx] for k, v in self.x.items()}, {k: v[idx] for k, v in self.y.items()},
                     {k: v[idx] for k, v in self.sw.items()}, len(idx) if not isinstance(idx, slice)
                     else len(range(*idx.indices(self.n))))


class Trainer:
    """Sessions and state for one compiled model (one :class:`TrainSetup`)."""

    def __init__(self, model: "Model", setup: "TrainSetup", providers=None, opset: int = 17):
        import onnxruntime as ort

        from ..lower.training import build_training

        self.model = model
        self.setup = setup
        self.program: "TrainingProgram" = build_training(model, setup, opset)
        self.providers = resolve_providers(providers)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.train_sess = ort.InferenceSession(self.program.train.SerializeToString(), opts,
                                               providers=self.providers)
        self.eval_sess = ort.InferenceSession(self.program.eval.SerializeToString(), opts,
                                              providers=self.providers)
        self._ort = ort
        self.state: dict[str, Any] = {}
        self._bindings: list | None = None
        self.reset_state()
        self.train_outputs = [o.name for o in self.train_sess.get_outputs()]
        self.eval_outputs = [o.name for o in self.eval_sess.get_outputs()]
        self.time_in_run = 0.0

    # -- state --------------------------------------------------------------------------------
    def _ortvalue(self, a: np.ndarray):
        # a copy: on the CPU an OrtValue shares the array's memory, and the training step writes
        # into the state buffers (the model's own weight arrays must not change under it)
        return self._ort.OrtValue.ortvalue_from_numpy(np.array(a, order="C", copy=True), self.device, 0)

    def reset_state(self, slots: dict[str, np.ndarray] | None = None) -> None:
        """State from the model's current weights; slots from ``slots`` or their initial values."""
        for s in self.program.state:
            if s.weight is not None:
                value = np.asarray(s.layer.onnx_weight(s.weight))
            else:
                value = slots[s.name] if slots and s.name in slots else s.value
            self.state[s.name] = self._ortvalue(value.astype(s.value.dtype, copy=False))
        self._bindings = None   # rebuilt around the new state at the next step

    def finalize_ema(self) -> None:
        """Replace each weight by its moving average (the ``w:ema`` slot): Keras's
        ``finalize_variable_values`` at the end of ``fit`` with ``use_ema=True``."""
        for s in self.program.state:
            if s.kind == "slot" and s.name.endswith(":ema"):
                self.state[s.name[:-4]] = self._ortvalue(self.state[s.name].numpy())
        self._bindings = None

    def slot_values(self) -> dict[str, np.ndarray]:
        return {s.name: self.state[s.name].numpy() for s in self.program.state if s.kind == "slot"}

    def sync_to_model(self) -> None:
        """Copy weights and state back into the model's layers (Keras layout)."""
        for s in self.program.state:
            if s.weight is not None and s.updated:
                s.weight.value = keras_from_onnx(s.layer, s.weight, self.state[s.name].numpy()).astype(
                    s.weight.dtype, copy=False)
        self.model._session = None

    # -- data ------------------------------------------------------------------------------------
    def prepare(self, x, y, sample_weight=None, class_weight=None) -> _Data:
        from ..lower.export import host_preprocessing_nodes

        pre = host_preprocessing_nodes(self.model.graph)
        if pre:   # raw inputs (e.g. strings) go through the host-side layer first
            raw = as_feeds(x, [(v.name, v.type) for v in self.model.graph.inputs])
            x = {k: (pre[k].layer.host_apply(a) if k in pre else a) for k, a in raw.items()}
        feeds = as_feeds(x, self.program.data_inputs)
        n = next(iter(feeds.values())).shape[0]
        outputs = [(o, t) for _, o, t in self.program.targets]
        if y is None:
            raise KdslError("Training and evaluation need targets `y`.")
        ys = prepare_targets(y, outputs, n)
        sws = {}
        for o, _ in outputs:
            w = sample_weight.get(o) if isinstance(sample_weight, dict) else sample_weight
            if w is None:
                w = np.ones(n, np.float32)
            w = np.asarray(w, dtype=np.float32)
            if w.shape != (n,):
                raise KdslError(f"`sample_weight` must have shape ({n},). Received: {w.shape}.")
            if class_weight:
                w = w * _class_weights(ys[o], class_weight)
            sws[o] = w
        return _Data(feeds, ys, sws, n)

    def _bind_batch(self, io, data: _Data, lo: int, hi: int, idx=None, extra: dict | None = None) -> list:
        """Bind one batch (and ``extra`` name -> array inputs); returns the bound arrays, which the
        caller keeps alive until the run (a binding may keep only a pointer to their memory)."""
        sel = idx[lo:hi] if idx is not None else slice(lo, hi)
        arrays = [(name, data.x[name][sel]) for name, _ in self.program.data_inputs]
        arrays += [(t_in, data.y[o][sel]) for t_in, o, _ in self.program.targets]
        arrays += [(w_in, data.sw[o][sel]) for w_in, o in self.program.sample_weights]
        arrays += list((extra or {}).items())
        kept = []
        for name, a in arrays:
            a = np.ascontiguousarray(a)
            io.bind_cpu_input(name, a)
            kept.append(a)
        return kept

    # -- steps -------------------------------------------------------------------------------------
    def _ping_pong(self) -> list:
        """Two IOBindings used in turn. State that a step updates lives in two buffers: one
        binding reads buffer A and writes ``X:new`` into buffer B, the other the reverse, so a
        step only rebinds the batch, ``lr`` and ``step`` (no state allocated or bound per step).
        The buffers are OrtValues owned here: onnxruntime 1.19 frees the outputs it allocated
        when their binding is reused, so none of the state is left to it."""
        if self._bindings is None:
            updated = [o[:-4] for o in self.train_outputs if o.endswith(":new")]
            initial = {s.name: s.value for s in self.program.state}
            spare = {name: self._ort.OrtValue.ortvalue_from_shape_and_type(
                initial[name].shape, initial[name].dtype, self.device, 0) for name in updated}
            first, second = dict(self.state), {**self.state, **spare}
            # loss and metric sums of static shape go to buffers of ours too: io.get_outputs()
            # wraps every output, state included, at each step
            types = {o.name: o.type.tensor_type.elem_type for o in self.program.train.graph.output}
            self._fixed_outputs = {}
            for o in self.train_sess.get_outputs():
                if not o.name.endswith(":new") and all(isinstance(d, int) for d in o.shape):
                    self._fixed_outputs[o.name] = self._ort.OrtValue.ortvalue_from_shape_and_type(
                        o.shape, onnx.helper.tensor_dtype_to_np_dtype(types[o.name]), "cpu", 0)
            self._other_outputs = [(k, o) for k, o in enumerate(self.train_outputs)
                                   if not o.endswith(":new") and o not in self._fixed_outputs]
            bindings = []
            for src, dst in ((first, second), (second, first)):
                io = self.train_sess.io_binding()
                for name, v in src.items():
                    io.bind_ortvalue_input(name, v)
                for o in self.train_outputs:
                    if o.endswith(":new"):
                        io.bind_ortvalue_output(o, dst[o[:-4]])
                    elif o in self._fixed_outputs:
                        io.bind_ortvalue_output(o, self._fixed_outputs[o])
                    else:
                        io.bind_output(o, "cpu")
                bindings.append((io, {n: dst[n] for n in updated}))
            self._bindings = bindings
            self._turn = 0
        return self._bindings

    def train_batch(self, data: _Data, lo: int, hi: int, idx, lr: float, step: int) -> dict[str, np.ndarray]:
        io, written = self._ping_pong()[self._turn]
        kept = self._bind_batch(io, data, lo, hi, idx, {"lr": np.array(lr, dtype=np.float32),
                                                       "step": np.array(step, dtype=np.float32)})
        t = time.perf_counter()
        self.train_sess.run_with_iobinding(io)
        self.time_in_run += time.perf_counter() - t
        del kept
        self._turn ^= 1
        self.state.update(written)
        # copies: .numpy() of a CPU OrtValue is a view of its buffer, which the next step rewrites
        results = {name: value.numpy().copy() for name, value in self._fixed_outputs.items()}
        if self._other_outputs:
            outs = io.get_outputs()
            results.update((name, outs[k].numpy()) for k, name in self._other_outputs)
        self.last_loss = float(results["loss"])
        return results

    def eval_batch(self, data: _Data, lo: int, hi: int) -> dict[str, np.ndarray]:
        io = self.eval_sess.io_binding()
        kept = self._bind_batch(io, data, lo, hi)
        for name in self.program.eval_state:
            io.bind_ortvalue_input(name, self.state[name])
        for o in self.eval_outputs:
            io.bind_output(o, "cpu")
        self.eval_sess.run_with_iobinding(io)
        del kept
        return {n: v.numpy() for n, v in zip(self.eval_outputs, io.get_outputs())}


class EpochAggregator:
    """Keras's epoch numbers: loss weighted by batch size, metrics from summed parts."""

    def __init__(self, program: "TrainingProgram", prefix: str = ""):
        self.program = program
        self.prefix = prefix
        self.reset()

    def reset(self) -> None:
        self.loss_sums = {log: 0.0 for _, log in self.program.losses}
        self.count = 0
        self.parts = {log: {} for _, log, _ in self.program.metrics}

    def add(self, results: dict[str, np.ndarray], n: int) -> None:
        for gname, log in self.program.losses:
            self.loss_sums[log] += float(results[gname]) * n
        self.count += n
        for metric, log, parts in self.program.metrics:
            acc = self.parts[log]
            for part, gname in parts.items():
                v = np.asarray(results[gname], dtype=np.float64)
                acc[part] = acc[part] + v if part in acc else v

    def logs(self) -> dict[str, float]:
        out = {}
        for _, log in self.program.losses:
            out[self.prefix + log] = self.loss_sums[log] / self.count if self.count else float("nan")
        for metric, log, _ in self.program.metrics:
            out[self.prefix + log] = metric.result(self.parts[log]) if self.parts[log] else 0.0
        return out


def _class_weights(y: np.ndarray, class_weight: dict) -> np.ndarray:
    if y.ndim >= 2 and y.shape[-1] > 1:
        labels = np.argmax(y, axis=-1)
    else:
        labels = y.reshape(y.shape[0], -1)[:, 0]
        labels = np.rint(labels).astype(np.int64)
    labels = labels.reshape(y.shape[0], -1)[:, 0] if labels.ndim > 1 else labels
    w = np.ones(len(labels), np.float32)
    for k, v in class_weight.items():
        w[labels == int(k)] = float(v)
    return w


def steps_for(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size)) if n else 0
