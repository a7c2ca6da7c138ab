"""``tensorslim doctor``: will this model be fast on this machine, and if not, why?

Checks, each a :class:`Finding` with its fix:

* ``isa``: the CPU's integer dot-product instructions (x86 VNNI / AVX512 / AMX, ARM dot-product / i8mm) that
  ONNX Runtime's int8 kernels need to beat float.
* ``unfused-qdq``: ``QuantizeLinear -> DequantizeLinear`` pairs (and weight ``DequantizeLinear`` nodes) that are
  still in ONNX Runtime's *optimized* graph (saved with ``SessionOptions.optimized_model_filepath``), named with
  the op they feed. Each one is a round trip float -> int8 -> float around a float kernel: pure overhead.
* ``int4-accuracy-level``: ``MatMulNBits`` without ``accuracy_level=4`` (float compute instead of int8).
* ``int4-matmulnbits``: ``MatMulNBits`` on x86, where ONNX Runtime's kernels ran slower than float MatMul at every
  ``accuracy_level`` (measured here); tensorslim's ``integer`` int4 kernel keeps the size and runs int8 kernels.
* ``fp16-casts``: float16 compute on a CPU without native fp16 arithmetic: ONNX Runtime inserts ``Cast`` nodes
  (counted in the optimized graph) and runs float32. Float16 weights that are only cast to float32 (folded at
  load) are not float16 compute.
* ``conv-integer``: ``ConvInteger``, slower than float ``Conv`` on ONNX Runtime's CPU kernels (measured here).
* ``s8s8-qoperator``: QOperator ops (``QLinearConv``/``QLinearMatMul``...) with int8 activations on x86.
* ``timing``: with a baseline, both models timed side by side and profiled; the time spent in Q/DQ kernels.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tensorslim.backends.onnx.graph import GraphIndex
from tensorslim.backends.onnx.io import load_model
from tensorslim.diagnostics.provenance import fp16_compute
from tensorslim.errors import InputError

__all__ = ["DoctorReport", "Finding", "conv_integer_slowdown", "doctor", "optimized_graph", "qdq_analysis"]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QGemm", "MatMulInteger", "ConvInteger")
_INTEGER_OPS = (*QOPERATOR_OPS, "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "MatMulNBits")


@dataclass(frozen=True)
class Finding:
    """One thing the doctor found.

    Attributes:
        code: Stable identifier, e.g. ``"unfused-qdq"``.
        severity: ``"ok"``, ``"info"``, ``"warning"`` or ``"error"``.
        message: What was found, with numbers.
        fix: What to do about it (empty when nothing).
        details: Machine-readable facts behind the message.
    """

    code: str
    severity: str
    message: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DoctorReport:
    """Everything ``tensorslim doctor`` found about one model on this machine."""

    model: str
    cpu_model: str
    cpu_flags: tuple[str, ...]
    machine: str
    op_counts: dict[str, int]
    optimized_op_counts: dict[str, int]
    findings: list[Finding] = field(default_factory=list)
    baseline: str | None = None

    @property
    def warnings(self) -> list[Finding]:
        """Findings of severity warning or error."""
        return [f for f in self.findings if f.severity in ("warning", "error")]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (see ``docs/json-schema.md``)."""
        d = asdict(self)
        d["cpu_flags"] = list(self.cpu_flags)
        return d


def _load(path: Path) -> onnx.ModelProto:
    return load_model(path, check=False, external_data=False)


def optimized_graph(path: str | os.PathLike[str], *, threads: int = 1) -> onnx.ModelProto:
    """The graph ONNX Runtime actually runs: the model after its CPU graph optimizations (``ORT_ENABLE_ALL``).

    Raises:
        InputError: ONNX Runtime cannot load the model.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="tensorslim-doctor-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(out)
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        try:
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise InputError(f"{path}: ONNX Runtime cannot load the model ({msg})") from None
        return load_model(out, check=False, external_data=False)


def qdq_analysis(optimized: onnx.ModelProto) -> dict[str, Any]:
    """Q/DQ nodes left in an optimized graph.

    Returns:
        ``pairs`` (activation ``QuantizeLinear -> DequantizeLinear`` chains left unfused), ``pairs_by_consumer``
        (op type the dequantized tensor feeds -> count), ``pairs_by_producer`` (op type whose output was
        quantized -> count), ``weight_dq`` (``DequantizeLinear`` of constant weights left, by consumer),
        ``quantize_linear`` / ``dequantize_linear`` (totals) and up to 20 ``examples`` (Q node, DQ node, consumer).
    """
    g = optimized.graph
    index = GraphIndex(g)
    producer, consumers = index.producer, index.consumers
    inits = {t.name for t in g.initializer}
    by_consumer: Counter[str] = Counter()
    by_producer: Counter[str] = Counter()
    weight_dq: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    pairs = 0
    for n in g.node:
        if n.op_type != "DequantizeLinear":
            continue
        src = producer.get(n.input[0])
        users = consumers.get(n.output[0], [])
        if src is not None and src.op_type == "QuantizeLinear":
            pairs += 1
            q_src = producer.get(src.input[0])
            by_producer[q_src.op_type if q_src is not None else "graph input"] += 1
            for u in users or []:
                by_consumer[u.op_type] += 1
            if len(examples) < 20:
                examples.append(
                    {
                        "quantize": src.name,
                        "dequantize": n.name,
                        "feeds": ",".join(sorted({f"{u.op_type}:{u.name}" for u in users})) or "graph output",
                    }
                )
        elif n.input[0] in inits or src is None or src.op_type == "Constant":
            for u in users:
                weight_dq[u.op_type] += 1
    counts = Counter(n.op_type for n in g.node)
    return {
        "pairs": pairs,
        "pairs_by_consumer": dict(by_consumer.most_common()),
        "pairs_by_producer": dict(by_producer.most_common()),
        "weight_dq": dict(weight_dq.most_common()),
        "quantize_linear": counts["QuantizeLinear"],
        "dequantize_linear": counts["DequantizeLinear"],
        "examples": examples,
    }


def _isa_finding(flags: tuple[str, ...], machine: str, integer_ops: int) -> Finding:
    fl = set(flags)
    x86 = machine.lower() in ("x86_64", "amd64", "i686", "x86")
    if x86:
        have: list[str] = [f for f in ("amx_int8", "avx512_vnni", "avx_vnni", "avx512bw", "avx2") if f in fl]
        fast = bool({"amx_int8", "avx512_vnni", "avx_vnni"} & fl)
        what = "int8 dot-product (VNNI/AMX)"
    else:
        have = [f for f in ("i8mm", "asimddp", "asimd") if f in fl]
        fast = bool({"asimddp", "i8mm"} & fl)
        what = "int8 dot-product (ARM dotprod/i8mm)"
    details = {"relevant_flags": have, "integer_ops": integer_ops, "fast_int8": fast}
    if fast:
        return Finding("isa", "ok", f"this CPU has {what}: {' '.join(have)}", "", details)
    sev = "warning" if integer_ops else "info"
    fix = (
        "int8 compute gains little here: prefer weight-only int8 (tensorslim quantize --form weight_only) "
        "for size, keep float compute, or deploy on a CPU with VNNI/dotprod"
    )
    return Finding(
        "isa",
        sev,
        f"this CPU lacks {what} (has: {' '.join(have) or 'none'}); int8 kernels fall back "
        "to slower multiply-add sequences",
        fix,
        details,
    )


def _zero_point_dtype(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto], index: int) -> int | None:
    if len(node.input) > index and node.input[index] in inits:
        return inits[node.input[index]].data_type
    return None


def conv_integer_slowdown(*, channels: int = 64, size: int = 28, runs: int = 30) -> tuple[float, float]:
    """Time a 3x3 float ``Conv`` and the equivalent ``ConvInteger`` (uint8 x int8) on this machine.

    Returns:
        ``(conv_ms, conv_integer_ms)``, medians of ``runs`` runs.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)

    def build(op: str, x_type: int, w_arr: np.ndarray, y_type: int) -> bytes:
        node = helper.make_node(op, ["x", "w"], ["y"], pads=[1, 1, 1, 1])
        g = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", x_type, [1, channels, size, size])],
            [helper.make_tensor_value_info("y", y_type, None)],
            [numpy_helper.from_array(w_arr, "w")],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m.SerializeToString()

    def median_ms(model: bytes, x: np.ndarray) -> float:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        for _ in range(3):
            s.run(None, {"x": x})
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            s.run(None, {"x": x})
            ts.append((time.perf_counter() - t0) * 1e3)
        return float(np.median(ts))

    xf = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    xq = rng.integers(0, 255, (1, channels, size, size)).astype(np.uint8)
    f = median_ms(build("Conv", onnx.TensorProto.FLOAT, w, TensorProto.FLOAT), xf)
    q = median_ms(
        build("ConvInteger", TensorProto.UINT8, np.clip(w * 40, -127, 127).astype(np.int8), TensorProto.INT32), xq
    )
    return f, q


def _static_findings(
    model: onnx.ModelProto, opt: onnx.ModelProto, flags: tuple[str, ...], machine: str
) -> list[Finding]:
    out: list[Finding] = []
    counts = Counter(n.op_type for n in model.graph.node)
    x86 = machine.lower() in ("x86_64", "amd64", "i686", "x86")
    integer_ops = sum(counts[o] for o in _INTEGER_OPS) + counts["QuantizeLinear"]
    out.append(_isa_finding(flags, machine, integer_ops))

    qa = qdq_analysis(opt)
    if qa["pairs"]:
        feeds = ", ".join(f"{op} x{c}" for op, c in qa["pairs_by_consumer"].items())
        from_ = ", ".join(f"{op} x{c}" for op, c in qa["pairs_by_producer"].items())
        kept = [op for op in qa["pairs_by_consumer"] if op not in ("QuantizeLinear", "DequantizeLinear")]
        only_shape = set(qa["pairs_by_consumer"]) <= {"Shape"}
        fused = sum(1 for n in opt.graph.node if n.op_type in _INTEGER_OPS or n.op_type.startswith("QLinear"))
        few = 4 * qa["pairs"] <= fused  # a few round trips between many fused integer kernels: small overhead
        qa = {**qa, "fused_integer_kernels": fused}
        out.append(
            Finding(
                "unfused-qdq",
                "info" if only_shape or few else "warning",
                f"{qa['pairs']} QuantizeLinear->DequantizeLinear pair(s) left unfused in ONNX Runtime's optimized "
                "graph, "
                f"feeding {feeds} (quantizing outputs of {from_}): each is a float->int8->float round trip around a "
                "float kernel, pure overhead"
                + (
                    " (they only feed Shape: cheap)"
                    if only_shape
                    else f" (next to {fused} fused integer kernels: a small share of the work)"
                    if few
                    else ", the usual reason a QDQ model runs slower than float"
                ),
                "quantize only the ops ONNX Runtime fuses (MatMul/Gemm/Conv: op_types_to_quantize=['MatMul', 'Gemm', "
                f"'Conv']), keep {', '.join(kept[:6]) or 'those ops'} in float, or use dynamic int8 "
                "(tensorslim quantize MODEL -o OUT), whose MatMuls fuse into DynamicQuantizeMatMul",
                qa,
            )
        )
    if qa["weight_dq"]:
        n_wdq = sum(qa["weight_dq"].values())
        out.append(
            Finding(
                "weight-dq",
                "info",
                f"{n_wdq} DequantizeLinear of constant weights run at every inference (feeding "
                f"{', '.join(f'{k} x{v}' for k, v in qa['weight_dq'].items())}): weight-only, float compute",
                "fine for size; for float speed with the same file size use tensorslim's --weight-encoding cast "
                "(folded once at load)",
                {"weight_dq": qa["weight_dq"]},
            )
        )

    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    low = [n.name for n in nbits if next((a.i for a in n.attribute if a.name == "accuracy_level"), 0) != 4]
    if low:
        out.append(
            Finding(
                "int4-accuracy-level",
                "warning",
                f"{len(low)} of {len(nbits)} MatMulNBits without accuracy_level=4: int4 weights are dequantized to "
                "float for every product instead of using int8 compute",
                "set accuracy_level=4 (tensorslim quantize MODEL -o OUT --mode int4 --accuracy-level 4)",
                {"nodes": low[:50]},
            )
        )
    if nbits and x86:
        out.append(
            Finding(
                "int4-matmulnbits",
                "info",
                f"{len(nbits)} MatMulNBits on x86: ONNX Runtime's block-wise kernels ran slower than float MatMul "
                "here at every accuracy_level (MiniLM int4: 1.0-1.3x float; benchmarks/int4_levels.py)",
                "keep the int4 size on int8 kernels: tensorslim quantize MODEL -o OUT --mode int4 --kernel integer "
                "(measured 0.6x float on MiniLM)",
                {"nodes": [n.name for n in nbits][:50]},
            )
        )

    half_ops = fp16_compute(model)
    if half_ops:
        native = (not x86 and bool({"fphp", "asimdhp"} & set(flags))) or (x86 and "avx512_fp16" in flags)
        casts = sum(1 for n in opt.graph.node if n.op_type == "Cast")
        orig_casts = counts["Cast"]
        # with fp16 arithmetic, a cast pair around one op in ten of the fp16 ops is a small cost: info
        few = native and 10 * (casts - orig_casts) <= sum(half_ops.values())
        if not native or casts > orig_casts:
            out.append(
                Finding(
                    "fp16-casts",
                    "info" if few else "warning",
                    f"float16 model on a CPU {'without' if not native else 'with'} native fp16 compute: ONNX Runtime's "
                    f"optimized graph has {casts} Cast nodes ({orig_casts} in the model): it casts to float32 and back "
                    "around kernels it lacks in fp16",
                    "for CPU keep float32 compute with smaller weights: tensorslim quantize MODEL -o OUT "
                    "(int8 weights) or --mode int4; use fp16 on GPUs or ARM CPUs with fp16 arithmetic",
                    {"optimized_casts": casts, "model_casts": orig_casts, "native_fp16": native, "fp16_ops": half_ops},
                )
            )

    inits = {t.name: t for t in model.graph.initializer}
    s8s8 = []
    for n in model.graph.node:
        if n.op_type in ("QLinearConv", "QLinearMatMul"):
            if _zero_point_dtype(n, inits, 2) == onnx.TensorProto.INT8:
                s8s8.append(n.name)
        elif n.op_type in ("QLinearAdd", "QLinearMul") and _zero_point_dtype(n, inits, 2) == onnx.TensorProto.INT8:
            s8s8.append(n.name)
    if s8s8 and x86:
        out.append(
            Finding(
                "s8s8-qoperator",
                "warning",
                f"{len(s8s8)} QOperator node(s) with int8 activations (S8S8) on x86: ONNX Runtime's x86 kernels are "
                "built for uint8 activations x int8 weights and run S8S8 QOperator slowly",
                "re-quantize with activation_type=QUInt8 (U8S8), or use the QDQ format, which ONNX Runtime converts",
                {"nodes": s8s8[:50]},
            )
        )
    s8_q = [
        n.name
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
        and n.input[0] not in inits
        and _zero_point_dtype(n, inits, 2) == onnx.TensorProto.INT8
    ]
    if s8_q and x86:
        out.append(
            Finding(
                "s8s8-qdq",
                "warning",
                f"{len(s8_q)} activation QuantizeLinear node(s) to int8 (S8S8 QDQ, onnxruntime.quantization's "
                "default) on x86: ONNX Runtime fuses fewer S8S8 patterns on x86 than U8S8 ones, so more Q/DQ pairs "
                "stay unfused",
                "re-quantize with activation_type=QuantType.QUInt8 (U8S8) for x86 CPUs",
                {"nodes": s8_q[:50]},
            )
        )
    return out


def doctor(
    path: str | os.PathLike[str],
    *,
    baseline: str | os.PathLike[str] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
    measure: bool = True,
    threads: int = 1,
    seconds: float = 1.5,
) -> DoctorReport:
    """Run every check on ``path``.

    Args:
        path: The (quantized) ONNX model.
        baseline: The float model it came from; with ``measure`` both are timed side by side and profiled.
        inputs: Feed dict for the timings (generated from the signature when ``None``).
        measure: Run the measured checks (ConvInteger micro-benchmark, timings, profile).
        threads: Intra-op threads of the timings.
        seconds: Timing budget per model.

    Returns:
        The :class:`DoctorReport`.

    Raises:
        InputError: A file is missing or ONNX Runtime cannot load it.
    """
    from tensorslim.benchmark.sysinfo import cpu_info

    p = Path(path)
    model = _load(p)
    opt = optimized_graph(p, threads=threads)
    cpu, flags = cpu_info()
    machine = platform.machine()
    rep = DoctorReport(
        model=str(p),
        cpu_model=cpu,
        cpu_flags=flags,
        machine=machine,
        op_counts=dict(Counter(n.op_type for n in model.graph.node).most_common()),
        optimized_op_counts=dict(Counter(n.op_type for n in opt.graph.node).most_common()),
        baseline=None if baseline is None else str(baseline),
    )
    rep.findings.extend(_static_findings(model, opt, flags, machine))
    if measure and rep.op_counts.get("ConvInteger"):
        f_ms, q_ms = conv_integer_slowdown()
        slower = q_ms > f_ms
        rep.findings.append(
            Finding(
                "conv-integer",
                "warning" if slower else "info",
                f"{rep.op_counts['ConvInteger']} ConvInteger node(s); measured on this CPU, a 64-channel 3x3 "
                f"ConvInteger takes {q_ms:.3f} ms vs {f_ms:.3f} ms for float Conv ({q_ms / f_ms:.2f}x)",
                "keep Conv weights int8 with float compute: tensorslim quantize MODEL -o OUT (--form auto does this)",
                {"conv_ms": f_ms, "conv_integer_ms": q_ms},
            )
        )
    if measure:
        rep.findings.extend(_timing_findings(p, None if baseline is None else Path(baseline), inputs, threads, seconds))
    return rep


def _timing_findings(
    p: Path, baseline: Path | None, inputs: Mapping[str, np.ndarray] | None, threads: int, seconds: float
) -> list[Finding]:
    from tensorslim.benchmark import benchmark_models
    from tensorslim.benchmark.profile import diff_profiles, profile_model

    sized = _sized_finding(p, inputs)
    prof = profile_model(p, runs=10, warmup=3, threads=threads, inputs=inputs)
    total = prof.kernel_us or 1.0
    ops = prof.by_op_type()
    qdq_us = sum(ops.get(o, 0.0) for o in (*QDQ_OPS, "DynamicQuantizeLinear"))
    details: dict[str, Any] = {"kernel_us": prof.kernel_us, "qdq_us": qdq_us, "by_op_type": ops}
    if baseline is None:  # no float model to compare with: a share of time, not evidence of a slowdown
        return [
            *sized,
            Finding(
                "timing",
                "info",
                f"{100 * qdq_us / total:.1f}% of kernel time is spent in Quantize/"
                f"DequantizeLinear ({qdq_us:.0f} of {total:.0f} µs per run)",
                "give --baseline FLOAT.onnx to time both and see whether it costs speed" if qdq_us else "",
                details,
            )
        ]
    _load(baseline)
    rep = benchmark_models(
        [baseline, p], threads=threads, inputs=inputs, max_time_s=seconds, min_runs=10, measure_memory=False
    )
    ref, cand = rep.models
    base_prof = profile_model(baseline, runs=10, warmup=3, threads=threads, inputs=inputs)
    diff = diff_profiles(base_prof, prof)
    grew = [r for r in diff.rows if r.delta_us > 0][:4]
    ratio = cand.p50_ms / ref.p50_ms if ref.p50_ms else 1.0
    slower = cand.p50_ci_low_ms > ref.p50_ci_high_ms
    details.update(
        baseline_p50_ms=ref.p50_ms,
        p50_ms=cand.p50_ms,
        ratio=ratio,
        slower=slower,
        baseline_ci=[ref.p50_ci_low_ms, ref.p50_ci_high_ms],
        ci=[cand.p50_ci_low_ms, cand.p50_ci_high_ms],
        diff=[{"op_type": r.op_type, "delta_us": r.delta_us} for r in diff.rows[:10]],
    )
    where = "; ".join(f"{r.op_type} +{r.delta_us:.0f} µs" for r in grew)
    msg = (
        f"p50 {cand.p50_ms:.3f} ms [{cand.p50_ci_low_ms:.3f}, {cand.p50_ci_high_ms:.3f}] vs baseline "
        f"{ref.p50_ms:.3f} ms [{ref.p50_ci_low_ms:.3f}, {ref.p50_ci_high_ms:.3f}] ({ratio:.2f}x, 95% CI); "
        f"{100 * qdq_us / total:.1f}% of its kernel time is Quantize/DequantizeLinear; time grew in: {where or '-'}"
    )
    fix = "see the unfused-qdq finding" if slower else ""
    return [
        *sized,
        Finding("timing", "warning" if slower else "ok", ("SLOWER than float: " if slower else "") + msg, fix, details),
    ]


def _sized_finding(p: Path, inputs: Mapping[str, np.ndarray] | None) -> list[Finding]:
    """A warning when the timings run on generated inputs that make up the sizes the model leaves open (a 1x1
    image, a one-token sequence): such timings say little about real inputs."""
    from tensorslim.benchmark.inputs import unsized_in_model, unsized_said

    unsized, shapes = ({}, {}) if inputs is not None else unsized_in_model(p)
    if not unsized:
        return []
    return [Finding("timing-inputs", "warning", f"the timings below ran on generated inputs that make up the sizes "
                    f"the model leaves open: {unsized_said(unsized, shapes)}, which says little about real inputs",
                    "pass --data DATA.npz with real inputs", {"unsized_inputs": unsized})]  # fmt: skip


def render_doctor(rep: DoctorReport, console: Any) -> None:
    """Print a report with rich: one block per finding, severity first."""
    from rich.text import Text

    console.print(Text.assemble(("tensorslim doctor", "bold"), f" {rep.model} on {rep.cpu_model} ({rep.machine})"))
    style = {"ok": "green", "info": "cyan", "warning": "bold yellow", "error": "bold red"}
    for f in rep.findings:
        line = Text.assemble((f"{f.severity:>7}", style.get(f.severity, "")), " ", (f.code, "bold"), f": {f.message}")
        console.print(line, soft_wrap=True)
        if f.fix:
            console.print(f"         fix: {f.fix}", soft_wrap=True)
