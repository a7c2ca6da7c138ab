"""uniform_quant: int8 codes on one step per channel for a target SQNR, checked in ONNX Runtime; GPTQ onto the
same grid lowers the output error; the codes pack far below a byte; bad configs name their field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import make, run
from tensorslim.algorithms.fidelity import sqnr_db
from tensorslim.algorithms.uniform import gptq_grid, grid_steps, round_to_grid, usage_steps
from tensorslim.data import Dataset
from tensorslim.errors import ConfigError, InputError
from tensorslim.passes.uniform_quant import UniformQuantConfig, UniformQuantPass, plan

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def tiny_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """ids -> Gather(E) -> MatMul(W1) -> Relu -> Gemm(W2, transB) -> y, heavy-tailed weights."""
    r = np.random.default_rng(seed)
    e = r.standard_normal((300, 64)).astype(np.float32)
    w1 = (r.laplace(size=(64, 96)) * np.linspace(0.2, 2.0, 96)).astype(np.float32)  # channel scales differ
    w2 = r.standard_normal((32, 96)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"], name="embed"),
             helper.make_node("MatMul", ["h", "W1"], ["a"], name="fc1"),
             helper.make_node("Relu", ["a"], ["b"], name="act"),
             helper.make_node("Gemm", ["b", "W2"], ["y"], name="fc2", transB=1)]  # fmt: skip
    m = make(nodes, [("ids", I64, [8])], [("y", F, [8, 32])], {"E": e, "W1": w1, "W2": w2})
    return m, {"ids": r.integers(0, 300, 8).astype(np.int64)}


def _dequantized(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Each DequantizeLinear's output computed in NumPy from its int8 codes and steps."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear":
            q, s = inits[n.input[0]].astype(np.float32), inits[n.input[1]]
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if s.ndim:
                shape[axis] = -1
            out[n.output[0]] = q * s.reshape(shape)
    return out


def test_runs_in_onnx_runtime_as_the_numpy_dequantization() -> None:
    model, feeds = tiny_model()
    res = UniformQuantPass(UniformQuantConfig(sqnr_db=30.0, min_size=0))(model)
    assert res.modified
    onnx.checker.check_model(res.model, full_check=True)
    ops = [n.op_type for n in res.model.graph.node]
    assert ops.count("DequantizeLinear") == 3 and ops[-1] == "Gemm"
    codes = [numpy_helper.to_array(t) for t in res.model.graph.initializer if t.data_type == TensorProto.INT8]
    assert sorted(c.shape for c in codes) == [(32, 96), (64, 96), (300, 64)]
    deq = _dequantized(res.model)
    by_input = {n.name: n.input for n in res.model.graph.node}
    e, w1, w2 = deq[by_input["embed"][0]], deq[by_input["fc1"][1]], deq[by_input["fc2"][1]]
    want = np.maximum(e[feeds["ids"]] @ w1, 0) @ w2.T
    np.testing.assert_allclose(run(res.model, feeds)[0], want, rtol=1e-4, atol=1e-4)
    for r in res.records:  # the grid was set for 30 dB: rounding noise is step**2 / 12, so the SQNR is about that
        assert not r.skipped and r.sqnr_db is not None and 28.0 < r.sqnr_db < 33.0, r
    ref = run(model, feeds)[0]
    assert np.abs(ref - run(res.model, feeds)[0]).max() < 0.1 * np.abs(ref).max()


def test_steps_follow_the_channel_rms_and_never_clip() -> None:
    r = np.random.default_rng(1)
    rows = r.standard_normal((4, 1000)) * np.array([[0.1], [1.0], [10.0], [0.0]])
    rows[1, 0] = 500.0  # an outlier: its step grows so that it still fits in int8
    step = grid_steps(rows, 30.0)  # 0.11 rms: the outlier sits 32 rms out, beyond 127 steps
    assert step[3] == 1.0 and step[1] == pytest.approx(500.0 / 127)
    assert step[2] / step[0] == pytest.approx(100.0, rel=0.1)
    q = round_to_grid(rows, step)
    assert np.abs(q).max() <= 127 and q[1, 0] == 127
    assert grid_steps(rows, 20.0, per_channel=False).std() == 0


def test_gptq_on_the_grid_lowers_the_output_error() -> None:
    r = np.random.default_rng(2)
    x = r.standard_normal((512, 64)) @ r.standard_normal((64, 64))  # correlated inputs
    w = r.standard_normal((48, 64))
    h = x.T @ x
    step = grid_steps(w, 15.0)
    plain, comp = round_to_grid(w, step), gptq_grid(w, h, step)
    assert comp.dtype == np.int8 and comp.shape == w.shape

    def out_err(q: np.ndarray) -> float:
        return float(np.sum((x @ (w - q * step[:, None]).T) ** 2))

    assert out_err(comp) < 0.7 * out_err(plain)


def test_deadzone_rounds_toward_zero_for_fewer_bits() -> None:
    """A deadzone trades a little error for smaller codes (lower entropy), with or without GPTQ; 0 is nearest."""
    r = np.random.default_rng(6)
    x = r.standard_normal((512, 64))
    w = r.laplace(size=(48, 64))
    step = grid_steps(w, 15.0)

    def entropy(q: np.ndarray) -> float:
        _, c = np.unique(q, return_counts=True)
        p = c / c.sum()
        return float(-(p * np.log2(p)).sum())

    assert np.array_equal(round_to_grid(w, step, deadzone=0.0), round_to_grid(w, step))
    for codes in (lambda dz: round_to_grid(w, step, deadzone=dz), lambda dz: gptq_grid(w, x.T @ x, step, deadzone=dz)):
        near, dead = codes(0.0), codes(0.2)
        assert entropy(dead) < entropy(near) - 0.1
        assert np.mean((w - dead * step[:, None]) ** 2) > np.mean((w - near * step[:, None]) ** 2)
    assert np.all(np.abs(round_to_grid(w, step, deadzone=0.2)) <= np.abs(round_to_grid(w, step)))


def test_gptq_pass_uses_the_calibration_data_and_stays_runnable() -> None:
    r = np.random.default_rng(3)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"], name="embed"),
             helper.make_node("MatMul", ["h", "W1"], ["y"], name="fc1")]  # fmt: skip
    e, w1 = r.standard_normal((300, 64)).astype(np.float32), r.laplace(size=(64, 96)).astype(np.float32)
    model = make(nodes, [("ids", I64, ["b", 8])], [("y", F, ["b", 8, 96])], {"E": e, "W1": w1})
    feeds = {"ids": r.integers(0, 300, (2, 8)).astype(np.int64)}
    data = Dataset({"ids": r.integers(0, 300, (16, 8)).astype(np.int64)})
    cfg = UniformQuantConfig(sqnr_db=14.0, min_size=0, op_types=("MatMul",))
    res = UniformQuantPass(cfg, data)(model)
    (rec,) = [r for r in res.records if not r.skipped]
    assert rec.name == "W1" and "gptq" in rec.reason
    assert np.isfinite(run(res.model, feeds)[0]).all()
    with pytest.raises(InputError, match="calibration data"):
        UniformQuantPass(UniformQuantConfig(method="gptq"))(model)


def test_same_input_same_bytes() -> None:
    model, _ = tiny_model()
    cfg = UniformQuantConfig(sqnr_db=18.0, gather_sqnr_db=12.0, gather_axis=1, min_size=0)
    a = UniformQuantPass(cfg)(model).model.SerializeToString()
    assert a == UniformQuantPass(cfg)(model).model.SerializeToString()


def test_the_plan_is_data_and_skips_say_why() -> None:
    model, _ = tiny_model()
    plans, skipped = plan(model, UniformQuantConfig(exclude=("^fc2$",), min_size=10_000))
    assert [p.name for p in plans] == ["E"] and plans[0].axis == 0 and plans[0].step.shape == (300,)
    reasons = {r.name: r.reason for r in skipped}
    assert reasons == {"W1": "6144 elements < min size 10000", "W2": "excluded"}
    plans, _ = plan(model, UniformQuantConfig(granularity="per_tensor", min_size=0))
    assert all(p.step.size == 1 for p in plans)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"sqnr_db": 0}, "sqnr_db"), ({"sqnr_db": "20"}, "sqnr_db"), ({"gather_sqnr_db": 99.0}, "gather_sqnr_db"),
     ({"granularity": "per_block"}, "granularity"), ({"method": "awq"}, "method"), ({"op_types": ("Conv",)}, "op_types"),
     ({"gather_axis": 2}, "gather_axis"), ({"min_size": -1}, "min_size"), ({"exclude": ("(a+)+$",)}, "exclude"),
     ({"allocate": "yes"}, "allocate"), ({"spread_db": -1.0}, "spread_db"), ({"deadzone": 0.5}, "deadzone"),
     ({"deadzone": True}, "deadzone"), ({"usage_db": -1.0}, "usage_db"), ({"usage_db": True}, "usage_db")],
)  # fmt: skip
def test_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        UniformQuantConfig(**kwargs)


def test_codes_pack_at_about_their_entropy(tmp_path: Path) -> None:
    """The point of the pass: int8 codes on a ~20 dB grid pack to ~3.5 bits per weight, bit-exact."""
    from tensorslim.pack import pack_model, unpack_model

    r = np.random.default_rng(4)
    w = r.standard_normal((256, 256)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")]
    model = make(nodes, [("x", F, [1, 256])], [("y", F, [1, 256])], {"W": w})
    q = UniformQuantPass(UniformQuantConfig(sqnr_db=20.0))(model).model
    rep = pack_model(q, tmp_path / "q.tslim")
    assert rep.bits_per_weight < 4.0
    out = unpack_model(tmp_path / "q.tslim")
    assert out.SerializeToString() == q.SerializeToString()


def test_registry_entry_runs_it_from_a_recipe(tmp_path: Path) -> None:
    from tensorslim.recipe import apply_recipe, recipe_from_dict

    model, feeds = tiny_model()
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    recipe = recipe_from_dict({"version": 1, "name": "uniform", "description": "entropy-coded int8",
                               "passes": [{"pass": "uniform_quant", "config": {"sqnr_db": 25.0, "min_size": 0}}]})
    result = apply_recipe(recipe, src, tmp_path / "q.onnx")
    assert [s.kind for s in result.steps] == ["uniform_quant"] and result.steps[0].modified
    out = onnx.load(str(tmp_path / "q.onnx"))
    assert sum(n.op_type == "DequantizeLinear" for n in out.graph.node) == 3
    ref, got = run(model, feeds)[0], run(out, feeds)[0]
    assert sqnr_db(ref, got) > 15.0  # three layers at 25 dB each


def test_allocate_moves_noise_to_the_weights_that_matter_least() -> None:
    """fc1's output is scaled down 100x before the output: its noise costs little, so it gets the coarser grid."""
    from tensorslim.passes.uniform_quant import allocate, sensitivities

    r = np.random.default_rng(5)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["a"], name="fc1"),
             helper.make_node("Mul", ["a", "tiny"], ["a2"], name="down"),
             helper.make_node("MatMul", ["x", "W2"], ["b"], name="fc2"),
             helper.make_node("Add", ["a2", "b"], ["y"], name="sum")]  # fmt: skip
    vals = {"W1": r.standard_normal((64, 64)).astype(np.float32), "W2": r.standard_normal((64, 64)).astype(np.float32),
            "tiny": np.array(0.01, np.float32)}
    model = make(nodes, [("x", F, ["b", 64])], [("y", F, ["b", 64])], vals)
    data = Dataset({"x": r.standard_normal((32, 64)).astype(np.float32)})
    cfg = UniformQuantConfig(sqnr_db=20.0, min_size=0, allocate=True, method="rtn")
    plans, _ = plan(model, cfg)
    sens = sensitivities(model, plans, data)
    assert sens["W2"] > 100 * sens["W1"]
    targets = {p.name: p.sqnr_db for p in allocate(model, plans, sens, cfg)}
    assert targets["W1"] < 20.0 < targets["W2"] and (targets["W1"] + targets["W2"]) / 2 == pytest.approx(20.0, abs=0.02)
    res = UniformQuantPass(cfg, data)(model)
    assert {r.name: r.reason.split(" for ")[1].split(" dB")[0] for r in res.records} == {
        k: f"{v:g}" for k, v in targets.items()}


def test_usage_steps_give_rows_read_more_often_the_finer_grid() -> None:
    """Unread rows: the base target; a row read n times: usage_db + 10 log10(n) dB more; steps on a 1/8 octave
    grid that never clips a value."""
    r = np.random.default_rng(7)
    rows = (r.standard_normal((6, 256)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])[:, None]).astype(np.float32)
    rows[5] = 0.0
    reads = np.array([0, 0, 1, 10, 100, 3])
    step = usage_steps(rows, reads, 12.0, 6.0)
    k = np.log2(step[:5].astype(np.float64)) * 8
    assert np.allclose(k, np.rint(k), atol=1e-4) and step[5] == 1.0  # on the grid; an all-zero row gets 1
    want = [12.0, 12.0, 18.0, 28.0, 38.0]
    got = [sqnr_db(rows[i], np.clip(np.rint(rows[i] / step[i]), -127, 127) * step[i]) for i in range(5)]
    assert np.allclose(got[:4], want[:4], atol=0.8)  # the grid moves a step by at most 1/16 octave (0.38 dB)
    assert got[4] > 35.0 and np.abs(rows[4]).max() / step[4] <= 127.0 + 1e-3  # 38 dB asks for < max/127: not clipped
    with pytest.raises(ValueError, match="one count per row"):
        usage_steps(rows, reads[:3], 12.0, 6.0)


def test_usage_db_refines_the_rows_the_calibration_data_reads() -> None:
    """The indices are computed in the graph (ids + 100), so the pass runs the model to count the rows read:
    the rows read (within 100-149) get the finer grid, the others the base one; the file packs smaller than every row at the fine
    target, and the model runs in ONNX Runtime as its NumPy dequantization says."""
    from tensorslim.pack.tensors import encode_tensor

    r = np.random.default_rng(11)
    e = r.standard_normal((400, 32)).astype(np.float32)
    nodes = [helper.make_node("Add", ["ids", "off"], ["idx"], name="shift"),
             helper.make_node("Gather", ["E", "idx"], ["y"], name="embed")]  # fmt: skip
    model = make(nodes, [("ids", I64, ["b", 8])], [("y", F, ["b", 8, 32])], {"E": e, "off": np.array(100, np.int64)})
    ids = r.integers(0, 50, (16, 8)).astype(np.int64)
    data = Dataset({"ids": ids})
    cfg = UniformQuantConfig(sqnr_db=10.0, min_size=0, usage_db=10.0, method="rtn")
    res = UniformQuantPass(cfg, data)(model)
    deq = next(iter(_dequantized(res.model).values()))
    per_row = np.array([sqnr_db(e[i], deq[i]) for i in range(400)])
    read = np.bincount(ids.reshape(-1) + 100, minlength=400) > 0
    assert read[100:150].sum() > 40 and not read[:100].any() and not read[150:].any()
    assert per_row[~read].mean() == pytest.approx(10.0, abs=0.6) and per_row[read].mean() > 22.0
    assert per_row[read].min() > 16.0 > per_row[~read].max()
    (dq,) = [n for n in res.model.graph.node if n.op_type == "DequantizeLinear"]
    assert next(a.i for a in dq.attribute if a.name == "axis") == 0
    feeds = {"ids": r.integers(0, 50, (2, 8)).astype(np.int64)}
    assert np.allclose(run(res.model, feeds)[0], deq[feeds["ids"] + 100], atol=1e-6)
    fine = UniformQuantPass(UniformQuantConfig(sqnr_db=20.0, min_size=0, gather_axis=0, method="rtn"))(model)

    def packed(m: onnx.ModelProto) -> int:
        encs = [encode_tensor(t) for t in m.graph.initializer]
        return sum(len(s[3]) for enc in encs if enc for s in enc.streams)

    assert packed(res.model) < 0.8 * packed(fine.model)
    assert UniformQuantPass(cfg, data)(model).model.SerializeToString() == res.model.SerializeToString()
