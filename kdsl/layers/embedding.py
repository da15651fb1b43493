"""Embedding: turns integer indices into dense vectors of fixed size."""
from __future__ import annotations

from ..ir import TensorType
from ..lower.context import CL
from .args import check_int
from .base import Layer, register

__all__ = ["Embedding"]


def ids_mask(ids):
    """The mask of ``mask_zero`` embeddings: ``ids != 0`` (Keras's padding id)."""
    from .ops import NotZero

    return NotZero()(ids, span=None)


@register
class Embedding(Layer):
    """Turns non-negative integers (indices) into dense vectors of fixed size.

    E.g. ``[[4], [20]] -> [[[0.25, 0.1]], [[0.6, -0.2]]]``.

    Args:
        input_dim: positive int, size of the vocabulary (largest index + 1).
        output_dim: positive int, dimension of the dense embedding.
        embeddings_initializer: initializer name for the embeddings matrix.
        mask_zero: whether index 0 is a padding value to be masked out: the output then
            carries a mask (``ids != 0``) that layers supporting masking pass on and that
            recurrent layers and pooling over steps respect.

    Input shape: ``(batch, ...)`` of indices, int32 or int64 (other dtypes are
    cast to int64, as Keras casts them to an integer type).
    Output shape: ``(batch, ..., output_dim)``, float32.
    Weights: ``embeddings [input_dim, output_dim]``.
    """

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer: str = "uniform",
                 mask_zero: bool = False, name: str | None = None, trainable: bool = True):
        super().__init__(name=name, trainable=trainable)
        self.input_dim = check_int(input_dim, "input_dim")
        self.output_dim = check_int(output_dim, "output_dim")
        self.embeddings_initializer = embeddings_initializer
        self.mask_zero = bool(mask_zero)

    def compute_mask(self, inputs, mask):
        return ids_mask(inputs[0]) if self.mask_zero else None

    def build(self, input_types):
        self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer)

    def compute_output_types(self, input_types):
        t = input_types[0]
        return [TensorType(self.dtype, t.shape + (self.output_dim,))]

    def lower(self, ctx, node):
        v = node.inputs[0]
        idx = ctx.get(v, CL)
        if not v.type.is_int:
            idx = ctx.e.cast(idx, "int64")
        return ctx.e.op("Gather", [ctx.weight(self, "embeddings"), idx], axis=0)
