"""Empirical correction with a gain per channel, against the offset alone, on trained conv nets.

Static int8's empirical correction matches each int8 layer's output per channel to float's on calibration
samples, layer by layer. An offset alone cannot match both kinds of region a layer sees (text and white paper,
objects and sky: a flat region's int8 error is the same at every position and differs from the detailed
regions'); a gain and an offset per channel (a line fitted per channel, folded into the weight and bias
scales) can. The gains are kept only where the model's output agrees on calibration samples the fit did not see. This script makes static int8 models of the suite's models with the gain on and off, on the same placement
(int8 wherever the rules allow: no latency check, so nothing is timed and both variants place the same nodes),
and scores them with the suite's task metrics (RapidOCR det/rec/cls on rendered pages and lines, the digits CNN),
plus the output SQNR against float on the suite's batch-timing inputs.

    python benchmarks/empirical_gain.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite
import tensorslim
from keep_sums import _sqnr
from tensorslim.passes.static_quant import StaticQuantConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small samples (CI)")
    a = p.parse_args(argv)
    args = suite.parse_args(["--quick"] if a.quick else [])
    cases = [*suite.ocr_cases(args), suite.digits_case(args)]
    print(f"{'model':14} {'variant':24} {'SQNR dB':>8}  task metrics")
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            ref = case.reference(case.src)
            for gain in (False, True):
                out = Path(tmp) / f"{case.src.stem}_{int(gain)}.onnx"
                cfg = StaticQuantConfig(latency_check=False, empirical_gain=gain)
                tensorslim.quantize(case.src, out, config=cfg, data=case.calib, verify=False)
                metrics = case.score(out, ref)
                shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                label = "offset and gain" if gain else "offset only"
                print(f"{case.name:14} {label:24} {_sqnr(out, case.src, case.timing_bn):8.1f}  {shown}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
