"""Per-op attribution from ONNX Runtime's profiler: per node, per op type, and the difference of two models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models import matmul_model, mlp_model
from tensorslim.api import quantize
from tensorslim.backends.onnx import save_model
from tensorslim.benchmark.profile import diff_profiles, parse_profile, profile_model
from tensorslim.passes.dynamic_quant import DynamicQuantConfig


def test_profile_one_model(tmp_path: Path) -> None:
    model, _ = mlp_model()
    path = save_model(model, tmp_path / "mlp.onnx")
    prof = profile_model(path, runs=12, warmup=3)
    assert prof.runs == 12
    assert all(n.calls == 12 for n in prof.nodes)
    ops = prof.by_op_type()
    assert sum(prof.count_by_op_type().values()) == len(prof.nodes) >= 2
    assert abs(sum(ops.values()) - prof.kernel_us) < 1e-6
    assert prof.run_median_us >= max(n.median_us for n in prof.nodes)
    d = prof.to_dict()
    assert set(d["by_op_type"]) == set(ops) and abs(sum(v["share"] for v in d["by_op_type"].values()) - 1) < 1e-6


def test_diff_shows_where_the_time_moved_after_quantization(tmp_path: Path) -> None:
    model, _ = matmul_model(k=256, n=256)
    src = save_model(model, tmp_path / "f.onnx")
    quantize(src, tmp_path / "q.onnx", config=DynamicQuantConfig(form="integer"))
    a, b = profile_model(src, runs=10), profile_model(tmp_path / "q.onnx", runs=10)
    diff = diff_profiles(a, b)
    rows = {r.op_type: r for r in diff.rows}
    assert rows["MatMul"].a_nodes == 1  # the float kernel ...
    dq = rows["DynamicQuantizeMatMul"]  # ... became the fused integer kernel
    assert dq.a_nodes == 0 and dq.b_nodes >= 1 and dq.b_us > 0 and dq.delta_us == dq.b_us
    assert [abs(r.delta_us) for r in diff.rows] == sorted((abs(r.delta_us) for r in diff.rows), reverse=True)


def test_parse_drops_the_warmup_runs() -> None:
    ev = []
    for run, ts in enumerate((0, 100, 200)):
        ev.append({"cat": "Session", "name": "model_run", "ts": ts, "dur": 50 + run})
        ev.append(
            {
                "cat": "Node",
                "name": "mm_kernel_time",
                "ts": ts + 1,
                "dur": 40 if run == 0 else 10,
                "args": {"op_name": "MatMul", "provider": "CPUExecutionProvider"},
            }
        )
    nodes, runs, kept = parse_profile(ev, skip_runs=1)
    assert kept == 2 and runs == [51.0, 52.0]
    assert nodes[0].median_us == 10.0 and nodes[0].calls == 2 and nodes[0].op_type == "MatMul"


def test_cli_profile_two_models_json_and_errors(tmp_path: Path) -> None:
    model, _ = mlp_model()
    a = save_model(model, tmp_path / "a.onnx")
    quantize(a, tmp_path / "b.onnx")
    run = [sys.executable, "-m", "tensorslim.cli", "profile"]
    r = subprocess.run(
        [*run, str(a), str(tmp_path / "b.onnx"), "--runs", "5", "--json", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["rows"] and {"a", "b", "kernel_us"} <= set(d)
    r = subprocess.run([*run, str(tmp_path / "nope.onnx")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such file" in r.stderr


def test_bad_arguments(tmp_path: Path) -> None:
    model, _ = mlp_model()
    path = save_model(model, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="runs must be >= 1"):
        profile_model(path, runs=0)
