"""``quantize_tflite``: one call per job for ``.tflite`` files, what ``tensorslim quantize model.tflite`` runs.

Load (never modifying the input) -> calibrate through LiteRT (static mode only) -> pass -> load the result in
LiteRT to verify it -> write atomically.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from tensorslim.api import QuantizeResult
from tensorslim.backends.tflite.calibrate import ActivationRange, calibrate, load_calibration_data
from tensorslim.backends.tflite.dynamic import TfliteDynamicConfig, TfliteDynamicPass, TflitePassResult
from tensorslim.backends.tflite.fp16 import TfliteFloat16Config, TfliteFloat16Pass, widen_float16
from tensorslim.backends.tflite.graph import Graph
from tensorslim.backends.tflite.int4 import TfliteInt4Config, TfliteInt4Pass
from tensorslim.backends.tflite.io import check_output_path, load_model, save_model, serialize
from tensorslim.backends.tflite.schema import type_name
from tensorslim.backends.tflite.static import TfliteStaticConfig, TfliteStaticPass
from tensorslim.errors import InputError, UnsupportedModelError
from tensorslim.runtime.litert import make_interpreter

__all__ = ["TfliteMode", "TfliteQuantizeResult", "quantize_tflite"]


class TfliteMode(StrEnum):
    """What ``quantize`` does to a ``.tflite`` model."""

    DYNAMIC = "dynamic"  # int8 weights, hybrid kernels
    FP16 = "fp16"  # float16 weights
    STATIC = "static"  # int8 weights and activations, calibrated
    INT4 = "int4"  # 4-bit weights (INT4 tensors)


@dataclass
class TfliteQuantizeResult(QuantizeResult[Any]):
    """What :func:`quantize_tflite` did: the format-independent report over the TFLite model, plus the mode."""

    mode: TfliteMode = TfliteMode.DYNAMIC

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: :meth:`QuantizeResult.to_dict` with ``format`` and ``mode``."""
        return {"format": "tflite", "mode": str(self.mode), **super().to_dict()}


def _calibration_tensors(model: Any) -> list[int]:
    g = Graph(model)
    out: dict[int, None] = {}
    for op in g.sg.operators:
        for t in [*op.inputs, *op.outputs]:
            t = int(t)
            if t >= 0 and not g.is_constant(t) and type_name(g.sg.tensors[t].type) == "FLOAT32":
                out[t] = None
    return list(out)


#: The config type of each mode.
MODE_CONFIGS: dict[TfliteMode, type] = {
    TfliteMode.DYNAMIC: TfliteDynamicConfig,
    TfliteMode.FP16: TfliteFloat16Config,
    TfliteMode.STATIC: TfliteStaticConfig,
    TfliteMode.INT4: TfliteInt4Config,
}


def _mode_of(mode: TfliteMode | str | None, config: Any) -> TfliteMode:
    """The mode asked for, or the one ``config``'s type names; a config of another mode is refused.

    Raises:
        InputError: an unknown mode, a config that is not a TFLite config, or one of another mode.
    """
    of_config = next((m for m, cls in MODE_CONFIGS.items() if isinstance(config, cls)), None)
    if config is not None and of_config is None:
        raise InputError(f"{type(config).__name__} is not a .tflite config; use TfliteDynamicConfig, "
                         "TfliteFloat16Config, TfliteStaticConfig or TfliteInt4Config")  # fmt: skip
    if mode is None:
        return of_config or TfliteMode.DYNAMIC
    try:
        m = TfliteMode(mode)
    except ValueError:
        raise InputError(f"--mode: {mode!r} is not available for .tflite; use {', '.join(TfliteMode)}") from None
    if of_config is not None and of_config is not m:
        raise InputError(f"mode {m.value!r} takes a {MODE_CONFIGS[m].__name__}, not a {type(config).__name__}; "
                         f"drop mode= (the config's type is its mode) or pass mode={of_config.value!r}")  # fmt: skip
    return m


def quantize_tflite(
    model: str | os.PathLike[str] | Any,
    output: str | os.PathLike[str] | None = None,
    *,
    mode: TfliteMode | str | None = None,
    config: TfliteDynamicConfig | TfliteFloat16Config | TfliteStaticConfig | TfliteInt4Config | None = None,
    data: Any = None,
    activation_range: ActivationRange | str = ActivationRange.MINMAX,
    max_samples: int | None = 1000,
    verify: bool = True,
) -> TfliteQuantizeResult:
    """Quantize a ``.tflite`` model.

    Args:
        model: a path or a ``ModelT`` (never modified).
        output: where to write the result (atomically); ``None`` keeps it in memory only.
        mode: ``dynamic``, ``fp16``, ``static`` or ``int4``; ``None``: the mode of ``config`` (dynamic without one).
        config: the mode's options (defaults: the converter's choices); its type is the mode.
        data: calibration data (static mode; int4 mode: optional, holds the weights whose 4 bits cost the output
            most at int8): ``.npz``, a folder of ``.npz``, a :class:`Dataset` or feed dicts.
        activation_range: ``minmax`` or ``percentile`` activation ranges (static mode).
        max_samples: calibrate on at most this many samples.
        verify: load the result in LiteRT before writing it.

    Raises:
        InputError: unreadable model or data, bad output path, missing data for static mode, a config that is
            not the mode's, or nothing to quantize.
    """
    start = time.perf_counter()
    mode = _mode_of(mode, config)
    if output is not None:
        check_output_path(output, *([model] if isinstance(model, str | os.PathLike) else []))
    src = Path(model) if isinstance(model, str | os.PathLike) else None
    m = load_model(model) if src is not None else model
    input_bytes = len(serialize(m))
    result: TflitePassResult
    if mode is TfliteMode.DYNAMIC:
        cfg: Any = config or TfliteDynamicConfig()
        result = TfliteDynamicPass(cfg)(m)
    elif mode is TfliteMode.FP16:
        cfg = config or TfliteFloat16Config()
        result = TfliteFloat16Pass(cfg)(m)
    elif mode is TfliteMode.INT4:
        cfg = config or TfliteInt4Config()
        int8: dict[int, frozenset[str]] = {}
        notes: list[str] = []
        if data is not None:
            from tensorslim.backends.tflite.int4_data import MAX_SAMPLES, choose_int8

            ds = load_calibration_data(m, data, max_samples=max_samples)

            def build(held: dict[int, frozenset[str]]) -> bytes:
                return serialize(TfliteInt4Pass(cfg, int8=held)(m).model)

            choice = choose_int8(m, cfg, ds, target_cosine=cfg.target_cosine, build=build)
            int8 = choice.int8
            if choice.candidates:
                notes.append(
                    f"checked on {min(ds.num_samples, MAX_SAMPLES)} samples from {ds.source}: output cosine "
                    f"{choice.cosine_int4:.5f} with every weight at 4 bits"
                    + (f"; {choice.promoted} of {choice.candidates} weights held at int8 (the largest loss per "
                       f"byte) -> {choice.cosine:.5f} (target {cfg.target_cosine}, worst sample)"
                       if choice.promoted else "")
                )  # fmt: skip
        else:
            notes.append("no --data: every planned weight is 4-bit; with calibration data the weights whose 4 bits "
                         f"cost the output most stay int8 (target output cosine {cfg.target_cosine})")  # fmt: skip
        result = TfliteInt4Pass(cfg, int8=int8)(m)
        result.notes[:0] = notes
    else:
        cfg = config or TfliteStaticConfig()
        if data is None:
            raise InputError(
                "--mode static needs calibration data: pass --data CALIB.npz (arrays named after the inputs)"
            )
        float_model = widen_float16(m)
        ds = load_calibration_data(float_model, data, max_samples=max_samples)
        ranges = calibrate(float_model, ds, _calibration_tensors(float_model), method=activation_range)
        result = TfliteStaticPass(cfg, ranges)(float_model)
        result.notes.insert(0, f"calibrated on {ds.num_samples} samples from {ds.source} ({activation_range} ranges)")
    if not result.modified:
        reasons = sorted({r.reason for r in result.records if r.skipped})
        detail = f" ({'; '.join(reasons[:3])})" if reasons else " (the model has no constant float weights)"
        raise UnsupportedModelError(
            f"{src or 'model'}: nothing could be quantized{detail}; check --min-size and --exclude"
        )
    payload = serialize(result.model)
    if verify:
        try:
            make_interpreter(payload)
        except InputError as e:
            try:
                make_interpreter(serialize(m))
            except InputError as inp:  # the input itself does not load: say so, not "a bug"
                raise InputError(f"{src or 'model'}: the input does not load in LiteRT either: {inp}") from e
            raise InputError(f"the quantized model does not load in LiteRT: {e}; please report this") from e
    out_path = save_model(result.model, output) if output is not None else None
    return TfliteQuantizeResult(
        model=result.model,
        output_path=out_path,
        records=result.records,
        mode=mode,
        config=cfg,
        input_bytes=input_bytes,
        output_bytes=len(payload),
        seconds=time.perf_counter() - start,
        notes=result.notes,
    )
