"""The speed checks' verdict: a model measured slower is reported even when a busy machine widens the intervals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest

from models import matmul_model
from tensorslim.benchmark import benchmark_models
from tensorslim.benchmark.verdict import speed_verdict


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("verdict")
    onnx.save(matmul_model()[0], d / "m.onnx")
    return benchmark_models([d / "m.onnx", d / "m.onnx"], max_time_s=0.05, min_runs=5, measure_memory=False)


def _with(rep, ref: tuple[float, float, float], cand: tuple[float, float, float], ratio_ci, busy: bool):  # type: ignore[no-untyped-def]
    a, b = rep.models
    a = dataclasses.replace(a, p50_ms=ref[0], p50_ci_low_ms=ref[1], p50_ci_high_ms=ref[2])
    b = dataclasses.replace(b, p50_ms=cand[0], p50_ci_low_ms=cand[1], p50_ci_high_ms=cand[2], p50_ratio_ci=ratio_ci)
    c = {"load_avg_1m": 9.0, "cpus": 2, "preemptions_per_run": 0.5, "busy": busy}
    return dataclasses.replace(rep, models=(a, b), settings={**rep.settings, "contention": c})


def test_overlapping_ranges_on_a_busy_machine_still_warn(report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # palm_detection_full as the issue measured it: 1.45x slower, intervals overlapping on a busy machine
    v = speed_verdict(_with(report, (1.0, 0.6, 1.6), (1.45, 0.9, 2.2), (0.9, 2.0), busy=True))
    assert v.kind == "slower-busy" and v.warn
    msg = v.message("in LiteRT", 1.0, 1.45, "tensorslim bench a.tflite b.tflite")
    assert "1.45x slower" in msg and "busy machine, re-run" in msg and "tensorslim bench a.tflite b.tflite" in msg
    quiet = speed_verdict(_with(report, (1.0, 0.6, 1.6), (1.45, 0.9, 2.2), (0.9, 2.0), busy=False))
    assert quiet.kind == "maybe-slower" and quiet.warn and "re-run to confirm" in quiet.message("x", 1, 1.45, "cmd")


def test_clear_slowdowns_and_equal_speeds(report) -> None:  # type: ignore[no-untyped-def]
    assert speed_verdict(_with(report, (1.0, 0.95, 1.05), (1.5, 1.4, 1.6), (1.4, 1.6), busy=True)).kind == "slower"
    # the paired ratio interval above 1 is enough, even when the marginal intervals touch
    assert speed_verdict(_with(report, (1.0, 0.9, 1.2), (1.1, 1.0, 1.3), (1.05, 1.15), busy=False)).kind == "slower"
    same = speed_verdict(_with(report, (1.0, 0.9, 1.1), (1.01, 0.9, 1.1), (0.95, 1.07), busy=True))
    assert same.kind == "ok" and not same.warn
