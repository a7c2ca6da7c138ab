"""ONNX Runtime sessions behind the :class:`~tensorslim.runtime.base.Runtime` interface.

Models with integer inputs/outputs from static quantization (``io_dtype``) carry their scales and zero points
in ``metadata_props``; :class:`OrtRuntime` then quantizes float feeds of those inputs and, when it did,
dequantizes the integer outputs, so such a model compares with its float original on the same float data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from tensorslim.algorithms.quantize import dequantize, quantize, tensor_params
from tensorslim.backends.onnx.metadata import IO_METADATA_KEY
from tensorslim.errors import InputError
from tensorslim.runtime.spec import TensorSpec

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


#: Environment variable: intra-op threads of every session whose caller leaves the count to tensorslim (e.g. the
#: calibration and evaluation sessions of a search worker, which sets it to 1 so workers do not share cores).
THREADS_ENV = "TENSORSLIM_THREADS"


def thread_budget() -> int:
    """Intra-op threads for sessions whose caller did not choose: ``$TENSORSLIM_THREADS``, else 0 (ORT's default).

    Raises:
        InputError: the variable is set but is not a non-negative integer.
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise InputError(f"{THREADS_ENV}={raw!r}: must be a non-negative integer (0 = ONNX Runtime's default)")
    return value


def session_options(threads: int = 0, *, optimized_path: str | None = None) -> ort.SessionOptions:
    """Session options used everywhere: full graph optimization, ``threads`` intra-op threads, quiet logs.

    ``threads`` 0 means :func:`thread_budget` (``$TENSORSLIM_THREADS``, else ONNX Runtime's default).
    """
    threads = threads if threads > 0 else thread_budget()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 4  # failures come back as exceptions, worded by the caller: no ONNX Runtime log line
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
        convert_io: quantize float feeds of integer inputs and dequantize integer outputs, with the parameters
            recorded by static quantization (``tensorslim.io_quantization``); integer feeds pass through and
            then the outputs stay integer.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes | onnx.ModelProto,
        *,
        threads: int = 0,
        optimized_path: str | None = None,
        convert_io: bool = True,
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
        self.io_quantization: dict[str, dict[str, dict[str, Any]]] = {}
        label = str(self.path) if self.path else "model"
        try:
            self.session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises several private exception types
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise InputError(f"{label}: ONNX Runtime cannot load the model ({msg})") from e
        self._inputs = [TensorSpec(i.name, ort_dtype(i.type), tuple(i.shape)) for i in self.session.get_inputs()]
        self._model = model  # read again only if index_bounds() is asked for
        self._index_bounds: dict[str, int] | None = None
        self._outputs = [TensorSpec(o.name, ort_dtype(o.type), tuple(o.shape)) for o in self.session.get_outputs()]
        if convert_io:
            meta = self.session.get_modelmeta().custom_metadata_map.get(IO_METADATA_KEY)
            if meta:
                try:
                    self.io_quantization = dict(json.loads(meta))
                except ValueError as e:
                    raise InputError(f"{label}: unreadable {IO_METADATA_KEY} metadata ({e})") from e

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs."""
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs."""
        return self._outputs

    def index_bounds(self) -> dict[str, int]:
        """Integer inputs that index constant tables (token ids, token types, positions) and the tables' sizes.

        Computed on first call (the model file is parsed again, without external data) and cached; empty when
        the model cannot be read.
        """
        if self._index_bounds is None:
            from tensorslim.backends.onnx.indices import index_bounds
            from tensorslim.backends.onnx.io import load_model

            self._index_bounds = {}
            if any(np.issubdtype(s.dtype, np.integer) for s in self._inputs):
                model = self._model
                try:
                    if isinstance(model, onnx.ModelProto):
                        proto = model
                    elif isinstance(model, bytes):
                        proto = onnx.load_from_string(model)
                    else:
                        proto = load_model(model, check=False, external_data=False)
                    self._index_bounds = index_bounds(proto)
                except Exception:  # the session loaded it: without bounds, generated integers keep their range
                    pass
        return self._index_bounds

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch.

        Raises:
            InputError: ONNX Runtime rejects the inputs (wrong shape, type, or a missing input).
        """
        feeds = dict(feeds)
        qin = self.io_quantization.get("inputs", {})
        converted = False
        for name, p in qin.items():
            arr = feeds.get(name)
            if arr is not None and np.issubdtype(np.asarray(arr).dtype, np.floating):
                feeds[name] = quantize(arr, tensor_params(p["scale"], p["zero_point"], p["dtype"]), narrow=False)
                converted = True
        try:
            outs = [np.asarray(o) for o in self.session.run(None, feeds)]
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            label = str(self.path) if self.path else "model"
            shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feeds.items())
            raise InputError(f"{label}: inference failed on inputs {shapes} ({msg})") from e
        qout = self.io_quantization.get("outputs", {})
        if qout and (converted or not qin):
            for i, spec in enumerate(self._outputs):
                po = qout.get(spec.name)
                if po is not None:
                    outs[i] = dequantize(outs[i], tensor_params(po["scale"], po["zero_point"], outs[i].dtype))
        return outs
