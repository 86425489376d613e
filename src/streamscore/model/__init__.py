"""Models: find them in a repository, read their signature, run them with ONNX Runtime."""

from streamscore.model.repository import ModelRef, list_models, resolve_model
from streamscore.model.signature import ModelSignature, TensorSpec

__all__ = ["ModelRef", "ModelSignature", "TensorSpec", "list_models", "resolve_model"]
