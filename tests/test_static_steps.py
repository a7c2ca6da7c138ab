"""Static quantization's preparation as passes of its pipeline: each step on its own, the opset fallback, and
SmoothQuant's explicit scales kept float when the steps are separate recipe passes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.version_converter
import pytest

from models import mlp_model
from tensorslim.errors import InputError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.qdq_opset import QdqOpsetPass
from tensorslim.passes.smooth_quant import SmoothQuantConfig, SmoothQuantPass, explicit_scales
from tensorslim.passes.static_placement import PLACEMENT_METADATA_KEY
from tensorslim.passes.static_prepare import StaticPrepareConfig, StaticPreparePass
from tensorslim.passes.static_quant import StaticQuantConfig, StaticQuantPass
from tensorslim.pipeline import static_pipeline
from test_smooth_quant import block


def _at_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.opset_import[0].version = version
    return m


def _data() -> Dataset:
    return Dataset({"x": np.random.default_rng(1).standard_normal((16, 32)).astype(np.float32)})


def test_qdq_opset_raises_an_old_model_and_leaves_a_new_one() -> None:
    model, _ = mlp_model()
    old = QdqOpsetPass()(_at_opset(model, 11))
    assert old.modified and old.model.opset_import[0].version == 13
    assert old.notes == ["model converted from opset 11 to 13 for per-channel QDQ"]
    new = QdqOpsetPass()(model)
    assert not new.modified and not new.notes


def test_a_failed_upgrade_means_per_tensor_weights_and_below_10_the_users_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
        raise RuntimeError("no adapter")

    monkeypatch.setattr(onnx.version_converter, "convert_version", refuse)
    model, _ = mlp_model()
    res = static_pipeline(StaticQuantConfig(latency_check=False), _data())(_at_opset(model, 11))
    assert res.notes[0] == "opset 11 could not be raised to 13 (RuntimeError): per-tensor weights"
    assert {r.granularity for r in res.records if not r.skipped} == {"per_tensor"}
    with pytest.raises(InputError, match="opset 9 has no QuantizeLinear"):
        static_pipeline(StaticQuantConfig(latency_check=False), _data())(_at_opset(model, 9))
    with pytest.raises(InputError, match="opset 9 has no QuantizeLinear"):  # the pass alone says the same
        StaticQuantPass(StaticQuantConfig(latency_check=False), data=_data())(_at_opset(model, 9))


def test_prepare_names_every_node_and_reports_no_change_when_there_is_none() -> None:
    model, _ = mlp_model()
    model.graph.node[1].ClearField("name")
    res = StaticPreparePass(StaticPrepareConfig(preprocess=False))(model)
    assert res.modified and all(n.name for n in res.model.graph.node) and not res.notes
    assert not StaticPreparePass(StaticPrepareConfig(preprocess=False))(res.model).modified


def test_smoothing_and_static_as_separate_passes_keep_the_explicit_scales_float() -> None:
    model, data = block(3, k=64, outliers=60.0, gelu_like=True)
    smooth = SmoothQuantPass(SmoothQuantConfig(alpha=0.5), data=data)(model)
    muls = explicit_scales(smooth.model)
    assert smooth.modified and muls and not explicit_scales(model)
    static = StaticQuantPass(StaticQuantConfig(latency_check=False, fallback_sqnr_db=0.0), data=data)(smooth.model)
    reasons = json.loads(next(p.value for p in static.model.metadata_props if p.key == PLACEMENT_METADATA_KEY))["float"]
    assert all(reasons[m].startswith("smoothing:") for m in muls)
    together = static_pipeline(StaticQuantConfig(latency_check=False, fallback_sqnr_db=0.0, smooth_quant=0.5,
                                                 preprocess=False), data)(model)  # fmt: skip
    assert together.model.SerializeToString() == static.model.SerializeToString()
    with pytest.raises(InputError, match="SmoothQuant needs calibration data"):
        SmoothQuantPass(SmoothQuantConfig())
