"""Side-by-side benchmark of a float MatMul chain and its int8-weight (DequantizeLinear) twin.

Builds both models in a temporary directory, runs :func:`tensorslim.benchmark.benchmark_models` on them
(interleaved timing, subprocess memory), prints the rich table and the ratios against the float model,
and checks that the int8-weight model still computes nearly the same outputs.

Usage::

    python benchmarks/bench_harness.py            # 4 x 1024x1024 layers, 3 s per model
    python benchmarks/bench_harness.py --quick    # 4 x 512x512 layers, well under 20 s
    python benchmarks/bench_harness.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from tensorslim.benchmark import benchmark_models, render_bench_table

OPSET = 17


def _weights(layers: int, dim: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32) for _ in range(layers)]


def _model(nodes: list[onnx.NodeProto], inits: list[TensorProto], dim: int, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_float(weights: list[np.ndarray], path: Path) -> Path:
    """x @ W0 -> Relu -> @ W1 -> Relu ... -> y with float32 weights."""
    nodes, inits, cur = [], [], "x"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]))
        cur = "y" if i == len(weights) - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [cur]))
    onnx.save(_model(nodes, inits, weights[0].shape[0], "float_chain"), str(path))
    return path


def build_int8(weights: list[np.ndarray], path: Path) -> Path:
    """Same chain, weights stored as int8 (symmetric, per output column) + DequantizeLinear: 4x smaller."""
    nodes, inits, cur = [], [], "x"
    for i, w in enumerate(weights):
        scale = (np.abs(w).max(axis=0) / 127.0).astype(np.float32)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        inits += [
            numpy_helper.from_array(q, f"q{i}"),
            numpy_helper.from_array(scale, f"s{i}"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"z{i}"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", [f"q{i}", f"s{i}", f"z{i}"], [f"w{i}"], axis=1))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]))
        cur = "y" if i == len(weights) - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [cur]))
    onnx.save(_model(nodes, inits, weights[0].shape[0], "int8_weight_chain"), str(path))
    return path


def _max_rel_error(a: Path, b: Path, x: np.ndarray) -> float:
    import onnxruntime as ort

    ya = ort.InferenceSession(str(a), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    yb = ort.InferenceSession(str(b), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return float(np.abs(ya - yb).max() / max(float(np.abs(ya).max()), 1e-12))


def main(argv: list[str] | None = None) -> int:
    """Build, benchmark and report; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small models and short timing (< 20 s)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=None, help="layer width (default 1024, 512 with --quick)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads, 0 = onnxruntime default")
    ap.add_argument("--time", type=float, default=None, help="timing budget per model in s")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    args = ap.parse_args(argv)
    dim = args.dim or (512 if args.quick else 1024)
    max_time = args.time if args.time is not None else (1.0 if args.quick else 3.0)

    console = Console()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tensorslim-harness-") as tmp:
        weights = _weights(args.layers, dim, seed=0)
        fp32 = build_float(weights, Path(tmp) / "chain_fp32.onnx")
        int8 = build_int8(weights, Path(tmp) / "chain_int8w.onnx")
        report = benchmark_models(
            [fp32, int8], threads=args.threads, batch_size=args.batch, max_time_s=max_time, min_runs=20
        )
        rel_err = _max_rel_error(fp32, int8, np.random.default_rng(1).standard_normal((args.batch, dim), "f4"))

    console.print(render_bench_table(report, title=f"{args.layers} x {dim}x{dim} MatMul chain, batch {args.batch}"))
    fp, q = report.models
    ratios = {
        "file size": report.ratio("file_bytes")[1],
        "weight bytes": report.ratio("weight_bytes")[1],
        "p50 latency": report.ratio("p50_ms")[1],
        "p99 latency": report.ratio("p99_ms")[1],
        "throughput": report.ratio("throughput")[1],
        "session memory": report.ratio("session_rss_bytes")[1],
    }
    console.print(f"[bold]{q.name} vs {fp.name}[/bold]")
    for label, r in ratios.items():
        console.print(f"  {label:<15} {'n/a' if r is None else f'{r:.3f}x'}")
    ci_overlap = not (q.p50_ci_high_ms < fp.p50_ci_low_ms or fp.p50_ci_high_ms < q.p50_ci_low_ms)
    console.print(f"  p50 95% CIs overlap: {ci_overlap}; max relative output error: {rel_err:.2e}")
    console.print(f"  runs: {fp.runs} each (interleaved), wall {time.perf_counter() - t0:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        console.print(f"  report written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
