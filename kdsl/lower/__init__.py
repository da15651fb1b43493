"""IR -> ONNX: the emitter, the layout-aware lowering context, and model export."""
from .context import CF, CL, LowerContext
from .emitter import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, Emitter
from .export import check_opset, ir_version_for, lower_graph

__all__ = ["CF", "CL", "LowerContext", "Emitter", "DEFAULT_OPSET", "MAX_OPSET", "MIN_OPSET",
           "check_opset", "ir_version_for", "lower_graph"]
