"""TextVectorization: Keras's rules on the host, and the same ids from the exported ONNX graph."""
import re
import string

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kdsl
from helpers import assert_shapes_agree
from kdsl.datasets import sentiment
from kdsl.errors import KdslError
from kdsl.layers import text as T
from kdsl.layers.args import ArgError
from kdsl.layers.text import TextVectorization

# Keras 3, keras/src/layers/preprocessing/text_vectorization.py, TextVectorization._preprocess
KERAS_STRIP_REGEX = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'

EDGE_CASES = [
    "", " ", "\t\n", "a", "A", "AAA", "aAa", "A.B,C", "...", "!!!", "?!", "--", "'", '"', "\\", "a\\b",
    "Hello, World!", "hello world", "HELLO   WORLD  ", "  leading and trailing  ",
    "tab\tseparated\tWords", "new\nline", "vertical\x0btab", "form\x0cfeed", "carriage\rreturn", "crlf\r\n",
    "NEL\x85is not a space", "no\xa0break space", "em\u2003space", "ideographic\u3000space",
    "file separator\x1cx", "ÉCOLE École école", "Ünïcödé ÀÉÎÕÜ", "naïve café", "straße STRASSE",
    "Σίσυφος ΣΊΣΥΦΟΣ", "日本語のテキスト", "emoji 😀 👍🏽", "en–dash — em-dash", "“curly” ‘quotes’",
    "[UNK]", "[unk] UNK unk", "don't can't won't", "e-mail e.mail e_mail", "C++ C# .NET", "1,000.50 $5 100%",
    "a/b/c", "(parens) [brackets] {braces} <angles>", "x@y.com #tag ^caret ~tilde `tick` |pipe",
    "unknownword anotherunknownword", "good good good bad bad", "A" * 50 + " " + "b" * 30,
    " ".join(["word"] * 80), ",".join(["great"] * 30), "the movie was GREAT!!! 10/10",
]


def _real_sentences(n: int = 320) -> list[str]:
    """Every sentence with a non-ASCII character and a random sample of the others (fixed seed)."""
    texts = [t for s in sentiment.SOURCES for t in sentiment.load_source(s)[0].tolist()]
    non_ascii = [t for t in texts if any(ord(c) > 127 for c in t)]
    rest = [t for t in texts if t not in non_ascii]
    rng = np.random.default_rng(2015)
    pick = rng.choice(len(rest), size=n - len(non_ascii), replace=False)
    return non_ascii + [rest[i] for i in sorted(pick)]


@pytest.fixture(scope="module")
def sentences():
    out = _real_sentences() + EDGE_CASES
    assert len(out) > 350
    assert sum(any(ord(c) > 127 for c in t) for t in out) >= 25
    assert sum(any(c in string.punctuation for c in t) for t in out) >= 250
    return out


@pytest.fixture(scope="module")
def all_texts():
    return [t for s in sentiment.SOURCES for t in sentiment.load_source(s)[0].tolist()]


def _model(layer, rank2=False):
    inp = kdsl.Input((1,) if rank2 else (), dtype="string", name="text")
    return kdsl.Model(inp, layer(inp))


def _session(model, opset=20):
    proto = T.add_opset_imports(model.to_onnx(opset=opset))
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]), proto


def _in_graph(sess, texts, rank2=False):
    x = np.array(texts, dtype=object)
    return sess.run(None, {"text": x.reshape(-1, 1) if rank2 else x})[0]


# -- Keras's rules on the host ---------------------------------------------------------------------
def test_punctuation_is_exactly_keras_strip_regex():
    rx = re.compile(KERAS_STRIP_REGEX)
    stripped = {chr(c) for c in range(0x3000) if rx.fullmatch(chr(c))}
    assert stripped == set(T.PUNCTUATION) == set(string.punctuation) and len(stripped) == 32


def test_standardize_is_ascii_lowercasing_and_ascii_punctuation():
    # tf.strings.lower's default encoding='' lowercases A-Z only (absl::AsciiStrToLower)
    assert T.standardize("ÉCOLE École") == "École École"
    assert T.standardize("Σ ÀB", "lower") == "Σ Àb"
    assert T.standardize("Don't STOP!", "strip_punctuation") == "Dont STOP"
    assert T.standardize("Don't STOP!", "lower") == "don't stop!"
    assert T.standardize("Don't STOP!", None) == "Don't STOP!"
    assert T.standardize("“curly” — dash…") == "“curly” — dash…"      # non-ASCII punctuation is kept


def test_split_on_ascii_whitespace_only():
    # tf.strings.split: runs of absl::ascii_isspace; U+0085, U+00A0 and other Unicode spaces are not separators
    assert T.split(" a\tb\nc\x0bd\x0ce\rf  g ") == list("abcdefg")
    assert T.split("a\x85b c\xa0d e\u2003f g\x1ch") == ["a\x85b", "c\xa0d", "e\u2003f", "g\x1ch"]
    assert T.split("") == [] and T.split(" \t ") == []
    assert T.split(" a b ", None) == [" a b "]


def test_adapt_matches_the_keras_docstring_example():
    layer = TextVectorization(max_tokens=5000, output_sequence_length=4)
    layer.adapt(["foo bar", "bar baz", "baz bada boom"])
    # counts high to low, ties broken by the token, high to low
    assert layer.get_vocabulary() == ["", "[UNK]", "baz", "bar", "foo", "boom", "bada"]
    np.testing.assert_array_equal(layer(np.array([["foo qux bar"], ["qux baz"]])), [[4, 1, 3, 0], [1, 2, 0, 0]])
    assert layer.host_apply(["foo qux bar", "qux baz"]).dtype == np.int64


def test_vocabulary_argument_matches_the_keras_docstring_example():
    layer = TextVectorization(max_tokens=5000, output_sequence_length=4, vocabulary=["earth", "wind", "and", "fire"])
    assert layer.get_vocabulary() == ["", "[UNK]", "earth", "wind", "and", "fire"]
    assert layer.get_vocabulary(include_special_tokens=False) == ["earth", "wind", "and", "fire"]
    assert layer.vocabulary_size() == 6
    same = TextVectorization(vocabulary=["", "[UNK]", "earth", "wind"])
    assert same.get_vocabulary() == ["", "[UNK]", "earth", "wind"]


def test_adapt_order_ties_and_max_tokens():
    layer = TextVectorization(max_tokens=5)
    layer.adapt(["b a c", "c a", "é e", "E"])
    # a:2 c:2 e:2 b:1 é:1 -> ties high to low by code point; max_tokens - 2 = 3 kept
    assert layer.get_vocabulary() == ["", "[UNK]", "e", "c", "a"]
    np.testing.assert_array_equal(layer(["a b c d E é"]), [[4, 1, 3, 1, 2, 1]])
    layer.adapt(["zzz"])                                   # adapting again replaces the vocabulary
    assert layer.get_vocabulary() == ["", "[UNK]", "zzz"]


def test_adapt_drops_the_special_tokens():
    layer = TextVectorization(standardize=None)
    layer.adapt(["[UNK] [UNK] x", "[UNK]"])
    assert layer.get_vocabulary() == ["", "[UNK]", "x"]
    np.testing.assert_array_equal(layer(["x [UNK] y"]), [[2, 1, 1]])


def test_padding_and_truncation_at_the_end():
    layer = TextVectorization(output_sequence_length=3, vocabulary=["a", "b", "c"])
    np.testing.assert_array_equal(layer(["a b c a b", "c", ""]), [[2, 3, 4], [4, 0, 0], [0, 0, 0]])
    ragged = TextVectorization(vocabulary=["a", "b", "c"])
    np.testing.assert_array_equal(ragged(["a b c a b", "c"]), [[2, 3, 4, 2, 3], [4, 0, 0, 0, 0]])
    whole = TextVectorization(split=None, vocabulary=["a b", "c"])
    np.testing.assert_array_equal(whole(["A B", "a  b", "c", ""]), [[2], [1], [3], [0]])


@pytest.mark.parametrize("kwargs, match", [
    ({"output_mode": "multi_hot"}, "Only output_mode=\"int\""),
    ({"output_mode": "bag"}, "output_mode"),
    ({"split": "character"}, "character\" is not supported"),
    ({"split": "comma"}, "split"),
    ({"standardize": "upper"}, "standardize"),
    ({"standardize": str.lower}, "callable `standardize`"),
    ({"max_tokens": 1}, "greater than 1"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"output_sequence_length": 0}, "output_sequence_length"),
    ({"pad_to_max_tokens": True}, "must set `max_tokens`"),
    ({"vocabulary": []}, "empty vocabulary"),
    ({"vocabulary": "vocab.txt"}, "list of strings"),
    ({"vocabulary": ["a", "b", "a"]}, "repeated term"),
    ({"vocabulary": ["a", "", "b"]}, "reserved mask token"),
    ({"vocabulary": ["a", 3]}, "strings only"),
    ({"vocabulary": ["a", "b", "c"], "max_tokens": 4}, "larger than the maximum vocab size"),
])
def test_argument_errors(kwargs, match):
    with pytest.raises(ArgError, match=re.escape(match) if "\"" in match else match):
        TextVectorization(**kwargs)


def test_errors_without_vocabulary_or_on_wrong_inputs():
    layer = TextVectorization()
    with pytest.raises(KdslError, match="has no vocabulary yet"):
        layer(["text"])
    # exported before adapt(): like Keras's un-adapted layer, every token is out of vocabulary
    proto = _model(TextVectorization(name="vec")).to_onnx(opset=20)
    enc = next(n for n in proto.graph.node if n.op_type == "LabelEncoder")
    assert [a.strings for a in enc.attribute if a.name == "keys_strings"] == [[b""]]
    with pytest.raises(KdslError, match="wrap it in a list"):
        TextVectorization(vocabulary=["a"]).host_apply("a b")
    with pytest.raises(KdslError, match="strings only"):
        TextVectorization(vocabulary=["a"]).host_apply([1, 2])
    with pytest.raises(KdslError, match="expects strings of shape"):
        TextVectorization(vocabulary=["a"])(kdsl.Input((3,), dtype="int64"))
    with pytest.raises(KdslError, match="expects strings of shape"):
        TextVectorization(vocabulary=["a"])(kdsl.Input((2,), dtype="string"))


# -- the ONNX graph gives the host's ids ------------------------------------------------------------
CONFIGS = [
    dict(output_sequence_length=24),
    dict(output_sequence_length=5),                                   # truncation
    dict(),                                                           # padded to the longest of the batch
    dict(standardize="lower", output_sequence_length=16),
    dict(standardize="strip_punctuation", output_sequence_length=16),
    dict(standardize=None, output_sequence_length=16),
    dict(split=None),
    dict(split=None, standardize=None, output_sequence_length=2),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("max_tokens", [None, 300])
def test_onnx_graph_gives_the_host_ids_on_real_sentences(cfg, max_tokens, sentences, all_texts):
    layer = TextVectorization(max_tokens=max_tokens, **cfg)
    layer.adapt(all_texts if cfg.get("split", "whitespace") else all_texts + sentences[::3])
    model = _model(layer)
    sess, proto = _session(model)
    want = layer.host_apply(sentences)
    got = _in_graph(sess, sentences)
    assert got.dtype == np.int64 and got.shape == want.shape
    mismatched = [(s, w.tolist(), g.tolist()) for s, w, g in zip(sentences, want, got) if not np.array_equal(w, g)]
    assert not mismatched, mismatched[:3]
    # unknown words and padding occur; with the full vocabulary, known non-ASCII tokens too
    assert (want == 1).any() and (want == 0).any()
    vocab = layer.get_vocabulary()
    if max_tokens is None:
        assert any(any(ord(c) > 127 for c in vocab[i]) for i in np.unique(want) if i >= 2)
    # batches of another size (the ragged width follows each batch, like host_apply on it)
    for lo in range(0, 40, 7):
        np.testing.assert_array_equal(_in_graph(sess, sentences[lo:lo + 7]), layer.host_apply(sentences[lo:lo + 7]))


@pytest.mark.parametrize("opset", [20, 21])
def test_export_is_valid_onnx_with_agreeing_shapes(opset):
    layer = TextVectorization(output_sequence_length=6, vocabulary=["good", "bad"])
    proto = T.add_opset_imports(_model(layer).to_onnx(opset=opset))
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    imports = {o.domain: o.version for o in proto.opset_import}
    assert imports == {"": opset, "ai.onnx.ml": T.ml_opset_for(opset)}
    ops = {n.op_type for n in proto.graph.node}
    assert {"StringSplit", "Loop", "LabelEncoder"} <= ops and "StringNormalizer" not in ops
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.STRING
    assert T.add_opset_imports(proto) is proto and len(proto.opset_import) == 2     # idempotent


def test_rank2_string_input():
    layer = TextVectorization(output_sequence_length=4, vocabulary=["good", "bad"])
    model = _model(layer, rank2=True)
    assert model.outputs[0].shape == (None, 4)
    sess, _ = _session(model)
    texts = ["Good, not BAD.", "bad", ""]
    np.testing.assert_array_equal(_in_graph(sess, texts, rank2=True), [[2, 1, 3, 0], [3, 0, 0, 0], [0, 0, 0, 0]])


def test_opset_below_20_is_refused_with_a_way_out():
    model = _model(TextVectorization(vocabulary=["a"], name="vec"))
    with pytest.raises(KdslError, match="needs ONNX opset 20 or later") as e:
        model.to_onnx(opset=17)
    assert "opset=20" in e.value.hint and "token-id model" in e.value.hint


# -- the vocabulary is saved with the model ----------------------------------------------------------
def test_vocabulary_survives_to_kd_and_checkpoints(tmp_path, all_texts):
    inp = kdsl.Input((), dtype="string", name="text")
    vec = TextVectorization(max_tokens=400, output_sequence_length=12, name="vectorize")
    vec.adapt(all_texts + ['quote " and back\\slash', "NEL\x85x", "line\u2028sep"])
    x = kdsl.layers.Embedding(400, 4, mask_zero=True)(vec(inp))
    out = kdsl.layers.Dense(1, activation="sigmoid")(kdsl.layers.GlobalAveragePooling1D()(x))
    model = kdsl.Model(inp, out, name="clf")
    src = model.to_kd()
    assert "vocabulary=[" in src
    again = kdsl.loads(src)
    assert again.get_layer("vectorize").get_vocabulary() == vec.get_vocabulary()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    path = model.save(str(tmp_path / "clf.kdckpt"))
    restored = kdsl.load_model(path)
    assert restored.get_layer("vectorize").get_vocabulary() == vec.get_vocabulary()
    np.testing.assert_array_equal(restored.get_layer("vectorize")(all_texts[:50]), vec(all_texts[:50]))


def test_kd_source_with_a_string_input():
    model = kdsl.loads('''
model clf(vocab: int = 50) {
    input text: string[]
    ids = text -> TextVectorization(max_tokens=vocab, output_sequence_length=8, name="vectorize")
    output p = ids -> Embedding(vocab, 4, mask_zero=true) -> GlobalAveragePooling1D() -> Dense(1, activation=sigmoid)
}
''')
    assert model.inputs[0].type.dtype == "string" and model.inputs[0].shape == (None,)
    vec = model.get_layer("vectorize")
    assert isinstance(vec, TextVectorization) and vec.vocabulary is None
    vec.adapt(["a good film", "a bad film"])
    sess, _ = _session(model)
    out = _in_graph(sess, ["A good film!", "Bad."])
    assert out.shape == (2, 1) and np.isfinite(out).all()


def test_fit_trains_on_raw_strings():
    (x_train, y_train), (x_test, y_test) = sentiment.load_data(sources=("yelp",))
    inp = kdsl.Input((), dtype="string", name="text")
    vec = TextVectorization(max_tokens=2000, output_sequence_length=32)
    vec.adapt(x_train)
    x = kdsl.layers.Embedding(2000, 16, mask_zero=True)(vec(inp))
    out = kdsl.layers.Dense(1, activation="sigmoid")(kdsl.layers.GlobalAveragePooling1D()(x))
    model = kdsl.Model(inp, out, seed=1)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    hist = model.fit(x_train, y_train.astype("float32"), epochs=8, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    _, acc = model.evaluate(x_test, y_test.astype("float32"), verbose=0)
    assert acc > 0.6
    # the exported model takes raw strings and agrees with the trained graph's predictions
    sess, _ = _session(model)
    probs = _in_graph(sess, list(x_test))
    assert probs.shape == (len(x_test), 1)
    assert np.mean((probs[:, 0] > 0.5) == (y_test == 1)) == pytest.approx(acc, abs=1e-6)


def test_layer_is_registered_and_costs_no_flops():
    from kdsl.layers import LAYERS

    assert LAYERS["TextVectorization"] is TextVectorization
    layer = TextVectorization(vocabulary=["a"], output_sequence_length=3)
    assert layer.flops([], []) == 0 and layer.count_params() == 0
