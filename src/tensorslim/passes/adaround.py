"""Learned rounding of static int8 weights on calibration data: the step between choosing scales and storing codes.

The static pass picks each weight's per-channel symmetric scales, then asks for codes::

    codes = quantize(w, qp)                                         # round to nearest
    codes = adaround_codes(model, data, layers, scales)[name].codes  # each weight floor or ceil, chosen
                                                                    # to minimise the layer's output error

:func:`adaround_codes` streams the calibration data once (per memory-budget group of layers,
:func:`~tensorslim.passes.adaround_stats.input_grams`) for each layer's ``X^T X``, then runs
:func:`~tensorslim.algorithms.adaround.learned_rounding` layer by layer. Decide, then apply: it returns plain
data (codes in the weight's own shape, and what changed); the caller writes them into the graph.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import onnx

from tensorslim.algorithms.adaround import METHODS, from_rows, learned_rounding, to_rows
from tensorslim.errors import ConfigError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes._config import coerce_enums
from tensorslim.passes.adaround_stats import input_grams, layer_input_spec

__all__ = ["AdaRoundConfig", "LayerRounding", "RoundingMethod", "adaround_codes", "unsupported_reason"]


class RoundingMethod(StrEnum):
    """How each weight is rounded up or down (the methods of :mod:`tensorslim.algorithms.adaround`)."""

    SEQUENTIAL = "sequential"
    ADAROUND = "adaround"


assert tuple(RoundingMethod) == METHODS, "RoundingMethod and algorithms.adaround.METHODS list the same methods"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaRoundConfig:
    """Configuration of learned weight rounding.

    Attributes:
        enabled: choose the rounding on the data; ``False``: the caller keeps round-to-nearest.
        method: ``sequential`` (GPTQ-style rounding restricted to floor/ceil, three column orders; the
            default: as good as AdaRound on conv nets for a fraction of the time) or ``adaround`` (AdaRound's
            relaxation, Adam in NumPy); both end with exact coordinate descent (see
            :mod:`~tensorslim.algorithms.adaround`).
        iterations: Adam steps of ``adaround`` per layer (each costs ``Cout * K^2`` multiply-adds).
        reg_weight: ``adaround``'s rounding regulariser weight, relative to the error in code units.
        max_sweeps: coordinate-descent sweeps per layer at most (0: none).
        orders: column orders ``sequential`` tries per layer (3: the weight's own, act-order, reversed; more add
            seeded random permutations), each one more ``Cout * K^2`` pass.
        seed: seed of those extra orders (the Conv positions sampled for ``X^T X`` use a fixed seed).
        max_positions: Conv output positions sampled per calibration batch for ``X^T X``.
        batch_size: calibration samples per ONNX Runtime run.
    """

    enabled: bool = True
    method: RoundingMethod | str = RoundingMethod.SEQUENTIAL
    iterations: int = 1000
    reg_weight: float = 1.0
    max_sweeps: int = 8
    orders: int = 3
    seed: int = 0
    max_positions: int = 4096
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"enabled: expected true or false, got {self.enabled!r}")
        coerce_enums(self, (("method", RoundingMethod),))
        for fname, lo in (("iterations", 1), ("max_sweeps", 0), ("orders", 1), ("seed", 0), ("max_positions", 1),
                          ("batch_size", 1)):  # fmt: skip
            value = getattr(self, fname)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ConfigError(f"{fname}: expected an integer >= {lo}, got {value!r}")
        if not (isinstance(self.reg_weight, int | float) and np.isfinite(self.reg_weight) and self.reg_weight >= 0):
            raise ConfigError(f"reg_weight: expected a finite number >= 0, got {self.reg_weight!r}")


@dataclass(frozen=True)
class LayerRounding:
    """The chosen codes of one weight and what they change.

    Attributes:
        weight: the weight's tensor name.
        codes: int8 codes in the weight's own shape (zero point 0, the scales the caller gave).
        flipped: codes that differ from round-to-nearest.
        mse_rtn: mean squared error of the layer's output (per output value, on the calibration rows) with
            round-to-nearest codes and float inputs.
        mse: the same with :attr:`codes`; never above :attr:`mse_rtn`.
    """

    weight: str
    codes: np.ndarray
    flipped: int
    mse_rtn: float
    mse: float


def unsupported_reason(node: onnx.NodeProto, weight: np.ndarray) -> str | None:
    """Why learned rounding does not handle ``node`` (its ``input[1]`` being ``weight``), or ``None``."""
    try:
        layer_input_spec(node, np.asarray(weight))
    except ValueError as e:
        return str(e)
    return None


def adaround_codes(
    model: onnx.ModelProto,
    data: Dataset,
    layers: Sequence[tuple[onnx.NodeProto, np.ndarray]],
    scales: Mapping[str, np.ndarray],
    config: AdaRoundConfig | None = None,
) -> dict[str, LayerRounding]:
    """Int8 codes for each layer's weight, rounded to minimise the layer's output error on ``data``.

    Args:
        model: the model whose activations feed the layers (main-graph nodes; its float model, or a model
            where the layers' inputs are already quantized, to round for the inputs they will see).
        data: calibration data.
        layers: ``(node, weight)`` pairs: Conv (2-D, any group), Gemm (``alpha = 1``) or MatMul nodes whose
            ``input[1]`` is the float ``weight`` (see :func:`unsupported_reason`).
        scales: per weight name (``node.input[1]``), its positive symmetric scales: one per output channel
            (Conv axis 0, Gemm ``transB=1`` axis 0, ``transB=0`` and MatMul axis 1) or one for the tensor,
            as :func:`~tensorslim.algorithms.quantize.choose_qparams` gives them; codes are in ``[-127, 127]``.
        config: the method and its limits.

    Returns:
        Per weight name, its :class:`LayerRounding`; empty when ``config.enabled`` is false.

    Raises:
        ValueError: an unsupported layer, a weight without scales, or scales that do not fit the weight.
    """
    cfg = config or AdaRoundConfig()
    if not cfg.enabled or not layers:
        return {}
    weights: dict[str, np.ndarray] = {}
    for node, w in layers:
        name = node.input[1] if len(node.input) > 1 else ""
        if name not in scales:
            raise ValueError(f"{node.name or node.op_type}: no scales given for its weight {name!r}")
        weights.setdefault(name, np.asarray(w, np.float32))
    grams = input_grams(model, data, layers, batch_size=cfg.batch_size, max_positions=cfg.max_positions)
    out: dict[str, LayerRounding] = {}
    for node, _ in layers:
        name = node.input[1]
        if name in out:
            continue
        w = weights[name]
        spec = layer_input_spec(node, w)
        stats = grams[name]
        rows = to_rows(w, spec.layout)
        result = learned_rounding(
            rows, np.asarray(scales[name]), stats.gram, groups=spec.groups, method=cfg.method,
            iterations=cfg.iterations, reg_weight=cfg.reg_weight, max_sweeps=cfg.max_sweeps, orders=cfg.orders,
            seed=cfg.seed,
        )  # fmt: skip
        per_value = max(1, stats.rows) * rows.shape[0]  # output values: rows x output channels
        out[name] = LayerRounding(
            name, from_rows(result.codes, spec.layout, w.shape), result.flipped,
            result.error_rtn / per_value, result.error / per_value,
        )  # fmt: skip
        log.info("%s: %d codes flipped, output MSE %.3g -> %.3g", name, result.flipped, out[name].mse_rtn,
                 out[name].mse)  # fmt: skip
    return out
