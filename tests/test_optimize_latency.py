"""`tensorslim optimize`'s latency and comparison table: timed in the parent with bench's harness, intervals on
every latency, only columns with values, no-op techniques marked, one plain line per step when piped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import cli, mlp_model, run
from tensorslim.search import SearchConfig
from tensorslim.search.cache import ResultCache
from tensorslim.search.optimize import optimize_search, optimize_table_cells
from tensorslim.search.timing import Timing, TimingSettings, conditions_match

RATIO = re.compile(r"^\d+\.\d\dx \(\d+\.\d\d-\d+\.\d\d\)$")
P50 = re.compile(r"^[\d.]+ \([\d.]+-[\d.]+\)$")


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("opt")
    model, _ = mlp_model(hidden=96)
    onnx.save(model, d / "m.onnx")
    r = np.random.default_rng(1)
    for name, n in (("calib", 32), ("val", 48), ("test", 48)):
        x = r.standard_normal((n, 32)).astype(np.float32)
        np.savez(d / f"{name}.npz", x=x, label=run(model, {"x": x})[0].argmax(1))
    return {"model": d / "m.onnx", "calib": d / "calib.npz", "val": d / "val.npz", "test": d / "test.npz"}


def test_table_has_intervals_on_every_latency_and_no_empty_column(task: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = SearchConfig(budget=2, workers=2, fallback_layers=0, latency_runs=5)
    res = optimize_search(task["model"], data=task["calib"], eval_data=task["val"], test_data=task["test"],
                          output_dir=out, config=cfg, seconds=0.05)  # fmt: skip
    heads, rows = optimize_table_cells(res.comparison)
    for h in ("p50 ms (95% CI)", "p50 x (95% CI)", "session MB", "cosine", "SQNR dB"):
        assert h in heads, heads
    acc = next(h for h in heads if h.startswith("accuracy"))
    assert acc == "accuracy (selection split val.npz)"
    for i in range(1, len(heads)):  # every column shown has a value on some row
        assert any(row[i] not in ("-", "") for row in rows), heads[i]
    col = {h: i for i, h in enumerate(heads)}
    ok = [row for row in rows if "failed" not in row[-1]]
    assert ok[0][0] == "float" and ok[0][col["p50 x (95% CI)"]] == "1.00x"
    for row in ok:
        assert P50.match(row[col["p50 ms (95% CI)"]]), row
        assert float(row[col["session MB"]]) > 0
    for row in ok[1:]:
        assert RATIO.match(row[col["p50 x (95% CI)"]]), row
    # int8-blockwise quantizes MatMul and Gather only: on this Gemm model it changes nothing, and says so
    noop = next(row for row in rows if row[0] == "int8-blockwise")
    assert "no change" in noop[col["note"]] and noop[col["size x"]] == "1.000x"
    assert all("no change" not in row[col["note"]] for row in rows if row[0] == "dynamic-int8")
    # every timing carries its conditions, taken after the search ("final"), and is stored in the cache with them
    s = res.search
    finals = [c for c in s.candidates if c.ok and c.source == "builtin"]
    assert finals and all(c.timing and c.timing["role"] == "final" and c.latency_ratio_ci for c in finals)
    assert s.float_timing is not None and s.float_timing["conditions"]["threads"] == 1
    assert s.float_timing["conditions"]["input_shapes"] == {"x": [1, 32]}  # the selection split's first sample
    cache = ResultCache(out / "cache")
    stored = [cache.get(p.stem) for p in (out / "cache").glob("*.json") if not p.name.startswith("sensitivity")]
    timed = [e["timing"] for e in stored if e and "timing" in e]
    assert len(timed) >= len({c.recipe_hash for c in finals})
    assert all({"busy", "load_avg_1m", "cpu_model", "onnxruntime_version", "role"} <= set(t["conditions"])
               for t in timed)  # fmt: skip
    # every timed row names the file it timed (kept in OUTPUT/candidates), so bench can time the same file
    assert all(Path(r.path).is_file() for r in res.comparison.rows if not r.error)
    js = json.loads(json.dumps(res.to_dict(), default=str))
    assert js["split"] == "selection split val.npz" and "busy" in js


def test_piped_run_prints_one_plain_line_per_step(task: dict[str, Path], tmp_path: Path) -> None:
    r = cli("optimize", str(task["model"]), "--data", str(task["calib"]), "--eval-data", str(task["val"]),
            "--budget", "2", "--workers", "1", "--fallback-layers", "0", "--seconds", "0", "-o", str(tmp_path / "o"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    steps = [ln for ln in r.stderr.splitlines() if re.match(r"^\[\d+/\d+\] ", ln)]
    n_builtin = len([ln for ln in steps if "] built-in " in ln])
    assert n_builtin >= 8 and len(steps) == n_builtin + 2, r.stderr
    assert "\x1b[" not in r.stderr  # plain text, no bar or colour codes
    assert "p50 ms" not in r.stdout  # --seconds 0: no latency, so no latency column at all


def test_timing_conditions_decide_what_a_cached_timing_is_worth() -> None:
    here = {"threads": 1, "batch_size": 1, "onnxruntime_version": "1", "cpu_model": "x"}
    assert conditions_match({**here, "busy": False}, here)
    assert not conditions_match({**here, "busy": True}, here)
    assert not conditions_match({**here, "threads": 2, "busy": False}, here)
    # a timing on other input shapes (generated 1x1 images, another data set) is not this one
    assert not conditions_match({**here, "input_shapes": {"x": [1, 3, 1, 1]}, "busy": False},
                                {**here, "input_shapes": {"x": [1, 3, 224, 224]}})  # fmt: skip
    t = Timing(1.0, (0.9, 1.1), 0.5, (0.4, 0.6), 123, {"role": "final"})
    assert Timing.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(ValueError, match="group"):
        TimingSettings(group=0)


def test_a_latency_search_never_chooses_a_model_slower_than_float(tmp_path: Path) -> None:
    """With objective latency, candidates within the budget whose whole interval lies above float's time are not
    chosen (a 16-bit-activation recipe timed 3.6x float on a real classifier and was written as best)."""
    from tensorslim.search.study import Candidate, SearchResult, _finish, _measurably_slower

    def candidate(i: int, ratio: float, ci: tuple[float, float] | None) -> Candidate:
        return Candidate(f"c{i}", "trial", i, {}, f"h{i}", score=1.0, size_bytes=400 + i, latency_ms=ratio,
                         feasible=True, latency_ratio=ratio, latency_ratio_ci=ci)  # fmt: skip

    assert _measurably_slower(candidate(0, 1.3, (1.2, 1.4))) and _measurably_slower(candidate(0, 1.1, None))
    assert not _measurably_slower(candidate(0, 1.02, (0.97, 1.07)))  # within the noise of float's time
    assert not _measurably_slower(candidate(0, 0.6, (0.55, 0.65)))
    res = SearchResult(model=tmp_path / "m.onnx", output_dir=tmp_path, metric="cosine", objective="latency",
                       reference_score=1.0, threshold=0.99, float_size_bytes=1000, float_latency_ms=1.0)  # fmt: skip
    res.candidates = [candidate(0, 3.6, (3.5, 3.7)), candidate(1, 1.3, (1.2, 1.4))]
    cfg = SearchConfig(objective="latency", max_drop=0.01, latency_runs=5)
    _finish(res, proto_path=tmp_path / "m.onnx", data=None, test=None, cfg=cfg, setup=None, timer=None)  # type: ignore[arg-type]
    assert res.chosen is None and res.chosen_path is None and not list(tmp_path.iterdir())  # nothing written
    assert "the fastest: c1 at 1.30x float latency [1.20, 1.40]" in res.slower_than_float
    assert res.to_dict()["slower_than_float"] == res.slower_than_float
