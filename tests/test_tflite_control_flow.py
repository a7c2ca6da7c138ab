"""TFLite weights inside WHILE bodies (how Keras 3 converts LSTM/GRU layers): every mode quantizes them, the
output loads and runs in LiteRT and keeps its values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import tensorslim as ts
import tflite_models as tm
from tensorslim.backends.tflite.dynamic import TfliteDynamicConfig
from tensorslim.backends.tflite.graph import Graph
from tensorslim.backends.tflite.io import load_model
from tensorslim.backends.tflite.schema import type_name
from tensorslim.passes.dynamic_quant import DynamicQuantConfig
from tensorslim.passes.float16 import Float16Config
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.runtime.litert import LiteRTRuntime


def _feeds(seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).uniform(-1, 1, (1, 64)).astype(np.float32)}


def _body_weight_types(model: Any) -> set[str]:
    """The types of the tensors read at the FULLY_CONNECTED weight position in the loop body, following a
    DEQUANTIZE back to its source."""
    g = Graph(model, 2)
    producers = g.producers()
    out = set()
    for op in g.sg.operators:
        if g.op_type(op) == "FULLY_CONNECTED":
            t = int(op.inputs[1])
            if t in producers and g.op_type(g.sg.operators[producers[t]]) == "DEQUANTIZE":
                t = int(g.sg.operators[producers[t]].inputs[0])
            out.add(type_name(g.sg.tensors[t].type))
    return out


@pytest.mark.parametrize(
    ("config", "weight_type"),
    [
        (None, "INT8"),
        (DynamicQuantConfig(form="weight_only"), "INT8"),
        (TfliteDynamicConfig(form="integer"), "INT8"),
        (Float16Config(), "FLOAT16"),
        (StaticQuantConfig(), "INT8"),
    ],
    ids=["dynamic", "weight_only", "integer", "fp16", "static"],
)
def test_while_body_weights_quantized_in_every_mode(tmp_path: Any, config: Any, weight_type: str) -> None:
    src = tmp_path / "rnn.tflite"
    src.write_bytes(tm.while_rnn())
    out = tmp_path / "out.tflite"
    data = [_feeds(100 + i) for i in range(16)] if isinstance(config, StaticQuantConfig) else None
    res = ts.quantize(src, out, config=config, data=data)
    assert any(not r.skipped and "rnn/w" in r.name for r in res.records), [r.name for r in res.records]
    assert _body_weight_types(load_model(out)) == {weight_type}
    assert out.stat().st_size < src.stat().st_size
    ref_rt, q_rt = LiteRTRuntime(src.read_bytes()), LiteRTRuntime(out.read_bytes())
    for seed in range(3):
        a, b = ref_rt.run(_feeds(seed))[0].ravel(), q_rt.run(_feeds(seed))[0].ravel()
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999


def test_static_notes_the_uncalibrated_bodies(tmp_path: Any) -> None:
    src = tmp_path / "rnn.tflite"
    src.write_bytes(tm.while_rnn())
    res = ts.quantize(src, None, config=StaticQuantConfig(), data=[_feeds(i) for i in range(8)])
    assert any("control-flow subgraphs" in n for n in res.notes), res.notes


def test_onnx_only_commands_name_the_tflite_format(tmp_path: Any) -> None:
    """Channel pruning and compress take ONNX models: a .tflite file is refused as what it is, not as a corrupt
    ONNX file (prune, cluster and pack take .tflite: tests/test_tflite_prune_cluster_pack.py)."""
    from tensorslim.errors import InputError

    src = tmp_path / "rnn.tflite"
    src.write_bytes(tm.while_rnn())
    with pytest.raises(InputError, match="channel pruning rewrites ONNX graphs only"):
        ts.prune_channels(src, tmp_path / "out.tflite")
    with pytest.raises(InputError, match="compress runs the ONNX pipeline"):
        ts.compress(src, tmp_path / "out.tslim")
