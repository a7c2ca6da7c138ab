"""Subprocess entry point of the memory measurement: ``python -m tensorslim.benchmark._worker``.

Loads the inputs, records the baseline RSS, creates the session (same options as the timing session; its
creation time is the cold load time: the first session of a fresh process), records the peak RSS, runs
inference a few times, records the peak again, and prints one line
``TENSORSLIM_MEMORY_RESULT {json}`` on stdout. Errors go to stderr with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime  # noqa: F401  (imported before the baseline so that it is not counted as session memory)

from .latency import create_session
from .memory import RESULT_MARKER, current_rss, peak_rss, reset_peak_rss


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; return the exit status."""
    ap = argparse.ArgumentParser(prog="python -m tensorslim.benchmark._worker")
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True, help="npz with arrays arr_0, arr_1, ...; names.json next to it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)

    names = json.loads((Path(args.inputs).parent / "names.json").read_text(encoding="utf-8"))
    with np.load(args.inputs, allow_pickle=False) as data:
        feeds = {name: np.ascontiguousarray(data[f"arr_{i}"]) for i, name in enumerate(names)}

    gc.collect()
    reset_peak_rss()
    baseline = current_rss()
    try:
        sess, cold_load_ms = create_session(args.model, args.threads)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    peak_session, source = peak_rss()
    try:
        for _ in range(max(1, args.runs)):
            sess.run(None, feeds)
    except Exception as exc:
        print(f"{args.model}: inference failed ({exc})", file=sys.stderr)
        return 3
    peak_inference, _ = peak_rss()
    result = {
        "baseline_rss_bytes": baseline,
        "peak_rss_session_bytes": peak_session,
        "peak_rss_inference_bytes": max(peak_inference, peak_session),
        "source": source,
        "cold_load_ms": cold_load_ms,
    }
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
