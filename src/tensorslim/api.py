"""The Python API behind the CLI: one call per job, a model in gives the same kind of model out."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from tensorslim.backends.onnx.io import check_output_path, load_model, model_size_bytes, save_model
from tensorslim.errors import InputError, UnsupportedModelError
from tensorslim.passes.base import WeightRecord
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass, summarize
from tensorslim.runtime.ort import OrtRuntime

__all__ = ["QuantizeResult", "quantize"]

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult:
    """What :func:`quantize` did.

    Attributes:
        model: the quantized model.
        output_path: where it was written (``None`` when no output was asked for).
        records: one record per weight: what was done or why it was skipped.
        config: the configuration used.
        input_bytes: serialized size of the input model.
        output_bytes: serialized size of the output model.
        seconds: wall time of the job.
    """

    model: onnx.ModelProto
    output_path: Path | None
    records: list[WeightRecord]
    config: DynamicQuantConfig
    input_bytes: int
    output_bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        """Output size over input size."""
        return self.output_bytes / self.input_bytes if self.input_bytes else 1.0

    def summary(self) -> dict[str, int]:
        """Counts of quantized and skipped weights and their bytes."""
        return summarize(self.records)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        from dataclasses import asdict

        return {
            "output_path": str(self.output_path) if self.output_path else None,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "size_ratio": self.size_ratio,
            "seconds": self.seconds,
            "config": {k: (list(v) if isinstance(v, tuple) else str(v)) for k, v in asdict(self.config).items()},
            "summary": self.summary(),
            "weights": [r.to_dict() for r in self.records],
            "notes": list(self.notes),
        }


def _as_model(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(model, onnx.ModelProto):
        return model, None
    path = Path(model)
    if path.suffix.lower() != ".onnx" and path.exists():
        log.debug("reading %s as ONNX despite its extension", path)
    return load_model(path), path


def quantize(
    model: str | os.PathLike[str] | onnx.ModelProto,
    output: str | os.PathLike[str] | None = None,
    *,
    config: DynamicQuantConfig | None = None,
    verify: bool = True,
) -> QuantizeResult:
    """Dynamic-range int8 quantization of an ONNX model.

    Args:
        model: a path to an ``.onnx`` file or a ``ModelProto`` (never modified).
        output: where to write the result (atomically); ``None`` keeps it in memory only.
        config: the options; the defaults are chosen for fidelity and speed on ONNX Runtime.
        verify: load the result in ONNX Runtime before writing it.

    Raises:
        InputError: unreadable model, bad output path, or nothing to quantize.
    """
    start = time.perf_counter()
    cfg = config or DynamicQuantConfig()
    if output is not None:
        inputs = [model] if isinstance(model, str | os.PathLike) else []
        check_output_path(output, *inputs)
    proto, src = _as_model(model)
    result = DynamicQuantPass(cfg)(proto)
    if not result.modified:
        reasons = sorted({r.reason for r in result.records if r.skipped})
        detail = f" ({'; '.join(reasons[:3])})" if reasons else " (the model has no constant weights)"
        raise UnsupportedModelError(
            f"{src or 'model'}: no weight could be quantized{detail}; check --ops, --exclude and --min-size"
        )
    small = model_size_bytes(result.model) < 2**31 - 2**24
    if small:  # models past protobuf's 2 GB limit are checked from the saved file instead
        onnx.checker.check_model(result.model, full_check=False)
    if verify and small:
        try:
            OrtRuntime(result.model)
        except InputError as e:  # pragma: no cover - would be a tensorslim bug
            raise InputError(f"the quantized model does not load in ONNX Runtime: {e}; please report this") from e
    out_path = save_model(result.model, output) if output is not None else None
    if out_path is not None and not small:
        onnx.checker.check_model(str(out_path))
    return QuantizeResult(
        model=result.model,
        output_path=out_path,
        records=result.records,
        config=cfg,
        input_bytes=model_size_bytes(proto),
        output_bytes=model_size_bytes(result.model),
        seconds=time.perf_counter() - start,
    )
