"""Weight statistics of a TFLite model: the statistics and recommendations of
:mod:`tensorslim.diagnostics.inspect`, over the weights :func:`~tensorslim.backends.tflite.weights.find_weights`
enumerates (float32 weights, and float16 weights behind ``DEQUANTIZE``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tensorslim.backends.tflite.weights import find_weights
from tensorslim.diagnostics.inspect import InspectReport, recommend, weight_stats

__all__ = ["inspect_tflite"]


def inspect_tflite(model: Any, *, name: str = "model", min_size: int = 256) -> InspectReport:
    """Statistics for every float weight with a weight role, and recommendations."""
    report = InspectReport(model=name)
    for w in find_weights(model):
        uses = w.weight_uses
        if not uses or w.size < min_size or not np.all(np.isfinite(w.array)):
            continue
        use = uses[0]
        report.weights.append(weight_stats(w.name, w.array, use.op_type, "weight", use.channel_axis))
    report.recommendations = recommend(report.weights)
    return report
