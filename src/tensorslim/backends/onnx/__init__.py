"""The ONNX backend: load and save (external data, > 2 GB), weight enumeration, graph editing."""

from tensorslim.backends.onnx.io import load_model, model_size_bytes, save_model
from tensorslim.backends.onnx.weights import WeightInfo, WeightRole, WeightUse, find_weights

__all__ = [
    "WeightInfo",
    "WeightRole",
    "WeightUse",
    "find_weights",
    "load_model",
    "model_size_bytes",
    "save_model",
]
