"""Rounding that keeps each output channel's weight sum (:func:`quantize_keeping_sums`): the maths as properties,
and what it is for, measured with ONNX Runtime: a layer's response to a flat input (paper, sky, padding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import helper

import tensorslim
from models import cli, make, rng, run
from tensorslim.algorithms.quantize import QuantScheme, choose_qparams, quantize, quantize_keeping_sums
from tensorslim.passes.dynamic_quant import DynamicQuantConfig

F = onnx.TensorProto.FLOAT
finite = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False, width=32)
weights = arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 40)), elements=finite)


def _scaled(x: np.ndarray, qp) -> np.ndarray:
    scale, zp = qp.broadcast(x.ndim)
    return x.astype(np.float64) / scale + zp


@settings(max_examples=300, deadline=None)
@given(w=weights, scheme=st.sampled_from(["symmetric", "asymmetric"]), per_channel=st.booleans(),
       method=st.sampled_from(["minmax", "mse"]))  # fmt: skip
def test_sums_kept_with_the_fewest_cheapest_changes(w: np.ndarray, scheme: str, per_channel: bool, method: str) -> None:
    qp = choose_qparams(w, scheme=scheme, axis=0 if per_channel else None, method=method, grid=8)
    codes = quantize(w, qp)
    kept = quantize_keeping_sums(w, qp, 0)
    assert kept.dtype == codes.dtype and kept.shape == w.shape
    near, kept = codes.astype(np.int64), kept.astype(np.int64)
    v = _scaled(w, qp)
    lo, hi = np.iinfo(codes.dtype).min, np.iinfo(codes.dtype).max
    if scheme == "symmetric":
        lo = -hi  # narrow range, as quantize
    assert kept.min() >= lo and kept.max() <= hi
    assert np.all(np.abs(kept - near) <= 1)  # each code is its nearest code or the one next to it
    for row_v, row_n, row_k in zip(v, near, kept, strict=True):
        need = int(np.round((row_v - row_n).sum()))
        changed = row_k != row_n
        assert changed.sum() <= abs(need)  # never more changes than the sum needs
        assert np.all(np.sign(row_k[changed] - row_n[changed]) == np.sign(need))
        err = row_v - row_n
        free = (
            ~changed & (np.sign(err) == np.sign(need)) & (row_n + np.sign(need) >= lo) & (row_n + np.sign(need) <= hi)
        )
        if changed.sum() < abs(need):
            assert not free.any()  # it ran out of values that can move that way
        else:
            assert abs((row_v - row_k).sum()) <= 0.5 + 1e-6  # the sum to half a step
        if changed.any() and free.any():  # the changed values were the cheapest: nearest half a step
            assert np.abs(err[changed]).min() >= np.abs(err[free]).max() - 1e-9


@settings(max_examples=100, deadline=None)
@given(w=weights)
def test_same_codes_as_nearest_when_sums_already_hold(w: np.ndarray) -> None:
    qp = choose_qparams(w, scheme="symmetric", axis=0)
    near = quantize(w, qp)
    need = np.round((_scaled(w, qp) - near).sum(axis=1))
    kept = quantize_keeping_sums(w, qp, 0)
    assert np.array_equal(kept[need == 0], near[need == 0])
    assert np.array_equal(kept, quantize_keeping_sums(w.copy(), qp, 0))  # deterministic


def test_channel_axis_last_and_large_rows() -> None:
    w = rng(1).standard_normal((300, 70)).astype(np.float32)  # MatMul layout: output channels on axis 1
    qp = choose_qparams(w, scheme=QuantScheme.SYMMETRIC, axis=1)
    kept = quantize_keeping_sums(w, qp, 1).astype(np.int64)
    v = _scaled(w, qp)
    assert np.abs((v - kept).sum(axis=0)).max() <= 0.5 + 1e-6
    assert np.abs((v - quantize(w, qp)).sum(axis=0)).max() > 2  # round to nearest is far off on 300 values


def _edge_net() -> onnx.ModelProto:
    """A stem Conv and a depthwise Conv of edge detectors (each kernel sums to almost nothing), as trained conv
    nets have after their first layer."""
    r = rng(3)
    w1 = r.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = r.standard_normal((8, 1, 3, 3)).astype(np.float32)
    w2 -= w2.mean(axis=(1, 2, 3), keepdims=True) - r.normal(0, 1e-3, (8, 1, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["a"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["h"], name="relu"),
             helper.make_node("Conv", ["h", "W2", "B2"], ["y"], name="edges", pads=[1, 1, 1, 1], group=8)]  # fmt: skip
    inits = {"W1": w1, "B1": r.standard_normal(8).astype(np.float32), "W2": w2, "B2": np.zeros(8, np.float32)}
    return make(nodes, [("x", F, [1, 3, 32, 32])], [("y", F, [1, 8, 32, 32])], inits)


def _flat_error(model: onnx.ModelProto | Path, flat: dict[str, np.ndarray], ref: np.ndarray) -> float:
    out = run(model, flat)[0]
    return float(np.abs(out - ref)[..., 2:-2, 2:-2].max())  # the interior: every position sees only flat input


def test_weight_only_conv_keeps_the_flat_response(tmp_path: Path) -> None:
    m = _edge_net()
    flat = {"x": np.full((1, 3, 32, 32), 2.0, np.float32)}
    ref = run(m, flat)[0]
    errs = {}
    for keep in (False, True):
        out = tmp_path / f"q_{keep}.onnx"
        tensorslim.quantize(m, out, config=DynamicQuantConfig(form="weight_only", min_size=0, keep_conv_sums=keep),
                            verify=False)  # fmt: skip
        errs[keep] = _flat_error(out, flat, ref)
    assert errs[True] < errs[False] / 2, errs


def test_static_keep_weight_sums_option(tmp_path: Path) -> None:
    m = _edge_net()
    src = tmp_path / "m.onnx"
    onnx.save(m, src)
    r = rng(4)
    calib = r.uniform(0, 2, (16, 3, 32, 32)).astype(np.float32)
    calib[:8, :, :, :] = 2.0  # half the samples are a flat page
    calib[:8, :, 8:12, 4:28] = r.uniform(0, 2, (8, 3, 4, 24))
    np.savez(tmp_path / "d.npz", x=calib)
    flat = {"x": np.full((1, 3, 32, 32), 2.0, np.float32)}
    ref = run(m, flat)[0]
    errs = {}
    for flag in ("--keep-weight-sums", "--no-keep-weight-sums"):
        out = tmp_path / f"s{flag}.onnx"
        res = cli("quantize", str(src), "-o", str(out), "--mode", "static", "--data", str(tmp_path / "d.npz"),
                  "--no-latency-check", "--no-check-speed", "--no-empirical-bias", flag)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert "QuantizeLinear" in {n.op_type for n in onnx.load(out).graph.node}
        errs[flag] = _flat_error(out, flat, ref)
    assert errs["--keep-weight-sums"] < errs["--no-keep-weight-sums"], errs
    res = cli("quantize", str(src), "-o", str(tmp_path / "d.onnx"), "--keep-weight-sums")
    assert res.returncode == 2 and "--keep-weight-sums: only for --mode static" in res.stdout + res.stderr
