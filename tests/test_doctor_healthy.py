"""`doctor` on models tensorslim itself makes: no warning on healthy dynamic, static, int4 and fp16 outputs of the
bundled CNN and of a small transformer block, and `fp16-casts` never on a dynamic-int8 model (whose float16 scales
are only cast to float32 at load)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from models import F, make
from tensorslim.api import quantize
from tensorslim.backends.onnx import save_model
from tensorslim.diagnostics.doctor import _static_findings, doctor, optimized_graph
from tensorslim.diagnostics.provenance import fp16_compute
from tensorslim.examples import example_calib_data_path, example_model_path
from tensorslim.passes.blockwise_quant import BlockQuantConfig
from tensorslim.passes.dynamic_quant import DynamicQuantConfig
from tensorslim.passes.float16 import Float16Config
from tensorslim.passes.static_quant import StaticQuantConfig

AVX2_ONLY = (("avx2", "fma"), "x86_64")  # a CPU without native fp16 arithmetic
FP16_NATIVE = (("avx2", "avx512_fp16", "avx512_vnni"), "x86_64")


def transformer_block(d: int = 64, seq: int = 8, seed: int = 0) -> onnx.ModelProto:
    """One pre-norm attention + MLP block: LayerNorm, Q/K/V MatMuls, Softmax attention, Erf-GELU MLP, residuals."""
    r = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (r.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    inits = {"g": np.ones(d, np.float32), "b": np.zeros(d, np.float32), "Wq": w(d, d), "Wk": w(d, d),
             "Wv": w(d, d), "Wo": w(d, d), "W1": w(d, 4 * d), "W2": w(4 * d, d), "scale": np.array(d**-0.5, np.float32),
             "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32),
             "rsqrt2": np.array(2**-0.5, np.float32)}  # fmt: skip
    n = helper.make_node
    nodes = [
        n("LayerNormalization", ["x", "g", "b"], ["h"], name="ln1", axis=-1),
        n("MatMul", ["h", "Wq"], ["q"], name="q"), n("MatMul", ["h", "Wk"], ["k"], name="k"),
        n("MatMul", ["h", "Wv"], ["v"], name="v"),
        n("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["s0"], name="qk"), n("Mul", ["s0", "scale"], ["s"], name="sc"),
        n("Softmax", ["s"], ["p"], name="sm", axis=-1), n("MatMul", ["p", "v"], ["a"], name="av"),
        n("MatMul", ["a", "Wo"], ["o"], name="o"), n("Add", ["x", "o"], ["x1"], name="res1"),
        n("LayerNormalization", ["x1", "g", "b"], ["h2"], name="ln2", axis=-1),
        n("MatMul", ["h2", "W1"], ["f1"], name="fc1"), n("Mul", ["f1", "rsqrt2"], ["e0"], name="e0"),
        n("Erf", ["e0"], ["e1"], name="erf"), n("Add", ["e1", "one"], ["e2"], name="e2"),
        n("Mul", ["f1", "e2"], ["e3"], name="e3"), n("Mul", ["e3", "half"], ["gl"], name="gelu"),
        n("MatMul", ["gl", "W2"], ["f2"], name="fc2"), n("Add", ["x1", "f2"], ["y"], name="res2"),
    ]  # fmt: skip
    return make(nodes, [("x", F, ["b", seq, d])], [("y", F, ["b", seq, d])], inits)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("healthy")
    tf = save_model(transformer_block(), d / "tf.onnx")
    np.savez(d / "tf_calib.npz", x=np.random.default_rng(1).standard_normal((16, 8, 64)).astype(np.float32))
    out: dict[str, Path] = {}
    for name, src, calib in (("cnn", example_model_path(), example_calib_data_path()), ("tf", tf, d / "tf_calib.npz")):
        for mode, cfg, data in (("dynamic", DynamicQuantConfig(), None), ("static", StaticQuantConfig(), calib),
                                ("int4", BlockQuantConfig(min_size=256), None), ("fp16", Float16Config(), None)):  # fmt: skip
            p = d / f"{name}_{mode}.onnx"
            quantize(src, p, config=cfg, data=data)
            out[f"{name}_{mode}"] = p
    return out


@pytest.mark.parametrize("name", [f"{m}_{q}" for m in ("cnn", "tf") for q in ("dynamic", "static", "int4", "fp16")])
def test_no_warning_on_a_healthy_output(outputs: dict[str, Path], name: str) -> None:
    rep = doctor(outputs[name], measure=False)
    # float16 compute on a CPU without fp16 arithmetic is worth its warning (the next test checks it fires there)
    warnings = [f for f in rep.warnings if not (f.code == "fp16-casts" and f.details["native_fp16"] is False)]
    assert not warnings, [(f.code, f.message) for f in warnings]
    model, opt = onnx.load(str(outputs[name])), optimized_graph(outputs[name])
    # on a CPU with fp16 arithmetic nothing about fp16 either, whatever this machine is
    assert not [f for f in _static_findings(model, opt, *FP16_NATIVE) if f.severity == "warning"], name


@pytest.mark.parametrize("name", ["cnn_dynamic", "tf_dynamic", "cnn_static", "tf_int4"])
def test_fp16_casts_never_fires_without_float16_compute(outputs: dict[str, Path], name: str) -> None:
    model = onnx.load(str(outputs[name]))
    assert fp16_compute(model) == {}
    codes = {f.code for f in _static_findings(model, optimized_graph(outputs[name]), *AVX2_ONLY)}
    assert "fp16-casts" not in codes


def test_fp16_casts_fires_on_float16_compute_without_native_fp16(outputs: dict[str, Path]) -> None:
    for name in ("cnn_fp16", "tf_fp16"):
        model = onnx.load(str(outputs[name]))
        assert "MatMul" in fp16_compute(model) or "Conv" in fp16_compute(model)
        codes = {f.code for f in _static_findings(model, optimized_graph(outputs[name]), *AVX2_ONLY)}
        assert "fp16-casts" in codes
