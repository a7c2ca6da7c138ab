"""Dynamic-range int8 (the default ``tensorslim quantize``) on the three RapidOCR models: size, fidelity, latency.

For each of det / rec / cls (``rapidocr-onnxruntime``; weights in ``Constant`` nodes):

* size on disk and ratio to the float file, with a byte account of the output (int8 codes, other constants,
  graph structure: nodes, attributes and names);
* fidelity on real inputs (rendered text pages and lines, preprocessed as RapidOCR does; see ``suite.py``):
  mean and min cosine of each sample's output vs float;
* latency at batch 1 (interleaved round robin with the float model, median ratio; a quick check, the machine
  may be shared).

Usage::

    python benchmarks/rapidocr_dynamic.py            # 8 pages, 64 lines, 20 timing rounds
    python benchmarks/rapidocr_dynamic.py --quick    # 2 pages, 16 lines, 5 timing rounds
    python benchmarks/rapidocr_dynamic.py --only cls --json out.json
    python benchmarks/rapidocr_dynamic.py --plain    # also DynamicQuantConfig(compact=False), the float32 layout

Quantized models are written to ``benchmarks/.cache/rapidocr_dynamic/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import realmodels as rm

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "rapidocr_dynamic"


def byte_account(path: Path) -> dict[str, int]:
    """Where the bytes of an ONNX file go: tensor payloads by type, and everything else (graph structure)."""
    import onnx

    model = onnx.load(str(path))
    acc: Counter[str] = Counter()

    def payload(t: onnx.TensorProto) -> int:
        return len(t.raw_data) if t.raw_data else t.ByteSize()

    for t in model.graph.initializer:
        acc[f"tensor {onnx.helper.tensor_dtype_to_np_dtype(t.data_type)}"] += payload(t)
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                acc[f"tensor {onnx.helper.tensor_dtype_to_np_dtype(a.t.data_type)}"] += payload(a.t)
    acc["names"] = sum(len(n.name) + sum(len(x) for x in [*n.input, *n.output]) for n in model.graph.node)
    acc["names"] += sum(len(t.name) for t in model.graph.initializer)
    total = path.stat().st_size
    acc["structure (other)"] = total - sum(acc.values())
    return {"total": total, "nodes": len(model.graph.node), **dict(acc)}


def _cos(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    a, b = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
    return (a * b).sum(1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30, None)


def model_inputs(quick: bool) -> dict[str, np.ndarray]:
    """Real inputs for det (rendered pages), rec and cls (rendered lines, half of them rotated for cls)."""
    import suite

    n_pages, n_lines = (2, 16) if quick else (8, 64)
    lines, _ = suite.render_lines(n_lines, seed=3)
    flip = np.arange(n_lines) % 2 == 1
    return {
        "det": suite.render_pages(n_pages, seed=1),
        "rec": suite._rec_inputs(lines, (3, 48, 320)),
        "cls": suite._cls_inputs(
            [im[::-1, ::-1] if f else im for im, f in zip(lines, flip, strict=True)], (3, 48, 192)
        ),
    }


def run_model(
    key: str, src: Path, x: np.ndarray, runs: int, config: Any = None, label: str = "default"
) -> dict[str, Any]:
    """Quantize ``src`` with the default config (or ``config``) and measure it against float."""
    import tensorslim as ts

    CACHE.mkdir(parents=True, exist_ok=True)
    dst = CACHE / f"{key}_tensorslim_{label}.onnx"
    t0 = time.perf_counter()
    result = ts.quantize(src, dst, config=config)
    tool_s = time.perf_counter() - t0
    outs = []
    for path in (src, dst):
        sess = rm.make_session(path)
        name = sess.get_inputs()[0].name
        outs.append(np.concatenate([sess.run(None, {name: x[i : i + 4]})[0] for i in range(0, len(x), 4)]))
    cos = _cos(*outs)
    stats = rm.time_sessions([src, dst], {"x": x[:1]}, runs=runs, warmup=2)
    float_size = src.stat().st_size
    done = [r for r in result.records if not r.skipped]
    return {
        "model": key,
        "variant": label,
        "float_bytes": float_size,
        "quantized_bytes": dst.stat().st_size,
        "size_ratio": round(dst.stat().st_size / float_size, 4),
        "cos_mean": float(cos.mean()),
        "cos_min": float(cos.min()),
        "samples": len(x),
        "b1_float_ms": stats[0]["median_ms"],
        "b1_quant_ms": stats[1]["median_ms"],
        "b1_ratio": round(stats[1]["median_ms"] / stats[0]["median_ms"], 3),
        "weights_quantized": len(done),
        "weights_skipped": len(result.records) - len(done),
        "tool_s": round(tool_s, 2),
        "bytes": byte_account(dst),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 pages, 16 lines, 5 timing rounds")
    p.add_argument("--only", nargs="*", choices=("det", "rec", "cls"), default=None, help="models to run")
    p.add_argument("--runs", type=int, default=None, help="timing rounds (default 20; quick: 5)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--plain", action="store_true", help="also measure DynamicQuantConfig(compact=False)")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 5 if args.quick else 20
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths = rm.rapidocr_models()
    inputs = model_inputs(args.quick)
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig

    variants: list[tuple[str, Any]] = [("default", None)]
    if args.plain:
        variants.append(("plain", DynamicQuantConfig(compact=False)))
    rows = []
    head = f"{'model':5} {'variant':8} {'float KB':>9} {'quant KB':>9} {'size x':>7} {'cos mean':>9} {'cos min':>9}"
    print(head + f" {'b1 x':>6}")
    for key in args.only or ("det", "rec", "cls"):
        for label, config in variants:
            r = run_model(key, paths[key], inputs[key], args.runs, config, label)
            rows.append(r)
            print(
                f"{key:5} {label:8} {r['float_bytes'] / 1e3:9.1f} {r['quantized_bytes'] / 1e3:9.1f} "
                f"{r['size_ratio']:7.3f} {r['cos_mean']:9.5f} {r['cos_min']:9.5f} {r['b1_ratio']:6.2f}",
                flush=True,
            )
            print("      bytes: " + ", ".join(f"{k} {v}" for k, v in r["bytes"].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
