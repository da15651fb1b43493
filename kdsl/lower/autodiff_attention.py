"""VJP rules for the ops the attention layers (kdsl.layers.attention) emit.

MultiHeadAttention, PositionEmbedding and TokenAndPositionEmbedding lower to MatMul, Reshape,
Transpose, Mul, Add, Where, Softmax, Slice and Expand (rules in :mod:`kdsl.lower.autodiff`) and
Gather (the embedding lookups, rule in :mod:`kdsl.lower.autodiff_nn`); building the masks (Shape,
Range, Equal, Not, And, GreaterOrEqual, Unsqueeze of bool values) carries no gradient. No op needs
a rule of its own: importing this module makes sure every rule they rely on is registered, whoever
else imported what. Rules for further ops the attention layers may emit belong here, registered
with :func:`kdsl.lower.autodiff.register`.
"""
from __future__ import annotations

from . import autodiff, autodiff_nn  # noqa: F401  (registers the rules, e.g. Gather's)

#: the ONNX ops the attention layers emit on a gradient path; each has a rule (checked by the tests)
DIFFERENTIATED_OPS = ("MatMul", "Reshape", "Transpose", "Mul", "Add", "Where", "Softmax", "Slice", "Expand",
                      "Gather")

__all__ = ["DIFFERENTIATED_OPS"]
