"""Runtimes behind one small interface: open a model file, list its inputs and outputs, run it."""

from tensorslim.runtime.base import Runtime, TensorSpec, open_runtime
from tensorslim.runtime.ort import OrtRuntime

__all__ = ["OrtRuntime", "Runtime", "TensorSpec", "open_runtime"]
