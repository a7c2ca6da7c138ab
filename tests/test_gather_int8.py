"""gather_int8: per-row int8 embedding tables behind DequantizeLinear, checked in ONNX Runtime, and reachable
as a recipe pass through its registry entry alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models import make, run
from tensorslim.passes.gather_int8 import GatherInt8Config, GatherInt8Pass, quantize_rows
from tensorslim.recipe import apply_recipe, recipe_from_dict

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def embedding_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """ids -> Gather(E) -> MatMul(W) -> y: a tiny model with a 200 x 48 embedding."""
    r = np.random.default_rng(seed)
    e = r.standard_normal((200, 48)).astype(np.float32)
    e[7] = 0.0  # an all-zero row keeps scale 1
    w = r.standard_normal((48, 16)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"], name="embed"),
             helper.make_node("MatMul", ["h", "W"], ["y"], name="proj")]  # fmt: skip
    m = make(nodes, [("ids", I64, ["b", 5])], [("y", F, ["b", 5, 16])], {"E": e, "W": w})
    return m, {"ids": r.integers(0, 200, (3, 5)).astype(np.int64)}


def test_int8_rows_run_in_onnx_runtime_as_the_numpy_dequantization() -> None:
    model, feeds = embedding_model()
    res = GatherInt8Pass()(model)
    assert res.modified
    onnx.checker.check_model(res.model, full_check=True)
    table = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "E"))
    q, scale = quantize_rows(table)
    assert q.dtype == np.int8 and scale.shape == (200,) and scale[7] == 1.0 and not q[7].any()
    inits = {t.name: numpy_helper.to_array(t) for t in res.model.graph.initializer}
    assert "E" not in inits and any(a.dtype == np.int8 and a.shape == (200, 48) for a in inits.values())
    ops = [n.op_type for n in res.model.graph.node]
    assert ops == ["DequantizeLinear", "Gather", "MatMul"]
    # ONNX Runtime computes exactly what the int8 rows and scales say
    w = inits["W"]
    want = (q.astype(np.float32) * scale[:, None])[feeds["ids"]] @ w
    got = run(res.model, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and stays within half a step of each looked-up row of the float model's embedding
    h_float = table[feeds["ids"]]
    h_int8 = (q.astype(np.float32) * scale[:, None])[feeds["ids"]]
    assert np.all(np.abs(h_float - h_int8) <= scale[feeds["ids"]][..., None] / 2 + 1e-7)
    ref = run(model, feeds)[0]
    assert np.abs(ref - got).max() < 0.02 * np.abs(ref).max()
    (rec,) = [r for r in res.records if r.name == "E"]
    assert not rec.skipped and rec.bytes_after == 200 * 48 + 200 * 4 and rec.sqnr_db is not None and rec.sqnr_db > 35


def test_skips_say_why() -> None:
    model, _ = embedding_model()
    res = GatherInt8Pass(GatherInt8Config(exclude=("^embed$",)))(model)
    assert not res.modified and [r.reason for r in res.records] == ["excluded"]
    res = GatherInt8Pass(GatherInt8Config(min_size=200 * 48 + 1))(model)
    assert not res.modified and "min size" in res.records[0].reason
    old = make(list(model.graph.node), [("ids", I64, ["b", 5])], [("y", F, ["b", 5, 16])],
               {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}, opset=11)  # fmt: skip
    res = GatherInt8Pass()(old)
    assert not res.modified and "opset 11" in res.records[0].reason


def test_a_recipe_runs_it_from_its_registry_entry(tmp_path: Path) -> None:
    model, feeds = embedding_model()
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    recipe = recipe_from_dict({"version": 1, "name": "int8-embeddings", "description": "int8 tables",
                               "passes": [{"pass": "gather_int8", "config": {"min_size": 64}},
                                          {"pass": "dynamic_quant", "config": {}}]})  # fmt: skip
    result = apply_recipe(recipe, src, tmp_path / "q.onnx")
    assert [s.kind for s in result.steps] == ["gather_int8", "dynamic_quant"] and result.steps[0].modified
    out = onnx.load(str(tmp_path / "q.onnx"))
    assert "DequantizeLinear" in [n.op_type for n in out.graph.node]
    ref, got = run(model, feeds)[0], run(out, feeds)[0]
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()
    skipped = recipe_from_dict({**recipe.to_dict(), "passes": [
        {"pass": "gather_int8", "config": {}, "rules": [{"match": {"op": "Gather"}, "skip": True}]}]})  # fmt: skip
    res = apply_recipe(skipped, src, tmp_path / "s.onnx")
    assert not res.steps[0].modified
