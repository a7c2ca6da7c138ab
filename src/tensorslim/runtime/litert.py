"""LiteRT (TFLite) interpreters behind the :class:`~tensorslim.runtime.base.Runtime` interface.

Inputs and outputs are named after the model's signature (``serving_default``) when it has one, else after
their tensors. Integer-only models (int8 inputs or outputs with quantization parameters) are presented with
float inputs and outputs: feeds are quantized and results dequantized with the model's own parameters, so
that a float model and its integer-only version can be compared on the same data. Batches larger than a
model's fixed batch size are run sample by sample; dynamic batch dimensions are resized.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tensorslim.errors import InputError
from tensorslim.runtime.spec import TensorSpec

__all__ = ["LiteRTRuntime", "make_interpreter"]


def make_interpreter(model: str | os.PathLike[str] | bytes, *, threads: int = 0, preserve_all: bool = False) -> Any:
    """A LiteRT ``Interpreter`` with tensors allocated.

    Args:
        model: a path or the serialized model.
        threads: CPU threads (0: LiteRT's default).
        preserve_all: keep every intermediate tensor readable after ``invoke`` (calibration).

    Raises:
        InputError: ai-edge-litert is missing or LiteRT cannot load the model.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise InputError("running .tflite models needs ai-edge-litert: pip install 'tensorslim[tflite]'") from e
    kwargs: dict[str, Any] = {"experimental_preserve_all_tensors": preserve_all}
    if threads > 0:
        kwargs["num_threads"] = threads
    if isinstance(model, bytes):
        kwargs["model_content"] = model
        label = "model"
    else:
        label = str(model)
        if not Path(model).is_file():
            raise InputError(f"{label}: no such file; check the path")
        kwargs["model_path"] = str(model)
    from tensorslim.backends.tflite.safety import vet

    vet(model, label=label)  # structural checks and a crash probe in a child process, before LiteRT sees it
    try:
        with warnings.catch_warnings():  # preserve_all warns that it costs memory: calibration wants exactly that
            warnings.simplefilter("ignore", UserWarning)
            it = Interpreter(**kwargs)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise InputError(f"{label}: LiteRT cannot load the model ({msg})") from e
    return it


def _quant(detail: Mapping[str, Any]) -> tuple[float, int] | None:
    scale, zp = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale and scale > 0:
        return float(scale), int(zp)
    return None


class LiteRTRuntime:
    """A LiteRT interpreter.

    Args:
        model: a path or the serialized model.
        threads: CPU threads (0: LiteRT's default).
        float_io: present int8 inputs and outputs that carry quantization parameters as float32.
        preserve_all: keep intermediate tensors readable after each run (:meth:`tensor`), for calibration.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        threads: int = 0,
        float_io: bool = True,
        preserve_all: bool = False,
    ) -> None:
        self.path: Path | None = None if isinstance(model, bytes) else Path(model)
        self._source = model
        self.interpreter = make_interpreter(model, threads=threads, preserve_all=preserve_all)
        self.float_io = float_io
        it = self.interpreter
        in_names, out_names = self._signature_names(it)
        self._in = it.get_input_details()
        self._out = it.get_output_details()
        self._in_names = [in_names.get(d["index"], d["name"]) for d in self._in]
        self._out_names = [out_names.get(d["index"], d["name"]) for d in self._out]
        self._inputs = [self._spec(n, d) for n, d in zip(self._in_names, self._in, strict=True)]
        self._outputs = [self._spec(n, d) for n, d in zip(self._out_names, self._out, strict=True)]

    @staticmethod
    def _signature_names(it: Any) -> tuple[dict[int, str], dict[int, str]]:
        sigs = it.get_signature_list()
        if len(sigs) != 1:
            return {}, {}
        runner = it.get_signature_runner(next(iter(sigs)))
        ins = {int(d["index"]): name for name, d in runner.get_input_details().items()}
        outs = {int(d["index"]): name for name, d in runner.get_output_details().items()}
        return ins, outs

    def _spec(self, name: str, d: Mapping[str, Any]) -> TensorSpec:
        sig = d.get("shape_signature")
        dims = [int(x) for x in (sig if sig is not None and len(sig) else d["shape"])]
        dtype = np.dtype(d["dtype"])
        if self.float_io and _quant(d) is not None:
            dtype = np.dtype(np.float32)
        return TensorSpec(name, dtype, tuple(None if x < 0 else x for x in dims))

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs."""
        return self._inputs

    def index_bounds(self) -> dict[str, int]:
        """Integer inputs that index a constant table through ``GATHER`` (possibly behind ``CAST``, ``RESHAPE``,
        ``SQUEEZE``, ``EXPAND_DIMS``, ``DEQUANTIZE``) and the table's size along the gathered axis; empty when
        the model cannot be parsed."""
        from tensorslim.backends.tflite.graph import Graph
        from tensorslim.backends.tflite.io import load_model, model_from_bytes

        try:
            g = Graph(model_from_bytes(self._source) if isinstance(self._source, bytes) else load_model(self._source))
        except Exception:  # the interpreter loaded it: without bounds, generated integers keep their range
            return {}
        tensors, producers, consumers = g.tensors, g.producers(), g.consumers()

        def table_dims(t: int) -> list[int] | None:
            while not g.is_constant(t) and t in producers and g.op_type(g.ops[producers[t]]) == "DEQUANTIZE":
                t = int(g.ops[producers[t]].inputs[0])
            return [int(d) for d in tensors[t].shape] if g.is_constant(t) and tensors[t].shape is not None else None

        names = {int(d["index"]): n for d, n in zip(self._in, self._in_names, strict=True)}
        out: dict[str, int] = {}
        for start, name in names.items():
            stack, seen = [start], set()
            while stack:
                t = stack.pop()
                if t in seen:
                    continue
                seen.add(t)
                for oi, pos in consumers.get(t, []):
                    op = g.ops[oi]
                    kind = g.op_type(op)
                    dims = table_dims(int(op.inputs[0])) if kind == "GATHER" and pos == 1 else None
                    if dims:
                        axis = int(getattr(op.builtinOptions, "axis", 0) or 0) % len(dims)
                        out[name] = min(out.get(name, dims[axis]), dims[axis])
                    elif kind in ("CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS") and pos == 0:
                        stack.extend(int(o) for o in op.outputs)
        return out

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs."""
        return self._outputs

    def prepare(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The input arrays in the model's order and dtypes (float feeds quantized for int8 inputs)."""
        return self._feed(feeds)

    def invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run on arrays from :meth:`prepare` (no splitting, no conversion of the feeds).

        Raises:
            InputError: LiteRT fails to run the model (a kernel rejects its tensors).
        """
        try:
            return self._invoke(arrays)
        except (RuntimeError, ValueError) as e:
            msg = " ".join(str(e).split())[:300] or type(e).__name__
            raise InputError(f"{self._label}: LiteRT cannot run the model ({msg})") from e

    def _feed(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = []
        for name, d in zip(self._in_names, self._in, strict=True):
            if name in feeds:
                x = np.asarray(feeds[name])
            elif d["name"] in feeds:
                x = np.asarray(feeds[d["name"]])
            else:
                raise InputError(f"{self._label}: no value for input {name!r}; give one array per model input")
            q = _quant(d) if self.float_io else None
            if q is not None and np.issubdtype(x.dtype, np.floating):
                info = np.iinfo(d["dtype"])
                x = np.clip(np.round(x / q[0]) + q[1], info.min, info.max).astype(d["dtype"])
            arrays.append(np.ascontiguousarray(x, dtype=d["dtype"]))
        return arrays

    def tensor(self, index: int) -> np.ndarray:
        """The value of tensor ``index`` after the last run (intermediates need ``preserve_all``)."""
        return np.asarray(self.interpreter.get_tensor(index))

    @property
    def _label(self) -> str:
        return str(self.path) if self.path else "model"

    def _invoke(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        it = self.interpreter
        resized = False
        for d, x in zip(self._in, arrays, strict=True):
            if tuple(int(s) for s in it.get_tensor(d["index"]).shape) != x.shape:
                it.resize_tensor_input(d["index"], list(x.shape), strict=True)
                resized = True
        if resized:
            it.allocate_tensors()
        for d, x in zip(self._in, arrays, strict=True):
            it.set_tensor(d["index"], x)
        it.invoke()
        outs = []
        for d in self._out:
            y = np.array(it.get_tensor(d["index"]))
            q = _quant(d) if self.float_io else None
            if q is not None:
                y = ((y.astype(np.float32) - q[1]) * q[0]).astype(np.float32)
            outs.append(y)
        return outs

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; outputs in the order of :attr:`outputs`.

        Raises:
            InputError: a missing input, or LiteRT rejects the inputs' shapes.
        """
        arrays = self._feed(feeds)
        try:
            fixed = [s.shape[0] for s in self._inputs if s.shape and s.shape[0] is not None]
            n = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
            if fixed and any(f != n for f in fixed) and all(f == 1 for f in fixed):
                parts = [self._invoke([a[i : i + 1] for a in arrays]) for i in range(n)]
                return [np.concatenate([p[k] for p in parts], axis=0) for k in range(len(self._out))]
            return self._invoke(arrays)
        except (ValueError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feeds.items())
            raise InputError(f"{self._label}: inference failed on inputs {shapes} ({msg})") from e
