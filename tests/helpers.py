"""Test helpers: build a one-layer model, export it, check it, run it in onnxruntime.

``run_layer`` is the table-driven harness every layer test goes through: it
checks the exported model with ``onnx.checker`` (full check), checks that our
inferred shapes agree with ONNX's strict shape inference on every value, and
returns onnxruntime's output for NumPy reference comparison.
"""
from __future__ import annotations

import numpy as np
import onnx

import kdsl
import kdsl.ir


def dims_of(vi: onnx.ValueInfoProto) -> list:
    out = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def assert_shapes_agree(model: onnx.ModelProto) -> None:
    """Every value we annotated has the same dtype and shape under ONNX strict inference."""
    ours = {vi.name: (vi.type.tensor_type.elem_type, dims_of(vi))
            for vi in list(model.graph.value_info) + list(model.graph.output)}
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    for o in bare.graph.output:
        o.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)
    theirs = {vi.name: (vi.type.tensor_type.elem_type, dims_of(vi))
              for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for name, (dt, shape) in ours.items():
        assert name in theirs, f"ONNX shape inference found no type for {name}"
        tdt, tshape = theirs[name]
        assert dt == tdt, f"{name}: dtype {dt} (ours) != {tdt} (onnx)"
        assert len(shape) == len(tshape), f"{name}: rank {shape} (ours) != {tshape} (onnx)"
        for a, b in zip(shape, tshape):
            if isinstance(a, int):
                assert a == b, f"{name}: shape {shape} (ours) != {tshape} (onnx)"
            else:
                assert b == a or b is None or isinstance(b, str), f"{name}: {shape} (ours) != {tshape} (onnx)"


def check_export(model: kdsl.Model, opset: int = 17) -> onnx.ModelProto:
    proto = model.to_onnx(opset)
    onnx.checker.check_model(proto, full_check=True)
    assert_shapes_agree(proto)
    for node in proto.graph.node:
        assert node.domain in ("", "ai.onnx", "ai.onnx.ml"), node.domain
    return proto


def run_layer(layer, inputs, weights=None, opset: int = 17, input_dtypes=None):
    """Apply ``layer`` to ``kdsl.Input`` tensors shaped like ``inputs`` (a list means several
    tensors, passed as a list), set ``weights`` (Keras layout), export at ``opset`` and run.

    Returns ``(output, model)``.
    """
    many = isinstance(inputs, list)
    arrays = inputs if many else [inputs]
    dtypes = input_dtypes or [str(a.dtype) if str(a.dtype) in kdsl.ir.DTYPES else "float32" for a in arrays]
    xs = [kdsl.Input(a.shape[1:], dtype=dt, name=f"in{i}") for i, (a, dt) in enumerate(zip(arrays, dtypes))]
    y = layer(xs if many else xs[0])
    model = kdsl.Model(xs, y)
    if weights is not None:
        layer.set_weights(weights)
    check_export(model, opset)
    import onnxruntime as ort

    sess = ort.InferenceSession(model.to_onnx(opset).SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {f"in{i}": a.astype(dt) for i, (a, dt) in enumerate(zip(arrays, dtypes))}
    outs = sess.run(None, feeds)
    return (outs[0] if len(outs) == 1 else outs), model


def assert_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


class ToCF(kdsl.layers.Layer):
    """Test stand-in for a convolution: the identity, leaving its output channels-first."""

    is_op = True

    def compute_output_types(self, input_types):
        return [input_types[0]]

    def lower(self, ctx, node):
        from kdsl.lower.context import CF

        return [(ctx.get(node.inputs[0], CF), CF)]
