"""Weight statistics that predict quantization trouble, and the settings they recommend.

For each weight: its range, spread, an outlier ratio (the share of values beyond 6 standard deviations,
and how far the largest value sits above the 99.9th percentile), the spread of per-channel ranges, and the
SQNR that int8 would give per tensor, per channel, and per channel with MSE-optimal clipping. The
recommendations follow the usual advice (look for outliers, prefer per-channel scales), stated with the
numbers that justify them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.quantize import choose_qparams, quantize_dequantize
from tensorslim.backends.onnx.weights import find_weights

__all__ = ["InspectReport", "WeightStats", "inspect_model", "recommend", "weight_stats"]

_MAX_SAMPLE = 1 << 20  # statistics of huge tensors are computed on a deterministic sample of rows


@dataclass(frozen=True)
class WeightStats:
    """Quantization-relevant statistics of one weight."""

    name: str
    op_type: str
    role: str
    shape: tuple[int, ...]
    dtype: str
    min: float
    max: float
    std: float
    outlier_ratio: float  # share of values beyond 6 std from the mean
    peak_to_p999: float  # max |w| / 99.9th percentile of |w|
    channel_range_spread: float  # max / median of per-channel max |w| (1.0 when not per-channel)
    sqnr_per_tensor_db: float
    sqnr_per_channel_db: float | None
    sqnr_per_channel_mse_db: float | None


@dataclass
class InspectReport:
    """Statistics of every weight and the recommended settings."""

    model: str
    weights: list[WeightStats] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "model": self.model,
            "weights": [asdict(w) | {"shape": list(w.shape)} for w in self.weights],
            "recommendations": list(self.recommendations),
        }


def _sample(arr: np.ndarray, axis: int | None) -> np.ndarray:
    if arr.size <= _MAX_SAMPLE:
        return arr
    a = arr if axis is None else np.moveaxis(arr, axis, -1)
    flat = a.reshape(-1, a.shape[-1])
    step = max(1, flat.shape[0] * flat.shape[1] // _MAX_SAMPLE)
    out = flat[::step]
    return out if axis is None else np.moveaxis(out, -1, 1 if out.ndim > 1 else 0)


def weight_stats(name: str, arr: np.ndarray, op: str, role: str, axis: int | None) -> WeightStats:
    a = arr.astype(np.float32)
    if axis is not None and not -arr.ndim <= axis < arr.ndim:  # a corrupt model: the op's axis is not in the weight
        axis = None
    sampled_axis = None if axis is None else (1 if arr.size > _MAX_SAMPLE else axis)
    s = _sample(a, axis)
    mean, std = float(s.mean()), float(s.std())
    absval = np.abs(s)
    p999 = float(np.quantile(absval, 0.999)) if absval.size else 0.0
    outliers = float(np.mean(np.abs(s - mean) > 6 * std)) if std > 0 else 0.0
    per_t = sqnr_db(s, quantize_dequantize(s, choose_qparams(s)))
    per_c = per_c_mse = None
    spread = 1.0
    if sampled_axis is not None and s.ndim > 1 and s.shape[sampled_axis] > 1:
        per_c = sqnr_db(s, quantize_dequantize(s, choose_qparams(s, axis=sampled_axis)))
        per_c_mse = sqnr_db(s, quantize_dequantize(s, choose_qparams(s, axis=sampled_axis, method="mse", grid=20)))
        ch = np.moveaxis(absval, sampled_axis, 0).reshape(s.shape[sampled_axis], -1).max(axis=1)
        med = float(np.median(ch))
        spread = float(ch.max() / med) if med > 0 else float("inf")
    return WeightStats(
        name=name,
        op_type=op,
        role=role,
        shape=tuple(int(d) for d in arr.shape),
        dtype=str(arr.dtype),
        min=float(a.min()),
        max=float(a.max()),
        std=std,
        outlier_ratio=outliers,
        peak_to_p999=float(absval.max() / p999) if p999 > 0 else 1.0,
        channel_range_spread=spread,
        sqnr_per_tensor_db=round(per_t, 2),
        sqnr_per_channel_db=None if per_c is None else round(per_c, 2),
        sqnr_per_channel_mse_db=None if per_c_mse is None else round(per_c_mse, 2),
    )


def inspect_model(model: onnx.ModelProto, *, name: str = "model", min_size: int = 256) -> InspectReport:
    """Statistics for every float weight with a weight role, and recommendations."""
    report = InspectReport(model=name)
    for w in find_weights(model):
        use = w.primary
        if use is None or not w.is_float or w.size < min_size or not np.all(np.isfinite(w.array)):
            continue
        report.weights.append(weight_stats(w.name, w.array, use.op_type, use.role.value, use.channel_axis))
    report.recommendations = recommend(report.weights)
    return report


def recommend(stats: list[WeightStats]) -> list[str]:
    if not stats:
        return ["no float weights with a weight role: nothing to quantize"]
    recs: list[str] = []
    per_c = [s for s in stats if s.sqnr_per_channel_db is not None]
    gains = [s.sqnr_per_channel_db - s.sqnr_per_tensor_db for s in per_c if s.sqnr_per_channel_db is not None]
    if gains and float(np.median(gains)) > 3.0:
        recs.append(
            f"use per-channel scales (--granularity per_channel): median gain {np.median(gains):.1f} dB over "
            f"per-tensor across {len(gains)} weights"
        )
    elif gains:
        recs.append(f"per-tensor scales lose little here (median per-channel gain {np.median(gains):.1f} dB)")
    mse_gain = [
        s.sqnr_per_channel_mse_db - s.sqnr_per_channel_db
        for s in per_c
        if s.sqnr_per_channel_mse_db is not None and s.sqnr_per_channel_db is not None
    ]
    if mse_gain and float(np.mean(mse_gain)) > 0.5:
        recs.append(f"MSE-optimal clipping (--range mse, the default) adds {np.mean(mse_gain):.1f} dB on average")
    outliers = sorted((s for s in stats if s.peak_to_p999 > 4.0), key=lambda s: -s.peak_to_p999)
    if outliers:
        names = ", ".join(s.name for s in outliers[:5])
        recs.append(
            f"{len(outliers)} weight(s) have outliers (max > 4x the 99.9th percentile), e.g. {names}: keep "
            "per-channel scales and MSE clipping, or exclude them (--exclude NAME_REGEX)"
        )
    best = [s.sqnr_per_channel_mse_db or s.sqnr_per_channel_db or s.sqnr_per_tensor_db for s in stats]
    weak = [s.name for s, b in zip(stats, best, strict=True) if b < 30.0]
    if weak:
        recs.append(
            f"{len(weak)} weight(s) keep < 30 dB SQNR even per channel (e.g. {', '.join(weak[:5])}): candidates "
            "for float fallback if accuracy drops"
        )
    else:
        recs.append("every weight keeps >= 30 dB SQNR in int8 with the recommended settings: int8 weights are safe")
    return recs
