"""Forms that exported models take in the wild and that static int8 met first there (a voice-activity detector
with If branches and a scalar sample-rate input): an If branch that reads a main-graph activation by name, a
scalar input given once for every sample, and compute that sits inside control flow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models import cli, make, rng, run

F = TensorProto.FLOAT


def _branchy(seed: int = 0) -> onnx.ModelProto:
    """``x -> Conv -> Relu (r) -> Conv -> Relu -> y`` and ``If(flag)``: the then-branch passes ``r`` on as it is
    (reads it by name from the outer graph), the else-branch runs a 1x1 Conv on it."""
    r = rng(seed)
    inits = {
        "W1": (r.standard_normal((16, 4, 3, 3)) * 0.3).astype(np.float32), "B1": r.standard_normal(16).astype(np.float32),
        "W2": (r.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32), "B2": r.standard_normal(16).astype(np.float32),
        "W3": (r.standard_normal((16, 16, 1, 1)) * 0.3).astype(np.float32),
    }  # fmt: skip
    out = helper.make_tensor_value_info("o", F, None)
    then = helper.make_graph([helper.make_node("Identity", ["r"], ["o"])], "then", [], [out])
    other = helper.make_graph([helper.make_node("Conv", ["r", "W3"], ["o"])], "else", [], [out])
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"]),
        helper.make_node("Conv", ["r", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["y"]),
        helper.make_node("If", ["flag"], ["z"], then_branch=then, else_branch=other),
    ]
    return make(nodes, [("x", F, ["N", 4, 8, 8]), ("flag", TensorProto.BOOL, [])],
                [("y", F, ["N", 16, 8, 8]), ("z", F, ["N", 16, 8, 8])], inits)  # fmt: skip


@pytest.fixture(scope="module")
def branchy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("branchy")
    onnx.save(_branchy(), d / "m.onnx")
    x = rng(1).standard_normal((24, 4, 8, 8)).astype(np.float32)
    np.savez(d / "calib.npz", x=x, flag=np.array(True))  # one flag for every sample
    np.savez(d / "calib_else.npz", x=x, flag=np.array(False))
    return {"model": d / "m.onnx", "calib": d / "calib.npz", "calib_else": d / "calib_else.npz", "dir": d}


@pytest.mark.parametrize("calib", ["calib", "calib_else"])
def test_static_int8_keeps_the_activations_an_if_branch_reads(branchy: dict[str, Path], calib: str) -> None:
    """The Relu whose int8 range already clamps at 0 is not dropped while a branch reads its output by name (it
    was: ONNX Runtime then refused the model as not topologically sorted, exit 3); the scalar flag given once is
    shared by every calibration sample."""
    d = branchy["dir"]
    out, js = d / f"{calib}.onnx", d / f"{calib}.json"
    r = cli("quantize", str(branchy["model"]), "-o", str(out), "--mode", "static", "--data", str(branchy[calib]),
            "--no-latency-check", "--json", str(js))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    notes = " ".join(json.loads(js.read_text())["notes"])
    assert "'flag': no batch axis in the model and one value given: every sample shares it" in notes
    assert "1 Conv/Gemm/MatMul node(s) inside If/Loop/Scan bodies keep float compute" in notes
    model = onnx.load(out)
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    x = rng(2).standard_normal((4, 4, 8, 8)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        for a, b in zip(run(branchy["model"], feeds), run(out, feeds), strict=True):
            cos = float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
            assert cos > 0.99, (flag, cos)


def test_a_scalar_given_once_is_shared_and_other_count_mismatches_still_fail(branchy: dict[str, Path]) -> None:
    from tensorslim.data import load_data
    from tensorslim.errors import InputError
    from tensorslim.runtime.ort import OrtRuntime

    specs = OrtRuntime(str(branchy["model"])).inputs
    ds = load_data(branchy["calib"], specs)
    assert ds.num_samples == 24 and ds.inputs["flag"].shape == (24,) and bool(ds.inputs["flag"].all())
    feeds, _ = next(iter(ds.batches(1)))
    assert feeds["flag"].shape == () and feeds["x"].shape == (1, 4, 8, 8)
    x = rng(3).standard_normal((6, 4, 8, 8)).astype(np.float32)
    bad = branchy["dir"] / "bad.npz"
    np.savez(bad, x=x, flag=np.array([True, False]))  # two flags for six samples: not one value, not one each
    with pytest.raises(InputError, match="different sample counts"):
        load_data(bad, specs)


def test_fp16_keeps_float32_what_an_if_branch_reads(branchy: dict[str, Path]) -> None:
    """A branch reads the Relu output by name as float32: its producer stays float32 (ONNX Runtime refused the
    float16 model: the branch's type inference met a float16 tensor)."""
    out = branchy["dir"] / "f16.onnx"
    r = cli("quantize", str(branchy["model"]), "-o", str(out), "--mode", "fp16", "--data", str(branchy["calib"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(n.op_type == "Cast" for n in onnx.load(out).graph.node)  # the rest of the graph is float16
    x = rng(4).standard_normal((2, 4, 8, 8)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        for a, b in zip(run(branchy["model"], feeds), run(out, feeds), strict=True):
            np.testing.assert_allclose(b, a, rtol=0.02, atol=0.02 * float(np.abs(a).max()))
