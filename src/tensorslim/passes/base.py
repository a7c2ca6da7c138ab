"""Pass infrastructure: a pass is configured at construction and called on a model.

``Pass.__call__(model)`` returns a :class:`PassResult`: the (new) model, whether it changed, and one
:class:`WeightRecord` per weight the pass looked at, saying what was done or why it was skipped. A
:class:`Pipeline` runs passes (as :class:`Step` s) in order; :mod:`tensorslim.pipeline` builds each
quantization mode as one. Passes never modify their input
model; they work on a copy.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

import onnx

__all__ = ["ModelT", "Pass", "PassResult", "Pipeline", "Step", "WeightRecord", "concat_records"]

log = logging.getLogger(__name__)

#: The model type of a format: ``onnx.ModelProto`` for ONNX, the flatbuffer object (``ModelT``) for TFLite.
ModelT = TypeVar("ModelT")


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
class PassResult(Generic[ModelT]):
    """Outcome of a pass on a model of any format: the model, whether it changed, per-weight records, notes."""

    model: ModelT
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


@dataclass(frozen=True)
class Step:
    """A pass as one step of a :class:`Pipeline`, with what the pipeline takes from it.

    Attributes:
        pass_: the pass.
        counts: whether its change counts as the pipeline's (``False`` for preparation such as folding
            BatchNormalization: it never makes a pipeline "modified", and when it changes nothing its input
            is handed on as it is).
        notes: report the pass's notes.
        note: reported instead of the pass's notes when it changed the model.
    """

    pass_: Pass
    counts: bool = True
    notes: bool = True
    note: str = ""


def concat_records(runs: list[list[WeightRecord]]) -> list[WeightRecord]:
    """Every step's records, in order (the default of :class:`Pipeline`)."""
    return [r for run in runs for r in run]


class Pipeline(Pass):
    """Runs passes (or :class:`Step` s) in order, each on the previous one's output.

    The result is modified when a counting step changed the model; its records come from ``records`` (given
    the counting steps' records, one list per step; default: concatenated); its notes are every step's, in order.
    """

    def __init__(
        self,
        passes: Sequence[Pass | Step],
        *,
        name: str = "pipeline",
        records: Callable[[list[list[WeightRecord]]], list[WeightRecord]] = concat_records,
    ) -> None:
        self.steps = [p if isinstance(p, Step) else Step(p) for p in passes]
        self.name = name
        self.merge = records

    @property
    def passes(self) -> list[Pass]:
        """The passes, in order."""
        return [s.pass_ for s in self.steps]

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Run each step on the previous step's output."""
        runs: list[list[WeightRecord]] = []
        notes: list[str] = []
        modified = False
        for step in self.steps:
            log.info("running pass %s", step.pass_.name)
            result = step.pass_(model)
            if step.counts or result.modified:
                model = result.model
            if step.counts:
                modified = modified or result.modified
                runs.append(result.records)
            if step.note and result.modified:
                notes.append(step.note)
            elif step.notes and not step.note:
                notes.extend(result.notes)
        return PassResult(model, modified, self.merge(runs) if runs else [], notes)
