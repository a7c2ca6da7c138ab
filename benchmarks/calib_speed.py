"""Histogram (percentile) calibration speed: tensorslim vs ONNX Runtime's percentile calibrator, same tensors.

Target (issue 3): tensorslim's histogram calibration is at least 3x faster than ONNX Runtime's percentile
calibrator on the same data, measured in one benchmark run. Model: all-MiniLM-L6-v2 (exported by
``realmodels.export_minilm``); data: the first N sentences of ``realmodels.load_sentences`` padded to 128 tokens.

Why a restricted tensor set. With every float tensor calibrated (ORT's default), ONNX Runtime 1.32's
Percentile and Entropy calibrators stop with numpy's "Too many bins for data range": the attention mask's
additive term (about -3.4e38, the float32 minimum) lands in a float32 histogram whose range then overflows.
So both tools calibrate the tensors ORT selects with ``op_types_to_calibrate=["MatMul"]``: inputs and outputs
of every MatMul (the tensors a static int8 MatMul needs), which the mask term never reaches. The list is taken
from ORT's own calibrator (``tensors_to_calibrate``) and handed to tensorslim unchanged.

What is timed, each in a fresh subprocess (``VmHWM`` peak RSS read at the end, data loaded before the clock):

* ``ort``: ``create_calibrator(model, ["MatMul"], calibrate_method=CalibrationMethod.Percentile)`` (augmented
  model + session), ``collect_data`` over the batches, ``compute_data()`` (2048 bins, percentile 99.999,
  symmetric: ORT's percentile defaults);
* ``tensorslim``: ``passes.static_quant.calibrate_ranges`` with ``StaticQuantConfig(calibration="percentile",
  percentile=99.999)``: the code path of ``tensorslim quantize --mode static --range percentile`` (augmented
  model + session, streamed :class:`HistogramObserver` updates, percentile ranges).

Both read the same batches of 8 sentences, with the same 96 tensors and no graph optimization. ORT keeps
every intermediate output of every batch in memory before it builds histograms (about 33 MB per sentence
here), running ONNX Runtime with its default thread count; tensorslim streams: the next batch runs in a
background thread, with one ONNX Runtime thread less, while its histogram thread updates the histograms of
the current batch (two batches of outputs alive at a time). The table gives wall seconds (the target) and CPU
seconds (all threads: the work done, less sensitive to other load on the machine).

Usage::

    python benchmarks/calib_speed.py                 # 200 sentences, sequence 128
    python benchmarks/calib_speed.py --sentences 64 --repeat 3   # median of 3 alternating runs per tool
    python benchmarks/calib_speed.py --quick         # 16 sentences (functional check)
    python benchmarks/calib_speed.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

MARK = "CALIB_SPEED_RESULT "
BATCH = 8


def _peak_rss() -> int:
    from tensorslim.benchmark.memory import peak_rss

    return peak_rss()[0]


def _current_rss() -> int:
    from tensorslim.benchmark.memory import current_rss

    return current_rss()


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _batches(npz: Path) -> list[dict[str, np.ndarray]]:
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    n = next(iter(arrays.values())).shape[0]
    return [{k: v[i : i + BATCH] for k, v in arrays.items()} for i in range(0, n, BATCH)]


def worker_tensors(model: Path, out: Path) -> None:
    """The tensors ORT's percentile calibrator selects with op_types_to_calibrate=["MatMul"]."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as tmp:
        cal = create_calibrator(
            model, ["MatMul"], augmented_model_path=str(Path(tmp) / "aug.onnx"),
            calibrate_method=CalibrationMethod.Percentile,
        )  # fmt: skip
        out.write_text(json.dumps(sorted(cal.tensors_to_calibrate)), encoding="utf-8")


def worker_ort(model: Path, npz: Path, percentile: float) -> dict[str, Any]:
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    batches = _batches(npz)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    base = _current_rss()
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), _cpu_seconds()
        cal = create_calibrator(
            model, ["MatMul"], augmented_model_path=str(Path(tmp) / "aug.onnx"),
            calibrate_method=CalibrationMethod.Percentile, extra_options={"percentile": percentile},
        )  # fmt: skip
        cal.collect_data(Reader())
        ranges = cal.compute_data()
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    rng = {k: [float(np.asarray(v.range_value[0])), float(np.asarray(v.range_value[1]))] for k, v in ranges.items()}
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_bytes": _peak_rss(), "baseline_rss_bytes": base,
            "ranges": rng}  # fmt: skip


def worker_tensorslim(model: Path, npz: Path, tensors: list[str], percentile: float) -> dict[str, Any]:
    from tensorslim.backends.onnx.io import load_model
    from tensorslim.evaluate.data import Dataset
    from tensorslim.passes.static_quant import StaticQuantConfig, calibrate_ranges

    with np.load(npz) as f:
        ds = Dataset({k: f[k] for k in f.files})
    proto = load_model(model)
    cfg = StaticQuantConfig(calibration="percentile", percentile=percentile)
    base = _current_rss()
    t0, c0 = time.perf_counter(), _cpu_seconds()
    ranges = calibrate_ranges(proto, tensors, ds, cfg)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_bytes": _peak_rss(), "baseline_rss_bytes": base,
            "ranges": {k: list(v) for k, v in ranges.items()}}  # fmt: skip


def _spawn(args: list[str]) -> dict[str, Any]:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    return {"error": f"exit {proc.returncode}: {' | '.join(proc.stderr.strip().splitlines()[-3:])}"}


def _median_run(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (the lower one of an even count), with every run's seconds added."""
    failed = [r for r in rs if "error" in r]
    if failed:
        return failed[0]
    ordered = sorted(rs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "all_seconds": [r["seconds"] for r in rs]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=None, help="calibration sentences [200; quick: 16]")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--percentile", type=float, default=99.999)
    ap.add_argument("--quick", action="store_true", help="16 sentences: a functional check, not a timing")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool, alternating; the median is reported")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", choices=["tensors", "ort", "tensorslim"], help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tensors", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker == "tensors":
        worker_tensors(args.model, args.tensors)
        return 0
    if args.worker == "ort":
        print(MARK + json.dumps(worker_ort(args.model, args.data, args.percentile)))
        return 0
    if args.worker == "tensorslim":
        tensors = json.loads(args.tensors.read_text(encoding="utf-8"))
        print(MARK + json.dumps(worker_tensorslim(args.model, args.data, tensors, args.percentile)))
        return 0

    import realmodels as rm

    n = args.sentences or (16 if args.quick else 200)
    cache = HERE / ".cache" / "calib_speed"
    cache.mkdir(parents=True, exist_ok=True)
    model = rm.export_minilm(HERE / ".cache")
    npz = cache / f"minilm.{n}x{args.seq_len}.npz"
    if not npz.is_file():
        np.savez(npz, **rm.padded_feeds(rm.minilm_tokenizer(), rm.load_sentences(n), seq_len=args.seq_len))
    tensors_file = cache / "minilm.matmul_tensors.json"
    if not tensors_file.is_file():
        subprocess.run([sys.executable, __file__, "--worker", "tensors", "--model", str(model), "--tensors",
                        str(tensors_file)], check=True)  # fmt: skip
    tensors = json.loads(tensors_file.read_text(encoding="utf-8"))
    rm.log(f"{len(tensors)} tensors (MatMul inputs/outputs), {n} sentences x {args.seq_len} tokens, batches of {BATCH}")
    common = ["--model", str(model), "--data", str(npz), "--percentile", str(args.percentile)]
    runs: dict[str, list[dict[str, Any]]] = {"tensorslim": [], "ort": []}
    for k in range(args.repeat):  # alternate the order so that drift of the machine's load hits both alike
        for tool in ("tensorslim", "ort") if k % 2 == 0 else ("ort", "tensorslim"):
            rm.log(f"timing {tool} (run {k + 1} of {args.repeat}) ...")
            runs[tool].append(_spawn(["--worker", tool, *common, "--tensors", str(tensors_file)]))
    results = {tool: _median_run(rs) for tool, rs in runs.items()}
    ts, ort = results["tensorslim"], results["ort"]
    print(f"\nPercentile calibration of MiniLM, {n} sentences x {args.seq_len} tokens, {len(tensors)} MatMul tensors, "
          f"median of {args.repeat} run(s) per tool\n")  # fmt: skip
    print("| tool | seconds | each run s | CPU s | peak RSS MB | over baseline MB | note |")
    print("|---|---|---|---|---|---|---|")
    for tool, r in (("tensorslim calibrate_ranges (percentile)", ts), ("ORT PercentileCalibrater", ort)):
        if "error" in r:
            print(f"| {tool} | - | - | - | - | - | {r['error'][:200]} |")
        else:
            over = (r["peak_rss_bytes"] - r["baseline_rss_bytes"]) / 2**20
            each = ", ".join(f"{x:.2f}" for x in r["all_seconds"])
            print(f"| {tool} | {r['seconds']:.2f} | {each} | {r['cpu_seconds']:.1f} | {r['peak_rss_bytes'] / 2**20:.0f} "
                  f"| {over:.0f} | |")  # fmt: skip
    summary: dict[str, Any] = {"sentences": n, "seq_len": args.seq_len, "tensors": len(tensors), "batch": BATCH,
                               "repeat": args.repeat, "cpus": os.cpu_count()}  # fmt: skip
    if "error" not in ts and "error" not in ort:
        speedup = ort["seconds"] / ts["seconds"]
        common_t = sorted(set(ts["ranges"]) & set(ort["ranges"]))
        # ORT's percentile ranges are symmetric: compare the widths (max |range|) tensor by tensor
        rel = [abs(max(map(abs, ts["ranges"][t])) / max(max(map(abs, ort["ranges"][t])), 1e-12) - 1) for t in common_t]
        summary.update(speedup=speedup, cpu_ratio=ort["cpu_seconds"] / ts["cpu_seconds"], target_met=speedup >= 3.0,
                       ranges_compared=len(common_t), median_range_rel_diff=float(np.median(rel)) if rel else None,
                       peak_rss_ratio=ort["peak_rss_bytes"] / ts["peak_rss_bytes"])  # fmt: skip
        print(
            f"\nspeedup (ORT s / tensorslim s): {speedup:.2f}x (target >= 3x: {'met' if speedup >= 3 else 'NOT met'}); "
            f"CPU time ratio {summary['cpu_ratio']:.2f}x; peak RSS ratio {summary['peak_rss_ratio']:.2f}x"
        )
        if rel:
            print(f"range width vs ORT over {len(common_t)} tensors: median relative difference {np.median(rel):.3f}")
    if args.quick:
        print("(--quick: a functional check on few sentences; the target is judged on the full run)")
    if args.json is not None:
        strip = lambda r: {k: v for k, v in r.items() if k != "ranges"}  # noqa: E731
        payload = {"summary": summary, "results": {t: strip(r) for t, r in results.items()},
                   "runs": {t: [strip(r) for r in rs] for t, rs in runs.items()}}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
