"""The second training engine: ONNX Runtime's on-device training API (``engine="ort-training"``).

``generate_ort_artifacts`` turns a compiled model into the files ORT's training API loads
(``training_model.onnx``, ``eval_model.onnx``, ``optimizer_model.onnx``, ``checkpoint``):
the same files its mobile and C/C++/C#/Java training APIs take. :class:`OrtTrainingEngine`
trains with them through ``onnxruntime.training.api`` (``CheckpointState``, ``Module``,
``Optimizer``) behind the portable :class:`~kdsl.runtime.trainer.Trainer`'s interface, so
``fit``/``evaluate`` run unchanged on either engine.

It needs ``onnxruntime-training`` (the last release is ``onnxruntime-training-cpu==1.19.2``,
Python <= 3.12), which installs the ``onnxruntime`` module in place of plain onnxruntime: the
two must not share an environment. ``import onnxruntime.training`` imports torch, which the
on-device API does not need; without torch this module loads the ``api``, ``artifacts`` and
``onnxblock`` submodules under a bare ``onnxruntime.training`` package.

What ORT's tools can train is narrower than the portable engine (measured with 1.19.2: the
gradient builder fails on the ONNX LSTM/GRU/RNN ops, on single-output BatchNormalization and
LayerNormalization, has no gradient for ReduceMax, Elu, Selu, Softplus, Softsign and
HardSigmoid; the CPU build lacks ConvTransposeGrad and ResizeGrad kernels; AveragePool's
gradient kills the process; training-mode BatchNormalization breaks the eval model).
:func:`check_supported` admits exactly what was verified to train like the portable engine and
refuses everything else, before ORT sees it, with a message naming ``engine="portable"``:

- layers: Dense, Activation, Rescaling, Dropout (ORT's own random masks, not the portable
  engine's), Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D, MaxPooling1D/2D,
  GlobalAveragePooling1D/2D, Flatten, Reshape, Permute, ZeroPadding2D, Add, Subtract, Multiply,
  Average, Maximum, Minimum, Concatenate, Embedding, PositionEmbedding,
  TokenAndPositionEmbedding, MultiHeadAttention (without dropout), and the language's operators
  and functions; activations linear, relu, relu6, sigmoid, tanh, softmax, log_softmax, gelu,
  leaky_relu, silu (swish) and exponential. See :data:`SUPPORTED_LAYERS`,
  :data:`SUPPORTED_ACTIVATIONS` and ``_REFUSED_LAYERS`` (why the others are refused);
- losses (one output, Keras's default reduction ``sum_over_batch_size``, no sample or class
  weights): ``mean_squared_error`` (ORT MSELoss), ``mean_absolute_error`` (L1Loss),
  ``sparse_categorical_crossentropy(from_logits=True)`` (CrossEntropyLoss) and
  ``binary_crossentropy(from_logits=True)`` (see :func:`_loss_block`);
- optimizers: ``SGD`` without momentum (ORT SGD) and ``Adam``/``AdamW`` (ORT AdamW, see
  :func:`_optimizer_block`); learning-rate schedules work (the rate is set every step);
- metrics: any kdsl metric, computed by a small ONNX graph on the batch's predictions.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import types
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from ..errors import KdslError
from ..ir import BATCH, TensorType

if TYPE_CHECKING:
    from ..lower.training import TrainSetup
    from ..model import Model

__all__ = ["ort_training_available", "require_ort_training", "check_supported", "generate_ort_artifacts",
           "OrtTrainingEngine", "SUPPORTED_LAYERS", "SUPPORTED_ACTIVATIONS", "SUPPORTED_LOSSES", "ARTIFACT_FILES"]

NOT_INSTALLED = ("onnxruntime-training is not installed (it exists only for Python <= 3.12, as "
                 "onnxruntime-training-cpu 1.19.2, and replaces plain onnxruntime)")
USE_PORTABLE = 'use the portable engine (engine="portable")'

#: the files :func:`generate_ort_artifacts` writes, in this order
ARTIFACT_FILES = ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint")

#: layer classes (by class name) the engine trains; every other layer is refused. Each was
#: checked with onnxruntime-training 1.19.2 (CPU): the loss trajectory against the portable
#: engine where it trains the layer, ORT's gradients against finite differences otherwise.
SUPPORTED_LAYERS = frozenset({
    "Dense", "Activation", "Rescaling", "Dropout",
    "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D",
    "MaxPooling1D", "MaxPooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "Flatten", "Reshape", "Permute", "ZeroPadding2D",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "Embedding", "PositionEmbedding", "TokenAndPositionEmbedding", "MultiHeadAttention",
    # the language's operators and functions: a + b, a @ b, relu(x), mean(x, axis)
    "Binary", "ActivationOp", "Mean",
})
#: layers refused with the reason measured with onnxruntime-training 1.19.2 (CPU)
_REFUSED_LAYERS = {
    "BatchNormalization": "ORT's gradient builder fails on BatchNormalization written with one output, "
                          "and training-mode BatchNormalization breaks the generated eval model (in "
                          "inference mode it would train without batch statistics, unlike Keras)",
    "LayerNormalization": "ORT's gradient builder fails on LayerNormalization written with one output",
    "LSTM": "ORT's gradient builder fails on the ONNX LSTM op (a type error in LSTMGrad)",
    "GRU": "ORT's gradient builder fails on the ONNX GRU op (a type error in GRUGrad)",
    "SimpleRNN": "ORT's gradient builder has no gradient for the ONNX RNN op",
    "Bidirectional": "ORT's gradient builder writes an invalid gradient graph for it (a duplicate "
                     "'zero_bias_grad'), and it fails on the ONNX LSTM/GRU ops anyway",
    "AveragePooling1D": "ORT's AveragePool gradient kills the process (floating point exception)",
    "AveragePooling2D": "ORT's AveragePool gradient kills the process (floating point exception)",
    "GlobalMaxPooling1D": "ORT's gradient builder has no gradient for ReduceMax",
    "GlobalMaxPooling2D": "ORT's gradient builder has no gradient for ReduceMax",
    "Conv2DTranspose": "onnxruntime-training's CPU build has no ConvTransposeGrad kernel",
    "UpSampling2D": "onnxruntime-training's CPU build has no ResizeGrad kernel",
}
#: activations (of Dense/Conv/Activation layers and activation functions) the engine trains;
#: ORT's gradient builder has no gradient for Elu, Selu, Softplus, Softsign and HardSigmoid,
#: so elu, selu, softplus, softsign, hard_sigmoid, hard_silu and mish are refused
SUPPORTED_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "sigmoid", "tanh", "softmax", "log_softmax", "gelu", "leaky_relu", "silu",
    "exponential",
})
#: refused activations -> the ONNX op ORT's gradient builder has no gradient for
_REFUSED_ACTIVATIONS = {"elu": "Elu", "selu": "Selu", "softplus": "Softplus", "softsign": "Softsign",
                        "hard_sigmoid": "HardSigmoid", "hard_silu": "HardSigmoid", "mish": "Softplus"}
#: kdsl loss name -> the ORT loss it becomes
SUPPORTED_LOSSES = {
    "mean_squared_error": "MSELoss",
    "mean_absolute_error": "L1Loss",
    "sparse_categorical_crossentropy": "CrossEntropyLoss",
    "binary_crossentropy": "BCEWithLogitsLoss, written in Keras's stable form",
}


# -- the onnxruntime.training modules ------------------------------------------------------
_MODULES: types.SimpleNamespace | None = None


def _load_modules() -> types.SimpleNamespace:
    """``artifacts``, ``onnxblock`` and the ``api`` classes, without importing torch."""
    global _MODULES
    if _MODULES is not None:
        return _MODULES
    import onnxruntime

    if "onnxruntime.training" not in sys.modules and importlib.util.find_spec("torch") is None:
        # onnxruntime/training/__init__.py imports torch (for ORTModule); the on-device API does
        # not. A bare package over the same directory lets its submodules load on their own.
        pkg = types.ModuleType("onnxruntime.training")
        pkg.__path__ = [os.path.join(os.path.dirname(onnxruntime.__file__), "training")]
        pkg.__package__ = "onnxruntime.training"
        sys.modules["onnxruntime.training"] = pkg
    artifacts = importlib.import_module("onnxruntime.training.artifacts")
    onnxblock = importlib.import_module("onnxruntime.training.onnxblock")
    api = importlib.import_module("onnxruntime.training.api")
    fbs = importlib.import_module("onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs")
    _MODULES = types.SimpleNamespace(artifacts=artifacts, onnxblock=onnxblock, CheckpointState=api.CheckpointState,
                                     Module=api.Module, Optimizer=api.Optimizer, fbs=fbs, ort=onnxruntime)
    return _MODULES


def ort_training_available() -> tuple[bool, str]:
    """``(True, version)`` when onnxruntime-training's on-device API can be used here, else
    ``(False, why)``."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return False, NOT_INSTALLED + "; onnxruntime itself is not importable"
    if not os.path.isdir(os.path.join(list(spec.submodule_search_locations)[0], "training", "api")):
        return False, NOT_INSTALLED + "; this onnxruntime is the plain (inference-only) build"
    try:
        import onnxruntime
        from onnxruntime.capi import _pybind_state as C

        if not hasattr(C, "CheckpointState"):
            return False, NOT_INSTALLED + "; this onnxruntime was built without training support"
        _load_modules()
    except Exception as e:  # a broken or partial install
        return False, f"{NOT_INSTALLED}; importing its training API failed: {type(e).__name__}: {e}"
    return True, f"onnxruntime-training {onnxruntime.__version__}"


def require_ort_training() -> types.SimpleNamespace:
    """The training modules, or a :class:`KdslError` saying why they cannot be used (for
    ``compile(engine="ort-training")`` to fail early)."""
    ok, why = ort_training_available()
    if not ok:
        raise KdslError(f'engine="ort-training" needs onnxruntime\'s training build: {why}.',
                        hint=f"{USE_PORTABLE}, which runs on plain onnxruntime")
    return _load_modules()


# -- what is supported --------------------------------------------------------------------
def _refuse(what: str, why: str) -> KdslError:
    return KdslError(f'engine="ort-training" does not support {what}: {why}.', hint=USE_PORTABLE)


def _layer_problem(layer) -> str | None:
    cls = type(layer).__name__
    if cls in _REFUSED_LAYERS:
        return _REFUSED_LAYERS[cls]
    if cls not in SUPPORTED_LAYERS:
        return "it was not verified to train under onnxruntime-training"
    act = getattr(layer, "activation", None)
    if isinstance(act, str) and act not in SUPPORTED_ACTIVATIONS:
        if act in _REFUSED_ACTIVATIONS:
            return f"activation '{act}': ORT's gradient builder has no gradient for {_REFUSED_ACTIVATIONS[act]}"
        return f"activation '{act}' was not verified to train under onnxruntime-training"
    if cls == "Dropout" and getattr(layer, "noise_shape", None) is not None:
        return "Dropout with a noise_shape has no ONNX Dropout equivalent"
    for arg in ("dropout", "recurrent_dropout"):
        if float(getattr(layer, arg, 0.0) or 0.0) > 0.0:
            return (f"{arg}={getattr(layer, arg)}: the engine trains the inference graph, where only "
                    "Dropout layers are turned into ONNX Dropout")
    for w in layer.weights:
        if w.dtype != "float32":
            return f"weight '{w.name}' is {w.dtype}; ORT's optimizers update float32 only"
    return None


def _loss_kind(name: str, loss, rank: int) -> str:
    """The ORT loss for ``loss``, or raise naming what does not match."""
    fn = getattr(loss, "fn_name", type(loss).__name__)
    if fn not in SUPPORTED_LOSSES:
        raise _refuse(f"the loss '{fn}' (output '{name}')",
                      f"it supports {sorted(SUPPORTED_LOSSES)} (cross-entropies with from_logits=True)")
    if getattr(loss, "reduction", "sum_over_batch_size") != "sum_over_batch_size":
        raise _refuse(f"reduction={loss.reduction!r} of loss '{fn}'",
                      "ORT's losses take the mean over the batch, Keras's reduction='sum_over_batch_size'")
    if fn in ("sparse_categorical_crossentropy", "binary_crossentropy"):
        if not getattr(loss, "from_logits", False):
            raise _refuse(f"{fn} with from_logits=False",
                          "its cross-entropies take logits: drop the final "
                          f"{'softmax' if fn.startswith('sparse') else 'sigmoid'} and pass from_logits=True")
        if float(getattr(loss, "label_smoothing", 0.0) or 0.0) != 0.0:
            raise _refuse(f"label_smoothing in {fn}", "ORT's loss has no label smoothing")
        if getattr(loss, "ignore_class", None) is not None:
            raise _refuse(f"ignore_class in {fn}", "kdsl does not map it to ORT's ignore_index")
        axis = getattr(loss, "axis", -1)
        if axis is not None and axis != -1 and axis != rank - 1:
            raise _refuse(f"axis={axis} in {fn}", "ORT's loss reduces the last axis")
    return fn


def _optimizer_kind(opt) -> str:
    cls = type(opt).__name__
    if getattr(opt, "use_ema", False):
        raise _refuse(f"use_ema=True (optimizer {cls})", "ORT's optimizer models keep no moving average of the weights")
    for arg in ("clipnorm", "clipvalue", "global_clipnorm"):
        if getattr(opt, arg, None) is not None:
            raise _refuse(f"{arg} (optimizer {cls})", "ORT's optimizer models do not clip gradients like Keras")
    if cls == "SGD":
        if getattr(opt, "momentum", 0.0):
            raise _refuse(f"SGD with momentum={opt.momentum}", "ORT's SGD has no momentum")
        if getattr(opt, "weight_decay", None):
            raise _refuse("SGD with weight_decay", "ORT's SGD has no weight decay")
        return "sgd"
    if cls in ("Adam", "AdamW"):
        if getattr(opt, "amsgrad", False):
            raise _refuse(f"{cls} with amsgrad=True", "ORT's AdamW has no amsgrad")
        return "adamw"
    raise _refuse(f"the optimizer {cls}", "it supports SGD (without momentum), Adam and AdamW")


def check_supported(model: "Model", setup: "TrainSetup") -> None:
    """Raise a :class:`KdslError` naming the first layer, loss or optimizer of ``model`` under
    ``setup`` that onnxruntime-training cannot train like the portable engine."""
    for node in model.graph.nodes:
        problem = _layer_problem(node.layer)
        if problem:
            raise KdslError(f'engine="ort-training" does not support layer \'{node.layer.name}\' '
                            f"({node.layer.type_name()}): {problem}.", node.span, hint=USE_PORTABLE)
    for v in model.graph.inputs:
        if v.type.dtype not in ("float32", "int32", "int64"):
            raise _refuse(f"input '{v.name}' of dtype {v.type.dtype}", "it supports float32 and integer inputs")
    outs = model.output_names
    if len(outs) != 1:
        raise _refuse(f"a model with {len(outs)} outputs {outs}", "it trains single-output models")
    name = outs[0]
    if name not in setup.losses:
        raise KdslError(f"No loss for output '{name}'.")
    out_t = model.graph.outputs[0][1].type
    _loss_kind(name, setup.losses[name], out_t.rank)
    weight = setup.loss_weights.get(name, 1.0)
    if float(weight) != 1.0:
        raise _refuse(f"loss_weights={weight}", "it trains one unweighted loss")
    _optimizer_kind(setup.optimizer)
    if out_t.dtype != "float32":
        raise _refuse(f"a {out_t.dtype} output", "its losses take float32 predictions")


# -- the forward model ---------------------------------------------------------------------
def _forward_model(model: "Model", opset: int) -> onnx.ModelProto:
    """The inference model with weights as initializers named ``layer/weight`` (ONNX layout),
    except that Dropout is an ONNX ``Dropout`` in training mode: ORT trains with it and turns
    it off in the eval model. Outputs carry their declared shapes (ORT's CrossEntropyLoss
    needs them)."""
    from ..layers.core import Dropout
    from ..lower.context import CL, LowerContext
    from ..lower.emitter import Emitter
    from ..lower.export import check_opset, make_model, value_info

    check_opset(opset)
    graph = model.graph
    e = Emitter(opset)
    ctx = LowerContext(e, training=False)
    out_names = [n for n, _ in graph.outputs]
    for n in out_names:
        e.reserve(n)
    for v in graph.inputs:
        e.reserve(v.name)
        ctx.place(v, v.name, CL)
    for node in graph.nodes:
        layer = node.layer
        with e.scope(layer.name, str(node.span) if node.span else ""):
            if isinstance(layer, Dropout) and layer.rate > 0.0:
                x, layout = ctx.get_any(node.inputs[0])
                ratio = e.const(np.asarray(layer.rate, np.float32), hint="ratio")
                train = e.const(np.asarray(True), hint="training_mode")
                # the mask output is what ORT's DropoutGrad reads
                y, _mask = e.op("Dropout", [x, ratio, train], n_out=2, seed=_dropout_seed(layer))
                results = (y, layout)
            else:
                results = layer.lower(ctx, node)
        if not isinstance(results, list):
            results = [results]
        for v, r in zip(node.outputs, results):
            nm, layout = (r, CL) if isinstance(r, str) else r
            ctx.place(v, nm, layout)
    outputs = []
    for name, v in graph.outputs:
        e.op("Identity", [ctx.get(v, CL)], out=name)
        outputs.append(value_info(name, v.type))
    inputs = [value_info(v.name, v.type) for v in graph.inputs]
    g = helper.make_graph(e.nodes, graph.name, inputs, outputs, initializer=list(e.initializers.values()))
    return make_model(g, opset, {"kdsl.model": graph.name, "kdsl.graph": "ort-training"})


def _dropout_seed(layer) -> int:
    from ..layers.core import _salt

    return int(_salt(layer) % 65536)


# -- loss and optimizer blocks -----------------------------------------------------------
def _target_type(kind: str, out: TensorType) -> TensorType:
    if kind == "sparse_categorical_crossentropy":
        return TensorType("int64", out.shape[:-1])
    return TensorType("float32", out.shape)


def _loss_block(m: types.SimpleNamespace, kind: str, target: str, out_rank: int = 2):
    """The ORT loss block for ``kind``, reading its targets from the input ``target``.

    All four reduce with ``"mean"`` over every element, which equals Keras's per-sample mean
    over the last axis followed by ``sum_over_batch_size`` (no sample weights).
    ``binary_crossentropy``: ORT's BCEWithLogitsLoss computes ``log(sigmoid(x))`` and
    ``log(1 - sigmoid(x))``, which give ``-inf``/NaN once ``|x|`` passes ~17 in float32; this
    block writes the same loss in Keras's stable form ``max(x, 0) - x*t + log(1 + exp(-|x|))``
    (ordinary ONNX ops, so the artifacts still run on every ORT training API).
    """
    ob = m.onnxblock
    from onnxruntime.training.onnxblock import _graph_utils

    class _Loss(ob.Block):
        def __init__(self):
            super().__init__()
            self._inner = {"mean_squared_error": lambda: ob.loss.MSELoss(reduction="mean"),
                           "mean_absolute_error": lambda: ob.loss.L1Loss(reduction="mean"),
                           "sparse_categorical_crossentropy": lambda: ob.loss.CrossEntropyLoss(reduction="mean"),
                           }.get(kind, lambda: None)()

        def build(self, output_name: str):
            if kind == "sparse_categorical_crossentropy" and out_rank > 2:
                # ONNX's SoftmaxCrossEntropyLoss wants the classes on axis 1: (N, C, d1, ...)
                out_vi = _graph_utils.get_output_from_output_name(self.base, output_name)
                labels = onnx.ValueInfoProto()
                labels.CopyFrom(out_vi)
                labels.name = target
                labels.type.tensor_type.elem_type = onnx.TensorProto.INT64
                del labels.type.tensor_type.shape.dim[-1]
                self.base.graph.input.append(labels)
                scores = self._op("Transpose", output_name, perm=[0, out_rank - 1, *range(1, out_rank - 1)])
                loss = _graph_utils.generate_graph_name("loss")
                log_prob = _graph_utils.generate_graph_name("log_prob")
                self.base.graph.node.append(helper.make_node(
                    "SoftmaxCrossEntropyLoss", [scores, target], [loss, log_prob], reduction="mean",
                    name=_graph_utils.generate_graph_name("SoftmaxCrossEntropyLoss")))
                return loss
            if self._inner is not None:
                return self._inner(output_name, target)
            # binary_crossentropy(from_logits=True), Keras's stable form, mean over all elements
            ob.blocks.InputLike(output_name)(target)
            x = output_name
            one = self._const(1.0)
            soft = self._op("Log", self._op("Add", one, self._op("Exp", self._op("Neg", self._op("Abs", x)))))
            per = self._op("Add", self._op("Sub", self._op("Relu", x), self._op("Mul", x, target)), soft)
            return self._op("ReduceMean", per, keepdims=0)

        def _op(self, op_type: str, *inputs: str, **attrs) -> str:
            out = _graph_utils.generate_graph_name(f"loss.{op_type.lower()}_output")
            self.base.graph.node.append(helper.make_node(op_type, list(inputs), [out],
                                                         name=_graph_utils.generate_graph_name(f"loss.{op_type}"),
                                                         **attrs))
            return out

        def _const(self, value: float) -> str:
            name = _graph_utils.generate_graph_name("bce.one")
            self.base.graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.FLOAT, [], [value]))
            return name

    return _Loss()


def _optimizer_block(m: types.SimpleNamespace, opt, kind: str):
    """ORT's optimizer block for ``opt``.

    SGD: ``w -= lr * g``, as Keras's SGD without momentum.

    Adam/AdamW: ORT's AdamW block, which uses the ``AdamWOptimizer`` kernel in its Hugging Face
    mode (``adam_mode=1``): ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g^2``,
    ``w -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + epsilon)`` with Keras's beta_1, beta_2 and
    epsilon: that is Keras's Adam update exactly, epsilon placement included (ORT's PyTorch mode
    would add epsilon to the bias-corrected ``sqrt(v_hat)``). Where it differs from Keras:

    - weight decay (AdamW, or Adam with ``weight_decay``) is applied after the update, to the
      updated weight (``w -= lr*weight_decay*w_new``), where Keras decays the weight before the
      update; the two differ by ``lr*weight_decay*update`` per step;
    - the bias corrections are computed in float32 by the kernel from an int64 step.
    """
    optim = m.onnxblock.optim
    if kind == "sgd":
        return optim.SGD()
    wd = float(getattr(opt, "weight_decay", None) or 0.0)
    return optim.AdamW(bias_correction=True, betas=(float(opt.beta_1), float(opt.beta_2)),
                       eps=float(opt.epsilon), weight_decay=wd)


# -- artifacts ------------------------------------------------------------------------------
@dataclass
class _Artifacts:
    paths: list[str]
    output: str                       # the model output trained
    target: str                       # the training model's target input
    target_type: TensorType
    loss: str                         # kdsl loss name
    optimizer: str                    # "sgd" or "adamw"
    trainable: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    extra_output: bool = False        # whether the models also output the predictions


def _shorten(text: str, limit: int = 500) -> str:
    """ORT's messages start with a long C++ signature; keep the start and the end (the reason)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:120]} ... {text[-(limit - 125):]}"


@contextlib.contextmanager
def _captured_stderr():
    """Send file descriptor 2 to a temporary file (ORT's C++ logging writes there directly,
    whatever the default logger's severity); yields a function returning what was written."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):   # no real stderr (embedded interpreters)
        yield lambda: ""
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: (tmp.flush(), tmp.seek(0), tmp.read().decode("utf-8", "replace"))[-1]
        finally:
            try:
                sys.stderr.flush()
            except Exception:
                pass
            os.dup2(saved, 2)
            os.close(saved)


def _unique_name(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    return name


def _generate(model: "Model", setup: "TrainSetup", out_dir: str, opset: int = 17,
              with_predictions: bool = False) -> _Artifacts:
    m = require_ort_training()
    check_supported(model, setup)
    proto = _forward_model(model, opset)
    out_name, out_value = model.graph.outputs[0]
    kind = _loss_kind(out_name, setup.losses[out_name], out_value.type.rank)
    opt_kind = _optimizer_kind(setup.optimizer)
    target = _unique_name(f"target:{out_name}", {v.name for v in model.graph.inputs} | {out_name})

    weights = {f"{layer.name}/{w.name}": w for layer in model.graph.layers() for w in layer.weights}
    init_names = [i.name for i in proto.graph.initializer if i.name in weights]
    trainable = [n for n in init_names if weights[n].trainable]
    frozen = [n for n in init_names if not weights[n].trainable]
    if not trainable:
        raise KdslError(f"Model '{model.name}' has no trainable weights to train.")
    os.makedirs(out_dir, exist_ok=True)
    ir_version = proto.ir_version
    with _captured_stderr() as log:   # the gradient builder logs every graph transformer at INFO
        try:
            m.artifacts.generate_artifacts(
                proto, requires_grad=trainable, frozen_params=frozen,
                loss=_loss_block(m, kind, target, out_value.type.rank),
                optimizer=_optimizer_block(m, setup.optimizer, opt_kind), artifact_directory=out_dir,
                additional_output_names=[out_name] if with_predictions else None)
        except Exception as e:
            errors = [ln for ln in log().splitlines() if "[E:" in ln or "[W:" in ln][-3:]
            detail = f"{type(e).__name__}: {_shorten(str(e))}" + "".join(f"\n  {_shorten(ln)}" for ln in errors)
            raise KdslError(f"onnxruntime-training could not build the training artifacts of model "
                            f"'{model.name}': {detail}", hint=USE_PORTABLE) from None
    paths = [os.path.join(out_dir, f) for f in ARTIFACT_FILES]
    for p in paths[:3]:   # ORT 1.19 loads IR <= 10; onnx >= 1.19 saves a newer IR by default
        mp = onnx.load(p)
        if mp.ir_version != ir_version:
            mp.ir_version = ir_version
            onnx.save(mp, p)
    return _Artifacts(paths, out_name, target, _target_type(kind, out_value.type), kind, opt_kind,
                      trainable, frozen, with_predictions)


def generate_ort_artifacts(model: "Model", setup: "TrainSetup", out_dir: str, opset: int = 17) -> list[str]:
    """Write ORT's training artifacts for ``model`` under ``setup`` into ``out_dir``.

    Returns the paths of ``training_model.onnx``, ``eval_model.onnx``, ``optimizer_model.onnx``
    and ``checkpoint`` (the initial weights). The training model takes the model's inputs and
    then ``target:<output>`` (int64 class labels for sparse_categorical_crossentropy, float32
    otherwise) and outputs the loss; the optimizer model takes the learning rate
    (``optimizer.set_learning_rate``) each step.
    """
    return _generate(model, setup, out_dir, opset).paths


# -- checkpoints (parameters + optimizer state) -----------------------------------------------
def _read_checkpoint(m, path: str) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], int]:
    """Parameters, optimizer momentums by parameter, and the optimizer step of an ORT checkpoint."""
    fbs = m.fbs
    ckpt_mod = importlib.import_module(fbs.__name__ + ".Checkpoint")
    with open(path, "rb") as f:
        buf = f.read()
    c = ckpt_mod.Checkpoint.GetRootAs(buf, 0)

    def arr(t) -> np.ndarray:
        dt = helper.tensor_dtype_to_np_dtype(t.DataType())
        dims = [int(d) for d in t.DimsAsNumpy()] if t.DimsLength() else []
        raw = t.RawDataAsNumpy() if t.RawDataLength() else np.zeros(0, np.uint8)
        return np.frombuffer(raw.tobytes(), dtype=dt).reshape(dims).copy()

    params = {}
    ms = c.ModuleState()
    if ms is not None:
        for j in range(ms.RequiresGradParamsLength()):
            t = ms.RequiresGradParams(j)
            params[t.Name().decode()] = arr(t)
        for j in range(ms.FrozenParamsLength()):
            t = ms.FrozenParams(j)
            params[t.Name().decode()] = arr(t)
    moments: dict[str, dict[str, np.ndarray]] = {}
    step = 0
    for g in range(c.OptimizerGroupsLength()):
        grp = c.OptimizerGroups(g)
        step = int(grp.Step())
        for j in range(grp.OptimizerStatesLength()):
            s = grp.OptimizerStates(j)
            moments[s.ParamName().decode()] = {s.Momentums(k).Name().decode(): arr(s.Momentums(k))
                                               for k in range(s.MomentumsLength())}
    return params, moments, step


def _write_checkpoint(m, path: str, trainable: dict[str, np.ndarray], frozen: dict[str, np.ndarray],
                      moments: dict[str, dict[str, np.ndarray]] | None, step: int, lr: float) -> None:
    """An ORT checkpoint (flatbuffer ``ODTC``, version 2) with parameters and, when ``moments``
    is given, one optimizer group holding them and the step."""
    import flatbuffers

    fbs = m.fbs
    T = importlib.import_module(fbs.__name__ + ".Tensor")
    MS = importlib.import_module(fbs.__name__ + ".ModuleState")
    OG = importlib.import_module(fbs.__name__ + ".OptimizerGroup")
    PO = importlib.import_module(fbs.__name__ + ".ParameterOptimizerState")
    CK = importlib.import_module(fbs.__name__ + ".Checkpoint")
    b = flatbuffers.Builder(1024 + sum(a.nbytes for a in trainable.values()) * (3 if moments else 1)
                            + sum(a.nbytes for a in frozen.values()))

    def tensor(name: str, a: np.ndarray) -> int:
        a = np.ascontiguousarray(a)
        nm = b.CreateString(name)
        raw = b.CreateNumpyVector(np.frombuffer(a.tobytes(), np.uint8))
        T.TensorStartDimsVector(b, a.ndim)
        for d in reversed(a.shape):
            b.PrependInt64(int(d))
        dims = b.EndVector()
        T.TensorStart(b)
        T.TensorAddName(b, nm)
        T.TensorAddDims(b, dims)
        T.TensorAddDataType(b, helper.np_dtype_to_tensor_dtype(a.dtype))
        T.TensorAddRawData(b, raw)
        return T.TensorEnd(b)

    def vector(start, items: list[int]) -> int:
        start(b, len(items))
        for it in reversed(items):
            b.PrependUOffsetTRelative(it)
        return b.EndVector()

    req = vector(MS.ModuleStateStartRequiresGradParamsVector, [tensor(n, a) for n, a in trainable.items()])
    frz = vector(MS.ModuleStateStartFrozenParamsVector, [tensor(n, a) for n, a in frozen.items()])
    MS.ModuleStateStart(b)
    MS.ModuleStateAddRequiresGradParams(b, req)
    MS.ModuleStateAddFrozenParams(b, frz)
    MS.ModuleStateAddIsNominalState(b, False)
    MS.ModuleStateAddHasExternalData(b, False)
    module_state = MS.ModuleStateEnd(b)
    groups = None
    if moments:
        states = []
        for pname, moms in moments.items():
            tensors = [tensor(k, a) for k, a in moms.items()]
            mv = vector(PO.ParameterOptimizerStateStartMomentumsVector, tensors)
            pn = b.CreateString(pname)
            PO.ParameterOptimizerStateStart(b)
            PO.ParameterOptimizerStateAddParamName(b, pn)
            PO.ParameterOptimizerStateAddMomentums(b, mv)
            states.append(PO.ParameterOptimizerStateEnd(b))
        sv = vector(OG.OptimizerGroupStartOptimizerStatesVector, states)
        gn = b.CreateString("group0")
        OG.OptimizerGroupStart(b)
        OG.OptimizerGroupAddGroupName(b, gn)
        OG.OptimizerGroupAddStep(b, int(step))
        OG.OptimizerGroupAddInitialLearningRate(b, float(lr))
        OG.OptimizerGroupAddOptimizerStates(b, sv)
        groups = vector(CK.CheckpointStartOptimizerGroupsVector, [OG.OptimizerGroupEnd(b)])
    CK.CheckpointStart(b)
    CK.CheckpointAddVersion(b, 2)
    CK.CheckpointAddModuleState(b, module_state)
    if groups is not None:
        CK.CheckpointAddOptimizerGroups(b, groups)
    b.Finish(CK.CheckpointEnd(b), file_identifier=b"ODTC")
    with open(path, "wb") as f:
        f.write(b.Output())


# -- the engine -------------------------------------------------------------------------------
@dataclass
class OrtProgram:
    """What ``fit``/``evaluate`` read from an engine's ``program`` (as the portable
    :class:`~kdsl.lower.training.TrainingProgram`): log names, inputs, targets."""
    data_inputs: list[tuple[str, TensorType]]
    targets: list[tuple[str, str, TensorType]]          # (input name, output name, type)
    losses: list[tuple[str, str]] = field(default_factory=lambda: [("loss", "loss")])
    metrics: list[tuple[Any, str, dict[str, str]]] = field(default_factory=list)
    sample_weights: list[tuple[str, str]] = field(default_factory=list)
    eval_state: list[str] = field(default_factory=list)
    state: list = field(default_factory=list)


#: the portable engine's Adam slot names for ORT's AdamW momentums
_MOMENT_SLOTS = {"momentum0": "m", "momentum1": "v"}


class OrtTrainingEngine:
    """fit/evaluate on onnxruntime-training's on-device API, with the portable
    :class:`~kdsl.runtime.trainer.Trainer`'s interface.

    The engine keeps ORT's ``CheckpointState``, ``Module`` and ``Optimizer`` over artifacts
    written to a private temporary directory. Optimizer slots use the portable engine's
    names (``dense/kernel:m``, ``dense/kernel:v``), so a kdsl checkpoint saved from one engine
    resumes on the other.
    """

    def __init__(self, model: "Model", setup: "TrainSetup", providers=None, opset: int = 17):
        from ..lower.training import log_names
        from .session import resolve_providers

        self._m = require_ort_training()
        self.model = model
        self.setup = setup
        self.opset = opset
        self.providers = resolve_providers(providers)
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self._dir = tempfile.mkdtemp(prefix="kdsl-ort-training-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        out_name, out_value = model.graph.outputs[0]
        metrics = setup.metrics.get(out_name, [])
        self.art = _generate(model, setup, self._dir, opset, with_predictions=bool(metrics))
        _, metric_logs = log_names([out_name], setup)
        self.program = OrtProgram(data_inputs=[(v.name, v.type) for v in model.graph.inputs],
                                  targets=[(self.art.target, out_name, self.art.target_type)])
        self._metric_sess = None
        if metrics:
            self._metric_sess, self.program.metrics = self._metric_session(out_value.type, metric_logs)
        self._weights = {f"{layer.name}/{w.name}": (layer, w) for layer in model.graph.layers()
                         for w in layer.weights}
        self._lr = float(setup.optimizer.learning_rate)
        self._ort_step = 0
        self.time_in_run = 0.0
        self._open(self.art.paths[3])
        self._feed_order = self.module.input_names()

    # -- ORT objects --------------------------------------------------------------------------
    def _open(self, checkpoint: str) -> None:
        m = self._m
        opts = m.ort.SessionOptions()
        opts.log_severity_level = 3
        train, evalm, optm, _ = self.art.paths
        self.state = m.CheckpointState.load_checkpoint(checkpoint)
        self.module = m.Module(train, self.state, evalm, device=self.device, session_options=opts)
        self.optimizer = m.Optimizer(optm, self.module)
        self.optimizer.set_learning_rate(self._lr)

    def _metric_session(self, out: TensorType, metric_logs):
        """A graph from (predictions, targets, sample weights) to every metric's partial sums."""
        from ..lower.emitter import Emitter
        from ..lower.export import make_model, value_info

        e = Emitter(self.opset)
        for n in ("y_pred", "y_true", "sample_weight"):
            e.reserve(n)
        parts_out, outputs = [], []
        for _, metric, log in metric_logs:
            with e.scope(f"metric/{log}"):
                parts = metric.emit(e, "y_pred", "y_true", "sample_weight", out, self.art.target_type)
            named = {}
            for part, src in parts.items():
                gname = f"metric:{log}:{part}"
                e.op("Identity", [src], out=gname)
                named[part] = gname
                outputs.append(gname)
            parts_out.append((metric, log, named))
        inputs = [value_info("y_pred", out), value_info("y_true", self.art.target_type),
                  value_info("sample_weight", TensorType("float32", (BATCH,)))]
        g = helper.make_graph(e.nodes, "metrics", inputs,
                              [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs],
                              initializer=list(e.initializers.values()))
        opts = self._m.ort.SessionOptions()
        opts.log_severity_level = 3
        sess = self._m.ort.InferenceSession(make_model(g, self.opset).SerializeToString(), opts,
                                            providers=["CPUExecutionProvider"])
        return sess, parts_out

    # -- state ----------------------------------------------------------------------------------
    def _current(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], int]:
        path = os.path.join(self._dir, "current.ckpt")
        self._m.CheckpointState.save_checkpoint(self.state, path, include_optimizer_state=True)
        return _read_checkpoint(self._m, path)

    def slot_values(self) -> dict[str, np.ndarray]:
        """Optimizer slots by the portable engine's names (``<weight>:m``, ``<weight>:v``), ONNX
        layout; empty for SGD."""
        if self.art.optimizer != "adamw":
            return {}
        _, moments, _ = self._current()
        return {f"{p}:{_MOMENT_SLOTS[k]}": a for p, moms in moments.items() for k, a in moms.items()
                if k in _MOMENT_SLOTS}

    def reset_state(self, slots: dict[str, np.ndarray] | None = None, step: int | None = None) -> None:
        """Parameters from the model's current weights; Adam's moments from ``slots`` (portable
        names) or zeros. The optimizer step is set from the next ``train_batch``'s ``step``."""
        trainable = {n: self._onnx_value(n) for n in self.art.trainable}
        frozen = {n: self._onnx_value(n) for n in self.art.frozen}
        moments = None
        if self.art.optimizer == "adamw":
            moments = {}
            for n, a in trainable.items():
                moments[n] = {k: np.ascontiguousarray(np.asarray(slots[f"{n}:{s}"], np.float32).reshape(a.shape))
                              if slots and f"{n}:{s}" in slots else np.zeros_like(a)
                              for k, s in _MOMENT_SLOTS.items()}
        self._ort_step = int(step) if step is not None else self._ort_step
        path = os.path.join(self._dir, "reset.ckpt")
        _write_checkpoint(self._m, path, trainable, frozen, moments, self._ort_step, self._lr)
        self._open(path)

    def _onnx_value(self, name: str) -> np.ndarray:
        layer, w = self._weights[name]
        return np.ascontiguousarray(np.asarray(layer.onnx_weight(w), dtype=np.float32))

    def sync_to_model(self) -> None:
        """Copy the trained parameters back into the model's layers (Keras layout)."""
        from .trainer import keras_from_onnx

        params = self.state.parameters
        for name in self.art.trainable:
            layer, w = self._weights[name]
            w.value = keras_from_onnx(layer, w, np.array(params[name].data)).astype(w.dtype, copy=False)
        self.model._session = None

    # -- data -------------------------------------------------------------------------------------
    def prepare(self, x, y, sample_weight=None, class_weight=None):
        """Inputs and targets checked and converted; sample/class weights must be absent (or all 1)."""
        from .session import as_feeds
        from .trainer import _Data, _class_weights, prepare_targets

        feeds = as_feeds(x, self.program.data_inputs)
        n = next(iter(feeds.values())).shape[0]
        if y is None:
            raise KdslError("Training and evaluation need targets `y`.")
        t_in, out, ttype = self.program.targets[0]
        ys = prepare_targets(y, [(out, ttype)], n)
        if self.art.loss == "sparse_categorical_crossentropy":
            labels = ys[out]
            n_classes = self.model.graph.outputs[0][1].type.shape[-1]
            if labels.size and (labels.min() < 0 or (isinstance(n_classes, int) and labels.max() >= n_classes)):
                raise KdslError(f"Labels for output '{out}' must be class indices in [0, {n_classes}). "
                                f"Received: values from {labels.min()} to {labels.max()}.")
        sw = sample_weight.get(out) if isinstance(sample_weight, dict) else sample_weight
        if sw is not None:
            w = np.asarray(sw, dtype=np.float32)
            if w.shape != (n,):
                raise KdslError(f"`sample_weight` must have shape ({n},). Received: {w.shape}.")
            if not np.all(w == 1.0):
                raise _refuse("sample weights", "ORT's losses take no per-sample weights")
        if class_weight and not np.all(_class_weights(ys[out], class_weight) == 1.0):
            raise _refuse("class weights", "ORT's losses take no per-sample weights")
        return _Data(feeds, ys, {out: np.ones(n, np.float32)}, n)

    def _feeds(self, data, lo: int, hi: int, idx=None) -> list[np.ndarray]:
        sel = idx[lo:hi] if idx is not None else slice(lo, hi)
        t_in, out, _ = self.program.targets[0]
        by_name = {name: np.ascontiguousarray(data.x[name][sel]) for name, _ in self.program.data_inputs}
        by_name[t_in] = np.ascontiguousarray(data.y[out][sel])
        return [by_name[n] for n in self._feed_order]

    def _results(self, outs, data, lo: int, hi: int, idx=None) -> dict[str, np.ndarray]:
        if isinstance(outs, tuple):
            loss, pred = outs[0], outs[1] if len(outs) > 1 else None
        else:
            loss, pred = outs, None
        res = {"loss": np.asarray(loss, dtype=np.float32).reshape(())}
        if self._metric_sess is not None and pred is not None:
            sel = idx[lo:hi] if idx is not None else slice(lo, hi)
            t_in, out, _ = self.program.targets[0]
            vals = self._metric_sess.run(None, {"y_pred": np.ascontiguousarray(pred),
                                                "y_true": np.ascontiguousarray(data.y[out][sel]),
                                                "sample_weight": np.ascontiguousarray(data.sw[out][sel])})
            res.update(zip([o.name for o in self._metric_sess.get_outputs()], vals))
        return res

    # -- steps --------------------------------------------------------------------------------------
    def train_batch(self, data, lo: int, hi: int, idx, lr: float, step: int) -> dict[str, np.ndarray]:
        """One step: forward and backward (``module(...)``), ``optimizer.step()`` at learning rate
        ``lr``, then ``lazy_reset_grad()``. ``step`` is Keras's 1-based iteration; when ORT's own
        counter disagrees (after loading a checkpoint) its state is rewritten first, so Adam's
        bias correction follows Keras's step."""
        if self.art.optimizer == "adamw" and self._ort_step != int(step) - 1:
            self._realign(int(step) - 1)
        if float(lr) != self._lr:
            self._lr = float(lr)
            self.optimizer.set_learning_rate(self._lr)
        feeds = self._feeds(data, lo, hi, idx)
        t = time.perf_counter()
        self.module.train()
        outs = self.module(*feeds)
        self.optimizer.step()
        self.module.lazy_reset_grad()
        self.time_in_run += time.perf_counter() - t
        self._ort_step += 1
        return self._results(outs, data, lo, hi, idx)

    def _realign(self, step: int) -> None:
        params, moments, _ = self._current()
        trainable = {n: params[n] for n in self.art.trainable}
        frozen = {n: params[n] for n in self.art.frozen}
        full = {n: moments.get(n) or {k: np.zeros_like(a) for k in _MOMENT_SLOTS} for n, a in trainable.items()}
        self._ort_step = step
        path = os.path.join(self._dir, "reset.ckpt")
        _write_checkpoint(self._m, path, trainable, frozen, full, step, self._lr)
        self._open(path)

    def eval_batch(self, data, lo: int, hi: int) -> dict[str, np.ndarray]:
        feeds = self._feeds(data, lo, hi)
        self.module.eval()
        try:
            outs = self.module(*feeds)
        finally:
            self.module.train()
        return self._results(outs, data, lo, hi)

    def close(self) -> None:
        """Remove the engine's temporary artifacts."""
        self._cleanup()
