"""Weight-only int8 embeddings: each ``Gather`` table stored as int8 rows with one float scale per row.

For every ``Gather`` of the main graph that looks rows up (``axis=0``) in a float32 2-D initializer used by
nothing else, the table ``W[rows, dim]`` becomes::

    q[r, :] = round(W[r, :] / s[r]) in [-127, 127],   s[r] = max|W[r, :]| / 127   (1 for an all-zero row)
    DequantizeLinear(q, s, axis=0) -> Gather(., ids)

so the file holds a quarter of the table's bytes and the model computes in float as before (the error of a
looked-up value is at most half a step of its row, ``s[r] / 2``). Needs opset 13 (per-axis DequantizeLinear).
The recipe pass is ``gather_int8``; rules may set its options per node (its output tables are int8, so a
second run never touches them again).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorslim.passes.base import Pass, PassResult, WeightRecord

__all__ = ["GatherInt8Config", "GatherInt8Pass", "run"]


@dataclass(frozen=True)
class GatherInt8Config:
    """Options of :class:`GatherInt8Pass`.

    Attributes:
        exclude: regexes (``re.search``) on Gather node names to leave float.
        min_size: tables with fewer elements stay float.
    """

    exclude: tuple[str, ...] = ()
    min_size: int = 1024

    def __post_init__(self) -> None:
        from tensorslim._regex import compile_user_regex

        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 0:
            raise ValueError(f"min_size: {self.min_size!r} is not a non-negative integer")
        for rx in self.exclude:
            compile_user_regex(rx, "exclude")


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)``: int8 rows and one float32 scale per row of a 2-D float table (symmetric, max-abs)."""
    amax = np.abs(table).max(axis=1).astype(np.float32)
    scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


@dataclass(frozen=True)
class GatherInt8Pass(Pass):
    """Per-row int8 ``Gather`` tables behind ``DequantizeLinear`` (see the module docstring)."""

    config: GatherInt8Config = GatherInt8Config()
    name = "gather_int8"

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        """Quantize every eligible table of ``model`` (a copy)."""
        import re

        from tensorslim.algorithms.fidelity import sqnr_db
        from tensorslim.backends.onnx.editor import NameGenerator

        g = model.graph
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        inits = {t.name: t for t in g.initializer}
        uses = Counter(name for n in g.node for name in n.input)
        outputs = {o.name for o in g.output} | {i.name for i in g.input}
        excluded = [re.compile(rx) for rx in self.config.exclude]
        names = NameGenerator(model)
        records: list[WeightRecord] = []
        new_nodes: list[tuple[int, onnx.NodeProto]] = []
        for pos, node in enumerate(g.node):
            if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or node.input[0] not in inits:
                continue
            table = inits[node.input[0]]
            arr = numpy_helper.to_array(table)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            why = ""
            if opset < 13:
                why = f"opset {opset} < 13 (per-row DequantizeLinear)"
            elif arr.dtype != np.float32 or arr.ndim != 2 or axis != 0:
                why = "not a float32 2-D table looked up by rows"
            elif uses.get(table.name, 0) != 1 or table.name in outputs:
                why = "the table has other uses"
            elif any(rx.search(node.name) for rx in excluded):
                why = "excluded"
            elif arr.size < self.config.min_size:
                why = f"{arr.size} elements < min size"
            rec = {"name": table.name, "ops": "Gather", "nodes": node.name, "shape": tuple(arr.shape),
                   "bytes_before": arr.nbytes}  # fmt: skip
            if why:
                records.append(WeightRecord(**rec, action="skipped", reason=why, bytes_after=arr.nbytes))
                continue
            q, scale = quantize_rows(arr)
            q_name, s_name, out = names(f"{table.name}_int8"), names(f"{table.name}_scale"), names(table.name)
            g.initializer.remove(table)
            g.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)])
            dq = helper.make_node("DequantizeLinear", [q_name, s_name], [out], name=names(f"{node.name}_dq"), axis=0)
            new_nodes.append((pos, dq))
            node.input[0] = out
            back = q.astype(np.float32) * scale[:, None]
            records.append(WeightRecord(**rec, action="int8_weight_only", reason="int8 rows, one scale per row",
                                        bytes_after=q.nbytes + scale.nbytes, granularity="per_channel(axis=0)",
                                        sqnr_db=sqnr_db(arr, back)))  # fmt: skip
        for offset, (pos, dq) in enumerate(new_nodes):  # each DequantizeLinear just before its Gather
            g.node.insert(pos + offset, dq)
        return PassResult(model, bool(new_nodes), records)


def run(
    model: onnx.ModelProto, config: GatherInt8Config, data: Any = None, target: Any = None
) -> PassResult[onnx.ModelProto]:
    """The registry's runner of ``gather_int8`` (no calibration data, no runtime constraint)."""
    return GatherInt8Pass(config)(model)
