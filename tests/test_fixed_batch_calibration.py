"""A model exported with a fixed batch of 1 calibrates one sample a call (static int8 and GPTQ int4); it used to
get batches of 8-32 samples and fail inside ONNX Runtime (``Got: 8 Expected: 1``, exit 3)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import tensorslim as ts
from models import F, make, rng, run
from tensorslim.algorithms.fidelity import cosine_rows
from tensorslim.passes.blockwise_quant import BlockQuantConfig
from tensorslim.passes.static_quant import StaticQuantConfig


def _fixed_batch_mlp():  # type: ignore[no-untyped-def]
    r = rng(0)
    w1 = (r.standard_normal((64, 128)) * 0.2).astype(np.float32)
    w2 = (r.standard_normal((128, 32)) * 0.2).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("MatMul", ["hr", "W2"], ["y"], name="fc2"),
    ]
    return make(nodes, [("x", F, [1, 64])], [("y", F, [1, 32])], {"W1": w1, "W2": w2})


@pytest.mark.parametrize(
    ("config", "floor"),
    [(StaticQuantConfig(), 0.98), (BlockQuantConfig(bits=4, min_size=0), 0.95)],
    ids=["static", "int4"],
)
def test_fixed_batch_of_one_calibrates_sample_by_sample(config, floor: float) -> None:  # type: ignore[no-untyped-def]
    model = _fixed_batch_mlp()
    r = rng(1)
    feeds = [{"x": r.standard_normal((1, 64)).astype(np.float32)} for _ in range(24)]
    res = ts.quantize(model, config=config, data=feeds)
    assert res.size_ratio < 0.5
    x = {"x": r.standard_normal((1, 64)).astype(np.float32)}
    assert cosine_rows(run(model, x)[0], run(res.model, x)[0]).min() >= floor
