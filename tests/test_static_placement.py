"""Static int8 placement decided by ONNX Runtime's fusions, int8-capable rewrites, latency fallback, replay."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from models import F, cli, make, ort_optimized, run
from tensorslim import quantize
from tensorslim.errors import ConfigError, InputError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.static_latency import (
    _larger_batch,
    _region_costs,
    _slow_nodes,
    _slower,
    fusions,
    latency_fallback,
    measure_ratio,
    profile_nodes,
    split_fused,
)
from tensorslim.passes.static_placement import (
    PLACEMENT_METADATA_KEY,
    Placement,
    load_placement,
    rewrite_for_int8,
    unfused_nodes,
)
from tensorslim.passes.static_quant import StaticQuantConfig, _apply, _Index, _trial_params
from tensorslim.pipeline import static_pipeline


def mobile_block(seed: int = 0, act: str = "HardSwish") -> tuple[onnx.ModelProto, Dataset]:
    """Conv -> HardSwish (Paddle's Add/Clip/Mul/Div form) -> squeeze-excitation (GAP, Conv, Relu, Conv, HardSigmoid,
    Mul) -> Conv -> ``act`` (an op with no int8 kernel when it is Tanh) -> Conv -> Sigmoid: what mobile conv nets
    are made of."""
    r = np.random.default_rng(seed)
    c = 8
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "three"], ["a1"], name="hs_add"),
        helper.make_node("Clip", ["a1", "zero", "six"], ["k1"], name="hs_clip"),
        helper.make_node("Mul", ["c1", "k1"], ["m1"], name="hs_mul"),
        helper.make_node("Div", ["m1", "six"], ["h1"], name="hs_div"),
        helper.make_node("GlobalAveragePool", ["h1"], ["g"], name="se_gap"),
        helper.make_node("Conv", ["g", "Ws1", "Bs1"], ["s1"], name="se_conv1"),
        helper.make_node("Relu", ["s1"], ["s1r"], name="se_relu"),
        helper.make_node("Conv", ["s1r", "Ws2", "Bs2"], ["s2"], name="se_conv2"),
        helper.make_node("HardSigmoid", ["s2"], ["s2h"], name="se_hsig", alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["h1", "s2h"], ["se"], name="se_mul"),
        helper.make_node("Conv", ["se", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node(act, ["c2"], ["t2"], name="act2"),
        helper.make_node("Conv", ["t2", "W3", "B3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c3"], ["y"], name="out_sigmoid"),
    ]
    inits = {
        "W1": (r.standard_normal((c, 3, 3, 3)) * 0.3).astype(np.float32), "B1": (r.standard_normal(c) * 0.1).astype(
            np.float32),
        "Ws1": (r.standard_normal((4, c, 1, 1)) * 0.3).astype(np.float32), "Bs1": np.zeros(4, np.float32),
        "Ws2": (r.standard_normal((c, 4, 1, 1)) * 0.3).astype(np.float32), "Bs2": np.zeros(c, np.float32),
        "W2": (r.standard_normal((c, c, 3, 3)) * 0.2).astype(np.float32), "B2": np.zeros(c, np.float32),
        "W3": (r.standard_normal((4, c, 3, 3)) * 0.2).astype(np.float32), "B3": np.zeros(4, np.float32),
        "three": np.array(3.0, np.float32), "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32),
    }  # fmt: skip
    model = make(nodes, [("x", F, ["b", 3, 16, 16])], [("y", F, ["b", 4, 16, 16])], inits, opset=14)
    return model, Dataset({"x": r.standard_normal((32, 3, 16, 16)).astype(np.float32)})


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_rewrites_keep_the_function() -> None:
    model, data = mobile_block()
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    notes = rewrite_for_int8(rewritten)
    onnx.checker.check_model(rewritten)
    ops = Counter(n.op_type for n in rewritten.graph.node)
    assert "Div" not in ops and "HardSigmoid" not in ops and "HardSwish" not in ops and ops["Clip"] == 3, ops
    assert notes and "Div x1" in notes[0] and "HardSigmoid x1" in notes[0] and "HardSwish x1" in notes[0]
    feeds = {"x": data.inputs["x"][:4]}
    np.testing.assert_allclose(run(rewritten, feeds)[0], run(model, feeds)[0], rtol=1e-5, atol=1e-6)


def test_every_op_with_an_int8_kernel_runs_int8_and_tanh_stays_float(tmp_path: Path) -> None:
    model, data = mobile_block(act="Tanh")
    res = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    onnx.checker.check_model(res.model)
    opt = ort_optimized(res.model, tmp_path)
    ops = Counter(n.op_type for n in opt.graph.node)
    # the HardSwish, squeeze-excitation and sigmoid run on int8 kernels; the Div/HardSigmoid scale needs no kernel
    assert ops["QLinearConv"] == 5 and ops["QLinearMul"] >= 2 and ops["QLinearAdd"] >= 2, ops
    assert ops["QLinearGlobalAveragePool"] == 1 and ops["QLinearSigmoid"] == 1, ops
    assert ops["Conv"] == 0 and ops["Mul"] == 0 and ops["Add"] == 0 and ops["Clip"] == 0, ops
    # Tanh has no int8 kernel: float, with exactly one DQ in and one Q out around it
    assert ops["Tanh"] == 1
    placement = dict(load_placement_from(res.model).float)
    assert placement["act2"].startswith("unfused")
    # no Q -> DQ pair is left without an integer kernel on one side
    producer = {o: n for n in opt.graph.node for o in n.output}
    for n in opt.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in producer:
            assert producer[n.input[0]].op_type != "QuantizeLinear", n.name
    feeds = {"x": data.inputs["x"][:8]}
    assert _cosine(run(model, feeds)[0], run(res.model, feeds)[0]) > 0.99


def load_placement_from(model: onnx.ModelProto) -> Placement:
    raw = json.loads(next(p.value for p in model.metadata_props if p.key == PLACEMENT_METADATA_KEY))
    return Placement(tuple(raw["int8"]), tuple(raw["float"].items()))


def test_scales_and_zero_points_are_scalars() -> None:
    model, data = mobile_block()
    res = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    inits = {t.name: t for t in res.model.graph.initializer}
    for n in res.model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(a.name == "axis" for a in n.attribute):
            for name in n.input[1:]:
                assert list(inits[name].dims) == [], (n.name, name, list(inits[name].dims))


def test_placement_replays_to_the_same_bytes(tmp_path: Path) -> None:
    model, data = mobile_block(act="Tanh")
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    np.savez(tmp_path / "calib.npz", x=data.inputs["x"])
    first = tmp_path / "a.onnx"
    r = cli("quantize", str(src), "-o", str(first), "--mode", "static", "--data", str(tmp_path / "calib.npz"),
            "--no-check-speed")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "placement:" in r.stdout and "latency check:" in r.stdout
    replay = tmp_path / "b.onnx"
    r = cli("quantize", str(src), "-o", str(replay), "--mode", "static", "--data", str(tmp_path / "calib.npz"),
            "--placement", str(first), "--no-check-speed")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert replay.read_bytes() == first.read_bytes()
    # a JSON placement file works the same way
    (tmp_path / "p.json").write_text(load_placement(first).to_json())
    assert load_placement(tmp_path / "p.json") == load_placement(first)


def conv_stack(seed: int = 0) -> tuple[onnx.ModelProto, Dataset]:
    """Three 3x3 Convs with Relus, 64 channels at 32 x 32: int8 kernels beat float here by a wide margin."""
    r = np.random.default_rng(seed)
    nodes, inits, prev = [], {}, "x"
    for i, (cin, cout) in enumerate(((16, 64), (64, 64), (64, 16))):
        inits[f"W{i}"] = (r.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
        inits[f"B{i}"] = (r.standard_normal(cout) * 0.1).astype(np.float32)
        nodes.append(helper.make_node("Conv", [prev, f"W{i}", f"B{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    model = make(nodes, [("x", F, ["b", 16, 32, 32])], [(prev, F, ["b", 16, 32, 32])], inits, opset=14)
    return model, Dataset({"x": r.standard_normal((16, 16, 32, 32)).astype(np.float32)})


def test_cli_latency_batch_names_the_batch_the_check_times(tmp_path: Path) -> None:
    model, data = conv_stack()
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    np.savez(tmp_path / "calib.npz", x=data.inputs["x"])
    args = ("quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--mode", "static", "--data",
            str(tmp_path / "calib.npz"), "--no-check-speed", "--json", str(tmp_path / "q.json"))  # fmt: skip
    for batch, timed in (("1", {"1"}), ("8", {"1", "8"})):
        r = cli(*args, "--latency-batch", batch)
        assert r.returncode == 0, r.stdout + r.stderr
        notes = json.loads((tmp_path / "q.json").read_text())["notes"]
        assert {m for n in notes for m in re.findall(r"\(batch (\d+)[,)]", n)} == timed, notes
    r = cli(*args, "--latency-batch", "0")
    assert r.returncode == 2 and "--latency-batch: 0 is not a batch size" in r.stdout + r.stderr, r.stdout + r.stderr
    r = cli("quantize", str(src), "-o", str(tmp_path / "d.onnx"), "--latency-batch", "4")
    assert r.returncode == 2 and "--latency-batch: only for --mode static" in r.stdout + r.stderr


def test_bad_placements_are_refused(tmp_path: Path) -> None:
    model, data = mobile_block()
    (tmp_path / "bad.json").write_text('{"int8": [1, 2]}')
    with pytest.raises(InputError, match="must be strings"):
        load_placement(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(Placement(("no_such_node",)).to_json())
    with pytest.raises(InputError, match="does not have"):
        static_pipeline(StaticQuantConfig(placement=str(tmp_path / "other.json")), data)(model)
    with pytest.raises(InputError, match="no such placement file"):
        load_placement(tmp_path / "missing.json")


def test_unfused_nodes_reads_the_optimized_graph(tmp_path: Path) -> None:
    """A trial with every candidate in int8: the Tanh is found unfused, every Conv fused."""
    model, _ = mobile_block(act="Tanh")
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    index = _Index(trial)
    names = {n.name for n in index.nodes}
    cfg = StaticQuantConfig(latency_check=False)
    _apply(trial, names, _trial_params(index, names, cfg), cfg, {}, [])
    bad = unfused_nodes(ort_optimized(trial, tmp_path), list(model.graph.node))
    # Div and HardSigmoid have no int8 kernel of their own (rewrite_for_int8 gives them one), nor has Tanh
    assert set(bad) == {"act2", "hs_div", "se_hsig"} and "Tanh" in bad["act2"]
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    rewrite_for_int8(rewritten)
    trial.CopyFrom(rewritten)
    index = _Index(trial)
    names = {n.name for n in index.nodes}
    _apply(trial, names, _trial_params(index, names, cfg), cfg, {}, [])
    assert set(unfused_nodes(ort_optimized(trial, tmp_path), list(rewritten.graph.node))) == {"act2"}


def _attention(seed: int = 0, t: int = 32, d: int = 64) -> tuple[onnx.ModelProto, Dataset]:
    """x -> q, k (MatMuls) -> scores (MatMul of two activations) -> Mul (the 1/sqrt(d) scale) -> Softmax -> Reshape
    -> MatMul with v -> y. An int8 Mul, unlike a MatMul, has no float-output kernel: its output keeps a Q/DQ pair."""
    r = np.random.default_rng(seed)
    w = {k: (r.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32) for k in ("Wq", "Wk", "Wv")}
    w["Wq"] /= 4  # with the scale, scores of order one: probabilities int8 keeps (not flattened to zeros)
    nodes = [
        helper.make_node("MatMul", ["x", "Wq"], ["q"], name="mm_q"),
        helper.make_node("MatMul", ["x", "Wk"], ["k"], name="mm_k"),
        helper.make_node("MatMul", ["x", "Wv"], ["v"], name="mm_v"),
        helper.make_node("Transpose", ["k"], ["kt"], name="k_t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"], name="scores"),
        helper.make_node("Mul", ["s0", "scale"], ["s"], name="scale_scores"),
        helper.make_node("Softmax", ["s"], ["p"], name="probs", axis=-1),
        helper.make_node("Reshape", ["p", "shape"], ["p2"], name="probs_view"),
        helper.make_node("MatMul", ["p2", "v"], ["y"], name="context"),
    ]
    inits = {**w, "shape": np.array([0, t, t], np.int64), "scale": np.array(1 / np.sqrt(d), np.float32)}
    model = make(nodes, [("x", F, ["b", t, d])], [("y", F, ["b", t, d])], inits, opset=17)
    return model, Dataset({"x": r.standard_normal((16, t, d)).astype(np.float32)})


def test_an_excluded_node_runs_float_even_between_int8_neighbours(tmp_path: Path) -> None:
    """ONNX Runtime fuses a float Softmax whose input and output both keep Q/DQ pairs into QLinearSoftmax; excluding
    it must keep it float: the int8 node that reads it (through a Reshape) goes back to float, with the reason."""
    model, data = _attention()
    every = static_pipeline(StaticQuantConfig(latency_check=False, preprocess=False), data)(model).model
    assert "QLinearSoftmax" in [n.op_type for n in ort_optimized(every, tmp_path).graph.node]
    res = static_pipeline(StaticQuantConfig(latency_check=False, preprocess=False, exclude=("^probs$",)), data)(model)
    ops = {n.name: n.op_type for n in ort_optimized(res.model, tmp_path).graph.node}
    assert ops.get("probs") == "Softmax" and "QLinearSoftmax" not in ops.values(), ops
    placement = load_placement_from(res.model)
    floats = dict(placement.float)
    assert floats["probs"] == "excluded: matches --exclude"
    assert "context" in floats and "QLinearSoftmax" in floats["context"] and "probs" in floats["context"], floats
    assert {"scale_scores", "scores", "mm_q"} <= set(placement.int8), placement.int8  # the other side stays int8
    feeds = {"x": data.inputs["x"][:4]}
    ref, got = run(model, feeds)[0], run(res.model, feeds)[0]
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_a_slow_node_goes_to_float_with_what_would_fuse_it_again() -> None:
    """The latency check moving a slow Softmax between int8 neighbours moves the int8 nodes that read it too (else
    ONNX Runtime fuses it into QLinearSoftmax again); a slow node with a float-output neighbour moves alone."""
    from tensorslim.passes.static_latency import _Check, _unfuse

    model, _ = _attention()
    index = _Index(model)
    cfg = StaticQuantConfig(latency_check=False)
    names = {n.name for n in index.nodes}

    def build(int8: set[str]) -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        _apply(m, int8, _trial_params(_Index(m), int8, cfg), cfg, {}, [])
        return m

    check = _Check(model, build, index, None, 1, model, {}, 1.0, 0.0)
    readers = _unfuse(check, names, {"probs": 0.5})
    assert set(readers) == {"probs_view", "context"} and all("QLinearSoftmax" in r for r in readers.values())
    assert _unfuse(check, names, {"scale_scores": 0.5}) == {}  # its input comes from a MatMul with a float output
    assert _unfuse(check, names, {}) == {}


def test_slow_nodes_and_region_costs_from_profiles() -> None:
    float_prof = {"conv": 1.0, "pool": 0.01, "mul": 0.1}
    int8_prof = {
        "conv_token_3": 0.4, "QLinearConv/conv_token_3/bytes": 1000.0,
        "pool": 0.5, "MaxPool/pool/bytes": 1000.0,
        "mul_token_9": 0.05, "QLinearMul/mul_token_9/bytes": 1000.0,
        "t_QuantizeLinear": 0.01, "QuantizeLinear/t_QuantizeLinear/bytes": 5000.0,
    }  # fmt: skip
    slow = _slow_nodes({"conv", "pool", "mul"}, set(), int8_prof, float_prof)
    assert set(slow) == {"pool"} and slow["pool"] == pytest.approx(0.5 - 0.01 - 0.01 / 1000 * 1000, rel=1e-6)
    costs = _region_costs([{"conv", "mul"}, {"pool"}], int8_prof, float_prof, {"conv": {"t_QuantizeLinear"}})
    assert costs[0] == pytest.approx(0.4 + 0.05 + 0.01 - 1.1) and costs[1] == pytest.approx(0.49)


def test_slow_nodes_judge_a_rewritten_op_by_all_its_nodes() -> None:
    """A HardSwish rewritten into four int8 nodes costs their sum against the one float HardSwish (profiled under
    its name, which the last node keeps): all four are slow together, or none is."""
    group = ("hs_Mul", "hs_Add", "hs_Clip", "hs")
    float_prof = {"hs": 0.5, "conv": 1.0}
    int8_prof = {"conv_token_1": 0.4, "QLinearConv/conv_token_1/bytes": 100.0,
                 **{n: 0.2 for n in group}, **{f"QLinearMul/{n}/bytes": 100.0 for n in group},
                 "t_QuantizeLinear": 0.0, "QuantizeLinear/t_QuantizeLinear/bytes": 500.0}  # fmt: skip
    int8 = {"conv", *group}
    assert _slow_nodes(int8, set(), int8_prof, float_prof) == {}  # the named node alone: 0.2 ms < 0.5 ms
    slow = _slow_nodes(int8, set(), int8_prof, float_prof, {"hs": group})
    assert set(slow) == set(group) and slow["hs"] == pytest.approx(0.8 - 0.5)
    cheap = {**int8_prof, **{n: 0.1 for n in group}}
    assert _slow_nodes(int8, set(), cheap, float_prof, {"hs": group}) == {}  # 0.4 ms of int8 beats 0.5 ms


def test_fused_float_kernels_are_charged_to_every_node_they_run() -> None:
    """ONNX Runtime times a fused float kernel under one of its nodes (Conv + Relu under the Relu, Conv + HardSwish
    under the Conv, x * Sigmoid(x) under the Mul of its QuickGelu): every node of the kernel is in that node's group,
    and its time is spread over the int8 nodes that do the same work, so a QLinearConv that took in its Relu is
    compared with the float Conv + Relu, not with nothing. The layout kernels ONNX Runtime adds (NCHWc reorders)
    are charged to the Conv they convert for."""
    r = np.random.default_rng(0)
    c = 16
    conv = lambda i, o, w: helper.make_node("Conv", [i, w], [o], name=o, pads=[1, 1, 1, 1])  # noqa: E731
    nodes = [
        conv("x", "c1", "W1"), helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        conv("r1", "c2", "W2"), helper.make_node("HardSwish", ["c2"], ["h2"], name="h2"),
        conv("h2", "c3", "W3"), helper.make_node("Sigmoid", ["c3"], ["s3"], name="s3"),
        helper.make_node("Mul", ["c3", "s3"], ["m3"], name="m3"),
        conv("m3", "c4", "W4"), helper.make_node("Add", ["c4", "r1"], ["a4"], name="a4"),
        helper.make_node("Relu", ["a4"], ["y"], name="y"),
    ]  # fmt: skip
    inits = {f"W{i}": (r.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32) for i in range(1, 5)}
    model = make(nodes, [("x", F, [1, c, 32, 32])], [("y", F, [1, c, 32, 32])], inits, opset=14)
    feeds = {"x": r.standard_normal((1, c, 32, 32)).astype(np.float32)}
    prof = profile_nodes(model, feeds, threads=1, runs=2)
    timed = {k for k in prof if not k.endswith("/bytes")}
    names = {n.name for n in model.graph.node}
    groups = fusions(model, prof)
    member = {m: key for key, ms in groups.items() for m in ms}
    assert all(key in timed and key == ms[-1] for key, ms in groups.items())
    assert names <= timed | set(member), (sorted(timed), groups)  # every node's work is timed somewhere
    for a, b in (("c1", "r1"), ("c2", "h2"), ("s3", "m3")):
        assert member.get(a, a) == member.get(b, b), (a, b, groups)  # fused by every ONNX Runtime we support
    assert all(sum(m.startswith("c") for m in ms) <= 1 for ms in groups.values()), groups  # one Conv per kernel
    assert timed & names, timed  # the fusion names (``<node>/QuickGeluFusion/``) are mapped back to the graph
    assert not {k for k in timed if "Fusion" in k}, timed
    assert timed <= names, timed  # the NCHWc layout kernels too (ReorderInput/Output), under the Conv they serve
    # the int8 model: a QLinearConv per Conv took in its Relu/Add; the float group's time goes to it
    kernel = {"c1": 0.3, "c2": 0.2, "h2": 0.1, "s3": 0.1, "m3": 0.1, "c3": 0.2, "c4": 0.2}
    split = split_fused(prof, groups, kernel)
    for key, ms in groups.items():
        assert sum(split[m] for m in ms if kernel.get(m)) == pytest.approx(prof[key])
    assert split.get("c1", 0.0) == pytest.approx(prof[member.get("c1", "c1")] if "c1" in member else prof["c1"])


def test_a_reorder_back_from_a_fused_conv_is_charged_to_the_conv() -> None:
    """A Conv + HardSwish whose output leaves the NCHWc layout (into a squeeze-excitation's pool and Mul): ONNX
    Runtime's ReorderOutput writes the HardSwish's output, but converts the fused Conv's; it is the Conv's time, so
    the HardSwish (no kernel of its own) stays in the Conv's group instead of being timed alone by the reorder."""
    r = np.random.default_rng(0)
    c = 16
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c1"], ["h1"], name="h1"),
        helper.make_node("GlobalAveragePool", ["h1"], ["g1"], name="g1"),
        helper.make_node("Mul", ["h1", "g1"], ["y"], name="m1"),
    ]
    inits = {"W1": (r.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32)}
    model = make(nodes, [("x", F, [1, c, 32, 32])], [("y", F, [1, c, 32, 32])], inits, opset=14)
    prof = profile_nodes(model, {"x": r.standard_normal((1, c, 32, 32)).astype(np.float32)}, threads=1, runs=2)
    groups = fusions(model, prof)
    assert "h1" not in prof, prof  # no time of its own: the Conv's kernel and its reorder are the Conv's
    assert set(groups.get("c1", ())) == {"c1", "h1"}, groups


class _Sleeper:
    """Runs like a session: sleeps 2 ms a run; the first ``jitter_s`` seconds of runs sleep 0.5 to 8 ms instead."""

    def __init__(self, jitter_s: float = 0.0) -> None:
        self.until = jitter_s
        self.start: float | None = None
        self.rng = np.random.default_rng(0)

    def get_inputs(self) -> list[object]:
        return []

    def run(self, *_: object) -> None:
        import time

        now = time.perf_counter()
        self.start = now if self.start is None else self.start
        time.sleep(float(self.rng.uniform(0.0005, 0.008)) if now - self.start < self.until else 0.002)


def test_a_noisy_timing_is_timed_again_before_anything_is_decided_on_it() -> None:
    """A candidate whose runs are erratic for the first timing (a new session growing its arena) is timed again
    once it settles: the ratio returned is the settled one, with its narrow interval."""
    from tensorslim.benchmark.latency import timed_ratio

    erratic, steady = _Sleeper(jitter_s=60.0), _Sleeper()
    _, e_lo, e_hi = timed_ratio(lambda: steady.run(), lambda: erratic.run(), seconds=0.6, max_round=3)
    ratio, lo, hi = measure_ratio(_Sleeper(), _Sleeper(jitter_s=0.6), {}, seconds=0.6)
    assert hi - lo < 0.5 * (e_hi - e_lo) and 0.8 < ratio < 1.25, (ratio, lo, hi, e_lo, e_hi)


def test_latency_fallback_says_what_it_measured_and_moved() -> None:
    model, data = mobile_block(act="Tanh")
    res = static_pipeline(StaticQuantConfig(latency_budget_s=8.0), data)(model)
    checks = [n for n in res.notes if n.startswith("latency check:")]
    sections = _by_batch(checks)
    assert sections and sections[0][0].startswith("latency check: static int8 ") and "(batch 1," in sections[0][0]
    placement = load_placement_from(res.model) if res.model.metadata_props else Placement(())
    for section in sections:
        ratio, low, _ = _figures(section[0])
        if low > 1.0 or ratio > 1.05:
            assert len(section) >= 2 and "moved back to float" in section[1], checks
        elif len(section) == 2:  # not slower, but nodes whose own int8 kernel is slower moved: measured to pay
            assert "of the all-int8 time [" in section[1], checks
            assert float(section[1].split("[")[1].split(",")[1].split("]")[0]) < 1.0, checks
        else:
            assert len(section) == 1, checks
    moved = [n for n, why in placement.float if why.startswith("slower")]
    kernel_slow = [n for n, why in placement.float if "its int8 kernel" in why]
    said = f"{len(kernel_slow)} node(s) whose int8 kernel is slower than float here ("
    assert not kernel_slow or any(said in c for c in checks), checks  # counted, and named up to six
    assert sum(any(n in c for c in checks) for n in kernel_slow) >= min(6, len(kernel_slow)), checks
    assert not moved or any("moved back to float" in c for c in checks), checks
    assert all(why for _, why in placement.float)


_FIGURES = re.compile(r"static int8 ([0-9.]+)x float \[([0-9.]+), ([0-9.]+)\] \((batch \d+)")


def _figures(note: str) -> tuple[float, float, float]:
    m = _FIGURES.search(note)
    assert m, note
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def _by_batch(notes: list[str]) -> list[list[str]]:
    """The latency check's notes, one list per batch it timed (each starts with that batch's ratio)."""
    sections: list[list[str]] = []
    for n in notes:
        if _FIGURES.search(n):
            sections.append([n])
        elif sections:
            sections[-1].append(n)
    return sections


def test_latency_fallback_keeps_a_placement_that_is_not_slower() -> None:
    """A float model compared with itself is not slower: nothing moves."""
    model, data = mobile_block()
    index = _Index(model)
    placement = Placement(("conv1",), (("conv2", "unfused: test"),), 1, "x")
    out, notes = latency_fallback(model, placement, lambda names: model, data, index, time_budget_s=4.0)
    sections = _by_batch(notes)
    assert sections and sum(map(len, sections)) == len(notes), notes
    # the note rounds to 2 decimals and the decision uses the unrounded figures: allow half a unit either way
    for section in sections:
        ratio, low, _ = _figures(section[0])
        # measurably slower by less than the check acts on: the note says so
        said = "within the check's tolerance for timing noise" in section[0]
        if said:
            assert low >= 0.995 and not _slower(ratio - 0.005, low - 0.005), notes
        elif not _slower(ratio + 0.005, low + 0.005):
            assert low <= 1.005, notes
        if len(section) == 1:
            assert not _slower(ratio - 0.005, low - 0.005), notes
        else:  # timing noise said slower: what moved is named, and the note's figures agree with that
            assert _slower(ratio + 0.005, low + 0.005) and "moved back to float" in section[1], notes
    assert (out == placement) == all(len(sec) == 1 for sec in sections), notes


def _hardswish_chain(n: int = 6, size: int = 64, batch: int | str = 1) -> tuple[onnx.ModelProto, Dataset]:
    """``n`` HardSwish ops on a 1 x 16 x size x size tensor: one fused kernel each in float, four ops each once
    :func:`rewrite_for_int8` has made them int8-capable."""
    nodes = [helper.make_node("HardSwish", [f"t{i}"], [f"t{i + 1}"], name=f"hs{i}") for i in range(n)]
    shape = [batch, 16, size, size]
    graph = helper.make_graph(nodes, "hs", [helper.make_tensor_value_info("t0", F, shape)],
                              [helper.make_tensor_value_info(f"t{n}", F, shape)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).normal(size=[4, *shape[1:]]).astype(np.float32)
    return model, Dataset({"t0": x})


def test_latency_check_times_against_the_float_model_without_rewrites() -> None:
    """The int8-capable rewrites (HardSwish -> Mul(x, Clip(Add(Mul)))) are slower in float than the op they replace;
    the check must time candidates against the float model as it runs without tensorslim, not against the rewritten
    graph: a candidate that is the rewritten graph in float is slower than float, and the check says so."""
    original, data = _hardswish_chain()
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(original)
    assert rewrite_for_int8(rewritten)  # the rewritten graph stands for an int8 model no faster than its float ops
    index = _Index(rewritten)
    names = tuple(sorted(n.name for n in rewritten.graph.node))
    placement = Placement(names, (), 1, "x")

    def build(int8: set[str]) -> onnx.ModelProto:
        return rewritten if int8 else original

    _, against_rewritten = latency_fallback(rewritten, placement, build, data, index, time_budget_s=4.0)
    out, notes = latency_fallback(rewritten, placement, build, data, index, time_budget_s=4.0, reference=original)
    ratio = lambda note: float(re.search(r"static int8 ([0-9.]+)x float", note).group(1))  # noqa: E731
    assert ratio(notes[0]) > 1.2, notes  # four float ops per HardSwish against one
    assert ratio(notes[0]) > ratio(against_rewritten[0]) + 0.15, (notes, against_rewritten)
    assert not out.int8 and all(why.startswith("slower") for _, why in out.float), out
    assert "every node moved back to float" in notes[-1], notes


def _batch_squared(original: onnx.ModelProto) -> onnx.ModelProto:
    """A candidate for ``original`` (a HardSwish chain) that is one HardSwish over the whole batch, run once per
    sample in a Loop: cheaper than the chain at batch 1, and its cost grows with the square of the batch."""
    x, y = original.graph.input[0], original.graph.output[0]
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("HardSwish", ["v"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v", F, None)],
        [helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", F, None)])  # fmt: skip
    nodes = [helper.make_node("Shape", [x.name], ["shape"], name="shape"),
             helper.make_node("Gather", ["shape", "zero"], ["batch"], name="batch", axis=0),
             helper.make_node("Loop", ["batch", "", x.name], [y.name], name="loop", body=body)]  # fmt: skip
    graph = helper.make_graph(nodes, "sq", [x], [y], [onnx.numpy_helper.from_array(np.array(0, np.int64), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_latency_check_times_a_larger_batch_too() -> None:
    """A placement faster than float at batch 1 and slower at a larger batch (int8's gain shrinks as the batch
    grows: Q/DQ and layout transposes scale with it): the check times a second batch of calibration samples when the
    inputs have a free batch axis, moves regions back to float, and says at which batch."""
    original, _ = _hardswish_chain(size=128, batch="N")
    x = np.random.default_rng(1).normal(size=[16, 16, 128, 128]).astype(np.float32)
    data = Dataset({"t0": x})
    candidate = _batch_squared(original)
    index = _Index(original)
    placement = Placement(tuple(sorted(n.name for n in original.graph.node)), (), 1, "x")
    out, notes = latency_fallback(original, placement, lambda int8: candidate if int8 else original, data, index,
                                  time_budget_s=20.0)  # fmt: skip
    sections = _by_batch(notes)
    assert len(sections) == 2 and "(batch 1," in sections[0][0] and "(batch 16," in sections[1][0], notes
    assert len(sections[0]) == 1 and _figures(sections[0][0])[0] < 0.8, notes  # faster at batch 1: nothing moved
    assert _figures(sections[1][0])[1] > 1.5, notes  # 16 HardSwish passes over the batch against 6
    assert not out.int8 and all(why.endswith("batch 16)") for _, why in out.float), out
    assert "every node moved back to float" in notes[-2] and notes[-2].endswith("try --mode dynamic"), notes
    assert notes[-1].startswith(f"latency check: batch 1's {len(placement.int8)} int8 node(s)"), notes
    assert "--latency-batch 1" in notes[-1], notes
    # the batch the user serves: 1 keeps batch 1's placement, 8 is timed instead of the check's own choice
    kept, notes1 = latency_fallback(original, placement, lambda int8: candidate if int8 else original, data, index,
                                    time_budget_s=20.0, batch=1)  # fmt: skip
    assert kept.int8 == placement.int8 and len(_by_batch(notes1)) == 1, notes1
    _, notes8 = latency_fallback(original, placement, lambda int8: candidate if int8 else original, data, index,
                                 time_budget_s=20.0, batch=8)  # fmt: skip
    assert "(batch 8," in _by_batch(notes8)[1][0], notes8


def test_larger_batch_follows_the_data_and_the_float_time() -> None:
    x = np.zeros((40, 3), np.float32)
    assert _larger_batch(Dataset({"x": x}), 1e-4)["x"].shape[0] == 32  # at most 32
    assert _larger_batch(Dataset({"x": x[:20]}), 1e-4)["x"].shape[0] == 16  # a power of two the data holds
    assert _larger_batch(Dataset({"x": x}), 0.1)["x"].shape[0] == 2  # about 0.25 s of float time per run
    assert _larger_batch(Dataset({"x": x}), 0.2) is None
    assert _larger_batch(Dataset({"x": x[:1]}), 1e-4) is None
    assert _larger_batch(Dataset({"x": x}, fixed_batch=1), 1e-4) is None  # e.g. an input [1, 3]
    assert _larger_batch(Dataset({"x": x}, batch_axes={"x": None}), 1e-4) is None  # no batch axis
    # the batch the user asked for: that many, whatever float's time; as many as the data holds
    assert _larger_batch(Dataset({"x": x}), 0.2, size=12)["x"].shape[0] == 12
    assert _larger_batch(Dataset({"x": x}), 1e-4, size=100)["x"].shape[0] == 40
    assert _larger_batch(Dataset({"x": x}, fixed_batch=1), 1e-4, size=8) is None


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "8", 5000])
def test_latency_batch_must_be_a_batch_size(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^latency_batch: .* is not a batch size from 1 to 4096"):
        StaticQuantConfig(latency_batch=value)  # type: ignore[arg-type]


def test_quantize_api_takes_a_placement_object(tmp_path: Path) -> None:
    model, data = mobile_block()
    a = quantize(model, tmp_path / "a.onnx", config=StaticQuantConfig(latency_check=False), data=data)
    placement = load_placement(tmp_path / "a.onnx")
    b = quantize(model, tmp_path / "b.onnx", config=StaticQuantConfig(placement=placement), data=data)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert a.notes and b.notes


def test_node_fallback_measures_the_error_each_node_adds() -> None:
    model, data = mobile_block()
    res = static_pipeline(StaticQuantConfig(latency_check=False, node_fallback=True, fallback_sqnr_db=45.0,
                                            max_fallback=0.5), data)(model)  # fmt: skip
    reasons = dict(load_placement_from(res.model).float)
    added = [n for n, why in reasons.items() if why.startswith("sensitive: its int8 form adds error")]
    assert added and all(float(reasons[n].split("(")[1].split(" dB")[0]) < 45.0 for n in added)
    assert any(n.startswith("node(s) left float") or "node(s) left float" in n for n in res.notes)
    feeds = {"x": data.inputs["x"][:8]}
    assert _cosine(run(model, feeds)[0], run(res.model, feeds)[0]) > 0.99


def test_learned_rounding_lowers_the_output_error() -> None:
    model, data = mobile_block()
    feeds = {"x": data.inputs["x"][:16]}
    ref = run(model, feeds)[0]
    errs = {}
    for learned in (False, True):
        # the empirical correction off in both: it fits each layer's output afterwards, which takes up much of
        # what any rounding leaves and would blur the comparison of the roundings themselves
        cfg = StaticQuantConfig(latency_check=False, learned_rounding=learned, output_sqnr_db=0.0, empirical_bias=False)
        res = static_pipeline(cfg, data)(model)
        errs[learned] = float(np.linalg.norm(run(res.model, feeds)[0] - ref) / np.linalg.norm(ref))
        if learned:
            (note,) = [n for n in res.notes if n.startswith("learned rounding:")]
            assert "weight(s), layer output error" in note
            (kept,) = [n for n in res.notes if n.startswith("learned rounding kept")]  # it beat nearest: kept
    assert errs[True] < errs[False], errs


def test_learned_rounding_is_dropped_when_it_lowers_the_output_sqnr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Codes that raise the model's output error (here: every learned code pushed one step off nearest) are not
    written: the output is round-to-nearest's, byte for byte."""
    import tensorslim.passes.static_quant as sq

    model, data = mobile_block()
    real = sq._learned_codes

    def worse(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        return {k: (scale, np.clip(codes + np.where(codes >= 0, 1, -1), -127, 127).astype(codes.dtype))
                for k, (scale, codes) in out.items()}  # fmt: skip

    monkeypatch.setattr(sq, "_learned_codes", worse)
    base = dict(latency_check=False, output_sqnr_db=0.0)
    res = static_pipeline(StaticQuantConfig(learned_rounding=True, **base), data)(model)
    assert any(n.startswith("learned rounding dropped") for n in res.notes), res.notes
    nearest = static_pipeline(StaticQuantConfig(**base), data)(model)
    assert res.model.graph.SerializeToString() == nearest.model.graph.SerializeToString()


def test_output_guard_moves_only_weightless_nodes_and_never_lowers_the_output_sqnr() -> None:
    model, data = mobile_block()
    res = static_pipeline(StaticQuantConfig(latency_check=False, output_sqnr_db=60.0), data)(model)
    (note,) = [n for n in res.notes if n.startswith("output check:")]
    figures = [float(x.split(" dB")[0]) for x in note.split("SQNR ")[1:2] + note.split("-> ")[1:2]]
    assert len(figures) in (1, 2) and (len(figures) == 1 or figures[1] >= figures[0]), note
    placement = load_placement_from(res.model)
    guarded = [n for n, why in placement.float if why.startswith("output-guard")]
    assert not {"conv1", "conv2", "conv3"} & set(guarded)  # weighted nodes keep their int8 kernels
    assert bool(guarded) == ("moved back to float" in note)
    quiet = static_pipeline(StaticQuantConfig(latency_check=False), data)(model)
    assert not [n for n, why in load_placement_from(quiet.model).float if why.startswith("output-guard")]


def test_div_rewrite_keeps_scalar_rank_and_leaves_shape_arithmetic(tmp_path: Path) -> None:
    """``Div(x, c)`` -> ``Mul(x, 1/c)`` keeps a 0-d constant 0-d (a [1] one turns a scalar into a vector and a
    later Concat of sizes fails shape inference); a Div whose quotient is cast to an integer (shape arithmetic)
    is left as it is (x * (1/c) can fall just below the integer)."""
    inits = {"c": np.array(3.0, np.float32), "k": np.array(7.0, np.float32), "one": np.array([1], np.int64)}
    nodes = [
        helper.make_node("Div", ["s", "c"], ["q"], name="scalar_div"),  # scalar activation / scalar: stays 0-d
        helper.make_node("Div", ["s", "k"], ["sq"], name="size_div"),
        helper.make_node("Cast", ["sq"], ["si"], name="to_int", to=onnx.TensorProto.INT64),
        helper.make_node("Unsqueeze", ["si", "zero_axis"], ["su"], name="unsq"),
        helper.make_node("Concat", ["su", "one"], ["shape"], name="cat", axis=0),
    ]
    inits["zero_axis"] = np.array([0], np.int64)
    model = make(nodes, [("s", F, [])], [("q", F, []), ("shape", onnx.TensorProto.INT64, [2])], inits)
    notes = rewrite_for_int8(model)
    assert notes and "Div x1" in notes[0]
    by_name = {n.name: n for n in model.graph.node}
    assert by_name["scalar_div"].op_type == "Mul" and by_name["size_div"].op_type == "Div"
    recip = next(t for t in model.graph.initializer if t.name == by_name["scalar_div"].input[1])
    assert list(recip.dims) == []
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    s = np.array(49.0, np.float32)
    q, shape = run(model, {"s": s})
    assert q.shape == () and np.isclose(q, 49 / 3) and shape.tolist() == [7, 1]


def upsample_head(seed: int = 0) -> tuple[onnx.ModelProto, Dataset]:
    """Conv -> Relu -> Resize (nearest, x4) -> Mul -> Add -> Conv: a segmentation head, whose elementwise ops on the
    upsampled map cost far more in float (4 bytes per value, a Q/DQ pair at each border) than in int8."""
    r = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Resize", ["r1", "", "scales"], ["up"], name="upsample", mode="nearest"),
        helper.make_node("Mul", ["up", "gain"], ["upg"], name="gain_mul"),
        helper.make_node("Add", ["upg", "shift"], ["upb"], name="shift_add"),
        helper.make_node("Conv", ["upb", "W2", "B2"], ["y"], name="conv2"),
    ]
    inits = {
        "W1": (r.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32), "B1": np.zeros(16, np.float32),
        "scales": np.array([1, 1, 4, 4], np.float32), "gain": (1 + r.random((1, 16, 1, 1))).astype(np.float32),
        "shift": (r.standard_normal((1, 16, 1, 1)) * 0.1).astype(
            np.float32),
        "W2": (r.standard_normal((4, 16, 1, 1)) * 0.3).astype(np.float32), "B2": np.zeros(4, np.float32),
    }  # fmt: skip
    model = make(nodes, [("x", F, ["b", 3, 32, 32])], [("y", F, ["b", 4, 128, 128])], inits, opset=14)
    return model, Dataset({"x": r.standard_normal((16, 3, 32, 32)).astype(np.float32)})


def test_float_move_costs_read_both_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimate the output guard spends by, per int8 node: its float kernel's time, plus Q/DQ on the elements
    its int8 kernels read and write at the Q/DQ cost per element of the same int8 profile, minus its int8 kernels'
    time (a fused kernel's ``_token_N`` name counts for its node); nodes neither profile has are left out."""
    import tensorslim.passes.static_latency as sl

    model, data = upsample_head()
    trial = _qdq_trial(model, {"conv1", "relu1", "upsample", "gain_mul", "shift_add", "conv2"}, data)
    int8_prof = {
        "conv1_token_1": 0.08, "QLinearConv/conv1_token_1/bytes": 1000.0,
        "upsample": 0.1, "Resize/upsample/bytes": 2000.0,
        "x_QuantizeLinear": 0.01, "QuantizeLinear/x_QuantizeLinear/bytes": 5000.0,  # 1e-5 ms per element
    }  # fmt: skip
    monkeypatch.setattr(sl, "profile_nodes", lambda *args, **kwargs: int8_prof)
    float_prof = {"conv1": 0.2, "upsample": 0.3, "Resize/upsample/bytes": 8000.0, "conv2": 0.5}
    costs, total = sl.float_move_costs(float_prof, trial, {}, 1)
    assert total == pytest.approx(1.0)
    assert costs == pytest.approx({"conv1": 0.2 + 0.01 - 0.08, "upsample": 0.3 + 0.02 - 0.1, "conv2": 0.5})


def _qdq_trial(model: onnx.ModelProto, int8: set[str], data: Dataset) -> onnx.ModelProto:
    """``model`` with Q/DQ pairs around ``int8`` (min/max ranges), as the output guard's trials are."""
    from tensorslim.passes.static_quant import _group_params, calibrate_ranges

    cfg = StaticQuantConfig(latency_check=False)
    index = _Index(model)
    quant = sorted(index.quantized(int8))
    bits = dict.fromkeys(quant, 8)
    ranges = calibrate_ranges(model, quant, data, cfg, bits)
    params, _, _ = _group_params(index, int8, ranges, cfg, bits)
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    _apply(trial, int8, params, cfg, {}, [])
    return trial


def test_output_guard_counts_the_speed_it_spends_when_the_latency_check_is_on() -> None:
    """With the latency check on, the guard times each state against float and may spend a tenth of float's time on
    accuracy; a node whose estimated cost does not fit what is left stays int8 and is named with its cost. Without
    it (latency check off), the same guard moves nodes by error alone."""
    model, data = upsample_head()
    res = static_pipeline(StaticQuantConfig(output_sqnr_db=60.0, latency_budget_s=4.0), data)(model)
    (note,) = [n for n in res.notes if n.startswith("output check:")]
    placement = load_placement_from(res.model)
    guarded = {n: why for n, why in placement.float if why.startswith("output-guard")}
    assert all(re.search(r"costs ~-?\d+\.\d+ ms in float here", why) for why in guarded.values()), guarded
    timed = re.search(r"timed here: (\d+\.\d+)x \[(\d+\.\d+), \d+\.\d+\] float's time with them, "
                      r"(\d+\.\d+)x \[\d+\.\d+, \d+\.\d+\] without", note)  # fmt: skip
    assert bool(guarded) == bool(timed), note
    if timed:  # a state is kept unless its whole interval is more than a tenth of float's time over the first's
        assert float(timed[2]) - float(timed[3]) <= 0.10, note
    kept = re.search(r"kept int8: in float they would cost more than was left of the 10% of float's (\d+\.\d+) ms "
                     r"the guard may spend \((.*)\)", note)  # fmt: skip
    if kept:
        for name, ms in re.findall(r"(\S+) \+(\d+\.\d+) ms", kept[2]):
            assert name not in guarded and float(ms) >= 0, note
    blind = static_pipeline(StaticQuantConfig(latency_check=False, output_sqnr_db=60.0), data)(model)
    blind_note = next(n for n in blind.notes if n.startswith("output check:"))
    assert "timed here" not in blind_note and "kept int8" not in blind_note
    assert all("costs ~" not in why for _, why in load_placement_from(blind.model).float)


def test_output_guard_budget_takes_the_worst_moves_that_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's choice per round, for given cost estimates: in error order, the nodes whose estimated costs fit
    what is left of a tenth of float's time (measured from the states accepted so far), at most ``quota``; a node
    that does not fit stays int8 and is named in the note."""
    import tensorslim.passes.static_latency as sl
    from tensorslim.passes.static_quant import _MoveBudget

    estimates = {"a": 0.05, "b": 2.0, "c": 0.5, "d": 0.02, "e": 0.6, "g": 0.0}
    monkeypatch.setattr(sl, "float_move_costs", lambda *args, **kwargs: (estimates, 10.0))
    budget = _MoveBudget({}, {}, 1, None, total=10.0)  # 1 ms to spend
    assert budget.take(["b", "a", "c", "e", "d"], 3, onnx.ModelProto()) == ["a", "c", "d"]
    assert budget.kept == {"b", "e"}
    budget.ratios = [0.5, 0.58]  # the moves so far measured 8 % of float's time: 0.2 ms left
    assert budget.take(["c", "d", "g"], 3, onnx.ModelProto()) == ["d", "g"]
    budget.ratios = [0.7, 0.61]  # moves that made it faster leave the whole budget
    assert budget.take(["c"], 1, onnx.ModelProto()) == ["c"]
    note = budget.said({"a": "", "c": "", "d": "", "g": ""}, 1)  # kept for cost once, moved later: not named
    assert "b +2.00 ms" in note and "e +0.60 ms" in note and "c +" not in note, note
