"""The int4 output check: with calibration data, 4-bit weights that cost the model's output too much take int8
codes, measured on held-out calibration samples, each decision recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from models import F, make, rng, run
from tensorslim.errors import ConfigError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.blockwise_quant import BlockQuantConfig, BlockQuantPass, _held_out


def _chain(layers: int = 5, k: int = 128) -> onnx.ModelProto:
    """``layers`` MatMuls with Tanh between; the third has heavy-tailed weights."""
    r = rng(11)
    nodes, inits, x = [], {}, "x"
    for i in range(layers):
        w = r.standard_normal((k, k)) / np.sqrt(k)
        if i == 2:
            w = r.standard_t(1.5, (k, k)) / np.sqrt(k)
        inits[f"W{i}"] = w.astype(np.float32)
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"], name=f"tanh{i}"))
        x = f"t{i}"
    return make(nodes, [("x", F, ["b", k])], [(x, F, ["b", k])], inits)


def _data(n: int, seed: int = 4) -> Dataset:
    return Dataset({"x": rng(seed).standard_normal((n, 128)).astype(np.float32)})


def _sqnr(model: onnx.ModelProto, other: onnx.ModelProto) -> float:
    feeds = {"x": rng(99).standard_normal((64, 128)).astype(np.float32)}
    a, b = run(model, feeds)[0].astype(np.float64), run(other, feeds)[0].astype(np.float64)
    return float(10 * np.log10(np.sum(a * a) / np.sum((a - b) ** 2)))


def test_layers_that_cost_the_output_most_take_int8_and_say_why() -> None:
    model = _chain()
    data = _data(64)
    off = BlockQuantPass(BlockQuantConfig(min_size=0, output_sqnr_db=0), data=data)(model)
    on = BlockQuantPass(BlockQuantConfig(min_size=0, output_sqnr_db=15), data=data)(model)
    four_off = {r.name for r in off.records if r.action.startswith("int4")}
    four_on = {r.name for r in on.records if r.action.startswith("int4")}
    moved = [r for r in on.records if r.name in four_off - four_on]
    assert len(four_off) == 5 and moved and four_on, (four_off, four_on)
    assert all(r.action.startswith("int8") and "output check" in r.reason and "adds" in r.reason for r in moved)
    assert len(moved) < 5  # the check stops once the output meets the threshold
    note = next(n for n in on.notes if n.startswith("output check"))
    assert "8 held-out calibration samples (GPTQ fit on the other 56)" in note and "take int8 codes" in note
    assert not any(n.startswith("output check") for n in off.notes)
    assert _sqnr(model, on.model) > _sqnr(model, off.model) + 1.0
    size = {k: sum(r.bytes_after for r in res.records) for k, res in (("off", off), ("on", on))}
    assert size["off"] < size["on"] < sum(r.bytes_before for r in on.records) / 2.5, size


def test_a_model_that_meets_the_threshold_keeps_every_4_bit_weight(tmp_path: Path) -> None:
    model = _chain(layers=2)
    res = BlockQuantPass(BlockQuantConfig(min_size=0, output_sqnr_db=5), data=_data(32))(model)
    assert all(r.action.startswith("int4") for r in res.records if not r.skipped)
    assert any(n.startswith("output check") and ">= 5 dB" in n for n in res.notes)
    # same input and seed, same bytes
    again = BlockQuantPass(BlockQuantConfig(min_size=0, output_sqnr_db=5), data=_data(32))(model)
    assert again.model.SerializeToString() == res.model.SerializeToString()


def test_held_out_samples() -> None:
    fit, check = _held_out(_data(40))
    assert (fit.num_samples, check.num_samples) == (32, 8)
    np.testing.assert_array_equal(check.inputs["x"], _data(40).inputs["x"][32:])
    few = _data(12)
    fit, check = _held_out(few)
    assert fit is few and check.num_samples == 8


@pytest.mark.parametrize("value", [-1, 101, True, "20"])
def test_output_sqnr_db_validation(value: object) -> None:
    with pytest.raises(ConfigError, match="output_sqnr_db"):
        BlockQuantConfig(output_sqnr_db=value)  # type: ignore[arg-type]
