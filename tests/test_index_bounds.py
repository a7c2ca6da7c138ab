"""Made-up integer inputs stay inside the tables they index, whatever produces the table (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models import make, run
from tensorslim.backends.onnx.indices import index_bounds

VOCAB, TYPES, DIM = 7, 2, 8


def _table(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-127, 127, size=(rows, DIM)).astype(np.int8)


def embedding_model(opset: int = 17) -> onnx.ModelProto:
    """ids -> Gather(DequantizeLinear(E_q)); types (int32) -> Cast -> Gather(Reshape(Mul(Cast(T_q), s)));
    pos -> Gather(Transpose(Constant)); every table far smaller than the 0..99 default range."""
    nodes = [
        helper.make_node("DequantizeLinear", ["E_q", "E_s", "E_zp"], ["E"]),
        helper.make_node("Gather", ["E", "ids"], ["we"]),
        helper.make_node("Cast", ["T_q"], ["T_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["T_f", "T_s"], ["T_flat"]),
        helper.make_node("Reshape", ["T_flat", "T_shape"], ["T"]),
        helper.make_node("Cast", ["types"], ["types64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["T", "types64"], ["te"]),
        helper.make_node(
            "Constant", [], ["P_t"], value=onnx.numpy_helper.from_array(np.ones((DIM, 3), np.float32), "P_t")
        ),
        helper.make_node("Transpose", ["P_t"], ["P"], perm=[1, 0]),
        helper.make_node("Gather", ["P", "pos"], ["pe"]),
        helper.make_node("Add", ["we", "te"], ["s0"]),
        helper.make_node("Add", ["s0", "pe"], ["out"]),
    ]
    inits = {
        "E_q": _table(VOCAB, 0),
        "E_s": np.array(0.01, np.float32),
        "E_zp": np.array(0, np.int8),
        "T_q": _table(TYPES, 1).reshape(-1),
        "T_s": np.array(0.02, np.float32),
        "T_shape": np.array([TYPES, DIM], np.int64),
    }
    ins = [("ids", TensorProto.INT64, ["batch", "seq"]), ("types", TensorProto.INT32, ["batch", "seq"]),
           ("pos", TensorProto.INT64, ["batch", "seq"])]  # fmt: skip
    return make(nodes, ins, [("out", TensorProto.FLOAT, ["batch", "seq", DIM])], inits, opset=opset)


def if_model() -> onnx.ModelProto:
    """A Gather inside both If branches indexing an outer-scope input, one table behind a block DequantizeLinear."""
    blk = helper.make_node("DequantizeLinear", ["B_q", "B_s"], ["B"], axis=1, block_size=4)
    then = helper.make_graph(
        [blk, helper.make_node("Gather", ["B", "ids"], ["t_out"])], "then", [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, ["n", DIM])],
    )  # fmt: skip
    other = helper.make_graph(
        [helper.make_node("Gather", ["C", "ids"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, ["n", DIM])],
        [onnx.numpy_helper.from_array(np.ones((VOCAB + 2, DIM), np.float32), "C")],
    )  # fmt: skip
    node = helper.make_node("If", ["cond"], ["out"], then_branch=then, else_branch=other)
    inits = {"B_q": _table(VOCAB, 3), "B_s": np.full((VOCAB, DIM // 4), 0.01, np.float32), "cond": np.array(True)}
    return make([node], [("ids", TensorProto.INT64, ["n"])], [("out", TensorProto.FLOAT, ["n", DIM])], inits,
                opset=21, ir_version=10)  # fmt: skip


def test_bounds_through_producers() -> None:
    assert index_bounds(embedding_model()) == {"ids": VOCAB, "types": TYPES, "pos": 3}
    assert index_bounds(if_model()) == {"ids": VOCAB}


def test_bounds_of_blockwise_gather(tmp_path: Path) -> None:
    from tensorslim.passes.blockwise_quant import BlockQuantConfig, BlockQuantPass

    table = np.random.default_rng(0).standard_normal((VOCAB, 64)).astype(np.float32)
    float_model = make([helper.make_node("Gather", ["E", "ids"], ["out"])], [("ids", TensorProto.INT64, ["n"])],
                       [("out", TensorProto.FLOAT, ["n", 64])], {"E": table}, opset=21, ir_version=10)  # fmt: skip
    q = BlockQuantPass(BlockQuantConfig(op_types=("Gather",), min_size=1)).call(float_model).model
    assert any(n.op_type == "GatherBlockQuantized" for n in q.graph.node)
    assert index_bounds(q) == {"ids": VOCAB}


def test_generated_inputs_stay_in_range() -> None:
    from tensorslim.benchmark.inputs import make_inputs, specs_from_session
    from tensorslim.evaluate.data import generate_inputs
    from tensorslim.runtime.ort import OrtRuntime

    model = embedding_model()
    rt = OrtRuntime(model)
    bounds = rt.index_bounds()
    ds = generate_inputs(rt.inputs, num_samples=64, seed=1, bounds=bounds)
    made, _ = make_inputs(specs_from_session(rt.session), batch_size=64, dim_overrides={"seq": 16}, bounds=bounds)
    for arrays in (ds.inputs, made):
        assert arrays["ids"].max() < VOCAB and arrays["types"].max() < TYPES and arrays["pos"].max() < 3
        assert arrays["ids"].max() > 0  # still spread over the table, not all zeros
    run(model, {k: v[:2] for k, v in ds.inputs.items()})


@pytest.mark.parametrize("build", [embedding_model, if_model], ids=["dequantize-cast-reshape", "if-blockwise"])
def test_every_command_runs_without_data(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    from models import cli
    from tensorslim.search.study import SearchConfig, _prepare

    path = tmp_path / "m.onnx"
    onnx.save(build(), str(path))
    m = str(path)
    for args in (
        ("bench", m, "--seconds", "0.05", "--no-memory"),
        ("eval", m, m),
        ("doctor", m, "--seconds", "0.05"),
        ("profile", m, "--runs", "2", "--warmup", "0"),
        ("diagnose", m, m),
    ):
        r = cli(*args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    setup = _prepare(path, None, None, SearchConfig(latency_runs=0))  # what optimize scores candidates on
    assert setup.dataset.generated


def test_doctor_and_profile_take_data(tmp_path: Path) -> None:
    from models import cli

    path, data, bad = tmp_path / "m.onnx", tmp_path / "d.npz", tmp_path / "bad.npz"
    onnx.save(embedding_model(), str(path))
    shape = (4, 5)
    np.savez(data, ids=np.full(shape, VOCAB - 1, np.int64), types=np.ones(shape, np.int32),
             pos=np.zeros(shape, np.int64))  # fmt: skip
    np.savez(bad, ids=np.zeros(shape, np.int64))
    assert cli("doctor", str(path), "--data", str(data), "--seconds", "0.05").returncode == 0
    r = cli("profile", str(path), "--data", str(data), "--batch-size", "2", "--runs", "2", "--json", "-")
    assert r.returncode == 0, r.stdout
    r = cli("profile", str(path), "--data", str(bad))
    assert r.returncode == 2 and "types" in r.stdout + r.stderr


def test_tflite_embedding_inputs_stay_in_range(tmp_path: Path) -> None:
    """The same for .tflite models: a GATHER on a 7-row table, benchmarked without data."""
    pytest.importorskip("ai_edge_litert")
    import tflite_models as tm
    from models import cli
    from tensorslim.runtime.litert import LiteRTRuntime

    path = tmp_path / "emb.tflite"
    path.write_bytes(tm.embeddings(rows=7))
    assert LiteRTRuntime(path).index_bounds() == {"ids": 7}
    r = cli("bench", str(path), "--seconds", "0.05")
    assert r.returncode == 0, r.stdout + r.stderr
