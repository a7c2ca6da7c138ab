"""Compare every latency ratio of a ``tensorslim optimize --json`` result with ``tensorslim bench`` of the same files.

For each row of the comparison table that has a file and a latency ratio (float, the chosen model, the built-in
recipes, whose files stay in ``OUTPUT/candidates/``), runs what ``tensorslim bench FLOAT FILE`` runs (the same
``benchmark_models`` call with bench's defaults: 1 thread, batch 1, 5 s per model, memory off) and prints both ratios;
exit status 1 when one differs by more than ``--tolerance`` (relative) or the machine was busy. Run it on a quiet
machine, right after the optimize run::

    tensorslim optimize -o /tmp/opt1 --json /tmp/opt1.json
    python scripts/check_optimize_vs_bench.py /tmp/opt1.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="the JSON written by tensorslim optimize --json")
    parser.add_argument("--seconds", type=float, default=5.0, help="bench's time per model (its default: 5)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed relative difference of the ratios")
    parser.add_argument("--quick", action="store_true", help="0.2 s per model (checks that the script runs)")
    args = parser.parse_args(argv)
    from tensorslim.benchmark import benchmark_models
    from tensorslim.benchmark.table import busy_note

    rep = json.loads(args.result.read_text())
    rows = rep["rows"]
    float_path = Path(rows[0]["path"])
    worst, busy = 0.0, False
    print(f"{'row':40s} {'optimize':>18s} {'bench':>18s} {'diff':>7s}")
    for row in rows[1:]:
        path, ratio = row.get("path") or "", row.get("p50_ratio")
        if not path or ratio is None or not Path(path).is_file():
            print(f"{row['name'][:40]:40s} {'-':>18s} (no file or no latency)")
            continue
        b = benchmark_models([float_path, Path(path)], max_time_s=0.2 if args.quick else args.seconds,
                             measure_memory=False)  # fmt: skip
        m = b.models[1]
        bench_ratio = m.p50_ms / b.models[0].p50_ms
        diff = abs(ratio / bench_ratio - 1.0)
        worst = max(worst, diff)
        note = busy_note(b)
        busy = busy or bool(note)
        oci = row.get("p50_ratio_ci") or [float("nan")] * 2
        bci = m.p50_ratio_ci or (float("nan"), float("nan"))
        print(f"{row['name'][:40]:40s} {ratio:5.2f}x ({oci[0]:.2f}-{oci[1]:.2f}) {bench_ratio:5.2f}x "
              f"({bci[0]:.2f}-{bci[1]:.2f}) {100 * diff:6.1f}%{'  BUSY' if note else ''}")  # fmt: skip
    print(f"largest difference: {100 * worst:.1f}% (tolerance {100 * args.tolerance:.0f}%)"
          + ("; the machine was busy: re-run on a quiet one" if busy else ""))  # fmt: skip
    return 0 if worst <= args.tolerance and not busy else 1


if __name__ == "__main__":
    sys.exit(main())
