"""Weight rounding that keeps each output channel's sum, against round to nearest, on trained conv nets.

A layer's response to a flat input (paper, sky, padding) is its weight sum times that input; round to nearest
leaves each channel's sum off by a random walk of half steps, which on edge-detecting kernels is many times the
true sum. ``quantize_keeping_sums`` rounds the fewest weights the other way to keep the sums. This script makes
int8 weight-only models (``--mode dynamic --form weight_only``: float compute, so the weights are the only error)
both ways and scores them with the suite's task metrics (RapidOCR det/rec/cls on rendered pages and lines, the
digits CNN), plus the output SQNR against float. Accuracy only: nothing is timed.

    python benchmarks/keep_sums.py [--quick] [--static]

``--static`` also makes full static int8 models with ``--keep-weight-sums`` on and off (minutes per model; the
range method fixed to ``percentile`` so that both use the same activation ranges).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite
import tensorslim
from tensorslim.passes.dynamic_quant import DynamicQuantConfig
from tensorslim.passes.static_quant import StaticQuantConfig


def _sqnr(path: Path, ref_path: Path, feeds: dict[str, np.ndarray]) -> float:
    f = suite._run_all(ref_path, feeds)[0]
    q = suite._run_all(path, feeds)[0]
    return float(10 * np.log10((f.astype(np.float64) ** 2).sum() / max(((f - q) ** 2).sum(), 1e-30)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small samples (CI)")
    p.add_argument("--static", action="store_true", help="also static int8 with --keep-weight-sums on and off")
    a = p.parse_args(argv)
    args = suite.parse_args(["--quick"] if a.quick else [])
    cases = [*suite.ocr_cases(args), suite.digits_case(args)]
    print(f"{'model':14} {'variant':34} {'SQNR dB':>8}  task metrics")
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            ref = case.reference(case.src)
            variants: list[tuple[str, object, bool]] = [
                (f"weight-only, {'kept sums' if keep else 'nearest'}",
                 DynamicQuantConfig(form="weight_only", keep_conv_sums=keep), False) for keep in (False, True)]  # fmt: skip
            if a.static:
                variants += [(f"static, {'kept sums' if keep else 'nearest'}",
                              StaticQuantConfig(keep_weight_sums=keep, calibration="percentile"), True)
                             for keep in (False, True)]  # fmt: skip
            for i, (label, cfg, needs_data) in enumerate(variants):
                out = Path(tmp) / f"{case.src.stem}_{i}.onnx"
                tensorslim.quantize(case.src, out, config=cfg, data=case.calib if needs_data else None, verify=False)  # type: ignore[arg-type]
                metrics = case.score(out, ref)
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                print(f"{case.name:14} {label:34} {_sqnr(out, case.src, case.timing_bn):8.1f}  {shown}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
