"""The ONNX import's former place: :mod:`lsub_helpers.io.onnx` (these names stay importable from here)."""

from .io.onnx import SUPPORTED, LoadedNetwork, load_onnx, onnx_to_ops, read_onnx_model

__all__ = ["SUPPORTED", "LoadedNetwork", "load_onnx", "onnx_to_ops", "read_onnx_model"]
