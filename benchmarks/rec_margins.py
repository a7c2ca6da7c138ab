"""Where RapidOCR's recognizer disagrees with float: which lines, which output steps, and by how much.

The suite scores the recognizer by the share of lines a variant decodes exactly as float does. This script breaks
that figure down, for float and each variant, on the suite's rendered lines (``suite.render_lines``, same seeds):

* lines decoded as float / differing only by spaces at the ends / differing inside;
* per output step (a column of the CTC output), how many lines have a different top class there;
* at the first step and mid-line (steps 10-29), the shift of the log-probability margin between CTC's blank and
  the space class against float's (mean and standard deviation over the lines).

Why: every rendered line starts with the same white margin, and there float itself hesitates between blank and a
leading space (its margin's median is under one log-unit). Any error a variant makes at that step is the same
for all lines (same input), so one coherent shift flips dozens of lines one way; its sign, not its size, decides
whether the character accuracy against the rendered text (which has no leading spaces) goes above or below
float's. Variants: tensorslim fp16, dynamic int8 (int8 weights, float activations; the default), weight-only int8
and static int8 (``StaticQuantConfig()`` on the suite's calibration lines; ``--static-placement FILE`` replays a
placement), or any models given with ``--model``.

Usage::

    python benchmarks/rec_margins.py                       # 200 lines, fp16 / dynamic / weight-only / static
    python benchmarks/rec_margins.py --model q.onnx        # float against the given models only
    python benchmarks/rec_margins.py --quick               # CI: 40 lines, fp16 and dynamic int8

No timing: accuracy only, so it may share the machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realmodels as rm
import suite

BLANK = 0  # CTC's blank is class 0 in RapidOCR's decoder; the space is the last class


def variants(quick: bool, placement: str | None) -> list[tuple[str, Any, bool]]:
    """(label, config, needs calibration data) in table order."""
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    out: list[tuple[str, Any, bool]] = [("tensorslim fp16", Float16Config(), False),
                                        ("tensorslim dynamic int8 (default)", None, False)]  # fmt: skip
    if not quick:
        out += [("tensorslim weight-only int8", DynamicQuantConfig(form="weight_only"), False),
                ("tensorslim static int8", StaticQuantConfig(placement=placement), True)]  # fmt: skip
    return out


def breakdown(ref: np.ndarray, got: np.ndarray, ref_text: list[str], got_text: list[str]) -> dict[str, Any]:
    """The disagreement of one variant's CTC output ``got`` ``[lines, steps, classes]`` (probabilities) with float's."""
    space = ref.shape[2] - 1
    lf, lq = np.log(ref.astype(np.float64) + 1e-12), np.log(got.astype(np.float64) + 1e-12)
    margin_f, margin_q = lf[:, :, BLANK] - lf[:, :, space], lq[:, :, BLANK] - lq[:, :, space]
    shift = margin_q - margin_f
    mid = shift[:, 10:30] if shift.shape[1] >= 30 else shift[:, 1:-1]
    same = sum(g == r for g, r in zip(got_text, ref_text, strict=True))
    ends = sum(g != r and g.strip() == r.strip() for g, r in zip(got_text, ref_text, strict=True))
    return {
        "same": same, "ends": ends, "inside": len(ref_text) - same - ends,
        "steps": (ref.argmax(-1) != got.argmax(-1)).sum(axis=0),
        "first": (float(shift[:, 0].mean()), float(shift[:, 0].std())),
        "mid": (float(mid.mean()), float(mid.std())),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 lines, fp16 and dynamic int8 (CI)")
    ap.add_argument("--lines", type=int, default=None, help="scored lines (200; 40 with --quick)")
    ap.add_argument("--calib", type=int, default=200, help="calibration lines for static int8")
    ap.add_argument("--model", action="append", default=[], help="score this model instead of the variants")
    ap.add_argument("--static-placement", default=None, help="replay this placement in the static variant")
    args = ap.parse_args(argv)
    import onnx
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

    import tensorslim as ts

    src = rm.rapidocr_models()["rec"]
    n = args.lines or (40 if args.quick else 200)
    lines, _ = suite.render_lines(n, seed=3)
    x = suite._rec_inputs(lines, (3, 48, 320))
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    decode = CTCLabelDecode(character=meta["character"].splitlines())

    def run(path: Path) -> tuple[np.ndarray, list[str]]:
        probs = suite._run_all(path, {"x": x})[0]
        return probs, [t for t, _ in decode(probs)]

    ref, ref_text = run(src)
    first = ref[:, 0]
    margin = np.log(first[:, BLANK] + 1e-12) - np.log(first[:, -1] + 1e-12)
    print(f"float on {n} lines: a leading space on {int((first.argmax(-1) == first.shape[1] - 1).sum())}; first-step "
          f"blank-minus-space log margin quartiles {np.round(np.quantile(margin, [0.25, 0.5, 0.75]), 2).tolist()}, "
          f"{int((np.abs(margin) < 1).sum())} lines within 1")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            paths = [(Path(m).name, Path(m)) for m in args.model]
        else:
            calib = suite._rec_inputs(suite.render_lines(args.calib, seed=4)[0], (3, 48, 320))
            paths = []
            for i, (label, config, needs_data) in enumerate(variants(args.quick, args.static_placement)):
                dst = Path(tmp) / f"v{i}.onnx"
                ts.quantize(src, dst, config=config, data={"x": calib} if needs_data else None)
                paths.append((label, dst))
        print("| variant | same as float | differ only at the ends | differ inside | first-step flips | "
              "first-step margin shift | mid-line margin shift | steps with most flips |")
        print("|---|---|---|---|---|---|---|---|")
        for label, path in paths:
            probs, text = run(path)
            b = breakdown(ref, probs, ref_text, text)
            worst = np.argsort(-b["steps"], kind="stable")[:3]
            print(f"| {label} | {b['same']} | {b['ends']} | {b['inside']} | {int(b['steps'][0])} | "
                  f"{b['first'][0]:+.2f} +- {b['first'][1]:.2f} | {b['mid'][0]:+.2f} +- {b['mid'][1]:.2f} | "
                  + ", ".join(f"{int(s)}: {int(b['steps'][s])}" for s in worst) + " |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
