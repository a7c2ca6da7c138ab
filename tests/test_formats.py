"""Formats as peers: ts.quantize hands each model to its format; a TFLite config is its mode, and a config of
another mode is refused instead of ignored."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

pytest.importorskip("ai_edge_litert")

import tensorslim as ts
import tflite_models as tm
from models import mlp_model
from tensorslim.backends.tflite.dynamic import TfliteDynamicConfig
from tensorslim.backends.tflite.fp16 import TfliteFloat16Config
from tensorslim.backends.tflite.quantize import TfliteMode, quantize_tflite
from tensorslim.errors import InputError
from tensorslim.formats import OnnxFormat, TfliteFormat, format_of


def test_each_model_goes_to_its_format(tmp_path: Path) -> None:
    t = tmp_path / "m.tflite"
    t.write_bytes(tm.mlp())
    o = tmp_path / "m.onnx"
    onnx.save(mlp_model()[0], o)
    assert isinstance(format_of(t), TfliteFormat) and isinstance(format_of(o), OnnxFormat)
    assert isinstance(format_of(mlp_model()[0]), OnnxFormat)
    for fmt, path in ((TfliteFormat(), t), (OnnxFormat(), o)):
        model = fmt.load(path)
        assert fmt.size(model) > 0 and fmt.weights(model) and fmt.runtime(model) is not None
        out = fmt.save(model, tmp_path / f"copy{path.suffix}")
        assert out.stat().st_size > 0
    onnx_res, tfl_res = ts.quantize(o), ts.quantize(t, tmp_path / "q.tflite")
    assert isinstance(onnx_res, ts.QuantizeResult) and isinstance(tfl_res, ts.QuantizeResult)
    assert tfl_res.to_dict()["format"] == "tflite" and tfl_res.output_bytes < tfl_res.input_bytes


def test_a_tflite_config_is_its_mode_and_another_modes_config_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "m.tflite"
    p.write_bytes(tm.mlp())
    res = quantize_tflite(p, config=TfliteFloat16Config())
    assert res.mode is TfliteMode.FP16
    assert quantize_tflite(p).mode is TfliteMode.DYNAMIC
    with pytest.raises(InputError, match="mode 'fp16' takes a TfliteFloat16Config, not a TfliteDynamicConfig"):
        quantize_tflite(p, mode="fp16", config=TfliteDynamicConfig())
    with pytest.raises(InputError, match="is not a .tflite config"):
        quantize_tflite(p, config=ts.DynamicQuantConfig())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not available for .tflite"):
        quantize_tflite(p, mode="blockwise")
    dyn = quantize_tflite(p, mode="dynamic", config=TfliteDynamicConfig(granularity="per_tensor"))
    assert dyn.mode is TfliteMode.DYNAMIC and any(r.granularity == "per_tensor" for r in dyn.records if not r.skipped)
