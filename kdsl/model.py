"""The user-facing model: ``Input``, functional ``Model`` and ``Sequential``.

A :class:`Model` wraps an IR :class:`~kdsl.ir.Graph` built either by the
builder API (calling layers on ``kdsl.Input`` tensors) or by the ``.kd``
front end; both produce the same IR, so they export the same ONNX.
"""
from __future__ import annotations

import itertools
import zlib
from typing import Any, Sequence

import numpy as np

from . import limits
from .errors import KdslError, Span
from .ir import BATCH, DTYPES, Graph, TensorType, Value
from .layers.base import Layer, python_call_site, snake_case
from .layers.initializers import get_initializer
from .train.fit import TrainingMixin

__all__ = ["Input", "Model", "Sequential"]

_fresh_dims = itertools.count(1)   # each unnamed (None) input dim is its own symbol


def Input(shape: Sequence[int | str | None], dtype: str = "float32", name: str | None = None,
          batch_size: int | None = None) -> Value:
    """A symbolic model input, as ``keras.Input``.

    Args:
        shape: the shape without the batch axis; ints, or names for symbolic dims
            (``None`` becomes a fresh symbolic dim).
        dtype: one of float32, float16, float64, int32, int64, bool.
        name: the ONNX input name (default ``input``, ``input_1``...).
    """
    span = python_call_site()
    if isinstance(shape, int):
        shape = (shape,)
    if dtype not in DTYPES:
        raise KdslError(f"Unsupported input dtype. Received: dtype={dtype!r}; expected one of {list(DTYPES)}.",
                        span)
    dims: list = [BATCH if batch_size is None else batch_size]
    for i, d in enumerate(shape):
        if d is None:
            dims.append(f"dim{next(_fresh_dims)}")
        elif isinstance(d, str) and d.isidentifier():
            dims.append(d)
        elif isinstance(d, int) and not isinstance(d, bool) and 0 < d <= limits.MAX_DIM:
            dims.append(d)
        else:
            raise KdslError(f"Input shape entries must be positive ints, names or None. Received: "
                            f"shape={tuple(shape)!r}", span)
    return Value(TensorType(dtype, tuple(dims)), None, 0, name=name, span=span)


class Model(TrainingMixin):
    """A model: inputs, outputs, and the layers between them.

    ``Model(inputs, outputs, name=None)`` is Keras's functional API: ``inputs``
    is a ``kdsl.Input`` tensor (or a list/dict of them), ``outputs`` a tensor,
    a list or a dict ``{name: tensor}`` (the dict keys name the ONNX outputs).
    """

    def __init__(self, inputs=None, outputs=None, name: str | None = None, *, _graph: Graph | None = None,
                 source: dict | None = None, train_config: Any = None, seed: int | None = None):
        self.source = source or {}
        self.train_config = train_config
        self._seed = seed
        self._session = None
        if _graph is not None:
            self._set_graph(_graph)
            return
        if inputs is None or outputs is None:
            raise KdslError("Model(inputs, outputs) needs both. Received: "
                            f"inputs={inputs!r:.40}, outputs={outputs!r:.40}", python_call_site())
        self._set_graph(_trace(inputs, outputs, name or "functional"))

    # -- graph, names, weights ---------------------------------------------------------
    def _set_graph(self, graph: Graph) -> None:
        if len(graph.nodes) > limits.MAX_NODES:
            raise KdslError(f"Model '{graph.name}' has {len(graph.nodes):,} nodes; the limit is "
                            f"{limits.MAX_NODES:,}.")
        self.graph = graph
        self.name = graph.name
        _assign_names(graph)
        _name_outputs(graph)
        total = sum(layer.count_params() for layer in graph.layers())
        if total > limits.MAX_MODEL_PARAMETERS:
            raise KdslError(f"Model '{graph.name}' would have {total:,} parameters; the limit is "
                            f"{limits.MAX_MODEL_PARAMETERS:,}.", hint="reduce units/filters")
        _materialize(graph, self._seed)
        self._session = None

    @property
    def layers(self) -> list[Layer]:
        """Layers (not ops) in order of first call."""
        return [layer for layer in self.graph.layers() if not layer.is_op]

    @property
    def inputs(self) -> list[Value]:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list[Value]:
        return [v for _, v in self.graph.outputs]

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.graph.outputs]

    def get_layer(self, name: str) -> Layer:
        for layer in self.graph.layers():
            if layer.name == name:
                return layer
        from .errors import did_you_mean
        raise KdslError(f"No layer named '{name}' in model '{self.name}'.",
                        hint=did_you_mean(name, [l.name for l in self.graph.layers()]))

    @property
    def weights(self):
        return [w for layer in self.graph.layers() for w in layer.weights]

    def get_weights(self) -> list[np.ndarray]:
        """All weights as NumPy arrays, layer by layer in Keras's order and layout."""
        return [a for layer in self.graph.layers() for a in layer.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Set all weights from a list in :meth:`get_weights`'s order (shapes checked)."""
        weights = list(weights)
        need = sum(len(layer.weights) for layer in self.graph.layers())
        if len(weights) != need:
            raise KdslError(f"Model '{self.name}' has {need} weight arrays. Received: {len(weights)}.")
        i = 0
        for layer in self.graph.layers():
            k = len(layer.weights)
            layer.set_weights(weights[i:i + k])
            i += k
        self._session = None
        if getattr(self, "_trainer", None) is not None:
            self._trainer.reset_state(self._trainer.slot_values())

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.graph.layers())

    # -- export and inference ------------------------------------------------------------
    def to_onnx(self, opset: int | None = None, training: bool = False, include_preprocessing: bool = True):
        """The inference model as an ``onnx.ModelProto``.

        Args:
            opset: the ONNX opset (17-21); None: 17, raised to what the exported layers need
                (TextVectorization: 20).
            training: lower in training mode (dropout on, batch statistics).
            include_preprocessing: True (default): the model contains its host-side
                preprocessing layers (TextVectorization) and takes their raw inputs (strings).
                False: the int-token model: those layers are left out and each input they consumed
                takes their output instead, under the input's own name (int64 token ids
                ``[batch, output_sequence_length]``), as the training graphs do; it needs no
                string ops, so it exports at opset 17-19 too. Vectorize on the host with
                ``model.get_layer(name)(texts)``; the metadata ``kdsl.token_input.<input>`` and
                ``kdsl.vocabulary.<layer>`` describe it.
        """
        from .lower import lower_graph
        from .lower.export import default_opset

        skip = not _check_bool(include_preprocessing, "include_preprocessing")
        if opset is None:
            opset = default_opset(self.graph, skip_host_preprocessing=skip)
        meta = {"kdsl.model": self.name}
        for k in ("file", "sha256"):
            if k in self.source:
                meta[f"kdsl.source_{k}"] = str(self.source[k])
        if skip:
            meta.update(_host_preprocessing_metadata(self.graph))
        return lower_graph(self.graph, opset, training=training, metadata=meta,
                           doc=f"kdsl model '{self.name}'", skip_host_preprocessing=skip)

    def export(self, path: str, opset: int | None = None, include_preprocessing: bool = True) -> str:
        """Write the inference model to ``path`` (atomically) and return the path.

        ``include_preprocessing=False`` writes the int-token model (see :meth:`to_onnx`).
        """
        from .runtime import atomic_write_bytes

        proto = self.to_onnx(opset, include_preprocessing=include_preprocessing)
        atomic_write_bytes(path, proto.SerializeToString())
        return path

    def predict(self, x, batch_size: int = 32, verbose: int = 0, providers=None):
        """Run the inference model on ``x`` with onnxruntime, in batches.

        ``x`` is an array (one input), a list of arrays or a dict by input name.
        Returns an array, or a list of arrays for several outputs.
        """
        from .runtime import InferenceSession, as_feeds

        feeds = as_feeds(x, [(v.name, v.type) for v in self.graph.inputs])
        key = tuple(providers) if isinstance(providers, (list, tuple)) else providers
        if self._session is None or self._session[0] != key:
            self._session = (key, InferenceSession(self.to_onnx().SerializeToString(), providers))
        outs = self._session[1].run_batched(feeds, batch_size)
        return outs[0] if len(outs) == 1 else outs

    def __call__(self, inputs, span: Span | None = None):
        """Call the model on tensors like a layer: its layers (and weights) are shared."""
        from .frontend.inline import inline_graph

        return inline_graph(self.graph, inputs, span or python_call_site(), scope=None)

    # -- views -----------------------------------------------------------------------------
    def summary(self, print_fn=None, line_length: int | None = None) -> str | None:
        """Print a Keras-style table: layer (type), output shape, param #, totals."""
        from .summary import summary_text

        text = summary_text(self, line_length=line_length)
        (print_fn or print)(text)
        return None

    def plot(self, path: str, show_shapes: bool = True, show_params: bool = True,
             expand_blocks: bool = False) -> str:
        """Draw the data-flow diagram to ``path`` (.svg, .png, .dot or .html), like Keras's
        ``plot_model``: a box per layer call with its key arguments, edges labelled with tensor
        shapes, block calls as collapsible clusters, parameter and FLOP counts. ``.html`` is one
        self-contained interactive page; ``.svg``/``.png`` need Graphviz's ``dot``. Returns ``path``.
        """
        from .viz import plot_model

        return plot_model(self, path, show_shapes=show_shapes, show_params=show_params,
                          expand_blocks=expand_blocks)

    def to_kd(self) -> str:
        """``.kd`` source that compiles back to this model's graph (weights excluded)."""
        from .ir.to_kd import graph_to_kd

        return graph_to_kd(self.graph)

    def __repr__(self) -> str:
        return f"<kdsl.Model '{self.name}' inputs={self.input_names} outputs={self.output_names}>"


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise KdslError(f"`{name}` must be True or False. Received: {name}={value!r:.40}")
    return value


def _host_preprocessing_metadata(graph: Graph) -> dict[str, str]:
    """What a deployer of the int-token model needs per skipped preprocessing layer
    (each layer's ``host_preprocessing_metadata``)."""
    from .lower.export import host_preprocessing_nodes

    meta: dict[str, str] = {}
    for input_name, node in host_preprocessing_nodes(graph).items():
        meta.update(node.layer.host_preprocessing_metadata(input_name))
    return meta


def _trace(inputs, outputs, name: str) -> Graph:
    if isinstance(inputs, dict):
        ins = []
        for k, v in inputs.items():
            if v.name is None:
                v.name = k
            ins.append(v)
    elif isinstance(inputs, Value):
        ins = [inputs]
    else:
        ins = list(inputs)
    for v in ins:
        if not isinstance(v, Value) or v.node is not None:
            raise KdslError(f"Model inputs must be kdsl.Input tensors. Received: {v!r:.60}")
    if isinstance(outputs, dict):
        outs = list(outputs.items())
    elif isinstance(outputs, Value):
        outs = [(None, outputs)]
    else:
        outs = [(None, v) for v in outputs]
    for _, v in outs:
        if not isinstance(v, Value):
            raise KdslError(f"Model outputs must be tensors. Received: {v!r:.60}")
    used = set()
    for i, v in enumerate(ins):
        if v.name is None:
            v.name = _unique("input", used)
        if v.name in used:
            raise KdslError(f"Two model inputs are named '{v.name}'; input names must be unique.", v.span)
        used.add(v.name)
    named = []
    for n, v in outs:
        if n is None and v.name is not None and v.name not in used:
            n = v.name
        if n is not None:
            n = _unique(n, used) if n in used else n
            used.add(n)
        named.append((n, v))      # unnamed outputs are named after their layer once layers have names
    return Graph.trace(name, ins, named)


def _name_outputs(graph: Graph) -> None:
    """Unnamed outputs take their layer's name, as in Keras (made a valid identifier)."""
    import re

    from .syntax.parser import KEYWORDS

    used = {v.name for v in graph.inputs} | {n for n, _ in graph.outputs if n is not None}
    for i, (n, v) in enumerate(graph.outputs):
        if n is not None:
            continue
        base = v.node.layer.name if v.node is not None else f"output_{i}"
        base = re.sub(r"\W", "_", base)
        if base in KEYWORDS or not base.isidentifier():
            base = f"{base}_out"
        n = _unique(base, used)
        used.add(n)
        graph.outputs[i] = (n, v)


def _unique(base: str, used: set[str]) -> str:
    if base not in used:
        return base
    i = 1
    while f"{base}_{i}" in used:
        i += 1
    return f"{base}_{i}"


def _assign_names(graph: Graph) -> None:
    """Name unnamed layers Keras-style (``dense``, ``dense_1``) within their scope; check uniqueness."""
    layers = graph.layers()
    taken: dict[str, Layer] = {}
    for layer in layers:
        if layer.name is not None:
            other = taken.get(layer.name)
            if other is not None and other is not layer:
                raise KdslError(f"Two layers in model '{graph.name}' are named '{layer.name}'; "
                                "layer names must be unique in a model.",
                                _first_span(graph, layer), hint="give one of them another name=...")
            taken[layer.name] = layer
    counters: dict[str, int] = {}
    for layer in layers:
        if layer.name is not None:
            continue
        base = layer.display_name() if layer.is_op else snake_case(type(layer).__name__)
        prefix = "/".join(layer.scope)
        full = f"{prefix}/{base}" if prefix else base
        n = counters.get(full, 0)
        name = full if n == 0 else f"{full}_{n}"
        while name in taken:
            n += 1
            name = f"{full}_{n}"
        counters[full] = n + 1
        layer.name = name
        taken[name] = layer


def _first_span(graph: Graph, layer: Layer):
    for n in graph.nodes:
        if n.layer is layer:
            return n.span
    return None


def _materialize(graph: Graph, seed: int | None) -> None:
    """Give every weight without a value its seeded initial value (seed, layer and weight name)."""
    from .utils import get_random_seed

    s = get_random_seed() if seed is None else seed
    for layer in graph.layers():
        for w in layer.weights:
            if w.value is None:
                rng = np.random.default_rng([s, zlib.crc32(f"{layer.name}/{w.name}".encode())])
                w.value = get_initializer(w.initializer)(rng, w.shape, w.dtype)


class Sequential(Model):
    """A linear stack of layers, as ``keras.Sequential``.

    ``Sequential([kdsl.Input(shape=(784,)), Dense(128, activation="relu"), Dense(10)])``;
    layers can be appended with :meth:`add`. The first entry must be a ``kdsl.Input``
    (or call :meth:`build` with an input shape).
    """

    def __init__(self, layers: Sequence | None = None, name: str | None = None, seed: int | None = None):
        self.source, self.train_config, self._seed, self._session = {}, None, seed, None
        self._name = name or "sequential"
        self._input: Value | None = None
        self._stack: list[Layer] = []
        self._out: Value | None = None
        for item in layers or []:
            self.add(item)

    def add(self, layer) -> None:
        """Append a layer (or set the input with a ``kdsl.Input`` first)."""
        span = python_call_site()
        if isinstance(layer, Value):
            if self._input is not None or self._stack:
                raise KdslError("A Sequential model takes one Input, as its first entry.", span)
            self._input = layer
            self._out = layer
            return
        if not isinstance(layer, Layer):
            raise KdslError(f"Sequential.add expects a layer. Received: {type(layer).__name__}", span)
        self._stack.append(layer)
        if self._out is not None:
            self._out = layer(self._out, span=span)
            self._set_graph(_trace(self._input, self._out, self._name))

    def build(self, input_shape: Sequence, dtype: str = "float32") -> None:
        """Give the model its input shape (without batch) if it had no ``kdsl.Input``."""
        if self._input is not None:
            return
        stack, self._stack = self._stack, []
        self._input = Input(tuple(d for d in input_shape), dtype=dtype)
        self._out = self._input
        for layer in stack:
            self.add(layer)
        if not stack:
            raise KdslError("Cannot build an empty Sequential model.")

    def __getattr__(self, item):
        if item == "graph":
            raise KdslError("This Sequential model has no input yet: start it with kdsl.Input(shape=...) "
                            "or call model.build(input_shape).")
        raise AttributeError(item)
