"""``quantize`` and its result: one call per job, a model in gives the same kind of model out."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic

import onnx

from tensorslim.api.verify import write_output
from tensorslim.backends.onnx.io import check_output_path, load_model, model_size_bytes
from tensorslim.data import BatchAxes, Dataset
from tensorslim.data.load import DataLike
from tensorslim.errors import InputError, UnsupportedModelError
from tensorslim.passes.base import ModelT, WeightRecord
from tensorslim.passes.blockwise_quant import BlockQuantConfig
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, summarize
from tensorslim.passes.float16 import Float16Config
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.pipeline import run_pipeline
from tensorslim.runtime.ort import OrtRuntime
from tensorslim.runtime.targets import TargetRuntime, check_target, target_for

if TYPE_CHECKING:
    from tensorslim.data.images import ImagePreprocess

__all__ = ["CalibrationData", "QuantConfig", "QuantizeResult", "as_model", "load_calibration", "quantize"]

log = logging.getLogger(__name__)


@dataclass
class QuantizeResult(Generic[ModelT]):
    """What :func:`quantize` did, for a model of any format.

    Attributes:
        model: the quantized model (``onnx.ModelProto``; for ``.tflite``, the flatbuffer object).
        output_path: where it was written (``None`` when no output was asked for).
        records: one record per weight: what was done or why it was skipped.
        config: the configuration used.
        input_bytes: serialized size of the input model.
        output_bytes: serialized size of the output model.
        seconds: wall time of the job.
    """

    model: ModelT
    output_path: Path | None
    records: list[WeightRecord]
    config: Any  # the config used: a QuantConfig, or a TFLite mode's config
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
            "config": {k: _json_value(v) for k, v in asdict(self.config).items()},
            "summary": self.summary(),
            "weights": [r.to_dict() for r in self.records],
            "notes": list(self.notes),
        }


def _json_value(v: Any) -> Any:
    """A config field as JSON: numbers and booleans as they are, tuples as lists, enums and the rest as text."""
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, bool | int | float) and not isinstance(v, Enum):
        return v
    return None if v is None else str(v)


QuantConfig = DynamicQuantConfig | BlockQuantConfig | Float16Config | StaticQuantConfig


#: What calibration ``data`` may be: a path (``.npz``, folder of ``.npz``, folder of images), a :class:`Dataset`,
#: one feed dict ``{input_name: array}``, or an iterable of feed dicts (one sample or a batch each).
CalibrationData = DataLike


def load_calibration(
    data: CalibrationData,
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    max_samples: int | None = None,
    images: ImagePreprocess | None = None,
    batch_axis: BatchAxes | None = None,
) -> Dataset:
    """Calibration data for ``model``, checked against its inputs (see :func:`tensorslim.data.load_data`).

    Args:
        data: an ``.npz`` (or ``.npy``) file, a folder of ``.npz`` files (per-sample shapes may differ, e.g.
            sequence length), a folder of images (with ``images``), a :class:`Dataset`, one feed dict, or an
            iterable of feed dicts ``{input_name: array}`` (consumed up to ``max_samples``). Each array holds
            samples along the model's batch axis, a stack of per-sample feeds, ``[N]`` for a scalar input, or
            one sample (:mod:`tensorslim.data.layout`).
        model: the model the data feeds (a ``ModelProto`` or the path of an ``.onnx`` file).
        max_samples: use at most this many samples.
        images: the preprocessing of a folder of images (size, layout, colour, scale, mean/std, dtype).
        batch_axis: ``{input_name: axis}`` (``None``: no batch axis) where the input shapes do not tell it.

    Raises:
        InputError: unreadable data, names or shapes that do not match the model's inputs, NaN/Inf, no samples.
    """
    from tensorslim.data import load_data

    if not isinstance(model, onnx.ModelProto):
        model = as_model(model)[0]
    specs = OrtRuntime(model).inputs if model_size_bytes(model) < 2**31 - 2**24 else []
    return load_data(data, specs, max_samples=max_samples, images=images, batch_axis=batch_axis)


def as_model(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    """``model`` as a ``ModelProto`` (loaded when a path) and the path it came from (``None`` for a proto)."""
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
    config: QuantConfig | None = None,
    data: CalibrationData | None = None,
    max_samples: int | None = None,
    verify: bool = True,
    target_runtime: str | TargetRuntime | None = None,
    batch_axis: BatchAxes | None = None,
) -> QuantizeResult[Any]:
    """Quantize an ONNX or TFLite model; the config's type picks the technique.

    * :class:`DynamicQuantConfig` (default): dynamic-range int8, no data needed.
    * :class:`BlockQuantConfig`: block-wise int4/int8 for MatMul and Gather (4-bit MatMul weights on int8 kernels
      by default, MatMulNBits with ``kernel="matmulnbits"``; GPTQ with ``data``).
    * :class:`Float16Config`: float16 weights and compute; ``data`` (or generated inputs) checks for
      overflow, and overflowing nodes fall back to float32.
    * :class:`StaticQuantConfig`: full-integer static int8 (QDQ) calibrated on ``data`` (required).

    A ``.tflite`` path goes to :func:`tensorslim.backends.tflite.quantize.quantize_tflite`, as the CLI sends it:
    :class:`DynamicQuantConfig` gives dynamic-range int8 (its ``form``, ``granularity`` and ``exclude`` carry
    over; ``weight_only`` is int8 weights behind ``DEQUANTIZE``), :class:`Float16Config` float16 weights,
    :class:`StaticQuantConfig` full integer, :class:`BlockQuantConfig` with ``bits=4`` 4-bit weights (``INT4``
    tensors, per channel; with ``data`` the weights that cost the output most stay int8); the TFLite configs are
    taken as they are.

    Args:
        model: a path to an ``.onnx`` or ``.tflite`` file or a ``ModelProto`` (never modified).
        output: where to write the result (atomically); ``None`` keeps it in memory only.
        config: the technique and its options.
        data: calibration data: ``.npz``, folder of ``.npz``, a :class:`Dataset`, or feed dicts (see
            :func:`load_calibration`; for a folder of images, load it with ``load_calibration(..., images=)``).
        max_samples: use at most this many calibration samples.
        verify: load the result in ONNX Runtime before writing it.
        target_runtime: the oldest runtime the output must load in, e.g. ``"onnxruntime>=1.17"``: constructs it
            lacks are avoided where another form exists (4-bit embeddings become int8 ones below 1.20), else an
            error names them (see :mod:`tensorslim.runtime.targets`).
        batch_axis: ``{input_name: axis}`` where the input shapes do not tell the batch axis (e.g. ``{"h0": 1}``).

    Raises:
        InputError: unreadable model, bad output path, nothing to quantize, or the output needs a newer
            runtime than ``target_runtime``.
    """
    from tensorslim.formats import format_of

    return format_of(model).quantize(model, output, config=config, data=data, max_samples=max_samples,
                                     verify=verify, target_runtime=target_runtime, batch_axis=batch_axis)  # fmt: skip


def _quantize_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto,
    output: str | os.PathLike[str] | None,
    *,
    config: QuantConfig | None,
    data: CalibrationData | None,
    max_samples: int | None,
    verify: bool,
    target_runtime: str | TargetRuntime | None,
    batch_axis: BatchAxes | None,
) -> QuantizeResult[onnx.ModelProto]:
    """:func:`quantize` for an ONNX model (:class:`tensorslim.formats.OnnxFormat`)."""
    start = time.perf_counter()
    cfg = config or DynamicQuantConfig()
    target = target_for(target_runtime, model_kind="onnx") if isinstance(target_runtime, str) else target_runtime
    if output is not None:
        inputs = [model] if isinstance(model, str | os.PathLike) else []
        check_output_path(output, *inputs)
    proto, src = as_model(model)
    dataset = None if data is None else load_calibration(data, proto, max_samples=max_samples, batch_axis=batch_axis)
    result = run_pipeline(proto, cfg, dataset, target)
    notes = [f"calibration data: {n}" for n in (dataset.notes if dataset is not None else [])] + list(result.notes)
    if not result.modified:
        reasons = sorted({r.reason for r in result.records if r.skipped})
        detail = f" ({'; '.join(reasons[:3])})" if reasons else " (the model has no constant weights)"
        raise UnsupportedModelError(
            f"{src or 'model'}: no weight could be quantized{detail}; check --ops, --exclude and --min-size"
        )
    check_target(result.model, target)
    from tensorslim.diagnostics.provenance import record_quantize

    record_quantize(result.model, cfg, data=dataset is not None)  # what diagnose needs to reproduce it
    out_path = write_output(result.model, output, float16=isinstance(cfg, Float16Config), load=verify, source=proto)
    return QuantizeResult(
        model=result.model,
        output_path=out_path,
        records=result.records,
        config=cfg,
        input_bytes=model_size_bytes(proto),
        output_bytes=model_size_bytes(result.model),
        seconds=time.perf_counter() - start,
        notes=notes,
    )


def _quantize_tflite(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    *,
    config: Any,
    data: CalibrationData | None,
    max_samples: int | None,
    verify: bool,
    **_: Any,
) -> QuantizeResult[Any]:
    """:func:`quantize` for a ``.tflite`` path (:class:`tensorslim.formats.TfliteFormat`): the ONNX configs mapped
    onto the TFLite modes."""
    from tensorslim.backends.tflite.dynamic import TfliteDynamicConfig
    from tensorslim.backends.tflite.fp16 import TfliteFloat16Config
    from tensorslim.backends.tflite.int4 import TfliteInt4Config
    from tensorslim.backends.tflite.quantize import quantize_tflite
    from tensorslim.backends.tflite.static import TfliteStaticConfig

    mode, cfg = "dynamic", config
    if config is None or isinstance(config, DynamicQuantConfig):
        c = config or DynamicQuantConfig()
        cfg = TfliteDynamicConfig(form=c.form, granularity=c.granularity, exclude=c.exclude)
    elif isinstance(config, Float16Config | TfliteFloat16Config):
        mode = "fp16"
        cfg = config if isinstance(config, TfliteFloat16Config) else TfliteFloat16Config()
    elif isinstance(config, StaticQuantConfig | TfliteStaticConfig):
        mode = "static"
        cfg = config if isinstance(config, TfliteStaticConfig) else TfliteStaticConfig()
    elif isinstance(config, TfliteInt4Config) or (isinstance(config, BlockQuantConfig) and config.bits == 4):
        mode = "int4"
        cfg = config if isinstance(config, TfliteInt4Config) else TfliteInt4Config(exclude=config.exclude)
    elif not isinstance(config, TfliteDynamicConfig):
        raise InputError(
            f"{model}: {type(config).__name__} is not available for .tflite models; use DynamicQuantConfig "
            "(form='weight_only' for float compute), Float16Config, StaticQuantConfig or BlockQuantConfig(bits=4)"
        )
    if data is not None and mode not in ("static", "int4"):
        raise InputError(
            "data is used by static and int4 quantization of .tflite models only; drop it or use StaticQuantConfig"
        )
    kwargs: dict[str, Any] = {} if max_samples is None else {"max_samples": max_samples}
    return quantize_tflite(model, output, mode=mode, config=cfg, data=data, verify=verify, **kwargs)
