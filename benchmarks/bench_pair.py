"""Do two runs of the same ``tensorslim bench`` command agree within the confidence intervals they state?

For each pair (float model, quantized model) the script runs, as subprocesses, twice in a row::

    tensorslim bench FLOAT Q --json runK.json --report runK.html --seconds S [--dim sequence=128]

and prints, per model, the median latency of run 1 and run 2 with their 95 % intervals and whether they
agree, then the same for the latency ratio Q / FLOAT. Two checks, the first one strict:

* ``each in other``: run 2's median lies inside run 1's interval and run 1's inside run 2's;
* ``overlap``: the two intervals share at least one value.

Pairs:

* ``digits``: the bundled digits CNN vs its static int8 version (``tensorslim quantize --mode static --data``
  the bundled calibration file);
* ``minilm``: all-MiniLM-L6-v2 float (exported by ``realmodels.export_minilm``) vs tensorslim dynamic int8,
  batch 1, sequence 128 (generated inputs).

Usage::

    python benchmarks/bench_pair.py                  # both pairs, 5 s per model per run
    python benchmarks/bench_pair.py --quick          # CI: digits only, 1 s per model per run
    python benchmarks/bench_pair.py --json pair.json --strict   # exit 1 when a check fails

Models and per-run JSON/HTML go to ``benchmarks/.cache/bench_pair/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from tensorslim.examples import example_calib_data_path, example_model_path  # noqa: E402

CLI = [sys.executable, "-m", "tensorslim.cli"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run(cmd: list[str]) -> float:
    log("$ " + " ".join(cmd[2:]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def digits_pair(cache: Path) -> tuple[Path, Path, list[str]]:
    """The bundled digits CNN and its static int8 version (quantized once, cached)."""
    src = example_model_path()
    q = cache / "digits.static-int8.onnx"
    if not q.is_file():
        _run([*CLI, "quantize", str(src), "-o", str(q), "--mode", "static", "--data", str(example_calib_data_path()),
              "--no-check-speed", "--json", str(cache / "digits.quantize.json")])  # fmt: skip
    return src, q, []


def minilm_pair(cache: Path) -> tuple[Path, Path, list[str]]:
    """MiniLM float (exported once) and tensorslim's dynamic int8 of it; sequence length 128."""
    import realmodels as rm

    src = rm.export_minilm(HERE / ".cache")
    q = cache / "minilm.dynamic-int8.onnx"
    if not q.is_file():
        _run(
            [
                *CLI,
                "quantize",
                str(src),
                "-o",
                str(q),
                "--no-check-speed",
                "--json",
                str(cache / "minilm.quantize.json"),
            ]
        )
    return src, q, ["--dim", "sequence=128"]


def _inside(x: float, ci: list[float] | None) -> bool:
    return ci is not None and ci[0] <= x <= ci[1]


def _overlap(a: list[float] | None, b: list[float] | None) -> bool:
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-model and ratio agreement between two bench JSON results."""
    r1, r2 = runs
    rows = []
    for m1, m2 in zip(r1["models"], r2["models"], strict=True):
        a, b = m1["latency_ms"], m2["latency_ms"]
        rows.append({
            "what": f"{m1['name']} p50 ms", "run1": a["p50"], "ci1": a["p50_ci95"], "run2": b["p50"], "ci2": b["p50_ci95"],
        })  # fmt: skip
    for i in range(1, len(r1["models"])):
        p1, p2 = r1["models"][i]["p50_ratio"], r2["models"][i]["p50_ratio"]
        rows.append({
            "what": f"{r1['models'][i]['name']} / {r1['models'][0]['name']} p50 ratio",
            "run1": p1["value"], "ci1": p1["ci95"], "run2": p2["value"], "ci2": p2["ci95"],
        })  # fmt: skip
    for row in rows:
        row["each_in_other"] = _inside(row["run2"], row["ci1"]) and _inside(row["run1"], row["ci2"])
        row["overlap"] = _overlap(row["ci1"], row["ci2"])
        row["diff_pct"] = 100.0 * (row["run2"] - row["run1"]) / row["run1"] if row["run1"] else None
        row["ci1_half_pct"] = (
            50.0 * (row["ci1"][1] - row["ci1"][0]) / row["run1"] if row["ci1"] and row["run1"] else None
        )
    return {"rows": rows}


def _fmt(x: float, ci: list[float] | None) -> str:
    digits = 4 if x < 10 else 2
    return f"{x:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{x:.{digits}f}"


def print_table(name: str, result: dict[str, Any], seconds: float, walls: list[float]) -> None:
    print(f"\n{name}: two runs of `tensorslim bench --seconds {seconds:g}` ({walls[0]:.0f} s, {walls[1]:.0f} s)\n")
    print("| what | run 1 (95% CI) | run 2 (95% CI) | diff % | CI half-width % | each in other | overlap |")
    print("|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        half = "-" if r["ci1_half_pct"] is None else f"{r['ci1_half_pct']:.1f}"
        diff = "-" if r["diff_pct"] is None else f"{r['diff_pct']:+.1f}"
        print(f"| {r['what']} | {_fmt(r['run1'], r['ci1'])} | {_fmt(r['run2'], r['ci2'])} | {diff} | {half} | "
              f"{'yes' if r['each_in_other'] else 'NO'} | {'yes' if r['overlap'] else 'NO'} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits only, 1 s per model per run (CI)")
    ap.add_argument("--seconds", type=float, default=None, help="--seconds of each bench run [5; quick: 1]")
    ap.add_argument("--threads", type=int, default=1, help="--threads of each bench run")
    ap.add_argument("--pairs", default=None, help="comma-separated: digits,minilm [both; quick: digits]")
    ap.add_argument("--cache-dir", type=Path, default=HERE / ".cache" / "bench_pair")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a median or ratio misses the other run's CI")
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 5.0)
    pairs = (args.pairs or ("digits" if args.quick else "digits,minilm")).split(",")
    cache: Path = args.cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    makers = {"digits": digits_pair, "minilm": minilm_pair}
    unknown = [p for p in pairs if p not in makers]
    if unknown:
        ap.error(f"--pairs: unknown {unknown}; choose from {', '.join(makers)}")
    out: dict[str, Any] = {"seconds": seconds, "threads": args.threads, "pairs": {}}
    ok = True
    for name in pairs:
        fp, q, extra = makers[name](cache)
        runs, walls = [], []
        for k in (1, 2):
            js, html = cache / f"{name}.run{k}.json", cache / f"{name}.run{k}.html"
            cmd = [*CLI, "bench", str(fp), str(q), "--seconds", str(seconds), "--threads", str(args.threads),
                   *extra, "--json", str(js), "--report", str(html)]  # fmt: skip
            walls.append(_run(cmd))
            runs.append(json.loads(js.read_text(encoding="utf-8")))
        result = compare(runs)
        result["wall_s"] = walls
        result["settings"] = runs[0]["settings"]
        out["pairs"][name] = result
        print_table(name, result, seconds, walls)
        ok = ok and all(r["each_in_other"] for r in result["rows"])
    env = runs[0]["env"]
    print(f"\nonnxruntime {env['onnxruntime_version']}, {env['cpu_model']}, threads {args.threads}")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
