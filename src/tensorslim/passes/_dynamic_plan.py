"""The plan data of dynamic-range quantization: what is decided for each weight (see
:mod:`tensorslim.passes.dynamic_quant`), shared by the planning, storage and rotation modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from tensorslim.algorithms.quantize import QuantParams
from tensorslim.backends.onnx.weights import WeightInfo, WeightUse

__all__ = ["UseForm", "WeightPlan"]


class UseForm(StrEnum):
    """The rewrite chosen for one consuming node."""

    INTEGER_MATMUL = "integer_matmul"
    INTEGER_CONV = "integer_conv"
    GATHER = "gather_dequantize"
    DEQUANTIZE_LINEAR = "dequantize_linear"
    CAST = "load_time_cast"


@dataclass
class WeightPlan:
    """The decision for one weight: parameters, codes and the form of each use, or why it is skipped.

    ``float16`` marks a tensor that is not quantized (``skipped``) but stored as float16 behind a load-time
    ``Cast`` (``compact`` configs): a weight below ``min_size``, or the bias of a layer whose weight is
    dequantized at load. ``scale_float16``: the scales are float16 values, stored as float16.
    """

    weight: WeightInfo
    params: QuantParams | None = None
    codes: np.ndarray | None = None
    forms: list[tuple[WeightUse, UseForm]] = field(default_factory=list)
    skip_reason: str = ""
    notes: list[str] = field(default_factory=list)
    rotation_block: int = 0  # > 0: the weight was rotated along its input channels (Hadamard blocks)
    target: np.ndarray | None = None  # the values the codes represent (the rotated weight when rotated)
    float16: bool = False
    scale_float16: bool = False
    # 4-bit ladder blocks (``weight_bits=4``): packed codes [C, K/2], block multipliers [C, K/block] (rows being
    # output channels) and whether the weight is the rows transposed (MatMul [K, C]) rather than reshaped (Conv),
    # or ``"gates"``: a recurrent W/R ``[dirs, C, K]`` whose rows ``[C, dirs*K]`` are reshaped to ``[C, dirs, K]``
    # and transposed; ``codes`` then holds the int8 values they expand to
    int4: tuple[np.ndarray, np.ndarray, bool | str] | None = None

    @property
    def skipped(self) -> bool:
        """Whether the weight stays as it is."""
        return self.params is None
