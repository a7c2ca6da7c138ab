"""Is the candidate slower than the reference? One verdict for every speed check (ONNX and LiteRT ``quantize``).

A check that only warns when the two 95 % intervals are apart stays silent on a busy machine, where the intervals
are wide: a model measured 1.45x slower passes unremarked. The verdict is therefore:

* ``slower``: the intervals are apart, or the paired interval of the ratio lies above 1;
* ``slower-busy``: the median is more than ``margin`` slower but the intervals overlap, and other processes
  competed for the CPU while timing (``busy machine, re-run``);
* ``maybe-slower``: the same on a quiet machine (the run's own noise: re-run to confirm);
* ``ok``: otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SpeedVerdict", "speed_verdict"]


@dataclass(frozen=True)
class SpeedVerdict:
    """What a two-model speed check found (``report.models[1]`` against ``report.models[0]``)."""

    kind: str  # slower, slower-busy, maybe-slower or ok
    ratio: float
    ratio_ci: tuple[float, float] | None
    busy: str  # the busy-machine note, "" when quiet

    @property
    def warn(self) -> bool:
        """Whether the check should print a warning."""
        return self.kind != "ok"

    def message(self, what: str, ref_ms: float, cand_ms: float, rerun: str) -> str:
        """The warning line: ``what`` names the runtime, ``rerun`` the command to measure again."""
        ci = f" (95% CI {self.ratio_ci[0]:.2f}-{self.ratio_ci[1]:.2f})" if self.ratio_ci else ""
        head = f"{what} the quantized model "
        nums = f"p50 {cand_ms:.3f} ms vs {ref_ms:.3f} ms, {self.ratio:.2f}x{ci}, batch 1"
        if self.kind == "slower":
            return head + f"is slower than the input ({nums})."
        if self.kind == "slower-busy":
            return head + f"measured {self.ratio:.2f}x slower ({nums}) on a busy machine: busy machine, re-run: {rerun}"
        return head + f"measured {self.ratio:.2f}x slower ({nums}), within this run's noise; re-run to confirm: {rerun}"


def speed_verdict(report: Any, *, margin: float = 0.05) -> SpeedVerdict:
    """The verdict for a :class:`~tensorslim.benchmark.BenchReport` of two models (reference first)."""
    from .table import busy_note

    ref, cand = report.models[0], report.models[1]
    ratio = cand.p50_ms / ref.p50_ms if ref.p50_ms else 1.0
    ci = cand.p50_ratio_ci
    busy = busy_note(report)
    apart = cand.p50_ci_low_ms > ref.p50_ci_high_ms or (ci is not None and ci[0] > 1.0)
    if apart:
        kind = "slower"
    elif ratio > 1.0 + margin:
        kind = "slower-busy" if busy else "maybe-slower"
    else:
        kind = "ok"
    return SpeedVerdict(kind, ratio, None if ci is None else (float(ci[0]), float(ci[1])), busy)
