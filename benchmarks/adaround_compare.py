"""Learned rounding on the bundled digits CNN: round-to-nearest against the ``sequential`` and ``adaround`` methods.

For each Conv/Gemm layer (per-channel symmetric int8 scales, min/max), the layer's output error
``sum_r (w_r - s_r q_r) X^T X (w_r - s_r q_r)^T`` on the calibration data, as a fraction of round-to-nearest's.
The figures are deterministic (no timings are compared; the times printed are only a guide). ``--quick``
(2026-12-04), sequential / adaround (1000 iterations) as a fraction of RTN's error: Conv 1->32 3x3 0.047 / 0.057,
32->64 0.026 / 0.041, 64->64 0.042 / 0.059 and 0.057 / 0.070, 64->128 0.055 / 0.070, depthwise 128 0.426 / 0.442,
1x1 128->256 0.285 / 0.278, Gemm 384->512 0.0067 / 0.0175, 512->10 0.0068 / 0.0134. ``--model``: logits MSE
against float on the 360 validation samples 7.16e-5 with RTN weights, 6.03e-6 with learned rounding (top-1 1.00
either way; activations float).

Usage::

    python benchmarks/adaround_compare.py            # every layer (AdaRound at 1000 iterations: long on 2 cores)
    python benchmarks/adaround_compare.py --quick    # layers with K <= 576 and 64 samples
    python benchmarks/adaround_compare.py --layer-time  # seconds of ``sequential`` on a 384 x 2304 (885k) layer
    python benchmarks/adaround_compare.py --model    # every weight int8 (activations float): logits on val data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from tensorslim.algorithms.adaround import learned_rounding, to_rows
from tensorslim.algorithms.quantize import choose_qparams
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.adaround_stats import input_grams, layer_input_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "tensorslim" / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="layers with K <= 576, 64 calibration samples")
    ap.add_argument("--iterations", type=int, default=1000, help="AdaRound Adam steps")
    ap.add_argument("--layer-time", action="store_true", help="time sequential on a synthetic 384 x 2304 layer")
    ap.add_argument("--model", action="store_true", help="all weights int8 (RTN / learned): logits on val data")
    args = ap.parse_args()
    if args.layer_time:
        layer_time()
        return
    if args.model:
        whole_model()
        return
    model = onnx.load(str(EXAMPLES / "digits_cnn.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    calib = np.load(EXAMPLES / "digits_calib.npz")["input"]
    data = Dataset({"input": calib[:64] if args.quick else calib})
    layers = [(n, inits[n.input[1]]) for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits]
    if args.quick:
        layers = [(n, w) for n, w in layers if layer_input_spec(n, w).k <= 576]
    grams = input_grams(model, data, layers)
    print("| weight | rows x K (groups) | sequential / RTN | adaround / RTN | flipped (seq) | seq s | ada s |")
    print("|---|---|---|---|---|---|---|")
    for node, w in layers:
        spec = layer_input_spec(node, w)
        rows = to_rows(w, spec.layout)
        scale = choose_qparams(rows, axis=0).scale
        stats = grams[spec.weight]
        out = []
        for method in ("sequential", "adaround"):
            t = time.perf_counter()
            r = learned_rounding(rows, scale, stats.gram, groups=spec.groups, method=method, iterations=args.iterations)
            out.append((r.error / r.error_rtn if r.error_rtn else 1.0, r.flipped, time.perf_counter() - t))
        (seq, flips, ts), (ada, _, ta) = out
        print(f"| {spec.weight} | {rows.shape[0]} x {spec.k} ({spec.groups}) | {seq:.4f} | {ada:.4f} | {flips} | "
              f"{ts:.1f} | {ta:.1f} |", flush=True)  # fmt: skip


def whole_model() -> None:
    """Every Conv/Gemm weight of the digits CNN as per-channel int8 (dequantized in place, activations float),
    round-to-nearest against learned rounding (``adaround_codes`` on the 256 calibration samples): the logits'
    MSE against the float model's and top-1 agreement and accuracy on the validation data."""
    import onnxruntime as ort

    from tensorslim.algorithms.quantize import dequantize, quantize
    from tensorslim.passes.adaround import adaround_codes

    model = onnx.load(str(EXAMPLES / "digits_cnn.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    calib = np.load(EXAMPLES / "digits_calib.npz")["input"]
    val = np.load(EXAMPLES / "digits_val.npz")
    layers = [(n, inits[n.input[1]]) for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits]
    qps = {}
    for node, w in layers:
        spec = layer_input_spec(node, w)
        qps[spec.weight] = choose_qparams(w, axis=0 if spec.layout.value != "in_out" else 1)
    t = time.perf_counter()
    learned = adaround_codes(model, Dataset({"input": calib}), layers, {k: q.scale for k, q in qps.items()})
    print(f"adaround_codes on {len(layers)} layers: {time.perf_counter() - t:.0f} s")

    def logits(codes: dict[str, np.ndarray] | None) -> np.ndarray:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        for init in m.graph.initializer:
            if codes is not None and init.name in codes:
                init.CopyFrom(numpy_helper.from_array(dequantize(codes[init.name], qps[init.name]), init.name))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(None, {"input": val["input"]})[0], np.float64)

    ref = logits(None)
    labels = val["label"]
    rows = [("float", ref), ("int8 RTN", logits({k: quantize(inits[k], q) for k, q in qps.items()})),
            ("int8 learned", logits({k: r.codes for k, r in learned.items()}))]  # fmt: skip
    print("| weights | logits MSE vs float | top-1 agreement | accuracy |")
    print("|---|---|---|---|")
    for name, out in rows:
        acc = f"{np.mean(out.argmax(1) == labels):.4f}"
        print(f"| {name} | {np.mean((out - ref) ** 2):.3e} | {np.mean(out.argmax(1) == ref.argmax(1)):.4f} | {acc} |")
    print("per layer output MSE, RTN -> learned:")
    for name, r in learned.items():
        print(f"  {name}: {r.mse_rtn:.3e} -> {r.mse:.3e} ({r.flipped} codes flipped)")


def layer_time() -> None:
    """Seconds of the default method on a 384 x 2304 layer (a 3x3 Conv of 256 -> 384 channels) whose inputs are
    image-like: correlated, non-negative."""
    rng = np.random.default_rng(0)
    k, r = 2304, 384
    x = np.maximum(rng.standard_normal((4096, 256)) @ rng.standard_normal((256, k)) * 0.1, 0.0)
    w = (rng.standard_normal((r, k)) * 0.02).astype(np.float32)
    scale = choose_qparams(w, axis=0).scale
    t = time.perf_counter()
    res = learned_rounding(w, scale, x.T @ x)
    print(f"sequential, {r} x {k}: {time.perf_counter() - t:.1f} s, error {res.error / res.error_rtn:.4f} of RTN, "
          f"{res.flipped} codes flipped")  # fmt: skip


if __name__ == "__main__":
    main()
