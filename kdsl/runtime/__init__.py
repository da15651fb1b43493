"""Running ONNX: onnxruntime sessions, providers, batching, atomic file writes."""
from .files import atomic_write_bytes, atomic_write_text
from .session import InferenceSession, as_feeds, resolve_providers

__all__ = ["InferenceSession", "as_feeds", "resolve_providers", "atomic_write_bytes", "atomic_write_text"]
