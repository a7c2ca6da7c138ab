"""Cross-layer equalization pass (data-free): balance the channel ranges of consecutive Conv layers.

Finds ``Conv -> (Relu | nothing) -> Conv`` pairs where each intermediate tensor has a single reader, the
weights are constant and private to their Conv, the first Conv is not grouped (or is depthwise) and the
second is ``group`` 1 or depthwise; then applies
:func:`~tensorslim.algorithms.equalization.equalize_pair` to every pair in turn, sweeping until the scales
converge. The float function is unchanged (ReLU is positively homogeneous). Useful before per-tensor
quantization (static or dynamic) of CNNs whose channels have very different ranges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from tensorslim.algorithms.equalization import equalize_pair
from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.errors import ConfigError
from tensorslim.passes._consts import Constants
from tensorslim.passes.base import Pass, PassResult

__all__ = ["EqualizeConfig", "EqualizePass", "find_pairs", "run"]


@dataclass(frozen=True)
class EqualizeConfig:
    """Configuration of cross-layer equalization.

    Attributes:
        max_iterations: sweeps over all pairs at most.
        tolerance: stop when every scale of a sweep is within this relative distance of 1.
    """

    max_iterations: int = 20
    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise ConfigError(f"max_iterations: must be >= 1, got {self.max_iterations}")
        if not self.tolerance > 0:
            raise ConfigError(f"tolerance: must be > 0, got {self.tolerance}")


def _group(node: onnx.NodeProto) -> int:
    for a in node.attribute:
        if a.name == "group":
            return int(a.i)
    return 1


def find_pairs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto, bool]]:
    """``(first Conv, second Conv, second is depthwise)`` pairs that can be equalized."""
    g = model.graph
    consts = Constants(g)
    index = GraphIndex(g)

    def single_reader(t: str) -> onnx.NodeProto | None:
        r = index.readers(t)
        return r[0] if len(r) == 1 and t not in index.outputs else None

    pairs = []
    for c1 in g.node:
        if c1.op_type != "Conv" or not consts.private(c1.input[1]):
            continue
        w1 = consts.get(c1.input[1])
        if w1 is None or w1.dtype != np.float32 or (_group(c1) != 1 and w1.shape[1] != 1):
            continue
        if len(c1.input) > 2 and c1.input[2] and not consts.private(c1.input[2]):
            continue
        nxt = single_reader(c1.output[0])
        if nxt is not None and nxt.op_type == "Relu":
            nxt = single_reader(nxt.output[0])
        if nxt is None or nxt.op_type != "Conv" or nxt.input[0] == c1.input[0] or not consts.private(nxt.input[1]):
            continue
        w2 = consts.get(nxt.input[1])
        if w2 is None or w2.dtype != np.float32:
            continue
        grp = _group(nxt)
        depthwise = grp > 1 and w2.shape[1] == 1 and grp == w2.shape[0] == w1.shape[0]
        if (grp == 1 and w2.shape[1] == w1.shape[0]) or depthwise:
            pairs.append((c1, nxt, depthwise))
    return pairs


class EqualizePass(Pass):
    """Cross-layer equalization of Conv pairs (no data needed)."""

    name = "equalize"

    def __init__(self, config: EqualizeConfig | None = None) -> None:
        self.config = config or EqualizeConfig()

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        """Equalize every pair of ``model`` (this copy) until the scales converge."""
        pairs = find_pairs(model)
        if not pairs:
            return PassResult(model, False, [], [])
        consts = Constants(model.graph)
        sweeps = 0
        for sweeps in range(1, self.config.max_iterations + 1):  # noqa: B007 - reported below
            worst = 0.0
            for c1, c2, depthwise in pairs:
                bname = c1.input[2] if len(c1.input) > 2 and c1.input[2] else ""
                w1, w2 = consts.get(c1.input[1]), consts.get(c2.input[1])
                b1 = consts.get(bname) if bname else None
                n1, nb, n2, s = equalize_pair(w1, b1, w2, depthwise=depthwise)  # type: ignore[arg-type]
                consts.set(c1.input[1], n1)
                consts.set(c2.input[1], n2)
                if bname and nb is not None:
                    consts.set(bname, nb)
                worst = max(worst, float(np.max(np.abs(np.log(s)))))
            if worst < self.config.tolerance:
                break
        note = f"cross-layer equalization: {len(pairs)} Conv pair(s) equalized in {sweeps} sweep(s)"
        return PassResult(model, True, [], [note])


def run(
    model: onnx.ModelProto, config: EqualizeConfig, data: Any = None, target: Any = None
) -> PassResult[onnx.ModelProto]:
    """The registry's runner of ``equalize`` (no calibration data)."""
    return EqualizePass(config)(model)
