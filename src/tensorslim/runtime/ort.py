"""ONNX Runtime sessions behind the :class:`~tensorslim.runtime.base.Runtime` interface."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from tensorslim.errors import InputError
from tensorslim.runtime.base import TensorSpec

__all__ = ["OrtRuntime", "ort_dtype", "session_options"]

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(bool)": np.bool_,
}


def ort_dtype(type_str: str) -> np.dtype:
    """NumPy dtype of an ONNX Runtime type string such as ``tensor(float)``."""
    return np.dtype(_ORT_TYPES.get(type_str, np.float32))


def session_options(threads: int = 0, *, optimized_path: str | None = None) -> ort.SessionOptions:
    """Session options used everywhere: full graph optimization, ``threads`` intra-op threads, quiet logs."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads > 0:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return so


class OrtRuntime:
    """An ONNX Runtime CPU session.

    Args:
        model: a path, serialized bytes, or a ``ModelProto``.
        threads: intra-op threads (0: ONNX Runtime's default).
        optimized_path: where ONNX Runtime writes its optimized graph, for diagnostics.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | onnx.ModelProto,
        *,
        threads: int = 0,
        optimized_path: str | None = None,
    ) -> None:
        so = session_options(threads, optimized_path=optimized_path)
        self.path: Path | None = None
        if isinstance(model, onnx.ModelProto):
            source: str | bytes = model.SerializeToString()
        elif isinstance(model, bytes):
            source = model
        else:
            self.path = Path(model)
            if not self.path.is_file():
                raise InputError(f"{self.path}: no such file; check the path")
            source = str(self.path)
        label = str(self.path) if self.path else "model"
        try:
            self.session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises several private exception types
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise InputError(f"{label}: ONNX Runtime cannot load the model ({msg})") from e
        self._inputs = [TensorSpec(i.name, ort_dtype(i.type), tuple(i.shape)) for i in self.session.get_inputs()]
        self._outputs = [TensorSpec(o.name, ort_dtype(o.type), tuple(o.shape)) for o in self.session.get_outputs()]

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs."""
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs."""
        return self._outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch.

        Raises:
            InputError: ONNX Runtime rejects the inputs (wrong shape, type, or a missing input).
        """
        try:
            return [np.asarray(o) for o in self.session.run(None, dict(feeds))]
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            label = str(self.path) if self.path else "model"
            shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feeds.items())
            raise InputError(f"{label}: inference failed on inputs {shapes} ({msg})") from e
