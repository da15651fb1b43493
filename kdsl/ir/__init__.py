"""The IR: tensor types with symbolic dims, values, nodes and graphs."""
from .graph import Graph, Node, Value
from .types import BATCH, DTYPES, Dim, TensorType, broadcast_shapes, format_dim, numel

__all__ = ["Graph", "Node", "Value", "BATCH", "DTYPES", "Dim", "TensorType", "broadcast_shapes",
           "format_dim", "numel"]
