"""TextVectorization: raw strings -> integer token ids, as ``keras.layers.TextVectorization``.

The layer runs in two places and gives the same ids in both:

- on the host, in Python (:meth:`TextVectorization.host_apply`, also ``layer(texts)``):
  the trainer applies it to the raw strings before training, so the training graphs start
  at its output (``host_preprocessing``);
- inside the exported inference ONNX model, which takes ``tensor(string) [batch]`` and
  standardizes, splits, looks up and pads with standard ONNX ops (opset 20 or later, plus
  ``ai.onnx.ml.LabelEncoder`` for the lookup).

``model.export(path, include_preprocessing=False)`` writes the int-token model instead: the
layer is left out, as in the training graphs, and the input (same name) takes the int64 ids
``host_apply`` returns; it needs no string op, so any opset from 17 works, and its metadata
(:meth:`TextVectorization.host_preprocessing_metadata`) carries the vocabulary.

Keras's exact rules (Keras 3, ``keras/src/layers/preprocessing/text_vectorization.py``):

- ``"lower"``: ``tf.strings.lower(x)`` with its default ``encoding=""``, which lowercases
  the ASCII letters A-Z only (``absl::AsciiStrToLower``); ``"É"`` stays ``"É"``.
- ``"strip_punctuation"``: ``tf.strings.regex_replace(x, r'[!"#$%&()\\*\\+,-\\./:;<=>?@\\[\\\\\\]^_`{|}~\\']', "")``:
  the character class is exactly the 32 ASCII punctuation characters of
  ``string.punctuation``; other (non-ASCII) punctuation is kept.
- ``"whitespace"``: ``tf.strings.split(x)``: runs of ASCII whitespace (space, ``\\t \\n \\v \\f \\r``)
  separate tokens; leading and trailing whitespace gives no empty tokens. Unicode spaces
  such as U+00A0 or U+0085 are *not* separators (unlike Python's ``str.split()``).
- the lookup: index 0 is the padding/mask token ``""``, index 1 the OOV token ``"[UNK]"``;
  ``adapt`` orders the vocabulary by count (high to low), ties by the token itself (high to
  low, i.e. reverse code-point order), as ``np.lexsort((tokens, counts))[::-1]`` in Keras's
  ``IndexLookup.finalize_state``, and keeps ``max_tokens - 2`` tokens.
- padding and truncation to ``output_sequence_length`` happen at the end of the sequence.

In the ONNX graph, ONNX has no regex-replace op, so each character substitution (A-Z to
a-z, the 32 punctuation marks removed, ``\\t\\n\\v\\f\\r`` to spaces) is one ``StringSplit`` by
that character followed by a ``Loop`` that re-joins the pieces with ``StringConcat``
(inserting the replacement between consecutive pieces only). ``StringSplit`` without a
delimiter then splits on runs of spaces (onnxruntime's whitespace is the space alone, hence
the substitution first), and ``LabelEncoder`` maps the tokens to ids.
"""
from __future__ import annotations

import itertools
import json
import re
import string
from collections import Counter
from typing import Any, ClassVar, Iterable

import numpy as np
from onnx import TensorProto, helper

from ..errors import KdslError
from ..ir import TensorType, Value
from ..lower.context import CL
from .args import ArgError, check_choice, check_int
from .base import Layer, ShapeError, register

__all__ = ["TextVectorization", "PUNCTUATION", "WHITESPACE", "MIN_OPSET", "standardize", "split",
           "ml_opset_for", "add_opset_imports"]

PUNCTUATION = string.punctuation
"""The characters ``"lower_and_strip_punctuation"`` removes: Keras's strip regex is exactly this class."""

WHITESPACE = " \t\n\v\f\r"
"""The separators of ``split="whitespace"``: TensorFlow's ``absl::ascii_isspace``."""

MIN_OPSET = 20
"""The first ONNX opset with ``StringSplit`` and ``StringConcat``."""

PAD_TOKEN = ""
OOV_TOKEN = "[UNK]"

_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_STRIP = str.maketrans("", "", PUNCTUATION)
_SPLIT = re.compile(f"[{re.escape(WHITESPACE)}]+")
_STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation")
_seq_dims = itertools.count(1)


def standardize(text: str, mode: str | None = "lower_and_strip_punctuation") -> str:
    """Keras's standardization of one string (see the module docstring for the exact rules)."""
    if mode in ("lower", "lower_and_strip_punctuation"):
        text = text.translate(_LOWER)
    if mode in ("strip_punctuation", "lower_and_strip_punctuation"):
        text = text.translate(_STRIP)
    return text


def split(text: str, mode: str | None = "whitespace") -> list[str]:
    """Keras's split of one standardized string: on runs of ASCII whitespace, or not at all."""
    if mode is None:
        return [text]
    return [t for t in _SPLIT.split(text) if t]


def ml_opset_for(opset: int) -> int:
    """The ``ai.onnx.ml`` opset released with ONNX opset ``opset`` (3 for 17-19, 4 for 20, 5 for 21+)."""
    best = None
    for _release, _ir, ai_onnx, ai_onnx_ml, *_ in helper.VERSION_TABLE:
        if ai_onnx == opset:
            best = ai_onnx_ml if best is None else min(best, ai_onnx_ml)
    if best is None:
        best = max(r[3] for r in helper.VERSION_TABLE)
    return best


def add_opset_imports(model) -> Any:
    """Add the ``opset_import`` entries a model's nodes (subgraphs included) need but lack:
    ``ai.onnx.ml`` for TextVectorization's ``LabelEncoder``. Returns the model (changed in place).

    ``kdsl.lower.export.make_model`` only imports the default domain; until it imports the
    domains its nodes use, call this on ``model.to_onnx(...)`` before loading it.
    """
    have = {o.domain for o in model.opset_import}
    ai_onnx = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)

    def walk(graph):
        for n in graph.node:
            yield n.domain
            for a in n.attribute:
                if a.type == a.GRAPH:
                    yield from walk(a.g)
                for g in a.graphs:
                    yield from walk(g)

    for domain in sorted(set(walk(model.graph)) - have - {"", "ai.onnx"}):
        if domain == "ai.onnx.ml":
            model.opset_import.append(helper.make_opsetid(domain, ml_opset_for(ai_onnx)))
    return model


def _as_texts(texts: Any, what: str = "texts") -> list[str]:
    """A flat list of Python strings from a list, tuple or array of shape (N,) or (N, 1)."""
    if isinstance(texts, str):
        raise KdslError(f"`{what}` must be a list or array of strings, one per sample. Received: one "
                        f"string {texts!r:.60}; wrap it in a list.")
    if isinstance(texts, np.ndarray):
        arr = texts
    else:
        try:
            arr = np.asarray(list(texts), dtype=object)
        except TypeError:
            raise KdslError(f"`{what}` must be a list or array of strings. Received: "
                            f"{type(texts).__name__}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise KdslError(f"`{what}` must be a list of strings or an array of shape (N,) or (N, 1). "
                        f"Received: shape {arr.shape}.")
    out = []
    for s in arr.tolist():
        if isinstance(s, bytes):
            s = s.decode("utf-8")
        if not isinstance(s, str):
            raise KdslError(f"`{what}` must contain strings only. Received: {type(s).__name__} {s!r:.40}.")
        out.append(s)
    return out


@register
class TextVectorization(Layer):
    """Maps raw strings to sequences of integer token ids (Keras's ``TextVectorization``,
    ``output_mode="int"``).

    Each string is standardized, split into tokens and each token looked up in the
    vocabulary: 0 is padding, 1 is an out-of-vocabulary token, 2... the vocabulary's tokens.
    The vocabulary comes from :meth:`adapt` (most frequent tokens first) or from the
    ``vocabulary`` argument, and is saved with the model: ``to_kd()`` (and so every
    checkpoint) writes it as ``vocabulary=[...]``.

    Args:
        max_tokens: the largest vocabulary size, padding and OOV tokens included
            (``adapt`` keeps the ``max_tokens - 2`` most frequent tokens); None: no limit.
        standardize: ``"lower_and_strip_punctuation"`` (default), ``"lower"``,
            ``"strip_punctuation"`` or None. Lowercasing is ASCII-only and the punctuation
            is the 32 ASCII characters of ``string.punctuation``, as in Keras.
        split: ``"whitespace"`` (runs of ASCII whitespace) or None (each string is one token).
        output_mode: ``"int"`` (the only mode supported).
        output_sequence_length: pad (with 0) or truncate every sequence at its end to this
            length; None: pad to the longest sequence of the batch.
        pad_to_max_tokens: accepted for Keras compatibility; it only affects the
            multi-hot/count modes, so it has no effect here (it needs ``max_tokens``).
        vocabulary: the tokens, most frequent first, without (or starting with) the special
            tokens ``""`` and ``"[UNK]"``.

    Input: strings, shape ``(batch,)`` (``input text: string[]`` in ``.kd``) or ``(batch, 1)``.
    Output: int64, shape ``(batch, output_sequence_length)``.

    In training, the layer runs on the host (Python) and the training graphs start at its
    output. The inference ONNX model contains it and takes the raw strings; it needs
    ONNX opset 20 or later (``StringSplit``/``StringConcat``) and imports ``ai.onnx.ml``.
    ``model.export(path, include_preprocessing=False)`` (``kdsl compile --no-preprocessing``)
    leaves it out instead: the model's input, under the same name, is then the int64 ids
    ``(batch, output_sequence_length)`` that ``layer(texts)`` (``layer.host_apply(texts)``)
    returns, any opset from 17 works, and the ONNX metadata ``kdsl.token_input.<input>`` and
    ``kdsl.vocabulary.<layer>`` (JSON) describe the vectorization.
    """

    host_preprocessing: ClassVar[bool] = True
    #: the lowest ONNX opset the inference lowering can use
    min_opset: ClassVar[int] = MIN_OPSET

    def __init__(self, max_tokens: int | None = None, standardize: str | None = "lower_and_strip_punctuation",
                 split: str | None = "whitespace", output_mode: str = "int",
                 output_sequence_length: int | None = None, pad_to_max_tokens: bool = False,
                 vocabulary: list[str] | None = None, name: str | None = None):
        super().__init__(name=name, trainable=False)
        if max_tokens is not None:
            max_tokens = check_int(max_tokens, "max_tokens")
            if max_tokens <= 1:
                raise ArgError(f"If set, `max_tokens` must be greater than 1. Received: max_tokens={max_tokens}",
                               "max_tokens")
        self.max_tokens = max_tokens
        if standardize is not None and callable(standardize):
            raise ArgError("A callable `standardize` cannot be exported to ONNX; use one of "
                           f"{list(_STANDARDIZE)} or None. Received: standardize={standardize!r}", "standardize")
        self.standardize = None if standardize is None else check_choice(standardize, _STANDARDIZE, "standardize")
        if split is not None and not isinstance(split, str):
            raise ArgError(f"`split` must be \"whitespace\" or None. Received: split={split!r}", "split")
        if isinstance(split, str) and split.lower() == "character":
            raise ArgError("split=\"character\" is not supported (ONNX has no Unicode character split); "
                           "use \"whitespace\" or None. Received: split='character'", "split")
        self.split = None if split is None else check_choice(split, ("whitespace",), "split")
        if isinstance(output_mode, str) and output_mode.lower() in ("multi_hot", "count", "tf_idf", "tf-idf",
                                                                     "one_hot", "binary"):
            raise ArgError(f"Only output_mode=\"int\" is supported. Received: output_mode={output_mode!r}",
                           "output_mode")
        self.output_mode = check_choice(output_mode, ("int",), "output_mode")
        self.output_sequence_length = (None if output_sequence_length is None
                                       else check_int(output_sequence_length, "output_sequence_length"))
        if not isinstance(pad_to_max_tokens, bool):
            raise ArgError(f"`pad_to_max_tokens` must be a bool. Received: pad_to_max_tokens={pad_to_max_tokens!r}",
                           "pad_to_max_tokens")
        if pad_to_max_tokens and max_tokens is None:
            raise ArgError("If pad_to_max_tokens is True, must set `max_tokens`. Received: max_tokens=None",
                           "pad_to_max_tokens")
        self.pad_to_max_tokens = pad_to_max_tokens
        self.vocabulary: list[str] | None = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self._seq_dim: str | None = None

    # -- vocabulary --------------------------------------------------------------------------
    def set_vocabulary(self, vocabulary: Iterable[str]) -> None:
        """Replace the vocabulary (Keras's ``set_vocabulary``): tokens, most frequent first, with
        or without the leading special tokens ``""`` and ``"[UNK]"``."""
        if isinstance(vocabulary, str):
            raise ArgError("`vocabulary` must be a list of strings (vocabulary files are not read). "
                           f"Received: vocabulary={vocabulary!r:.60}", "vocabulary")
        try:
            tokens = list(vocabulary)
        except TypeError:
            raise ArgError(f"`vocabulary` must be a list of strings. Received: vocabulary={vocabulary!r:.60}",
                           "vocabulary") from None
        tokens = [t.decode("utf-8") if isinstance(t, bytes) else t for t in tokens]
        bad = [t for t in tokens if not isinstance(t, str)]
        if bad:
            raise ArgError(f"`vocabulary` must contain strings only. Received: {bad[0]!r:.40} "
                           f"({type(bad[0]).__name__})", "vocabulary")
        if not tokens:
            raise ArgError("Cannot set an empty vocabulary. Received: vocabulary=[]", "vocabulary")
        if tokens[:2] == [PAD_TOKEN, OOV_TOKEN]:
            tokens = tokens[2:]
        counts = Counter(tokens)
        repeated = sorted(t for t, c in counts.items() if c > 1)
        if repeated:
            raise ArgError("The passed vocabulary has at least one repeated term. The repeated terms are: "
                           f"{repeated[:10]}", "vocabulary")
        if PAD_TOKEN in counts:
            raise ArgError("Found the reserved mask token '' at an unexpected location in `vocabulary`: "
                           "leave it out, or give it only at the start, as ['', '[UNK]', ...].", "vocabulary")
        if self.max_tokens is not None and len(tokens) + 2 > self.max_tokens:
            raise ArgError("Attempted to set a vocabulary larger than the maximum vocab size. Received "
                           f"vocabulary size is {len(tokens) + 2}; `max_tokens` is {self.max_tokens}.",
                           "vocabulary")
        self.vocabulary = tokens

    def adapt(self, data: Any) -> "TextVectorization":
        """Learn the vocabulary from ``data`` (a list or array of strings), as Keras's ``adapt``:
        every token counted, ordered by count (high to low), ties by the token (high to low),
        the first ``max_tokens - 2`` kept. Replaces any previous vocabulary. Returns the layer."""
        counts: Counter = Counter()
        for s in _as_texts(data, "data"):
            counts.update(split(standardize(s, self.standardize), self.split))
        counts.pop(PAD_TOKEN, None)
        counts.pop(OOV_TOKEN, None)
        ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        if self.max_tokens is not None:
            ordered = ordered[:self.max_tokens - 2]
        self.vocabulary = [t for t, _ in ordered]
        return self

    def get_vocabulary(self, include_special_tokens: bool = True) -> list[str]:
        """The vocabulary; with the special tokens, a token's position is its id."""
        tokens = list(self.vocabulary or [])
        return [PAD_TOKEN, OOV_TOKEN, *tokens] if include_special_tokens else tokens

    def vocabulary_size(self) -> int:
        """The number of ids the layer can output (vocabulary + padding + OOV)."""
        return len(self.vocabulary or []) + 2

    def _require_vocabulary(self) -> list[str]:
        if self.vocabulary is None:
            raise KdslError(f"TextVectorization '{self.display_name()}' has no vocabulary yet.",
                            hint="call layer.adapt(texts) on the training texts, or pass vocabulary=[...]")
        return self.vocabulary

    # -- host side ------------------------------------------------------------------------------
    def tokenize(self, texts: Any) -> list[list[str]]:
        """The tokens of each string after standardization and splitting (no lookup)."""
        return [split(standardize(s, self.standardize), self.split) for s in _as_texts(texts)]

    def host_apply(self, texts: Any) -> np.ndarray:
        """Vectorize on the host: int64 ids of shape ``(N, output_sequence_length)`` (or padded to
        the longest sequence when that is None). Exactly what the ONNX lowering computes."""
        table = {t: i for i, t in enumerate(self._require_vocabulary(), start=2)}
        table[PAD_TOKEN] = 0
        seqs = [[table.get(t, 1) for t in toks] for toks in self.tokenize(texts)]
        length = self.output_sequence_length
        if length is None:
            length = 1 if self.split is None else max((len(s) for s in seqs), default=0)
        out = np.zeros((len(seqs), length), dtype=np.int64)
        for i, s in enumerate(seqs):
            s = s[:length]
            out[i, :len(s)] = s
        return out

    def host_preprocessing_metadata(self, input_name: str) -> dict[str, str]:
        """The int-token model's metadata (JSON values): ``kdsl.token_input.<input_name>`` says the
        input is this layer's int64 ids (layer name, vocabulary size, ``output_sequence_length``,
        padding and OOV ids, standardize and split modes); ``kdsl.vocabulary.<layer name>`` is the
        vocabulary with the special tokens, a token's position being its id."""
        layer = self.display_name()
        vocab_key = f"kdsl.vocabulary.{layer}"
        info = {"layer": layer, "class": type(self).__name__, "dtype": "int64",
                "vocabulary_size": self.vocabulary_size(),
                "output_sequence_length": self.output_sequence_length,
                "padding_id": 0, "oov_id": 1, "standardize": self.standardize, "split": self.split,
                "vocabulary": vocab_key}
        return {f"kdsl.token_input.{input_name}": json.dumps(info),
                vocab_key: json.dumps(self.get_vocabulary(), ensure_ascii=False)}

    def __call__(self, inputs, span=None, **call_args):
        """On tensors: add the layer to a model. On strings (a list or array): vectorize them
        now, as calling a Keras layer eagerly does."""
        if isinstance(inputs, Value) or (isinstance(inputs, (list, tuple)) and inputs
                                         and all(isinstance(v, Value) for v in inputs)):
            return super().__call__(inputs, span=span, **call_args)
        if isinstance(inputs, (list, tuple, np.ndarray)):
            return self.host_apply(inputs)
        return super().__call__(inputs, span=span, **call_args)

    # -- graph ----------------------------------------------------------------------------------
    def flops(self, input_types, output_types) -> int:
        """String processing and a table lookup: no floating-point operations."""
        return 0

    def compute_output_types(self, input_types):
        t = input_types[0]
        if t.dtype != "string" or not (t.rank == 1 or (t.rank == 2 and t.shape[1] == 1)):
            raise ShapeError(f"TextVectorization '{self.display_name()}' expects strings of shape (batch,) "
                             f"or (batch, 1), e.g. `input text: string[]`. Received: {t.dtype} input of "
                             f"shape {t.shape_str()}")
        length = self.output_sequence_length
        if length is None:
            if self.split is None:
                length = 1
            else:
                if self._seq_dim is None:
                    self._seq_dim = f"tokens{next(_seq_dims)}"
                length = self._seq_dim
        return [TensorType("int64", (t.shape[0], length))]

    def lower(self, ctx, node):
        e = ctx.e
        if e.opset < MIN_OPSET:
            raise KdslError(
                f"TextVectorization '{self.display_name()}' needs ONNX opset {MIN_OPSET} or later in the "
                f"inference model (StringSplit and StringConcat are opset-{MIN_OPSET} ops). Received: "
                f"opset={e.opset}.",
                hint=f"export with opset={MIN_OPSET} or 21, or export the int64 token-id model with "
                     "include_preprocessing=False (model.export(path, include_preprocessing=False), "
                     "`kdsl compile --no-preprocessing`) and vectorize on the host with "
                     f"model.get_layer('{self.display_name()}')(texts), i.e. layer.host_apply(texts)")
        # not adapted yet: like Keras's un-adapted layer, every token is out of vocabulary
        vocab = list(self.vocabulary or [])
        v = node.inputs[0]
        x = ctx.get(v, CL)
        if v.type.rank == 2:
            x = e.squeeze(x, [1])
        if self.standardize in ("lower", "lower_and_strip_punctuation"):
            for c in string.ascii_uppercase:
                x = _replace(e, x, c, c.lower())
        if self.standardize in ("strip_punctuation", "lower_and_strip_punctuation"):
            for c in PUNCTUATION:
                x = _replace(e, x, c, "")
        if self.split == "whitespace":
            for c in WHITESPACE.replace(" ", ""):                  # onnxruntime splits on " " only
                x = _replace(e, x, c, " ")
            tokens, _ = e.op("StringSplit", [x], n_out=2)            # [batch, max tokens], "" padded
        else:
            tokens = e.unsqueeze(x, [1])                               # [batch, 1]
        ids = e.op("LabelEncoder", [tokens], domain="ai.onnx.ml", keys_strings=[PAD_TOKEN, *vocab],
                   values_int64s=[0, *range(2, len(vocab) + 2)], default_int64=1)
        length = self.output_sequence_length
        if length is not None:   # pad with zeros at the end, then keep the first `length` ids
            batch = e.op("Shape", [ids], start=0, end=1)
            zeros = e.op("ConstantOfShape", [e.op("Concat", [batch, e.ints([length])], axis=0)],
                         value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]))
            padded = e.op("Concat", [ids, zeros], axis=1)
            ids = e.op("Slice", [padded, e.ints([0]), e.ints([length]), e.ints([1])])
            ids = e.reshape(ids, [-1, length])   # a no-op that states the length to shape inference
        return ids


def _replace(e, x: str, old: str, new: str) -> str:
    """Every ``old`` (one character) in the strings ``x`` [batch] replaced by ``new``: StringSplit
    by ``old``, then a Loop over the pieces that concatenates them, putting ``new`` between
    consecutive pieces of the same string (never after its last one)."""
    pieces, counts = e.op("StringSplit", [x], n_out=2, delimiter=old)   # [batch, parts], [batch]
    trips = e.squeeze(e.op("Shape", [pieces], start=1, end=2), [0])      # int64 scalar
    empty = e.const(np.array("", dtype=object), hint="empty_string")
    acc0 = e.op("Expand", [empty, e.op("Shape", [x])])                   # "" per string

    body = _SubEmitter(e)
    i, cond, acc_in = body.fresh("i"), body.fresh("cond"), body.fresh("acc")
    piece = body.op("Gather", [pieces, i], axis=1)                       # [batch]
    acc = acc_in
    if new:
        between = body.op("And", [body.op("Greater", [i, e.const(np.array(0, dtype=np.int64), hint="zero")]),
                                  body.op("Less", [i, counts])])
        sep = body.op("Where", [between, e.const(np.array(new, dtype=object), hint="replacement"), empty])
        acc = body.op("StringConcat", [acc, sep])
    acc_out = body.op("StringConcat", [acc, piece])
    cond_out = body.op("Identity", [cond])
    graph = helper.make_graph(
        body.nodes, e.fresh("replace_body"),
        [helper.make_tensor_value_info(i, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond, TensorProto.BOOL, []),
         helper.make_tensor_value_info(acc_in, TensorProto.STRING, [None])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(acc_out, TensorProto.STRING, [None])])
    out = e.op("Loop", [trips, "", acc0], body=graph)
    return e.reshape(out, [-1])   # a no-op that states the rank: ONNX shape inference loses it in Loops


class _SubEmitter:
    """Emits the nodes of a subgraph (a Loop body) with names unique in the whole model."""

    def __init__(self, parent):
        from ..lower.emitter import Emitter

        self._e = Emitter(parent.opset)
        self._e._names = parent._names            # one name space for the graph and its subgraphs
        self._e._node_names = parent._node_names
        self._e._prefix, self._e._doc = parent._prefix, parent._doc

    @property
    def nodes(self):
        return self._e.nodes

    def fresh(self, base: str) -> str:
        return self._e.fresh(f"{self._e._prefix}/{base}" if self._e._prefix else base)

    def op(self, *args, **kwargs):
        return self._e.op(*args, **kwargs)
