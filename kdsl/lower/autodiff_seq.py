"""VJP rules for the ops the unrolled recurrent layers emit that :mod:`kdsl.lower.autodiff`
has no rule for (see there for the rule protocol). Importing this module registers them.

* ``Split``: the output gradients concatenated back along the split axis, zeros standing in
  for outputs that receive no gradient.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import KdslError
from .autodiff import GradContext, register

__all__: list[str] = []

_NP = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
       onnx.TensorProto.FLOAT16: np.float16}


def _zeros_like(g: GradContext, name: str) -> str:
    """Zeros of ``name``'s shape and float dtype (a static shape becomes a constant)."""
    dtype = _NP.get(g._dtypes.get(name, onnx.TensorProto.FLOAT), np.float32)
    shape = g.shape(name)
    if all(isinstance(d, int) for d in shape):
        return g.e.const(np.zeros(shape, dtype), hint="zeros")
    value = numpy_helper.from_array(np.zeros(1, dtype))
    return g.e.op("ConstantOfShape", [g.shape_of(name)], value=value)


@register("Split")
def _split(g: GradContext, n, gy):
    rank = g.rank(n.input[0])
    axis = g.attr(n, "axis", 0) % rank
    parts = [gi if gi is not None else _zeros_like(g, o) for o, gi in zip(n.output, gy)]
    if not parts:
        raise KdslError(f"Internal: Split node '{n.name}' has no outputs.")
    gx = parts[0] if len(parts) == 1 else g.e.op("Concat", parts, axis=axis)
    return [gx] + [None] * (len(n.input) - 1)
