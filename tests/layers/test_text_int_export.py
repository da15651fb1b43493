"""The int-token inference model: ``to_onnx/export(include_preprocessing=False)`` leaves
TextVectorization out, so the model takes the host-vectorized int64 ids and runs at any opset."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import kdsl
from helpers import assert_shapes_agree, dims_of
from kdsl.cli import main
from kdsl.datasets import sentiment
from kdsl.errors import KdslError
from kdsl.layers import text as T
from kdsl.layers.text import TextVectorization

SEQ_LEN = 12
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
SOURCE = '''
model clf(vocab: int = 300, seq_len: int = 12) {
    input text: string[]
    ids = text -> TextVectorization(max_tokens=vocab, output_sequence_length=seq_len, name="vectorize")
    output p = ids -> Embedding(vocab, 8) -> GlobalAveragePooling1D() -> Dense(1, activation=sigmoid)
}
'''


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real sentences (some with non-ASCII characters and punctuation) and a few edge cases."""
    sents = sentiment.load_source("yelp")[0].tolist()
    return sents[:120] + ["", "   ", "UNSEEN words ONLY", "Ünïcödé café!!", "good " * 40]


@pytest.fixture(scope="module")
def model(texts):
    model = kdsl.loads(SOURCE, seed=3)
    model.get_layer("vectorize").adapt(texts)
    return model


def _run(proto: onnx.ModelProto, feeds: dict) -> np.ndarray:
    proto = T.add_opset_imports(proto)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


@pytest.mark.parametrize("opset", [17, 18, 19, 20, 21])
def test_int_token_export_is_valid_and_matches_predict(model, texts, opset):
    proto = model.to_onnx(opset=opset, include_preprocessing=False)
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    assert {o.domain: o.version for o in proto.opset_import} == {"": opset}
    assert not {"StringSplit", "LabelEncoder", "Loop"} & {n.op_type for n in proto.graph.node}
    assert len(proto.graph.input) == 1
    (inp,) = proto.graph.input
    assert inp.name == "text" and inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert dims_of(inp) == ["batch", SEQ_LEN]
    ids = model.get_layer("vectorize")(texts)
    assert ids.dtype == np.int64 and ids.shape == (len(texts), SEQ_LEN)
    np.testing.assert_allclose(_run(proto, {"text": ids}), model.predict(texts), rtol=0, atol=1e-6)


@pytest.mark.parametrize("opset", [20, 21])
def test_raw_string_export_equals_the_int_token_export(model, texts, opset):
    raw = model.to_onnx(opset=opset)
    assert raw.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.STRING
    from_strings = _run(raw, {"text": np.array(texts, dtype=object)})
    ids = model.get_layer("vectorize").host_apply(texts)
    from_ids = _run(model.to_onnx(opset=opset, include_preprocessing=False), {"text": ids})
    np.testing.assert_allclose(from_strings, from_ids, rtol=0, atol=1e-6)


def test_default_opset_follows_the_remaining_layers(model):
    assert model.to_onnx().opset_import[0].version == T.MIN_OPSET
    assert model.to_onnx(include_preprocessing=False).opset_import[0].version == 17


def test_default_export_below_opset_20_names_the_int_token_option(model):
    with pytest.raises(KdslError, match="needs ONNX opset 20 or later") as e:
        model.to_onnx(opset=17)
    hint = e.value.hint
    assert "include_preprocessing=False" in hint and "--no-preprocessing" in hint
    assert "model.get_layer('vectorize')(texts)" in hint and "layer.host_apply(texts)" in hint


def test_without_text_vectorization_the_option_changes_nothing():
    x = kdsl.Input((6,), name="x")
    model = kdsl.Model(x, kdsl.layers.Dense(2, activation="softmax")(kdsl.layers.Dense(4)(x)), seed=1)
    for opset in (17, 21):
        a = model.to_onnx(opset=opset).SerializeToString()
        assert model.to_onnx(opset=opset, include_preprocessing=False).SerializeToString() == a
    assert model.to_onnx(include_preprocessing=False).opset_import[0].version == 17


def test_metadata_describes_the_vectorization(model):
    meta = _metadata(model.to_onnx(opset=17, include_preprocessing=False))
    layer = model.get_layer("vectorize")
    info = json.loads(meta["kdsl.token_input.text"])
    assert info == {"layer": "vectorize", "class": "TextVectorization", "dtype": "int64",
                    "vocabulary_size": layer.vocabulary_size(), "output_sequence_length": SEQ_LEN,
                    "padding_id": 0, "oov_id": 1, "standardize": "lower_and_strip_punctuation",
                    "split": "whitespace", "vocabulary": "kdsl.vocabulary.vectorize"}
    vocab = json.loads(meta[info["vocabulary"]])
    assert vocab == layer.get_vocabulary() and vocab[:2] == ["", "[UNK]"]
    assert meta["kdsl.model"] == "clf"
    # the raw-string model carries the vocabulary in its LabelEncoder, not in the metadata
    assert not any(k.startswith(("kdsl.token_input", "kdsl.vocabulary")) for k in _metadata(model.to_onnx()))


def test_export_writes_the_int_token_model(model, texts, tmp_path):
    path = model.export(str(tmp_path / "clf_ids.onnx"), opset=18, include_preprocessing=False)
    proto = onnx.load(path)
    assert proto.opset_import[0].version == 18
    ids = model.get_layer("vectorize")(texts[:10])
    np.testing.assert_allclose(_run(proto, {"text": ids}), model.predict(texts[:10]), rtol=0, atol=1e-6)


def test_symbolic_length_and_rank2_string_input():
    inp = kdsl.Input((1,), dtype="string", name="review")
    vec = TextVectorization(vocabulary=["good", "bad", "film"], name="vec")   # no output_sequence_length
    out = kdsl.layers.Dense(1)(kdsl.layers.GlobalAveragePooling1D()(kdsl.layers.Embedding(5, 3)(vec(inp))))
    model = kdsl.Model(inp, out, seed=0)
    proto = model.to_onnx(opset=17, include_preprocessing=False)
    onnx.checker.check_model(proto, full_check=True)
    batch, length = dims_of(proto.graph.input[0])
    assert batch == "batch" and isinstance(length, str)
    assert json.loads(_metadata(proto)["kdsl.token_input.review"])["output_sequence_length"] is None
    texts = [["a good film"], ["bad bad bad bad, not good"], [""]]
    np.testing.assert_allclose(_run(proto, {"review": vec(np.array(texts, dtype=object))}),
                               model.predict(np.array(texts, dtype=object)), rtol=0, atol=1e-6)


def test_bilstm_example_exports_at_opset_17(texts):
    model = kdsl.load(os.path.join(EXAMPLES, "sentiment.kd"), model="sentiment_bilstm",
                      params={"vocab": 200, "seq_len": 16, "embed_dim": 8, "units": 4}, seed=0)
    model.get_layer("vectorize").adapt(texts)
    proto = model.to_onnx(opset=17, include_preprocessing=False)
    onnx.checker.check_model(proto, full_check=True)
    ids = model.get_layer("vectorize")(texts[:40])
    np.testing.assert_allclose(_run(proto, {"text": ids}), model.predict(texts[:40]), rtol=0, atol=1e-6)


def test_an_input_with_another_consumer_is_refused():
    inp = kdsl.Input((), dtype="string", name="text")
    a = TextVectorization(vocabulary=["a"], output_sequence_length=4, name="words")(inp)
    b = TextVectorization(vocabulary=["a"], split=None, output_sequence_length=4, name="whole")(inp)
    model = kdsl.Model(inp, kdsl.layers.Concatenate()([a, b]))
    with pytest.raises(KdslError, match="also layer") as e:
        model.to_onnx(opset=17, include_preprocessing=False)
    assert "include_preprocessing=True" in e.value.hint


def test_include_preprocessing_must_be_a_bool(model):
    with pytest.raises(KdslError, match="must be True or False"):
        model.to_onnx(include_preprocessing="no")


def test_cli_compile_no_preprocessing(tmp_path, capsys):
    kd = tmp_path / "clf.kd"
    kd.write_text(SOURCE)
    out = tmp_path / "clf.onnx"
    assert main(["compile", str(kd), "--opset", "17", "-o", str(out)]) == 1
    assert "--no-preprocessing" in capsys.readouterr().err
    assert main(["compile", str(kd), "--opset", "17", "--no-preprocessing", "-o", str(out)]) == 0
    assert "opset 17" in capsys.readouterr().out
    proto = onnx.load(str(out))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert "kdsl.token_input.text" in _metadata(proto)
    assert main(["compile", str(kd), "--no-preprocessing", "-o", str(out)]) == 0
    assert "opset 17" in capsys.readouterr().out and onnx.load(str(out)).opset_import[0].version == 17
