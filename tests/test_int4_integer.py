"""4-bit ladder blocks on int8 kernels (``--mode int4``'s default kernel): maths, the load-time expansion that
ONNX Runtime folds, GPTQ, sizes, fallbacks and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import helper

from models import F, make, matmul_model, optimized_op_types, rng, run
from tensorslim.algorithms.blockwise import (
    LADDER_MAX,
    dequantize_blocks,
    ladder_steps,
    ladder_values,
    quantize_blocks,
    quantize_blocks_ladder,
)
from tensorslim.algorithms.gptq import gptq_blocks
from tensorslim.commands import build_app
from tensorslim.evaluate.data import Dataset
from tensorslim.passes.blockwise_quant import BlockQuantConfig, BlockQuantPass
from tensorslim.passes.dynamic_quant import DynamicQuantConfig, DynamicQuantPass, plan_dynamic_quant

finite = st.floats(-50, 50, allow_nan=False, width=32)


@settings(max_examples=100, deadline=None)
@given(w=arrays(np.float32, st.tuples(st.integers(1, 4), st.sampled_from([16, 32, 64])), elements=finite))
def test_ladder_blocks_are_exact_int8_values_and_no_worse_than_covering(w: np.ndarray) -> None:
    step = ladder_steps(w, block=16, method="minmax")
    bq = quantize_blocks_ladder(w, step, block=16)
    values, m = ladder_values(bq, step)
    assert values.dtype == np.int8 and np.abs(values.astype(int)).max(initial=0) <= 7 * LADDER_MAX
    assert m.min() >= 1 and m.max() <= LADDER_MAX
    # the int8 values on the per-row step are exactly the 4-bit blocks' values
    np.testing.assert_allclose(values * step[:, None], dequantize_blocks(bq), rtol=1e-6, atol=1e-6)
    # per block, the chosen multiplier does at least as well as the smallest one covering the block's range
    blocks = w.reshape(w.shape[0], -1, 16).astype(np.float64)
    cover = np.clip(np.ceil(np.abs(blocks).max(axis=2) / (7 * step[:, None])), 1, LADDER_MAX)
    err = ((dequantize_blocks(bq).reshape(blocks.shape) - blocks) ** 2).sum(axis=2)
    assert np.all(err <= blocks.shape[2] * (0.5 * cover * step[:, None]) ** 2 * (1 + 1e-4) + 1e-9)


def test_ladder_rejects_non_ladder_scales_and_bad_shapes() -> None:
    w = rng(0).standard_normal((4, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="not integer multiples"):
        ladder_values(quantize_blocks(w, block=32, scheme="symmetric"), np.full(4, 1e-3, np.float32) * np.pi)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_blocks_ladder(w[:, :40], np.ones(4, np.float32), block=32)
    with pytest.raises(ValueError, match="one value per row"):
        quantize_blocks_ladder(w, np.ones(3, np.float32), block=32)


def test_gptq_on_the_ladder_beats_round_to_nearest_on_correlated_inputs() -> None:
    r = rng(1)
    x = r.standard_normal((1000, 128)) @ r.standard_normal((128, 128))
    w = r.standard_normal((32, 128))
    step = ladder_steps(w.astype(np.float32), block=32)
    g = gptq_blocks(w, x.T @ x, block=32, step=step)
    ladder_values(g, step)  # raises if a GPTQ block scale left the ladder
    err = lambda q: np.linalg.norm(x @ (w - dequantize_blocks(q)).T)  # noqa: E731
    assert err(g) < 0.85 * err(quantize_blocks_ladder(w.astype(np.float32), step, block=32))


def _two_layer(k: int = 128, n: int = 96, out: int = 64) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    r = rng(2)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Gemm", ["h", "Wt", "B"], ["y"], name="fc", transB=1)]  # fmt: skip
    inits = {"W": (r.standard_normal((k, n)) * 0.1).astype(np.float32),
             "Wt": (r.standard_normal((out, n)) * 0.1).astype(np.float32),
             "B": r.standard_normal(out).astype(np.float32)}  # fmt: skip
    m = make(nodes, [("x", F, ["b", k])], [("y", F, ["b", out])], inits)
    return m, {"x": r.standard_normal((64, k)).astype(np.float32)}


def test_int4_default_runs_on_int8_kernels_that_ort_folds(tmp_path: Path) -> None:
    model, feeds = _two_layer()
    res = BlockQuantPass(BlockQuantConfig(min_size=0))(model)  # bits 4, kernel auto -> integer
    onnx.checker.check_model(res.model)
    ops = {n.op_type for n in res.model.graph.node}
    assert "MatMulInteger" in ops and "MatMulNBits" not in ops
    done = {r.name: r for r in res.records if not r.skipped}
    assert set(done) == {"W", "Wt"} and all(r.action.startswith("int4 ladder") for r in done.values())
    # ONNX Runtime evaluates the expansion once, at load: what runs is its int8 kernel and nothing of the unpacking
    ran = optimized_op_types(res.model, tmp_path)
    assert "DynamicQuantizeMatMul" in ran or "MatMulIntegerToFloat" in ran
    assert not {"Div", "Concat", "Transpose", "MatMulInteger"} & set(ran), ran
    ref, out = run(model, feeds)[0], run(res.model, feeds)[0]
    assert np.linalg.norm(ref - out) / np.linalg.norm(ref) < 0.15


def test_expansion_rebuilds_exactly_the_planned_int8_weights() -> None:
    model, feeds = _two_layer()
    cfg = DynamicQuantConfig(weight_bits=4, min_size=0, rotation="none", op_types=("MatMul", "Gemm"), min_integer_macs=0)
    plans = {p.weight.name: p for p in plan_dynamic_quant(model, cfg)}
    res = DynamicQuantPass(cfg)(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(res.model)
    mmi = [n for n in probe.graph.node if n.op_type == "MatMulInteger"]
    probe.graph.output.extend(helper.make_tensor_value_info(n.input[1], onnx.TensorProto.INT8, None) for n in mmi)
    got = run(probe, feeds)[1:]
    # MatMulInteger takes [K, N]: the MatMul weight as it is, the transB Gemm weight transposed
    np.testing.assert_array_equal(got[0], plans["W"].codes)
    np.testing.assert_array_equal(got[1], plans["Wt"].codes.T)
    assert {n.op_type for n in probe.graph.node} >= {"Div", "Concat", "Transpose"}  # the expansion is in the file


def test_int4_file_is_a_quarter_of_int8_and_near_matmulnbits(tmp_path: Path) -> None:
    model, _ = matmul_model(k=512, n=256)
    sizes = {}
    for name, cfg in (("int8", None), ("int4", BlockQuantConfig(min_size=0)),
                      ("nbits", BlockQuantConfig(min_size=0, kernel="matmulnbits", scheme="symmetric"))):  # fmt: skip
        m = DynamicQuantPass(DynamicQuantConfig(min_size=0))(model).model if cfg is None else BlockQuantPass(cfg)(model).model
        onnx.save(m, tmp_path / f"{name}.onnx")
        sizes[name] = (tmp_path / f"{name}.onnx").stat().st_size
    float_bytes = 512 * 256 * 4
    assert sizes["int4"] < 0.15 * float_bytes  # 4 bits + one byte per 32-value block + one step per column
    assert sizes["int4"] < 0.56 * sizes["int8"]
    assert sizes["int4"] < 1.1 * sizes["nbits"]


def test_gptq_hessians_come_from_the_int8_model_and_help() -> None:
    r = rng(3)
    mix = r.standard_normal((128, 128))
    model, _ = _two_layer()
    data = Dataset({"x": (r.standard_normal((256, 128)) @ mix).astype(np.float32)})
    test = {"x": (r.standard_normal((256, 128)) @ mix).astype(np.float32)}
    ref = run(model, test)[0]
    err = {}
    for method in ("mse", "gptq"):
        res = BlockQuantPass(BlockQuantConfig(min_size=0, method=method), data=data)(model)
        assert all(("GPTQ" in x.reason) == (method == "gptq") for x in res.records if not x.skipped)
        err[method] = np.linalg.norm(run(res.model, test)[0] - ref) / np.linalg.norm(ref)
    assert err["gptq"] < err["mse"], err


def test_k_not_a_multiple_of_the_block_stays_int8_and_says_why() -> None:
    model, feeds = matmul_model(k=40, n=64)
    res = BlockQuantPass(BlockQuantConfig(min_size=0))(model)
    (rec,) = [r for r in res.records if not r.skipped]
    assert rec.action.startswith("int8") and "K=40 is not a multiple of the block size 32" in rec.reason
    ref, out = run(model, feeds)[0], run(res.model, feeds)[0]
    assert np.linalg.norm(ref - out) / np.linalg.norm(ref) < 0.05


def test_embeddings_stay_gather_block_quantized_next_to_integer_matmuls() -> None:
    r = rng(4)
    nodes = [helper.make_node("Gather", ["E", "ids"], ["e"], name="emb"),
             helper.make_node("MatMul", ["e", "W"], ["y"], name="mm")]  # fmt: skip
    m = make(nodes, [("ids", onnx.TensorProto.INT64, ["b"])], [("y", F, ["b", 64])],
             {"E": r.standard_normal((100, 64)).astype(np.float32), "W": r.standard_normal((64, 64)).astype(np.float32)})  # fmt: skip
    res = BlockQuantPass(BlockQuantConfig(min_size=0))(m)
    ops = [n.op_type for n in res.model.graph.node]
    assert "GatherBlockQuantized" in ops and "MatMulInteger" in ops
    assert sorted(x.name for x in res.records) == ["E", "W"]  # one record per original weight
    assert all(not x.skipped for x in res.records)
    feeds = {"ids": np.array([0, 5, 99], np.int64)}
    ref, out = run(m, feeds)[0], run(res.model, feeds)[0]
    assert np.linalg.norm(ref - out) / np.linalg.norm(ref) < 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kernel": "integer", "bits": 8}, "kernel: 'integer' stores 4-bit blocks"), ({"kernel": "npu"}, "kernel")],
)
def test_block_kernel_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BlockQuantConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"weight_bits": 3}, "weight_bits"), ({"weight_bits": 4, "scheme": "asymmetric"}, "symmetric"),
     ({"weight_bits": 4, "granularity": "per_tensor"}, "per_channel"), ({"block_size": 48}, "block_size")],
)  # fmt: skip
def test_dynamic_weight_bits_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DynamicQuantConfig(**kwargs)


def test_cli_int4_kernels(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    model, _ = matmul_model(k=256, n=128)
    src = tmp_path / "f.onnx"
    onnx.save(model, src)
    runner = CliRunner()
    app = build_app()
    for kernel, op in (("auto", "MatMulInteger"), ("matmulnbits", "MatMulNBits")):
        out = tmp_path / f"{kernel}.onnx"
        res = runner.invoke(app, ["quantize", str(src), "-o", str(out), "--mode", "int4", "--kernel", kernel])
        assert res.exit_code == 0, res.output
        assert op in {n.op_type for n in onnx.load(out).graph.node}
    res = runner.invoke(app, ["quantize", str(src), "-o", str(tmp_path / "x.onnx"), "--mode", "int4", "--kernel", "gpu"])
    assert res.exit_code == 2 and "kernel" in res.output and not (tmp_path / "x.onnx").exists()


def test_gptq_int4_writes_the_same_bytes_twice_and_leaves_the_input_alone(tmp_path: Path) -> None:
    from tensorslim import quantize

    model, feeds = _two_layer()
    src = tmp_path / "f.onnx"
    onnx.save(model, src)
    before = src.read_bytes()
    data = Dataset({"x": rng(5).standard_normal((64, 128)).astype(np.float32)})
    for name in ("a", "b"):
        quantize(src, tmp_path / f"{name}.onnx", config=BlockQuantConfig(min_size=0), data=data)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert src.read_bytes() == before


def test_old_opsets_fall_back_to_matmulnbits_or_say_why() -> None:
    from tensorslim.errors import InputError

    w = rng(6).standard_normal((64, 32)).astype(np.float32)
    m = make([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [("x", F, ["b", 64])], [("y", F, ["b", 32])],
             {"W": w}, opset=10)  # fmt: skip
    res = BlockQuantPass(BlockQuantConfig(min_size=0))(m)  # auto: no integer MatMul before opset 11
    assert [n.op_type for n in res.model.graph.node] == ["MatMulNBits"]
    with pytest.raises(InputError, match="opset >= 11 .* --kernel matmulnbits"):
        BlockQuantPass(BlockQuantConfig(min_size=0, kernel="integer"))(m)


def test_conv_weights_take_4_bit_blocks_and_run_as_float_conv(tmp_path: Path) -> None:
    from models import conv_model

    model, feeds = conv_model()  # K = 16 * 3 * 3 = 144: a multiple of 16, not of 32
    res = BlockQuantPass(BlockQuantConfig(min_size=0, block_size=16))(model)
    (rec,) = [r for r in res.records if r.name == "W"]
    assert rec.action.startswith("int4 ladder") and rec.granularity == "per_block(16)"
    assert rec.bytes_after < 0.2 * rec.bytes_before
    ran = optimized_op_types(res.model, tmp_path)
    assert "Conv" in ran and not {"Div", "Concat", "ConvInteger"} & set(ran), ran  # folded at load: a float Conv
    ref, out = run(model, feeds)[0], run(res.model, feeds)[0]
    assert np.linalg.norm(ref - out) / np.linalg.norm(ref) < 0.15
    res32 = BlockQuantPass(BlockQuantConfig(min_size=0))(model)  # blocks of 32 do not divide K: int8, and why
    (rec,) = [r for r in res32.records if r.name == "W"]
    assert rec.action.startswith("int8") and "K=144 is not a multiple of the block size 32" in rec.reason
    nbits = BlockQuantPass(BlockQuantConfig(min_size=0, kernel="matmulnbits", op_types=("Conv",)))
    (rec,) = [r for r in nbits(model).records if r.name == "W"]
    assert rec.skipped and "MatMulNBits takes MatMul/Gemm weights" in rec.reason


def test_conv_gptq_reads_im2col_patches_and_helps() -> None:
    from models import conv_model

    model, _ = conv_model()
    r = rng(8)
    mix = r.standard_normal((16, 16))
    x = lambda n: np.einsum("nchw,cd->ndhw", r.standard_normal((n, 16, 8, 8)), mix).astype(np.float32)  # noqa: E731
    data, test = Dataset({"x": x(32)}), {"x": x(16)}
    ref = run(model, test)[0]
    err = {}
    for method in ("mse", "gptq"):
        res = BlockQuantPass(BlockQuantConfig(min_size=0, block_size=16, method=method), data=data)(model)
        (rec,) = [x for x in res.records if x.name == "W"]
        assert ("GPTQ" in rec.reason) == (method == "gptq")
        err[method] = np.linalg.norm(run(res.model, test)[0] - ref) / np.linalg.norm(ref)
    assert err["gptq"] < err["mse"], err


def test_lazy_grams_hold_one_group_and_match_the_one_pass_result() -> None:
    from tensorslim.passes.calib_stats import LayerInput, LazyGrams, gram_groups, gram_matrices

    assert gram_groups({"a": 100, "b": 100, "c": 300}, max_bytes=8 * 100 * 100 * 2) == [["a", "b"], ["c"]]
    assert gram_groups({"big": 1000, "s": 10}, max_bytes=8) == [["big"], ["s"]]  # over the budget alone: its own
    model, _ = _two_layer()
    data = Dataset({"x": rng(9).standard_normal((40, 128)).astype(np.float32)})
    layers = {"W": LayerInput("x"), "Wt": LayerInput("h")}
    whole = gram_matrices(model, layers, data, batch_size=8)
    lazy = LazyGrams(model, layers, data, {"W": 128, "Wt": 96}, max_bytes=8 * 128 * 128)  # one layer per group
    assert lazy.groups == [["W"], ["Wt"]] and set(lazy) == {"W", "Wt"} and len(lazy) == 2
    for key in ("W", "Wt", "W"):  # in order, then out of order (recomputed): the same values
        np.testing.assert_allclose(lazy[key], whole[key], rtol=1e-12)
        assert len(lazy._cache) == 1  # the other group's matrix was dropped
    assert lazy.get("nope") is None
