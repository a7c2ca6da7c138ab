"""Block-wise int4/int8 (MatMulNBits, GatherBlockQuantized), GPTQ, and float16: maths and ONNX Runtime numerics."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import helper

from models import F, gather_model, gemm_model, make, matmul_model, mlp_model, run
from tensorslim import quantize
from tensorslim.algorithms.blockwise import dequantize_blocks, pack_nibbles, quantize_blocks, unpack_nibbles
from tensorslim.algorithms.gptq import gptq_blocks
from tensorslim.errors import InputError
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.blockwise_quant import BlockQuantConfig, BlockQuantPass
from tensorslim.passes.float16 import Float16Config, Float16Pass

finite = st.floats(-100, 100, allow_nan=False, width=32)


@settings(max_examples=100, deadline=None)
@given(w=arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 80)), elements=finite),
       bits=st.sampled_from([4, 8]), scheme=st.sampled_from(["symmetric", "asymmetric"]))  # fmt: skip
def test_block_round_trip_within_half_a_step(w: np.ndarray, bits: int, scheme: str) -> None:
    bq = quantize_blocks(w, bits=bits, block=16, scheme=scheme, method="minmax")
    err = np.abs(dequantize_blocks(bq) - w)
    step = np.repeat(bq.scales, 16, axis=1)[:, : w.shape[1]]
    assert np.all(err <= 0.5 * step * (1 + 1e-3) + 1e-5)
    assert bq.codes.max() < 2**bits


@settings(max_examples=50, deadline=None)
@given(codes=arrays(np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 33)), elements=st.integers(0, 15)))
def test_nibble_packing_round_trips(codes: np.ndarray) -> None:
    packed = pack_nibbles(codes)
    assert packed.shape[-1] == (codes.shape[-1] + 1) // 2
    np.testing.assert_array_equal(unpack_nibbles(packed, codes.shape[-1]), codes)


def test_gptq_beats_round_to_nearest_on_correlated_inputs() -> None:
    r = np.random.default_rng(0)
    x = r.standard_normal((1000, 128)) @ r.standard_normal((128, 128))
    w = r.standard_normal((32, 128))
    h = x.T @ x
    err = lambda q: np.linalg.norm(x @ (w - dequantize_blocks(q)).T)  # noqa: E731
    assert err(gptq_blocks(w, h, block=32)) < 0.85 * err(
        quantize_blocks(w.astype(np.float32), block=32, method="minmax")
    )


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("scheme", ["symmetric", "asymmetric"])
def test_matmul_and_gemm_become_matmulnbits(bits: int, scheme: str) -> None:
    for model, feeds in (matmul_model(k=128, n=64), gemm_model(1)):
        cfg = BlockQuantConfig(bits=bits, scheme=scheme, min_size=0, accuracy_level=0, kernel="matmulnbits")
        res = BlockQuantPass(cfg)(model)
        onnx.checker.check_model(res.model)
        assert [n.op_type for n in res.model.graph.node] == ["MatMulNBits"]
        (rec,) = [r for r in res.records if not r.skipped]
        assert rec.bytes_after < rec.bytes_before / (3 if bits == 8 else 5)
        ref, out = run(model, feeds)[0], run(res.model, feeds)[0]
        rel = np.linalg.norm(ref - out) / np.linalg.norm(ref)
        assert rel < (0.02 if bits == 8 else 0.2), rel


def test_embedding_becomes_gather_block_quantized() -> None:
    model, feeds = gather_model()
    res = BlockQuantPass(BlockQuantConfig(min_size=0))(model)
    ops = [n.op_type for n in res.model.graph.node]
    assert ops == ["GatherBlockQuantized", "Cast"]
    ref, out = run(model, feeds)[0], run(res.model, feeds)[0]
    assert out.dtype == np.float32
    assert np.linalg.norm(ref - out) / np.linalg.norm(ref) < 0.15


@pytest.mark.parametrize("kernel", ["matmulnbits", "integer"])
def test_gptq_needs_data_and_uses_it(kernel: str) -> None:
    model, feeds = matmul_model(k=128, n=64)
    with pytest.raises(InputError, match="needs calibration data"):
        BlockQuantPass(BlockQuantConfig(method="gptq"))
    data = Dataset({"x": np.random.default_rng(3).standard_normal((16, 5, 128)).astype(np.float32)})
    # auto -> gptq with data (the output check off: this one layer keeps ~16 dB, which it would give int8)
    res = BlockQuantPass(BlockQuantConfig(min_size=0, kernel=kernel, output_sqnr_db=0), data=data)(model)
    (rec,) = [r for r in res.records if not r.skipped]
    assert "gptq" in rec.reason.lower()
    assert np.linalg.norm(run(model, feeds)[0] - run(res.model, feeds)[0]) / np.linalg.norm(run(model, feeds)[0]) < 0.2


@pytest.mark.parametrize(
    ("field", "value"),
    [("bits", 3), ("block_size", 24), ("method", "awq"), ("op_types", ("LSTM",)), ("kernel", "gpu")],
)
def test_block_config_validation(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        BlockQuantConfig(**{field: value})


def test_float16_keeps_float32_io_and_halves_weights() -> None:
    model, feeds = mlp_model()
    res = Float16Pass()(model)
    g = res.model.graph
    types = {i.name: i.data_type for i in g.initializer}
    # Gemm computes in float32 (see FLOAT16_OPS); its large weights are stored in float16 behind a Cast
    assert types["W1_f16"] == onnx.TensorProto.FLOAT16  # W2 (640 values) is below the 1024-value floor
    assert sum(i.ByteSize() for i in g.initializer) < 0.7 * sum(i.ByteSize() for i in model.graph.initializer)
    assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    (out,) = run(res.model, feeds)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, run(model, feeds)[0], rtol=1e-2, atol=1e-2)


def test_float16_overflow_falls_back_to_float32(tmp_path) -> None:
    big = np.full((8,), 300.0, np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "big"], ["a"], name="scale_up"),
        helper.make_node("Mul", ["a", "big"], ["b"], name="overflows"),  # 300 * 300 * x > 65504
        helper.make_node("Relu", ["b"], ["y"], name="relu"),
    ]
    model = make(nodes, [("x", F, [2, 8])], [("y", F, [2, 8])], {"big": big})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((2, 8), np.float32))
    res = quantize(path, tmp_path / "f16.onnx", config=Float16Config(), data=data)
    assert any("overflows" in n for n in res.notes), res.notes
    (out,) = run(tmp_path / "f16.onnx", {"x": np.ones((2, 8), np.float32)})
    assert np.all(np.isfinite(out)) and np.allclose(out, 90000.0, rtol=1e-2)
