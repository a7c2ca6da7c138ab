"""float16 weights: every constant float32 operand stored as float16 and widened by a ``DEQUANTIZE``, as the
converter writes with ``target_spec.supported_types = [tf.float16]``.

Before -> after::

    OP(x, W float32)  ->  OP(x, DEQUANTIZE(W_fp16 float16))

The ``DEQUANTIZE`` operators come first in the operator list; LiteRT evaluates a ``DEQUANTIZE`` of a
constant once, when tensors are allocated, so inference runs in float32 on half the weight bytes. The
``reduced_precision_support`` metadata (``fp16accfp32``) is added, as the converter does, so that delegates
may compute in float16. Constants that are model outputs or variables stay float32.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from tensorslim._regex import name_matcher
from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.backends.tflite.dynamic import TflitePassResult
from tensorslim.backends.tflite.graph import Graph, compact
from tensorslim.backends.tflite.schema import schema
from tensorslim.backends.tflite.weights import find_weights
from tensorslim.errors import ConfigError
from tensorslim.passes._config import regex_tuple
from tensorslim.passes.base import WeightRecord

__all__ = ["TfliteFloat16Config", "TfliteFloat16Pass"]

_FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class TfliteFloat16Config:
    """Configuration of the float16 pass.

    Attributes:
        exclude: regular expressions on tensor names; a match stays float32.
        min_size: constants with fewer elements stay float32 (0: all, as the converter does).
    """

    exclude: tuple[str, ...] = ()
    min_size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", regex_tuple("exclude", self.exclude))
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 0:
            raise ConfigError(f"min_size: must be a non-negative integer, got {self.min_size!r}")


class TfliteFloat16Pass:
    """Store float32 constants as float16; the input model is never modified (the pass works on a copy)."""

    name = "tflite_float16"

    def __init__(self, config: TfliteFloat16Config | None = None) -> None:
        self.config = config or TfliteFloat16Config()

    def __call__(self, model: Any) -> TflitePassResult:
        """Rewrite a copy of ``model``: the constants of every subgraph (WHILE/IF bodies hold a recurrent
        model's weights)."""
        model = copy.deepcopy(model)
        records: list[WeightRecord] = []
        modified = False
        for si in range(len(model.subgraphs)):
            modified |= self._subgraph(model, si, records)
        if modified:
            _add_metadata(model, "reduced_precision_support", b"fp16accfp32")
        compact(model)
        return TflitePassResult(model, modified, records)

    def _subgraph(self, model: Any, si: int, records: list[WeightRecord]) -> bool:
        g = Graph(model, si)
        excluded = name_matcher(self.config.exclude)
        outputs = set(g.outputs())
        dequantize_first: list[Any] = []
        for w in find_weights(model, si):
            ops = ",".join(dict.fromkeys(u.op_type for u in w.uses))
            nodes = ",".join(dict.fromkeys(u.label for u in w.uses))

            def rec(action: str, after: int, reason: str = "", err: float | None = None, w: Any = w) -> WeightRecord:
                return WeightRecord(w.name, ops, nodes, w.shape, action, reason, w.stored_bytes, after, "", err)  # noqa: B023

            skip = ""
            if w.source_type == "FLOAT16":
                skip = "already float16"
            elif excluded(w.name):
                skip = "excluded by --exclude"
            elif w.size < self.config.min_size:
                skip = f"{w.size} elements < min size {self.config.min_size}"
            elif any(t in outputs or g.sg.tensors[t].isVariable for t in w.tensors):
                skip = "a model output or variable; it stays float32"
            elif np.any(np.abs(w.array[np.isfinite(w.array)]) > _FP16_MAX):
                skip = f"values beyond the float16 range (+-{_FP16_MAX:g})"
            if skip:
                records.append(rec("skipped", w.stored_bytes, skip))
                continue
            half = w.array.astype(np.float16)
            buf = g.add_buffer(half)
            for t in w.tensors:
                tensor = g.sg.tensors[t]
                src = g.add_tensor(w.name, list(w.shape), "FLOAT16", buffer=buf)
                tensor.buffer = g.add_buffer(None)  # the float32 tensor becomes the DEQUANTIZE output
                dequantize_first.append(g.new_op("DEQUANTIZE", [src], [t], version=3))
            err = round(sqnr_db(w.array, half.astype(np.float32)), 2)
            records.append(rec("float16", int(half.nbytes), "DEQUANTIZE at load", err))
        if dequantize_first:
            g.sg.operators = [*dequantize_first, *g.sg.operators]
        return bool(dequantize_first)


def _add_metadata(model: Any, name: str, value: bytes) -> None:
    s = schema()
    for md in model.metadata or []:
        if md.name in (name, name.encode()):
            return
    buf = s.BufferT()
    buf.data = np.frombuffer(value, dtype=np.uint8).copy()
    model.buffers.append(buf)
    md = s.MetadataT()
    md.name = name.encode()
    md.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), md]


def widen_float16(model: Any) -> Any:
    """A copy of ``model`` with every ``DEQUANTIZE(float16 constant)`` replaced by a float32 constant.

    Full-integer quantization starts from float32 weights; a float16 model becomes the float32 model it
    stands for (values exactly those the ``DEQUANTIZE`` would produce).
    """
    model = copy.deepcopy(model)
    changed = False
    for si in range(len(model.subgraphs)):
        g = Graph(model, si)
        keep = []
        for op in g.sg.operators:
            src = int(op.inputs[0]) if g.op_type(op) == "DEQUANTIZE" and len(op.inputs) else -1
            values = g.constant(src) if src >= 0 and g.is_constant(src) else None
            if values is not None and values.dtype == np.float16:
                g.sg.tensors[int(op.outputs[0])].buffer = g.add_buffer(values.astype(np.float32))
                changed = True
                continue
            keep.append(op)
        g.sg.operators = keep
    if changed:
        compact(model)
    return model
