"""Calibration through the LiteRT interpreter: run the float model on the calibration data with every
intermediate tensor preserved and stream the range of each requested tensor into an observer.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from tensorslim.algorithms.observers import HistogramObserver, MinMaxObserver
from tensorslim.backends.tflite.io import serialize
from tensorslim.data import Dataset, batch_size_for, load_data
from tensorslim.runtime.litert import LiteRTRuntime

__all__ = ["ActivationRange", "calibrate", "load_calibration_data"]


class ActivationRange(StrEnum):
    """How an activation's range is taken from its calibration statistics."""

    MINMAX = "minmax"  # the observed min and max (the converter's choice)
    PERCENTILE = "percentile"  # the range keeping 99.99 % of the values


def load_calibration_data(model: Any, data: Any, *, max_samples: int | None) -> Dataset:
    """The calibration samples, checked against ``model``'s inputs (names as :class:`LiteRTRuntime` gives them):
    any form :func:`tensorslim.evaluate.data.load_data` reads (``.npz``, a folder of ``.npz``, feed dicts)."""
    if isinstance(data, Dataset):
        return data
    rt = LiteRTRuntime(serialize(model))
    return load_data(data, rt.inputs, max_samples=max_samples)


def calibrate(
    model: Any,
    data: Dataset,
    tensors: Sequence[int],
    *,
    method: ActivationRange | str = ActivationRange.MINMAX,
    percentile: float = 99.99,
    batch_size: int = 32,
) -> dict[int, tuple[float, float]]:
    """The range of each tensor of ``tensors`` (main subgraph indices) over ``data``.

    Tensors the interpreter never wrote (or that held no finite value) are left out of the result.
    """
    method = ActivationRange(method)
    rt = LiteRTRuntime(serialize(model), preserve_all=True, float_io=False)
    observers: dict[int, MinMaxObserver | HistogramObserver] = {
        t: HistogramObserver() if method is ActivationRange.PERCENTILE else MinMaxObserver() for t in tensors
    }
    for feeds, _ in data.batches(batch_size_for(rt.inputs, batch_size)):
        rt.run(feeds)
        for t, obs in observers.items():
            try:
                obs.update(rt.tensor(t))
            except ValueError:  # a tensor the interpreter does not expose
                continue
    out: dict[int, tuple[float, float]] = {}
    for t, obs in observers.items():
        if obs.count == 0:
            continue
        out[t] = obs.range(percentile) if isinstance(obs, HistogramObserver) else obs.range()
    return out
