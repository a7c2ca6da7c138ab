"""Pass infrastructure: a pass is configured at construction and called on a model.

``Pass.__call__(model)`` returns a :class:`PassResult`: the (new) model, whether it changed, and one
:class:`WeightRecord` per weight the pass looked at, saying what was done or why it was skipped. A
:class:`Pipeline` runs passes in order and concatenates their records. Passes never modify their input
model; they work on a copy.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

__all__ = ["Pass", "PassResult", "Pipeline", "WeightRecord"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightRecord:
    """What a pass did with one weight.

    Attributes:
        name: the weight's tensor name.
        ops: the op types that consume it, comma-separated.
        nodes: the consuming node names, comma-separated.
        shape: the tensor's shape.
        action: what was done (``"skipped"`` when nothing was).
        reason: why it was skipped, or details of what was done.
        bytes_before: stored bytes before the pass.
        bytes_after: stored bytes after the pass (codes, scales and zero points).
        granularity: ``per_channel(axis=N)``, ``per_tensor`` or empty.
        sqnr_db: weight reconstruction SQNR in dB, where the pass computes it.
    """

    name: str
    ops: str
    nodes: str
    shape: tuple[int, ...]
    action: str
    reason: str = ""
    bytes_before: int = 0
    bytes_after: int = 0
    granularity: str = ""
    sqnr_db: float | None = None

    @property
    def skipped(self) -> bool:
        """Whether the pass left the weight as it was."""
        return self.action == "skipped"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class PassResult:
    """Outcome of a pass: the model, whether it changed, and per-weight records."""

    model: onnx.ModelProto
    modified: bool
    records: list[WeightRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Pass(ABC):
    """A model transformation configured at construction."""

    name: str = "pass"

    @abstractmethod
    def call(self, model: onnx.ModelProto) -> PassResult:
        """Transform a copy of ``model``."""

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        """Run the pass on a copy of ``model``; the input is never modified."""
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return self.call(copy)


class Pipeline(Pass):
    """Runs passes in order."""

    name = "pipeline"

    def __init__(self, passes: Sequence[Pass]) -> None:
        self.passes = list(passes)

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Run each pass on the previous pass's output."""
        records: list[WeightRecord] = []
        notes: list[str] = []
        modified = False
        for p in self.passes:
            log.info("running pass %s", p.name)
            result = p.call(model)
            model = result.model
            modified = modified or result.modified
            records.extend(result.records)
            notes.extend(result.notes)
        return PassResult(model, modified, records, notes)
