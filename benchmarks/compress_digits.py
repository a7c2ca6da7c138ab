"""Channel pruning, clustering and packing on the bundled digits CNN, measured side by side.

Channel pruning removes half the output channels of every layer it can prune safely (the residual block's
tied channels are skipped), and refits each consumer by least squares on the calibration split; the
models are then evaluated on the held-out test split and benchmarked interleaved in one run.

Usage::

    .venv/bin/python benchmarks/compress_digits.py                # ratios 0.5 and 0.6, 5 s per model
    .venv/bin/python benchmarks/compress_digits.py --seconds 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    """Build the variants, evaluate and benchmark them, print the table."""
    from rich.console import Console

    from tensorslim.api.compression import cluster, pack, prune_channels
    from tensorslim.benchmark import benchmark_models, render_bench_table
    from tensorslim.evaluate import evaluate, load_npz
    from tensorslim.examples import example_calib_data_path, example_model_path, example_test_data_path
    from tensorslim.passes.channel_prune import ChannelPruneConfig
    from tensorslim.passes.cluster import ClusterConfig
    from tensorslim.runtime.ort import OrtRuntime

    ap = argparse.ArgumentParser()
    ap.add_argument("--ratios", default="0.5,0.6")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    src, calib, test = example_model_path(), example_calib_data_path(), example_test_data_path()
    out = Path(tempfile.mkdtemp(prefix="compress-digits-"))
    ref = OrtRuntime(src, threads=1)
    test_ds = load_npz(test, ref.inputs)
    models: list[tuple[str, Path]] = [("float", src)]
    for r in (float(x) for x in args.ratios.split(",")):
        for refit in (False, True):
            name = f"channel-{r:g}{'-lstsq' if refit else '-slice'}"
            dst = out / f"{name}.onnx"
            prune_channels(src, dst, config=ChannelPruneConfig(ratio=r, refit=refit), data=calib)
            models.append((name, dst))
    best = out / "channel-0.5-lstsq.onnx"
    cl = out / "channel-0.5-lstsq.cluster16.onnx"
    cluster(best, cl, config=ClusterConfig(clusters=16, granularity="per_channel", codebook_dtype="float16"),
            data=calib)  # fmt: skip
    pack(cl, out / "channel-0.5-lstsq.cluster16.tslim")
    models.append(("channel-0.5 + cluster16 (.tslim)", out / "channel-0.5-lstsq.cluster16.tslim"))
    rows: list[dict[str, Any]] = []
    for name, path in models:
        o = evaluate(ref, path, test_ds, batch_size=64).outputs[0]
        rows.append({"model": name, "path": str(path), "accuracy": o.candidate_accuracy,
                     "reference_accuracy": o.reference_accuracy, "cosine": o.cosine_mean})  # fmt: skip
    bench = benchmark_models([p for _, p in models], threads=1, max_time_s=args.seconds, min_runs=50)
    con = Console(width=200)
    con.print(render_bench_table(bench))
    base = bench.models[0]
    con.print(f"{'model':36s} {'top-1':>8s} {'Δ pt':>6s} {'cosine':>8s} {'p50 x':>6s} {'size x':>7s}")
    for row, b in zip(rows, bench.models, strict=True):
        row.update(p50_ms=b.p50_ms, p50_x=b.p50_ms / base.p50_ms, size_x=b.file_bytes / base.file_bytes)
        con.print(f"{row['model']:36s} {100 * row['accuracy']:7.2f}% {100 * (row['accuracy'] - row['reference_accuracy']):+6.2f} "
                  f"{row['cosine']:8.5f} {row['p50_x']:6.2f} {row['size_x']:7.3f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "env": bench.env.to_dict()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
