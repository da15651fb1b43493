"""Property test: mutated .kd text only ever raises kdsl's own error type."""
import glob
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdsl
from kdsl.frontend.api import compile_text

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
SEEDS = [open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(EXAMPLES, "*.kd")))]
SEEDS += ["""
model m(n: int = 2) {
    input x: float32[seq, 4]
    layer p = Dense(4)
    y = x -> p -> relu
    repeat n { y = y + x * 0.5 }
    output o = concat([y, x], axis=-1) -> mean(axis=1)
}
""", """
block b(x, f: int, s: int = 1) {
    y = x -> Conv2D(f, 3, strides=s, padding=same) -> BatchNormalization()
    if s != 1 { x = x -> Conv2D(f, 1, strides=s) }
    return relu(y + x)
}
model c {
    input img: float32[8, 8, 3]
    output o = img -> b(4, s=2) -> GlobalMaxPooling2D() -> Dense(2, activation=softmax)
}
"""]

TOKENS = ["model", "block", "train", "input", "output", "layer", "return", "repeat", "for", "in", "if",
          "else", "import", '"x.kd"', "->", "(", ")", "[", "]", "{", "}", ",", "=", ":", "+", "-", "*", "/",
          "@", "==", "\n", "x", "y", "Dense", "Conv2D", "relu", "softmax", "0", "-1", "1e309", "3.5",
          "99999999999999999999", "float32", "int64", "true", "none", '"same"', "batch", "range(5)",
          "Flatten()", "Reshape([-1])", "Embedding(10, 4)", "Permute([2, 1])", "axis=", "name=", "`", "\t",
          "\\\n", "é", "#", "repeat 3 {", "Dense(0)", "Dense(-4)", "MaxPooling2D(100)"]


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "duplicate", "replace"]))
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 12)))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[j:]
    return text


def compile_all(text: str) -> None:
    cf = compile_text(text, "fuzz.kd", base_dir=EXAMPLES)
    cf.check()
    for name in cf.model_names:
        cf.build(name).to_onnx()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_sources_raise_only_kdsl_errors(text):
    try:
        compile_all(text)
    except kdsl.KdslError as e:
        assert e.message
        e.render(color=False)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("model{}()[]->=:,+*@ \n\"#xyDense0123456789.")), max_size=120))
def test_random_text_raises_only_kdsl_errors(text):
    try:
        compile_all(text)
    except kdsl.KdslError:
        pass
