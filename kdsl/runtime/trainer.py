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
from .session import arrays_by_name, as_feeds, check_providers_active, resolve_providers

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

    def __init__(self, model: "Model", setup: "TrainSetup", providers=None, opset: int = 17,
                 cuda_graph: bool | None = None):
        import onnxruntime as ort

        from ..lower.training import build_training

        self.model = model
        self.setup = setup
        self.providers = resolve_providers(providers)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        if cuda_graph and self.device != "cuda":
            raise KdslError(f"cuda_graph=True needs the CUDA execution provider. Received: providers="
                            f"{self.providers}.", hint='compile(..., providers="cuda")')
        self.program: "TrainingProgram" = build_training(model, setup, opset, device=self.device)
        #: capture the step as a CUDA graph: None = where the provider is CUDA and onnxruntime
        #: allows it, True = required (an error where refused), False = never
        self.cuda_graph = cuda_graph
        self._opts = ort.SessionOptions()
        self._opts.log_severity_level = 3
        self._train_sess = None     # the step for any batch shape, made when first needed
        self.eval_sess = ort.InferenceSession(self.program.eval.SerializeToString(), self._opts,
                                              providers=self.providers)
        check_providers_active(self.eval_sess, self.providers)
        self._ort = ort
        self.state: dict[str, Any] = {}
        self._bindings: list | None = None
        self._pairs: tuple[dict, dict] | None = None
        self._spare: dict[str, Any] = {}            # the second buffer of each updated state
        self._fixed_outputs: dict[str, Any] | None = None
        self._other_outputs: list[tuple[int, str]] = []
        self.reset_state()
        self.train_outputs = [o.name for o in self.program.train.graph.output]
        self.eval_outputs = [o.name for o in self.eval_sess.get_outputs()]
        self.time_in_run = 0.0
        #: the step for fixed batch shapes (at most two), by shapes; see StaticStep
        self.static_steps: dict[tuple, StaticStep] = {}
        self.static_note = ""       # why the step runs without fixed shapes or without a CUDA graph

    @property
    def train_sess(self):
        """The training step for batches of any size (the last, smaller batch of an epoch)."""
        if self._train_sess is None:
            self._train_sess = self._ort.InferenceSession(self.program.train.SerializeToString(), self._opts,
                                                          providers=self.providers)
        return self._train_sess

    @property
    def captured(self) -> bool:
        """Whether the step runs as a captured CUDA graph."""
        return any(st.capture for st in self.static_steps.values())

    # -- state --------------------------------------------------------------------------------
    def _ortvalue(self, a: np.ndarray):
        # a copy: on the CPU an OrtValue shares the array's memory, and the training step writes
        # into the state buffers (the model's own weight arrays must not change under it)
        return self._ort.OrtValue.ortvalue_from_numpy(np.array(a, order="C", copy=True), self.device, 0)

    def _set_state(self, name: str, value: np.ndarray) -> None:
        """Write ``value`` into the state buffer ``name``: in place where it exists (bindings and a
        captured step keep its address), a new buffer otherwise."""
        buf = self.state.get(name)
        if buf is not None and tuple(buf.shape()) == value.shape:
            buf.update_inplace(np.ascontiguousarray(value))
        else:
            self.state[name] = self._ortvalue(value)
            self._pairs = self._bindings = None     # rebuilt around the new state at the next step
            self.static_steps = {}

    def reset_state(self, slots: dict[str, np.ndarray] | None = None) -> None:
        """State from the model's current weights; slots from ``slots`` or their initial values."""
        for s in self.program.state:
            if s.weight is not None:
                value = np.asarray(s.layer.onnx_weight(s.weight))
            else:
                value = slots[s.name] if slots and s.name in slots else s.value
            self._set_state(s.name, np.array(value.astype(s.value.dtype, copy=False), order="C"))

    def finalize_ema(self) -> None:
        """Replace each weight by its moving average (the ``w:ema`` slot): Keras's
        ``finalize_variable_values`` at the end of ``fit`` with ``use_ema=True``."""
        for s in self.program.state:
            if s.kind == "slot" and s.name.endswith(":ema"):
                self._set_state(s.name[:-4], self.state[s.name].numpy().copy())

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

    def _batch_arrays(self, data: _Data, lo: int, hi: int, idx=None, extra: dict | None = None) -> dict:
        """One batch as name -> contiguous array (and the ``extra`` name -> array inputs)."""
        sel = idx[lo:hi] if idx is not None else slice(lo, hi)
        arrays = [(name, data.x[name][sel]) for name, _ in self.program.data_inputs]
        arrays += [(t_in, data.y[o][sel]) for t_in, o, _ in self.program.targets]
        arrays += [(w_in, data.sw[o][sel]) for w_in, o in self.program.sample_weights]
        arrays += list((extra or {}).items())
        return {name: np.ascontiguousarray(a) for name, a in arrays}

    def _bind_batch(self, io, data: _Data, lo: int, hi: int, idx=None, extra: dict | None = None) -> dict:
        """Bind one batch (and ``extra`` name -> array inputs); returns the bound arrays, which the
        caller keeps alive until the run (a binding may keep only a pointer to their memory)."""
        arrays = self._batch_arrays(data, lo, hi, idx, extra)
        for name, a in arrays.items():
            io.bind_cpu_input(name, a)
        return arrays

    # -- steps -------------------------------------------------------------------------------------
    def _ping_pong(self) -> list:
        """Two IOBindings used in turn. State that a step updates lives in two buffers: one
        binding reads buffer A and writes ``X:new`` into buffer B, the other the reverse, so a
        step only rebinds the batch, ``lr`` and ``step`` (no state allocated or bound per step).
        The buffers are OrtValues owned here: onnxruntime 1.19 frees the outputs it allocated
        when their binding is reused, so none of the state is left to it."""
        if self._bindings is None:
            self._bindings = self._bind_turns(self.train_sess, self._outputs()[0])
        return self._bindings

    def _bind_turns(self, sess, outputs: dict, inputs: dict | None = None) -> list[tuple]:
        """For each of the two turns, an IOBinding of ``sess`` that reads the state from one set
        of buffers and writes ``X:new`` into the other, with ``outputs`` (name -> buffer; the
        others go to the CPU) and ``inputs`` (name -> buffer) bound; and the state it writes."""
        first, second = self._state_pairs()
        turns = []
        for src, dst in ((first, second), (second, first)):
            io = sess.io_binding()
            for name, v in {**src, **(inputs or {})}.items():
                io.bind_ortvalue_input(name, v)
            for o in self.train_outputs:
                if o.endswith(":new"):
                    io.bind_ortvalue_output(o, dst[o[:-4]])
                elif o in outputs:
                    io.bind_ortvalue_output(o, outputs[o])
                else:
                    io.bind_output(o, "cpu")
            turns.append((io, {n: dst[n] for n in self._updated}))
        return turns

    def _outputs(self) -> tuple[dict, list]:
        """Loss and metric outputs: those of static shape get buffers of ours (``io.get_outputs()``
        would wrap every output, state included, at each step); the others by position."""
        if self._fixed_outputs is None:
            self._fixed_outputs = {}
            for o in self.program.train.graph.output:
                if not o.name.endswith(":new") and all(d.HasField("dim_value") for d in o.type.tensor_type.shape.dim):
                    self._fixed_outputs[o.name] = _buffer_for(self._ort, o, "cpu")
            self._other_outputs = [(k, o) for k, o in enumerate(self.train_outputs)
                                   if not o.endswith(":new") and o not in self._fixed_outputs]
        return self._fixed_outputs, self._other_outputs

    def _state_pairs(self) -> tuple[dict, dict]:
        """The state as (read, written) buffers of the first of two steps taken in turn (the
        second swaps them), shared by every session of the step; the spare buffers are
        allocated once."""
        if self._pairs is None:
            self._updated = [o[:-4] for o in self.train_outputs if o.endswith(":new")]
            initial = {s.name: s.value for s in self.program.state}
            for name in self._updated:
                if name not in self._spare:
                    self._spare[name] = self._ort.OrtValue.ortvalue_from_shape_and_type(
                        initial[name].shape, initial[name].dtype, self.device, 0)
            self._pairs = dict(self.state), {**self.state, **{n: self._spare[n] for n in self._updated}}
            self._turn = 0
        return self._pairs

    def train_batch(self, data: _Data, lo: int, hi: int, idx, lr: float, step: int) -> dict[str, np.ndarray]:
        extra = {"lr": np.array(lr, dtype=np.float32), "step": np.array(step, dtype=np.float32)}
        arrays = self._batch_arrays(data, lo, hi, idx, extra)
        static = self._static_for(arrays, lo)
        if static is not None:
            t = time.perf_counter()
            try:
                results, written = static.run(self._turn)
            except Exception as err:   # noqa: BLE001 - a first run (the capture) fails: plain runs
                if static.ran:
                    raise
                self.static_steps = {}
                self._refused(err)
                static = None
            self.time_in_run += time.perf_counter() - t
        if static is None:
            io, written = self._ping_pong()[self._turn]
            for name, a in arrays.items():     # kept alive by ``arrays`` until the run
                io.bind_cpu_input(name, a)
            t = time.perf_counter()
            self.train_sess.run_with_iobinding(io)
            self.time_in_run += time.perf_counter() - t
            # copies: .numpy() of a CPU OrtValue is a view of its buffer, which the next step rewrites
            results = {name: value.numpy().copy() for name, value in self._fixed_outputs.items()}
            if self._other_outputs:
                outs = io.get_outputs()
                results.update((name, outs[k].numpy()) for k, name in self._other_outputs)
        self._turn ^= 1
        self.state.update(written)
        self.last_loss = float(results["loss"])
        return results

    def _static_for(self, arrays: dict[str, np.ndarray], lo: int) -> "StaticStep | None":
        """The fixed-shape step for the batch ``arrays`` (starting at sample ``lo``), the arrays
        copied in; None where the batch runs through ``train_sess``. A step is built for the shapes
        of an epoch's first batch; a batch of other shapes (the last, smaller one) runs through
        ``train_sess``."""
        if self.static_note:
            return None
        _, other = self._outputs()
        if other:
            self.static_note = f"outputs of dynamic shape {[o for _, o in other]}"
            return None
        key = tuple((n, a.shape) for n, a in arrays.items())
        step = self.static_steps.get(key)
        if step is not None and lo == 0:
            self.static_steps[key] = self.static_steps.pop(key)        # the least recently used goes first
        if step is None:
            if lo != 0:
                return None
            capture = self.device == "cuda" and self.cuda_graph is not False
            try:
                step = StaticStep(self, dict(key), capture)
            except Exception as err:   # noqa: BLE001 - onnxruntime refuses it: plain runs instead
                self._refused(err)
                return None
            if len(self.static_steps) >= 2:
                self.static_steps.pop(next(iter(self.static_steps)))
            self.static_steps[key] = step
        step.feed(arrays)
        return step

    def _refused(self, err: Exception) -> None:
        why = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        self.static_note = f"onnxruntime refused the fixed-shape step: {why}"
        if self.cuda_graph:
            raise KdslError("cuda_graph=True, but onnxruntime cannot capture this training step as a CUDA "
                            f"graph: {why}", hint="compile with cuda_graph=None (capture where possible) "
                                                  "or cuda_graph=False") from None

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


def _buffer_for(ort, vi: onnx.ValueInfoProto, device: str):
    """An OrtValue of ``vi``'s (static) shape and element type on ``device``."""
    t = vi.type.tensor_type
    return ort.OrtValue.ortvalue_from_shape_and_type([d.dim_value for d in t.shape.dim],
                                                     onnx.helper.tensor_dtype_to_np_dtype(t.elem_type), device, 0)


class StaticStep:
    """The training step for fixed batch shapes, with every input and output at a fixed address.

    The batch dimension is fixed in a copy of the training graph (onnxruntime then folds the
    shape arithmetic away), and the batch, ``lr`` and ``step`` are copied into buffers of the
    step's own, so nothing is bound per step: on the CPU the MLP's epoch took 0.82x the time of
    the step for any batch size. With ``capture`` (the CUDA provider) onnxruntime captures the
    step once as a CUDA graph and replays it: one launch instead of one per node (an LSTM
    unrolled over 200 steps has thousands of small kernels); ``Concat``/``Split`` nodes wider
    than onnxruntime's CUDA kernels take by value are then split in two levels, and the two
    ping-pong bindings of the state are two graphs (``gpu_graph_id`` 1 and 2).
    """

    def __init__(self, trainer: Trainer, shapes: dict[str, tuple], capture: bool):
        from ..lower.rewrite import limit_arity

        ort = trainer._ort
        self.shapes = shapes
        self.capture = capture
        self.ran = False
        model = onnx.ModelProto()
        model.CopyFrom(trainer.program.train)
        for vi in model.graph.input:
            if vi.name in shapes:
                dims = vi.type.tensor_type.shape.dim
                for d, n in zip(dims, shapes[vi.name]):
                    d.Clear()
                    d.dim_value = int(n)
        del model.graph.value_info[:]
        if capture:
            limit_arity(model.graph)
        options = [{"enable_cuda_graph": "1"} if capture and p == "CUDAExecutionProvider" else {}
                   for p in trainer.providers]
        self.sess = ort.InferenceSession(model.SerializeToString(), trainer._opts, providers=trainer.providers,
                                         provider_options=options)
        device = trainer.device
        self.inputs = {vi.name: _buffer_for(ort, vi, device) for vi in model.graph.input if vi.name in shapes}
        self.outputs = {vo.name: _buffer_for(ort, vo, device) for vo in model.graph.output
                        if not vo.name.endswith(":new")}
        self.turns = []
        for k, (io, written) in enumerate(trainer._bind_turns(self.sess, self.outputs, self.inputs)):
            ro = ort.RunOptions()
            if capture:
                ro.add_run_config_entry("gpu_graph_id", str(k + 1))
            self.turns.append((io, ro, written))

    def feed(self, arrays: dict[str, np.ndarray]) -> None:
        """Copy a batch (and ``lr``, ``step``) into the step's input buffers."""
        for name, a in arrays.items():
            self.inputs[name].update_inplace(a)

    def run(self, turn: int) -> tuple[dict[str, np.ndarray], dict]:
        """One step on the fed batch, reading the state's buffers of ``turn`` (0 or 1) and writing
        the other's: the loss and metric values, and the state written (name -> buffer)."""
        io, ro, written = self.turns[turn]
        self.sess.run_with_iobinding(io, ro)
        self.ran = True
        return {name: v.numpy().copy() for name, v in self.outputs.items()}, written


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
