"""A model past protobuf's 2 GB limit (external data) quantizes, saves and runs. Slow: ~2.4 GB of weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from models import F, run
from tensorslim import quantize


@pytest.mark.slow
def test_model_over_2gb_with_external_data(tmp_path: Path) -> None:
    r = np.random.default_rng(0)
    k = 8192
    n_layers = 9  # 9 x 8192 x 8192 x 4 bytes = 2.4 GB
    inits = [
        numpy_helper.from_array((r.standard_normal((k, k), dtype=np.float32) * 0.01), f"W{i}") for i in range(n_layers)
    ]
    nodes = []
    prev = "x"
    for i in range(n_layers):
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [f"h{i}"], name=f"mm{i}"))
        prev = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "big",
        [helper.make_tensor_value_info("x", F, [1, k])],
        [helper.make_tensor_value_info(prev, F, [1, k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = tmp_path / "big.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="big.onnx.data")
    assert (tmp_path / "big.onnx.data").stat().st_size > 2**31
    del model, inits, graph
    res = quantize(src, tmp_path / "big.int8.onnx")
    assert res.input_bytes > 2**31
    assert res.output_bytes < 0.26 * res.input_bytes
    x = r.standard_normal((1, k)).astype(np.float32)
    (ref,) = run(src, {"x": x})
    (out,) = run(tmp_path / "big.int8.onnx", {"x": x})
    cos = float(np.dot(ref.ravel(), out.ravel()) / np.linalg.norm(ref) / np.linalg.norm(out))
    assert cos > 0.99
