"""Every construct of LANGUAGE.md compiles, and computes what it says (checked with NumPy)."""
import textwrap

import numpy as np
import onnx
import pytest

import kdsl
from helpers import assert_close, check_export
from kdsl.frontend.api import compile_text

RNG = np.random.default_rng(1)


def build(src: str, **kw) -> kdsl.Model:
    return compile_text(textwrap.dedent(src).lstrip("\n"), "t.kd").build(**kw)


def relu(x):
    return np.maximum(x, 0)


def test_pipeline_across_lines_and_keras_call_style_agree():
    a = build("""
        model m {
            input x: float32[6]
            output y = x -> Dense(4, activation=relu, name="d1")
                         -> Dense(3, name="d2")
        }
        """)
    b = build("""
        model m {
            input x: float32[6]
            h = Dense(4, activation="relu", name="d1")(x)
            output y = Dense(3, name="d2")(h)
        }
        """)
    c = build("""
        model m {
            input x: float32[6]
            output y = x ->
                Dense(4, activation=relu, name="d1") ->
                Dense(3, name="d2")
        }
        """)
    x = RNG.normal(size=(5, 6)).astype("float32")
    k1, b1, k2, b2 = a.get_weights()
    ref = relu(x @ k1 + b1) @ k2 + b2
    for m in (a, b, c):
        m.set_weights([k1, b1, k2, b2])
        assert_close(m.predict(x), ref)


def test_arithmetic_and_functions():
    m = build("""
        model m {
            input a: float32[3, 4]
            input b: float32[3, 4]
            s = a + b
            d = a - b
            p = a * b
            mm = a @ transpose(b, [2, 1])
            r = relu(s) -> sigmoid
            c = concat([d, p], axis=-1)
            output o1 = r * 2 + 1
            output o2 = mean(c, axis=1)
            output o3 = softmax(mm, axis=-1)
            output o4 = add([a, b, s]) -> flatten
            output o5 = reshape(p, [2, 6]) -> tanh
        }
        """)
    a = RNG.normal(size=(2, 3, 4)).astype("float32")
    b = RNG.normal(size=(2, 3, 4)).astype("float32")
    o1, o2, o3, o4, o5 = m.predict({"a": a, "b": b})
    s = a + b
    assert_close(o1, 1 / (1 + np.exp(-relu(s))) * 2 + 1)
    assert_close(o2, np.concatenate([a - b, a * b], -1).mean(axis=1))
    mm = a @ b.transpose(0, 2, 1)
    e = np.exp(mm - mm.max(-1, keepdims=True))
    assert_close(o3, e / e.sum(-1, keepdims=True))
    assert_close(o4, (a + b + s).reshape(2, -1))
    assert_close(o5, np.tanh((a * b).reshape(2, 2, 6)))


def test_several_outputs_in_written_order_and_output_by_name():
    m = build("""
        model m {
            input x: float32[2]
            second = x * 2
            output first = x * 3
            output second
        }
        """)
    assert m.output_names == ["first", "second"]
    x = np.ones((1, 2), "float32")
    f, s = m.predict(x)
    assert_close(f, 3 * x) and assert_close(s, 2 * x)


def test_compile_time_parameters_and_cli_style_strings():
    src = """
        model classifier(num_classes: int = 10, width: int = 8, act: str = "relu", scale: float = 1.0) {
            input x: float32[4]
            output y = x -> Dense(width, activation=act) -> Dense(num_classes)
        }
        """
    assert build(src).outputs[0].shape == (None, 10)
    m = build(src, params={"num_classes": "5", "act": "tanh"})
    assert m.outputs[0].shape == (None, 5)
    assert m.layers[0].activation == "tanh"


def test_symbolic_dims_are_shared_by_name():
    m = build("""
        model m {
            input a: float32[seq, 4]
            input b: float32[seq, 4]
            output y = a + b
        }
        """)
    proto = check_export(m)
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq", 4]


def test_named_layer_instance_shares_weights():
    m = build("""
        model m {
            input a: float32[4]
            input b: float32[4]
            layer proj = Dense(3)
            output ya = a -> proj
            output yb = proj(b)
        }
        """)
    assert [l.name for l in m.layers] == ["proj"]
    assert len(m.get_weights()) == 2
    proto = check_export(m)
    assert sorted(i.name for i in proto.graph.initializer) == ["proj/bias", "proj/kernel"]
    x = RNG.normal(size=(3, 4)).astype("float32")
    ya, yb = m.predict({"a": x, "b": x})
    assert_close(ya, yb)


def test_default_names_follow_keras_and_blocks_scope_them():
    m = build("""
        block mlp(x, width: int) {
            return x -> Dense(width) -> Dense(width)
        }
        model m {
            input x: float32[4]
            h = x -> Dense(4) -> mlp(4) -> mlp(4)
            output y = h -> Dense(2, name="head")
        }
        """)
    names = [l.name for l in m.layers]
    assert names == ["dense", "mlp/dense", "mlp/dense_1", "mlp_1/dense", "mlp_1/dense_1", "head"]
    inits = [i.name for i in m.to_onnx().graph.initializer]
    assert "mlp_1/dense_1/kernel" in inits


def test_block_with_several_returns_and_compile_time_control():
    m = build("""
        block split(x, n: int) {
            a = x
            b = x
            repeat n { a = a * 2 }
            for k in [1, 2, 3] {
                if k == 2 {
                    b = b + 1
                } else if k == 3 and n > 1 {
                    b = b * 10
                } else {
                    b = b - 0
                }
            }
            return a, b
        }
        model m(n: int = 2) {
            input x: float32[3]
            p, q = split(x, n=n)
            output y = p + q if n > 1 else p
        }
        """)
    x = RNG.normal(size=(2, 3)).astype("float32")
    assert_close(m.predict(x), x * 4 + (x + 1) * 10)


def test_ternary_and_range_and_arithmetic_on_parameters():
    m = build("""
        model m(depth: int = 3) {
            input x: float32[4]
            h = x
            for i in range(depth) {
                h = h -> Dense(4 * (i + 1) // 2 if i > 0 else 4)
            }
            output y = h
        }
        """)
    assert [l.units for l in m.layers] == [4, 4, 6]


def test_models_called_inside_models_get_their_own_weights_unless_named():
    m = build("""
        model encoder(units: int = 3) {
            input x: float32[4]
            output z = x -> Dense(units, activation=tanh)
        }
        model pair {
            input a: float32[4]
            input b: float32[4]
            layer shared = encoder(units=2)
            output za = a -> encoder
            output zb = encoder(b)
            output sa = a -> shared
            output sb = b -> shared
        }
        """, model="pair")
    names = [l.name for l in m.layers]
    assert names == ["encoder/dense", "encoder_1/dense", "shared/dense"]
    x = RNG.normal(size=(2, 4)).astype("float32")
    za, zb, sa, sb = m.predict({"a": x, "b": x})
    assert not np.allclose(za, zb)       # two call sites, two sets of weights
    assert_close(sa, sb)                 # one named instance, one set
    k, b = m.get_layer("shared/dense").get_weights()
    assert_close(sa, np.tanh(x @ k + b))


def test_imports_and_several_models_per_file(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.kd").write_text(
        "block twice(x) {\n    return x * 2\n}\nblock thrice(x) { return x * 3 }\n")
    (tmp_path / "main.kd").write_text(
        'from "lib/blocks.kd" import twice\nimport "lib/blocks.kd"\n'
        "model a {\n    input x: float32[2]\n    output y = twice(x)\n}\n"
        "model b {\n    input x: float32[2]\n    output y = x -> thrice\n}\n")
    x = np.ones((1, 2), "float32")
    assert_close(kdsl.load(tmp_path / "main.kd", model="a").predict(x), 2 * x)
    assert_close(kdsl.load(tmp_path / "main.kd", model="b").predict(x), 3 * x)
    with pytest.raises(kdsl.KdslError, match="several models"):
        kdsl.load(tmp_path / "main.kd")


def test_bare_identifiers_stand_for_strings():
    a = build("""
        model m {
            input x: float32[8, 8, 2]
            output y = x -> Conv2D(4, 3, padding=same, activation=relu, name="c")
        }
        """)
    b = build("""
        model m {
            input x: float32[8, 8, 2]
            output y = x -> Conv2D(4, 3, padding="same", activation="relu", name="c")
        }
        """)
    assert a.outputs[0].shape == b.outputs[0].shape == (None, 8, 8, 4)
    assert a.to_onnx().graph.node == b.to_onnx().graph.node


def test_train_section_is_parsed_and_validated():
    m = build("""
        model m {
            input x: float32[4]
            output probs = x -> Dense(3, activation=softmax)
            output aux = x -> Dense(1)
        }
        train m {
            loss = { probs: sparse_categorical_crossentropy(from_logits=false), aux: mse }
            loss_weights = { probs: 1.0, aux: 0.2 }
            optimizer = Adam(learning_rate=ExponentialDecay(1e-3, decay_steps=100, decay_rate=0.9))
            metrics = [accuracy, TopKCategoricalAccuracy(k=2)]
            batch_size = 32
            epochs = 3
            validation_split = 0.1
        }
        """)
    cfg = m.train_config
    assert cfg.loss["probs"].name == "sparse_categorical_crossentropy"
    assert cfg.loss["aux"].name == "mean_squared_error"
    assert cfg.optimizer.name == "adam"
    assert cfg.optimizer.kwargs["learning_rate"].name == "ExponentialDecay"
    assert [s.name for s in cfg.metrics] == ["accuracy", "top_k_categorical_accuracy"]
    assert cfg.fit == {"batch_size": 32, "epochs": 3, "validation_split": 0.1}


def test_comments_blank_lines_and_crlf():
    src = "# head\r\n\r\nmodel m {   # trailing\r\n    input x: float32[2]\r\n\r\n    # inside\r\n" \
          "    output y = x -> relu   # done\r\n}\r\n"
    m = compile_text(src, "t.kd").build()
    assert m.output_names == ["y"]


def test_exported_model_metadata_and_opsets():
    m = build("""
        model m {
            input x: float32[4]
            output y = x -> Dense(2)
        }
        """)
    for opset in (17, 18, 19, 20, 21):
        proto = check_export(m, opset)
        assert proto.opset_import[0].version == opset
        assert proto.producer_name == "kdsl"
        meta = {p.key: p.value for p in proto.metadata_props}
        assert len(meta["kdsl.source_sha256"]) == 64
    import onnxruntime as ort
    assert m.to_onnx(21).ir_version <= 10   # loadable by onnxruntime 1.19 and later
    ort.InferenceSession(m.to_onnx(21).SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(kdsl.KdslError, match="Unsupported ONNX opset"):
        m.to_onnx(12)
