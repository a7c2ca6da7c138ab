"""Per-layer diagnosis of accuracy drops: matched tensors, SQNR, rmse/scale, ranking, and the exclude command."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from models import F, cli, make, rng
from tensorslim.api import quantize
from tensorslim.backends.onnx import save_model
from tensorslim.diagnostics.layers import diagnose_layers, exclude_regex
from tensorslim.diagnostics.provenance import infer_quantize
from tensorslim.errors import InputError
from tensorslim.evaluate import evaluate
from tensorslim.passes.dynamic_quant import DynamicQuantConfig
from tensorslim.passes.static_quant import StaticQuantConfig


def chain_model(tmp_path: Path) -> tuple[Path, Path]:
    """Three MatMuls; the middle one's weight has a huge outlier, so per-tensor int8 ruins it."""
    r = rng(3)
    w = [r.standard_normal((64, 64)).astype(np.float32) * 0.15 for _ in range(3)]
    w[1][0, 0] = 80.0
    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["h0"], name="mm0"),
        helper.make_node("Relu", ["h0"], ["r0"], name="relu0"),
        helper.make_node("MatMul", ["r0", "W1"], ["h1"], name="mm1"),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
        helper.make_node("MatMul", ["r1", "W2"], ["y"], name="mm2"),
    ]
    m = make(nodes, [("x", F, ["b", 64])], [("y", F, ["b", 64])], {"W0": w[0], "W1": w[1], "W2": w[2]})
    path = save_model(m, tmp_path / "chain.onnx")
    np.savez(tmp_path / "data.npz", x=r.standard_normal((40, 64)).astype(np.float32))
    return path, tmp_path / "data.npz"


CFG = DynamicQuantConfig(granularity="per_tensor", range_method="minmax", min_size=16)


def test_the_outlier_layer_ranks_worst_and_excluding_it_helps(tmp_path: Path) -> None:
    src, data = chain_model(tmp_path)
    quantize(src, tmp_path / "q.onnx", config=CFG)
    rep = diagnose_layers(src, tmp_path / "q.onnx", data, top=1, batch_size=16)
    assert rep.num_samples == 40
    names = {x.node for x in rep.layers}
    assert {"mm0", "mm1", "mm2", "relu0"} <= names
    assert rep.worst == ["mm1"]
    by = {x.node: x for x in rep.layers}
    assert by["mm1"].added_sqnr_db < by["mm0"].added_sqnr_db
    assert by["mm1"].sqnr_db < by["mm0"].sqnr_db
    assert by["mm0"].rmse_over_scale is not None and by["mm0"].scale_source == "dynamic"
    assert rep.histograms["mm1"]["counts"] and len(rep.histograms["mm1"]["edges"]) == 41
    # the printed command, run as printed, reproduces the options and keeps mm1 float: closer to float
    args = shlex.split(rep.exclude_command)
    assert args[:3] == ["tensorslim", "quantize", str(src)]
    pattern = args[args.index("--exclude") + 1]
    assert re.search(pattern, "mm1") and not re.search(pattern, "mm0")
    assert args[args.index("--mode") + 1] == "dynamic" and args[args.index("--granularity") + 1] == "per_tensor"
    assert "--data" not in args  # dynamic mode takes no data
    r = cli(*args[1:], "--no-check-speed")
    assert r.returncode == 0, r.stderr
    assert Path(args[args.index("-o") + 1]) == tmp_path / "q.keep-float.onnx"
    (tmp_path / "q.keep-float.onnx").rename(tmp_path / "keep.onnx")
    before = evaluate(src, tmp_path / "q.onnx", data).outputs[0].sqnr_db
    after = evaluate(src, tmp_path / "keep.onnx", data).outputs[0].sqnr_db
    assert after > before + 6, (before, after)
    d = rep.to_dict()
    json.dumps(d)


def test_identical_models_have_infinite_sqnr(tmp_path: Path) -> None:
    src, data = chain_model(tmp_path)
    rep = diagnose_layers(src, src, data)
    assert all(math.isinf(x.sqnr_db) for x in rep.layers)
    assert rep.worst == [] and rep.exclude_command == ""
    assert rep.to_dict()["layers"][0]["sqnr_db"] == "inf"


def test_exclude_regex_is_exact() -> None:
    rx = exclude_regex(["a.b", "/x/Conv"])
    assert re.search(rx, "a.b") and re.search(rx, "/x/Conv")
    assert not re.search(rx, "axb") and not re.search(rx, "/x/Conv_1")


def test_unrelated_models_are_refused(tmp_path: Path) -> None:
    src, _ = chain_model(tmp_path)
    other = make([helper.make_node("Relu", ["x"], ["zz"], name="r")], [("x", F, ["b", 64])], [("zz", F, ["b", 64])])
    save_model(other, tmp_path / "other.onnx")
    with pytest.raises(InputError, match="tensor names"):
        diagnose_layers(src, tmp_path / "other.onnx")


def test_cli_diagnose(tmp_path: Path) -> None:
    src, data = chain_model(tmp_path)
    quantize(src, tmp_path / "q.onnx", config=CFG)
    run = ["diagnose", str(src), str(tmp_path / "q.onnx")]
    r = cli(*run, "--data", str(data), "--top", "1", "--report", str(tmp_path / "d.html"))
    assert r.returncode == 0, r.stderr
    assert "--exclude" in r.stdout and "mm1" in r.stdout
    assert "<svg" in (tmp_path / "d.html").read_text()
    r = cli(*run, "--data", str(tmp_path / "missing.npz"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_printed_command_reproduces_static_mode_and_data(tmp_path: Path) -> None:
    src, data = chain_model(tmp_path)
    quantize(src, tmp_path / "q.onnx", config=StaticQuantConfig(granularity="per_tensor", latency_check=False), data=data)
    rep = diagnose_layers(src, tmp_path / "q.onnx", data, top=1, batch_size=16)
    assert rep.worst and all(math.isfinite(x.added_sqnr_db) for x in rep.layers if x.node in rep.worst)
    args = shlex.split(rep.exclude_command)
    assert args[args.index("--mode") + 1] == "static" and args[args.index("--data") + 1] == str(data)
    if "--no-latency-check" not in args:
        args.append("--no-latency-check")  # the timed check could move a tiny model to float on a busy machine
    r = cli(*args[1:], "--no-check-speed")
    assert r.returncode == 0, r.stderr
    out = Path(args[args.index("-o") + 1])
    import onnx

    again = onnx.load(str(out))
    assert infer_quantize(again)["mode"] == "static"
    assert any(n.op_type == "QuantizeLinear" for n in again.graph.node)  # still static, not a dynamic model
    worst = rep.worst[0]
    after = {x.node: x for x in diagnose_layers(src, out, data, batch_size=16).layers}
    before = {x.node: x for x in rep.layers}
    assert after[worst].sqnr_db > before[worst].sqnr_db, (worst, before[worst].sqnr_db, after[worst].sqnr_db)


def test_a_model_without_provenance_gets_its_mode_from_the_graph(tmp_path: Path) -> None:
    import onnx

    src, data = chain_model(tmp_path)
    quantize(src, tmp_path / "q.onnx", config=StaticQuantConfig(latency_check=False), data=data)
    m = onnx.load(str(tmp_path / "q.onnx"))
    del m.metadata_props[:]
    info = infer_quantize(m)
    assert info["mode"] == "static" and not info["recorded"]
