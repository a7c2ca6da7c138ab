"""RapidOCR's own pipeline on rendered pages: float models vs tensorslim static int8 vs ONNX Runtime QOperator u8.

Each variant is a ``rapidocr_onnxruntime.RapidOCR(det_model_path=..., cls_model_path=..., rec_model_path=...)``
engine (det, then cls, then rec, RapidOCR's own pre- and post-processing), with ``--threads`` intra-op threads
per session:

* ``float``: the models shipped in the installed ``rapidocr_onnxruntime`` package;
* ``tensorslim static``: each model through the CLI, ``tensorslim quantize --mode static --data FOLDER
  --image-size HxW --color BGR --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5`` (RapidOCR feeds OpenCV's BGR order,
  ``(x / 255 - 0.5) / 0.5``, as its ``config.yaml`` and pre-processing say), from folders of images
  (``ocr_pages.write_calibration``: pages for det at their size; for rec the text-line crops as cut, which
  ``--image-size 48x960 --resize pad`` fits at height 48 and pads with zeros of the normalized input, as RapidOCR
  batches whole lines of different widths; for cls crops laid out at 48 x 192, half of them rotated 180 degrees);
* ``ORT QOperator u8``: ``quant_pre_process``, then ``quantize_static`` QOperator, per channel, uint8 weights and
  activations (``ort_qoperator.py``), calibrated on the same image files, read the same way (rec through
  tensorslim's ``pad`` preprocessing, ``ocr_pages.padded_feeds``).

Calibration pages and evaluation pages come from different seeds. Reported per variant: model bytes, pipeline
latency per page (every variant in this process, interleaved round robin with tensorslim's harness: each turn
runs every evaluation page once; median with its 95 % interval, the ratio to float with its interval paired by
round block, the ratio of the fastest runs), and character accuracy: each text box RapidOCR returns is assigned
to the rendered line it overlaps most, the line's text is its boxes left to right, and accuracy is
``1 - sum(edit distance) / sum(reference length)`` against the rendered text (boxes that overlap no line count
as inserted characters) and against float's output. A model that fails to quantize is kept float in that
variant, with the error in the notes. Intermediates go to a temporary folder under ``benchmarks/.cache``
(``--keep DIR`` keeps them).

Usage::

    python benchmarks/rapidocr_pipeline.py                  # 16 pages, 24 calibration pages, 60 s of timing
    python benchmarks/rapidocr_pipeline.py --quick          # CI: 2 pages, 2 calibration pages, a few s each
    python benchmarks/rapidocr_pipeline.py --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import ocr_pages as op
import ort_qoperator
import realmodels as rm

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "rapidocr_pipeline"
KINDS = ("det", "cls", "rec")
SIZES = {"det": op.PAGE_SIZE, "rec": op.REC_CALIB_SHAPE, "cls": op.CLS_SHAPE}


def calib_limit(kind: str, args: argparse.Namespace) -> int:
    """Most calibration images for ``kind``: ``--max-calib``, for rec scaled to the same pixels at 48 x 960."""
    if kind != "rec":
        return int(args.max_calib)
    return max(1, args.max_calib * op.REC_SHAPE[1] // op.REC_CALIB_SHAPE[1])


def ts_static(src: Path, dst: Path, folder: Path, kind: str, args: argparse.Namespace) -> str:
    """``tensorslim quantize --mode static`` from an image folder, as a user runs it; returns a note for the table."""
    h, w = SIZES[kind]
    cmd = [
        sys.executable,
        "-m",
        "tensorslim.cli",
        "quantize",
        str(src),
        "-o",
        str(dst),
        "--mode",
        "static",
        "--data",
        str(folder),
        "--image-size",
        f"{h}x{w}",
        "--color",
        "BGR",
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.5,0.5,0.5",
        "--max-samples",
        str(calib_limit(kind, args)),
        "--json",
        str(dst.with_suffix(".json")),
    ]
    if kind == "rec":  # whole lines, as RapidOCR batches them
        cmd += ["--resize", "pad"]
    if args.quick:
        cmd.append("--no-check-speed")
    rm.log("   $ " + " ".join(c if " " not in c else repr(c) for c in cmd[1:]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        err = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise RuntimeError(f"exit {proc.returncode}: {err[-1] if err else '(no output)'}")
    note = ""
    report = json.loads(dst.with_suffix(".json").read_text())
    rm.log("     notes: " + "; ".join(report.get("notes") or []))
    speed = report.get("speed_check") or {}
    if "ratio" in speed:
        note = f"CLI speed check {speed['ratio']:.2f}x" + (" (warned: slower)" if speed.get("slower") else "")
    return note


def ort_qop(src: Path, dst: Path, folder: Path, kind: str, args: argparse.Namespace) -> str:
    n = calib_limit(kind, args)
    feeds = op.padded_feeds(folder, SIZES[kind], n) if kind == "rec" else op.folder_feeds(folder, n)
    return ort_qoperator.quantize_qoperator_u8(src, dst, {"x": feeds})


VARIANTS: dict[str, Callable[[Path, Path, Path, str, argparse.Namespace], str]] = {
    "tensorslim static": ts_static,
    "ORT QOperator u8": ort_qop,
}


def build_variants(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """The float variant and each quantized one: model paths per kind, bytes, notes and quantization seconds."""
    floats = rm.rapidocr_models()
    calib = op.render_pages(args.calib_pages, seed=args.seed + 1000)
    folders = op.write_calibration(calib, work / "calib")
    counts = {k: len(list(f.glob("*.png"))) for k, f in folders.items()}
    rm.log(f"calibration: {counts['det']} pages, {counts['cls']} line crops ({work})")
    out = [{"name": "float", "models": dict(floats), "notes": [], "seconds": 0.0}]
    for name, fn in VARIANTS.items():
        v: dict[str, Any] = {"name": name, "models": {}, "notes": [], "seconds": 0.0}
        for kind in KINDS:
            dst = work / f"{name.split()[0].lower()}-{kind}.onnx"
            t0 = time.perf_counter()
            try:
                note = fn(floats[kind], dst, folders[kind], kind, args)
                rm.make_session(dst)  # loads in ONNX Runtime
                v["models"][kind] = dst
                if note:
                    v["notes"].append(f"{kind}: {note}")
            except Exception as exc:  # a failure is data: keep float for this model and say why
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                v["models"][kind] = floats[kind]
                v["notes"].append(f"{kind}: FLOAT (quantize failed: {type(exc).__name__}: {msg[:240]})")
            v["seconds"] += time.perf_counter() - t0
            rm.log(f"   {name} {kind}: {v['notes'][-1] if v['notes'] else 'ok'} ({time.perf_counter() - t0:.1f} s)")
        out.append(v)
    return out


def make_engine(models: dict[str, Path], threads: int) -> Any:
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(
        det_model_path=str(models["det"]), cls_model_path=str(models["cls"]), rec_model_path=str(models["rec"]),
        intra_op_num_threads=threads, inter_op_num_threads=1,
    )  # fmt: skip


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection area over the smaller box's area, for ``(x0, y0, x1, y1)`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / max(1e-9, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


def page_lines(page: op.Page, result: Any) -> tuple[list[str], int]:
    """RapidOCR's boxes assigned to the page's lines: each line's text (boxes left to right), stray characters."""
    found: list[list[tuple[float, str]]] = [[] for _ in page.lines]
    stray = 0
    for box, text, _score in result or []:
        pts = np.asarray(box, dtype=np.float64)
        b = (pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max())
        scores = [_overlap(b, ln.box) for ln in page.lines]
        best = int(np.argmax(scores)) if scores else -1
        if best < 0 or scores[best] < 0.3:
            stray += len(text)
        else:
            found[best].append((b[0], text))
    return [" ".join(t for _, t in sorted(f)) for f in found], stray


def char_accuracy(pred: Sequence[Sequence[str]], ref: Sequence[Sequence[str]], stray: Sequence[int]) -> float:
    """``1 - errors / reference characters`` over all pages' lines (``stray``: inserted characters per page)."""
    errs = sum(op.edit_distance(p, r) for pp, rr in zip(pred, ref, strict=True) for p, r in zip(pp, rr, strict=True))
    total = sum(len(r) for rr in ref for r in rr)
    return 1.0 - (errs + sum(stray)) / max(1, total)


class PageCycle:
    """One pipeline call per call, on the next evaluation page in turn."""

    def __init__(self, engine: Any, pages: Sequence[op.Page]) -> None:
        self.engine, self.images, self.i = engine, [p.bgr for p in pages], 0

    def __call__(self) -> object:
        img = self.images[self.i % len(self.images)]
        self.i += 1
        return self.engine(img)


def measure(variants: list[dict[str, Any]], pages: list[op.Page], args: argparse.Namespace) -> None:
    """Accuracy (one untimed pass per page), then interleaved pipeline timing; fills each variant dict."""
    from tensorslim.benchmark.latency import interleaved_runs, latency_stats, paired_ratio_ci

    engines = [make_engine(v["models"], args.threads) for v in variants]
    truth = [[ln.text for ln in p.lines] for p in pages]
    for v, eng in zip(variants, engines, strict=True):
        per_page = [page_lines(p, eng(p.bgr)[0]) for p in pages]
        v["lines"] = [lines for lines, _ in per_page]
        v["stray"] = [s for _, s in per_page]
        v["char_acc_truth"] = char_accuracy(v["lines"], truth, v["stray"])
        v["lines_found"] = sum(bool(t) for page in v["lines"] for t in page) / max(1, sum(len(t) for t in truth))
    for v in variants:
        extra = [abs(a - b) for a, b in zip(v["stray"], variants[0]["stray"], strict=True)]
        v["char_acc_float"] = char_accuracy(v["lines"], variants[0]["lines"], extra)

    fns = [PageCycle(e, pages) for e in engines]
    interleaved_runs(fns, min_runs=1, max_time_s=0.0, round_size=len(pages), round_warmup=0)  # warm-up round
    for f in fns:  # every variant restarts at page 0, so each turn covers the same pages
        f.i = 0
    samples = interleaved_runs(
        fns, min_runs=args.min_rounds * len(pages), max_time_s=args.seconds * len(fns), round_size=len(pages),
        round_warmup=0,
    )  # fmt: skip
    for v, s in zip(variants, samples, strict=True):
        st = latency_stats(s, round_size=len(pages))
        v.update(p50_ms=st.p50, ci=(st.ci_low, st.ci_high), min_ms=st.min, runs=st.runs)
        v["ratio"] = st.p50 / variants[0]["p50_ms"] if "p50_ms" in variants[0] else 1.0
        v["ratio_ci"] = paired_ratio_ci(samples[0], s, round_size=len(pages)) if v is not variants[0] else None
        v["min_ratio"] = st.min / variants[0]["min_ms"]


def render_table(variants: list[dict[str, Any]], pages: list[op.Page], args: argparse.Namespace) -> str:
    base = sum(rm.model_size_bytes(p) for p in variants[0]["models"].values())
    n_lines = sum(len(p.lines) for p in pages)
    head = ["variant", "models MB", "size x", "page ms [95% CI]", "x float [95% CI]", "min x", "char acc (truth)",
            "char acc (vs float)", "lines read", "tool s", "notes"]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for v in variants:
        size = sum(rm.model_size_bytes(p) for p in v["models"].values())
        rci = v.get("ratio_ci")
        cells = [
            v["name"], f"{size / 1e6:.2f}", f"{size / base:.3f}",
            f"{v['p50_ms']:.0f} [{v['ci'][0]:.0f}, {v['ci'][1]:.0f}]",
            f"{v['ratio']:.2f}" + (f" [{rci[0]:.2f}, {rci[1]:.2f}]" if rci else ""), f"{v['min_ratio']:.2f}",
            f"{v['char_acc_truth']:.4f}", f"{v['char_acc_float']:.4f}", f"{v['lines_found']:.3f}",
            f"{v['seconds']:.1f}", "; ".join(v["notes"]).replace("|", "/"),
        ]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    fonts = ", ".join("Pillow default" if f is None else f.name for f in op.font_files())
    h, w = op.PAGE_SIZE
    intro = (
        f"RapidOCR pipeline (det + cls + rec, `rapidocr_onnxruntime` engine) on {len(pages)} rendered {w}x{h} pages "
        f"({n_lines} text lines; fonts: {fonts}), {args.threads} intra-op threads per session; calibration "
        f"{args.calib_pages} other pages. Latency per page: median over {variants[0]['runs']} runs per variant, "
        "interleaved round robin; `min x` is the ratio of the fastest runs. `lines read`: share of rendered lines "
        "with some text assigned."
    )
    return intro + "\n\n" + "\n".join(rows) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI: 2 pages, 2 calibration pages, a few seconds per variant")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads per ONNX Runtime session (default 2)")
    p.add_argument("--pages", type=int, help="evaluation pages [16; quick 2]")
    p.add_argument("--calib-pages", type=int, help="calibration pages, different seeds [24; quick 2]")
    p.add_argument("--max-calib", type=int, help="most calibration images per model (rec: a third, 3x as wide) [256; quick 32]")
    p.add_argument("--seconds", type=float, help="timing budget per variant, s [60; quick 3]")
    p.add_argument("--min-rounds", type=int, help="fewest turns over all pages per variant [5; quick 1]")
    p.add_argument("--seed", type=int, default=1, help="evaluation pages' seed; calibration uses seed + 1000")
    p.add_argument("--json", type=Path, help="write every figure (and each variant's text) here")
    p.add_argument("--keep", type=Path, help="write calibration folders and models here instead of a temp folder")
    args = p.parse_args(argv)
    q = args.quick
    defaults = {"pages": (16, 2), "calib_pages": (24, 2), "max_calib": (256, 32), "seconds": (60.0, 3.0),
                "min_rounds": (5, 1)}  # fmt: skip
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if q else full)
    if args.threads < 1 or args.pages < 1 or args.calib_pages < 1 or args.max_calib < 1:
        p.error("--threads, --pages, --calib-pages and --max-calib must be at least 1")
    if args.threads > (os.cpu_count() or 1):
        p.error(f"--threads {args.threads}: RapidOCR ignores more threads than CPUs ({os.cpu_count()})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        variants = build_variants(args, work)
        pages = op.render_pages(args.pages, seed=args.seed)
        rm.log(f"timing {len(variants)} pipelines on {len(pages)} pages, ~{args.seconds:.0f} s each")
        measure(variants, pages, args)
        table = render_table(variants, pages, args)
    print(table, flush=True)
    if args.json:
        keep = ("name", "notes", "seconds", "p50_ms", "ci", "min_ms", "runs", "ratio", "ratio_ci", "min_ratio",
                "char_acc_truth", "char_acc_float", "lines_found", "lines", "stray")  # fmt: skip
        payload = {"threads": args.threads, "pages": args.pages, "calib_pages": args.calib_pages,
                   "truth": [[ln.text for ln in p.lines] for p in pages],
                   "variants": [{k: v[k] for k in keep} | {"models": {k: str(m) for k, m in v["models"].items()}}
                                for v in variants]}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=1))
    rm.log(f"done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
