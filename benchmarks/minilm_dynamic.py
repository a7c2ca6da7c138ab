"""Dynamic-range int8 quantization on real models: MiniLM (all-MiniLM-L6-v2) and RapidOCR.

Compares the float model, ONNX Runtime's ``quantize_dynamic`` (per tensor and per channel) and the
tensorslim ``DynamicQuantConfig`` variants, and prints one table per model family:

* MiniLM: size on disk (and ratio to float), latency at batch 1 and batch 32 (sequence length 128,
  padded real sentences, all variants timed in the same run, interleaved round robin), mean and min
  cosine of mean-pooled, L2-normalised embeddings vs float on real sentences, quantization tool time.
* RapidOCR det / rec / cls: size ratio to float, whether the quantized model runs in ONNX Runtime on
  a random input of a valid shape, and its output cosine vs float.

Usage::

    python benchmarks/minilm_dynamic.py                 # full run (1,000 sentences)
    python benchmarks/minilm_dynamic.py --quick         # CI: 64 sentences, few timing runs
    python benchmarks/minilm_dynamic.py --per-matmul    # also: which MatMul hurts cosine most
    python benchmarks/minilm_dynamic.py --json out.json

Nothing is downloaded: the models and sentences come from installed packages (see realmodels.py).
Exports and quantized models are cached under ``benchmarks/.cache/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import realmodels as rm

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"

# (label, DynamicQuantConfig keyword arguments); None means "the default config".
TENSORSLIM_VARIANTS: list[tuple[str, dict[str, Any] | None]] = [
    ("tensorslim default", None),
    ("tensorslim weight_only", {"form": "weight_only"}),
    ("tensorslim integer, no rotation", {"form": "integer", "rotation": "none"}),
    ("tensorslim integer per_tensor", {"form": "integer", "granularity": "per_tensor"}),
    ("tensorslim rotation block 16", {"rotation_block": 16}),
    ("tensorslim weight-only DequantizeLinear", {"form": "weight_only", "weight_encoding": "dequantize_linear"}),
]


@dataclass
class Variant:
    """One model under test and everything measured about it."""

    name: str
    path: Path | None = None
    error: str | None = None
    tool_seconds: float | None = None
    size_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    cosine: dict[str, float] | None = None
    latency_b1: dict[str, float] | None = None
    latency_b32: dict[str, float] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "error": self.error,
            "tool_seconds": self.tool_seconds,
            "size_bytes": self.size_bytes,
            "notes": self.notes,
            "cosine": self.cosine,
            "latency_b1": self.latency_b1,
            "latency_b32": self.latency_b32,
            "details": self.details,
        }


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _tensorslim_api() -> tuple[Callable[..., Any], type] | str:
    """Return ``(quantize, DynamicQuantConfig)`` or an error message if tensorslim lacks them."""
    try:
        from tensorslim import DynamicQuantConfig, quantize
    except Exception as exc:
        return f"tensorslim API unavailable ({_short_error(exc)})"
    return quantize, DynamicQuantConfig


def _summarise_records(records: Any) -> dict[str, Any]:
    """Count per-weight actions in a tensorslim result's ``records`` (dataclasses or dicts)."""
    actions: Counter[str] = Counter()
    before = after = 0
    for rec in records or []:
        get = rec.get if isinstance(rec, dict) else (lambda k, r=rec: getattr(r, k, None))
        actions[str(get("action"))] += 1
        before += int(get("bytes_before") or 0)
        after += int(get("bytes_after") or 0)
    return {"actions": dict(actions), "weight_bytes_before": before, "weight_bytes_after": after}


def run_tensorslim(src: Path, dst: Path, kwargs: dict[str, Any] | None, name: str) -> Variant:
    """Quantize ``src`` with tensorslim; failures become the variant's ``error``."""
    var = Variant(name)
    api = _tensorslim_api()
    if isinstance(api, str):
        var.error = api
        return var
    quantize, config_cls = api
    dst.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        config = config_cls() if kwargs is None else config_cls(**kwargs)
        res = quantize(str(src), str(dst), config=config)
    except Exception as exc:
        var.tool_seconds = time.perf_counter() - t0
        var.error = _short_error(exc)
        var.details["traceback"] = traceback.format_exc()[-2000:]
        return var
    var.tool_seconds = time.perf_counter() - t0
    out = Path(getattr(res, "output_path", None) or dst)
    if not out.is_file():
        var.error = f"no model written at {out}"
        return var
    var.path = out
    var.size_bytes = rm.model_size_bytes(out)
    summary = _summarise_records(getattr(res, "records", None))
    var.details["records"] = summary
    if summary["actions"]:
        var.notes.append(", ".join(f"{k}={v}" for k, v in sorted(summary["actions"].items())))
    return var


def _merge_parallel_matmuls(src: Path, dst: Path) -> Path | str:
    """Write ``src`` with its parallel MatMuls (Q/K/V) merged (``MergeMatMulPass``), or return an error."""
    try:
        import onnx

        from tensorslim.passes.merge_matmul import MergeMatMulPass

        result = MergeMatMulPass()(onnx.load(str(src)))
        onnx.save(result.model, str(dst))
    except Exception as exc:
        return f"merge failed ({_short_error(exc)})"
    return dst


def run_ort(src: Path, dst: Path, per_channel: bool, name: str) -> Variant:
    """Quantize ``src`` with ONNX Runtime's ``quantize_dynamic`` (QInt8), recording what it did."""
    var = Variant(name)
    dst.unlink(missing_ok=True)
    res = rm.ort_quantize_dynamic(src, dst, per_channel=per_channel)
    var.tool_seconds = res["seconds"]
    var.details["ort"] = res
    if not res["ok"]:
        var.error = res["error"]
        return var
    var.path = dst
    var.size_bytes = res["size_bytes"]
    ops = res.get("integer_ops", {})
    if ops:
        var.notes.append(", ".join(f"{k}={v}" for k, v in sorted(ops.items())))
    if res.get("constant_weights_quantized_at_run_time"):
        n_const = res["constant_weights_quantized_at_run_time"]
        var.notes.append(f"{n_const} Constant weights re-quantized per run")
    return var


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a Markdown table (pasteable into the README)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def _note_identical_files(variants: Sequence[Variant]) -> None:
    """Note variants whose model file is byte-identical to an earlier one (their timings show noise)."""
    import hashlib

    first: dict[str, str] = {}
    for var in variants:
        if var.path is None or not var.path.is_file():
            continue
        digest = hashlib.sha256(var.path.read_bytes()).hexdigest()
        var.details["sha256"] = digest
        if digest in first:
            var.notes.append(f"same file as '{first[digest]}'")
        else:
            first[digest] = var.name


# --------------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------------


def bench_minilm(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Quantize, measure and tabulate MiniLM; returns the figures for the JSON report."""
    work = cache / "minilm_dynamic"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    float_path = rm.export_minilm(cache)
    export_s = time.perf_counter() - t0
    rm.log(f"[minilm] float model {float_path} ({export_s:.1f}s incl. export/cache check)")

    base = Variant("float (fp32)", path=float_path, size_bytes=rm.model_size_bytes(float_path))
    variants = [base]
    rm.log("[minilm] ORT quantize_dynamic ...")
    for per_channel, gran in ((False, "per_tensor"), (True, "per_channel")):
        label = f"ORT quantize_dynamic {gran}"
        variants.append(run_ort(float_path, work / f"ort_{gran}.onnx", per_channel, label))
    for label, kwargs in TENSORSLIM_VARIANTS:
        rm.log(f"[minilm] {label} ...")
        fname = label.replace(" ", "_") + ".onnx"
        variants.append(run_tensorslim(float_path, work / fname, kwargs, label))
    label = "tensorslim default, Q/K/V merged"
    rm.log(f"[minilm] {label} ...")
    merged = _merge_parallel_matmuls(float_path, work / "float_qkv_merged.onnx")
    if isinstance(merged, str):
        variants.append(Variant(label, error=merged))
    else:
        variants.append(run_tensorslim(merged, work / "tensorslim_default_qkv_merged.onnx", None, label))

    _note_identical_files(variants)
    tokenizer = rm.minilm_tokenizer()
    sentences = rm.load_sentences(args.sentences)
    rm.log(f"[minilm] embeddings on {len(sentences)} sentences ...")
    ref = rm.mean_pooled_embeddings(rm.make_session(float_path, args.threads), tokenizer, sentences)
    base.cosine = rm.cosine_stats(ref, ref)
    for var in variants[1:]:
        if var.path is None:
            continue
        try:
            sess = rm.make_session(var.path, args.threads)
            emb = rm.mean_pooled_embeddings(sess, tokenizer, sentences)
            var.cosine = rm.cosine_stats(ref, emb)
        except Exception as exc:
            var.error = f"does not run in ORT: {_short_error(exc)}"

    timed = [v for v in variants if v.path is not None and v.error is None]
    timing_sents = rm.load_sentences(32, offset=args.sentences)
    for batch, runs, attr in ((1, args.runs_b1, "latency_b1"), (32, args.runs_b32, "latency_b32")):
        feeds = rm.padded_feeds(tokenizer, timing_sents[:batch], seq_len=128)
        rm.log(f"[minilm] timing batch {batch} x 128, {runs} interleaved runs x {len(timed)} models ...")
        stats = rm.time_sessions(
            [v.path for v in timed], feeds, threads=args.threads, runs=runs, denormal_as_zero=args.denormal_as_zero
        )
        for var, st in zip(timed, stats, strict=True):
            setattr(var, attr, st)

    headers = [
        "variant", "size MB", "size x", "b1 ms", "b1 x", "b1 min x", "b32 ms", "b32 x", "b32 min x",
        "cos mean", "cos min", "tool s", "notes",
    ]  # fmt: skip
    rows = []
    for v in variants:
        b1 = v.latency_b1["median_ms"] if v.latency_b1 else None
        b32 = v.latency_b32["median_ms"] if v.latency_b32 else None
        assert base.latency_b1 is not None and base.latency_b32 is not None
        note = "ERROR: " + v.error if v.error else "; ".join(v.notes)
        rows.append(
            [
                v.name,
                _fmt(v.size_bytes / 1e6 if v.size_bytes else None, ".2f"),
                _fmt(_ratio(v.size_bytes, base.size_bytes), ".3f"),
                _fmt(b1, ".2f"),
                _fmt(_ratio(b1, base.latency_b1["median_ms"]), ".2f"),
                _fmt(_ratio(v.latency_b1["min_ms"], base.latency_b1["min_ms"]) if v.latency_b1 else None, ".2f"),
                _fmt(b32, ".1f"),
                _fmt(_ratio(b32, base.latency_b32["median_ms"]), ".2f"),
                _fmt(
                    _ratio(v.latency_b32["min_ms"], base.latency_b32["min_ms"]) if v.latency_b32 else None,
                    ".2f",
                ),
                _fmt(v.cosine["mean"] if v.cosine else None, ".5f"),
                _fmt(v.cosine["min"] if v.cosine else None, ".5f"),
                _fmt(v.tool_seconds, ".2f"),
                note,
            ]
        )
    print(
        f"\nMiniLM (all-MiniLM-L6-v2) dynamic int8 | {len(sentences)} sentences | "
        f"latency: median of interleaved runs ({args.runs_b1} at b1, {args.runs_b32} at b32), seq 128, "
        f"{args.threads} threads{', denormals flushed to zero' if args.denormal_as_zero else ''} | x = ratio to float\n"
    )
    print_table(headers, rows)
    spread = {k: getattr(base, k) for k in ("latency_b1", "latency_b32")}
    print(
        "\nms = median; 'x' = median ratio, 'min x' = ratio of the fastest runs (less sensitive to load on a "
        "shared machine). Float spread min/median/p90: "
        + ", ".join(
            f"b{k[9:]} {v['min_ms']:.0f}/{v['median_ms']:.0f}/{v['p90_ms']:.0f} ms" for k, v in spread.items() if v
        )
    )
    return {
        "float_model": str(float_path),
        "parity": json.loads(float_path.with_suffix(".parity.json").read_text())
        if float_path.with_suffix(".parity.json").is_file()
        else None,
        "sentences": len(sentences),
        "variants": [v.as_dict() for v in variants],
    }


# --------------------------------------------------------------------------------------------
# Per-MatMul sensitivity (ORT, per tensor)
# --------------------------------------------------------------------------------------------


def _role(node_name: str) -> str:
    for key in ("query", "key", "value", "attention/output", "intermediate", "output"):
        if f"/{key}/" in node_name:
            return key
    return "other"


def bench_per_matmul(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Which MatMul's dynamic quantization hurts cosine most: ORT per tensor, excluding one at a time."""
    import onnx

    work = cache / "minilm_dynamic"
    float_path = rm.export_minilm(cache)
    gran = args.per_matmul_granularity
    per_channel = gran == "per_channel"
    full = work / f"ort_{gran}.onnx"
    if not full.is_file():
        rm.ort_quantize_dynamic(float_path, full, per_channel=per_channel)
    model = onnx.load(str(float_path), load_external_data=False)
    init_names = {i.name for i in model.graph.initializer}
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in init_names]
    tokenizer = rm.minilm_tokenizer()
    sentences = rm.load_sentences(args.per_matmul_sentences)
    ref = rm.mean_pooled_embeddings(rm.make_session(float_path, args.threads), tokenizer, sentences)

    def cos_of(path: Path) -> dict[str, float]:
        return rm.cosine_stats(
            ref, rm.mean_pooled_embeddings(rm.make_session(path, args.threads), tokenizer, sentences)
        )

    all_q = cos_of(full)
    # Decomposition: int8 weights alone (float compute) vs. the full dynamic int8 model.
    fq = work / "weights_fake_quant.onnx"
    rm.fake_quantize_matmul_weights(float_path, fq, per_channel=per_channel)
    weights_only = cos_of(fq)
    fq.unlink(missing_ok=True)
    tmp = work / "per_matmul_tmp.onnx"
    rows: list[dict[str, Any]] = []
    groups: dict[str, list[str]] = {}
    for name in matmuls:
        groups.setdefault(_role(name), []).append(name)
    jobs = [(name, [name]) for name in matmuls] + [(f"ALL {r} ({len(g)})", g) for r, g in groups.items()]
    rm.log(f"[per-matmul] {len(jobs)} quantizations x {len(sentences)} sentences ...")
    for label, excluded in jobs:
        res = rm.ort_quantize_dynamic(float_path, tmp, per_channel=per_channel, nodes_to_exclude=excluded)
        if not res["ok"]:
            rows.append({"excluded": label, "error": res["error"]})
            continue
        c = cos_of(tmp)
        rows.append(
            {
                "excluded": label,
                "cos_mean": c["mean"],
                "cos_min": c["min"],
                "delta_mean": c["mean"] - all_q["mean"],
                "delta_min": c["min"] - all_q["min"],
            }
        )
    tmp.unlink(missing_ok=True)
    singles = sorted(
        (r for r in rows if "cos_mean" in r and not r["excluded"].startswith("ALL")),
        key=lambda r: -r["delta_mean"],
    )
    grouped = [r for r in rows if r["excluded"].startswith("ALL")]
    print(
        f"\nPer-MatMul sensitivity (ORT quantize_dynamic {gran}, {len(sentences)} sentences): all "
        f"{len(matmuls)} weight MatMuls quantized -> cos mean {all_q['mean']:.5f}, min {all_q['min']:.5f}; "
        f"int8 {gran} weights alone (float activations) -> mean {weights_only['mean']:.5f}, "
        f"min {weights_only['min']:.5f}.\n"
        f"Gain from leaving ONE MatMul in float (top {args.per_matmul_top}), then a role in all layers:\n"
    )
    table = [
        [
            r["excluded"],
            f"{r['cos_mean']:.5f}",
            f"{r['delta_mean']:+.5f}",
            f"{r['cos_min']:.5f}",
            f"{r['delta_min']:+.5f}",
        ]
        for r in singles[: args.per_matmul_top] + sorted(grouped, key=lambda r: -r.get("delta_mean", 0))
        if "cos_mean" in r
    ]
    print_table(["left in float", "cos mean", "d mean", "cos min", "d min"], table)
    return {
        "granularity": gran,
        "all_quantized": all_q,
        "int8_weights_only": weights_only,
        "sentences": len(sentences),
        "rows": rows,
    }


# --------------------------------------------------------------------------------------------
# RapidOCR
# --------------------------------------------------------------------------------------------


def _run_output(path: Path, feed: np.ndarray, threads: int) -> np.ndarray:
    sess = rm.make_session(path, threads)
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: feed})[0], dtype=np.float32)


def bench_rapidocr(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Quantize the RapidOCR det / rec / cls models and check that the results run and agree."""
    work = cache / "rapidocr_dynamic"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    rows = []
    rng = np.random.default_rng(0)
    for kind, src in rm.rapidocr_models().items():
        rm.log(f"[rapidocr] {kind}: {src.name}")
        float_size = rm.model_size_bytes(src)
        shape = rm.input_shape(rm.make_session(src, args.threads), rm.RAPIDOCR_DEFAULT_SHAPES[kind])
        feed = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
        ref = _run_output(src, feed, args.threads)
        entries = [
            run_ort(src, work / f"{kind}_ort_per_tensor.onnx", False, "ORT quantize_dynamic per_tensor"),
            run_tensorslim(src, work / f"{kind}_tensorslim_default.onnx", None, "tensorslim default"),
        ]
        for var in entries:
            if var.path is not None:
                try:
                    out = _run_output(var.path, feed, args.threads)
                    var.details["runs_in_ort"] = True
                    var.cosine = rm.cosine_stats(ref.reshape(1, -1), out.reshape(1, -1))
                    var.details["max_abs_diff"] = float(np.abs(out - ref).max())
                    var.details["ref_max_abs"] = float(np.abs(ref).max())
                except Exception as exc:
                    var.details["runs_in_ort"] = False
                    var.error = f"does not run in ORT: {_short_error(exc)}"
            rows.append(
                [
                    kind,
                    f"{float_size / 1e6:.2f}",
                    "x".join(map(str, shape)),
                    var.name,
                    _fmt(_ratio(var.size_bytes, float_size), ".3f"),
                    {True: "yes", False: "NO"}.get(var.details.get("runs_in_ort"), "-"),
                    _fmt(var.cosine["mean"] if var.cosine else None, ".5f"),
                    _fmt(var.details.get("max_abs_diff"), ".2g"),
                    _fmt(var.tool_seconds, ".2f"),
                    "ERROR: " + var.error if var.error else "; ".join(var.notes),
                ]
            )
        results[kind] = {
            "model": str(src),
            "float_size_bytes": float_size,
            "input_shape": list(shape),
            "variants": [v.as_dict() for v in entries],
        }
    print("\nRapidOCR (weights in Constant nodes) dynamic int8 | random uniform[-1,1] input | x = ratio to float\n")
    headers = [
        "model",
        "float MB",
        "input",
        "variant",
        "size x",
        "runs",
        "out cos",
        "max|diff|",
        "tool s",
        "notes",
    ]
    print_table(headers, rows)
    return results


# --------------------------------------------------------------------------------------------


def _tensorslim_fingerprint() -> dict[str, Any]:
    """Version, location and a hash of the tensorslim sources, so results can be tied to the code."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec("tensorslim")
    if spec is None or not spec.submodule_search_locations:
        return {"installed": False}
    root = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    try:
        from tensorslim import __version__ as version
    except Exception:
        version = None
    return {"installed": True, "version": version, "path": str(root), "src_sha256": digest.hexdigest()[:16]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` lowers the sentence count and timing runs for CI."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI mode: 64 sentences, few timing runs")
    p.add_argument("--sentences", type=int, help="sentences for the cosine (default 1000, quick 64)")
    p.add_argument("--runs-b1", type=int, help="interleaved timing runs at batch 1 (default 60, quick 10)")
    p.add_argument("--runs-b32", type=int, help="interleaved timing runs at batch 32 (default 12, quick 2)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    p.add_argument(
        "--denormal-as-zero",
        action="store_true",
        help="flush denormals to zero in every timed session (session.set_denormal_as_zero), float included",
    )
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where exports/quantized models go")
    p.add_argument("--skip-rapidocr", action="store_true", help="MiniLM only")
    p.add_argument("--per-matmul", action="store_true", help="also rank MatMuls by cosine damage (ORT)")
    p.add_argument("--per-matmul-sentences", type=int, default=256)
    p.add_argument("--per-matmul-top", type=int, default=12)
    p.add_argument("--per-matmul-granularity", choices=["per_tensor", "per_channel"], default="per_tensor")
    p.add_argument("--json", type=Path, help="write all figures to this JSON file")
    args = p.parse_args(argv)
    quick = args.quick
    args.sentences = args.sentences or (64 if quick else 1000)
    args.runs_b1 = args.runs_b1 or (10 if quick else 60)
    args.runs_b32 = args.runs_b32 or (2 if quick else 12)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the process exit code."""
    args = parse_args(argv)
    cache = args.cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    import onnxruntime

    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "onnxruntime": onnxruntime.__version__,
            "sentence_pool": rm.sentence_pool_size(),
            "tensorslim": _tensorslim_fingerprint(),
        },
    }
    rm.log(f"tensorslim: {report['environment']['tensorslim']}")
    report["minilm"] = bench_minilm(args, cache)
    if args.per_matmul:
        report["per_matmul"] = bench_per_matmul(args, cache)
    if not args.skip_rapidocr:
        report["rapidocr"] = bench_rapidocr(args, cache)
    report["total_seconds"] = time.perf_counter() - t0
    print(f"\ntotal {report['total_seconds']:.1f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        rm.log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
