"""The command line: every command, exit codes, one-line errors, the input left untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from models import F, cli, make, matmul_model, mlp_model
from tensorslim import __version__
from tensorslim.backends.onnx import save_model


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    model, feeds = mlp_model()
    path = save_model(model, tmp_path / "mlp.onnx")
    labels = np.argmax(np.random.default_rng(1).standard_normal((16, 10)), axis=1)
    np.savez(tmp_path / "data.npz", x=feeds["x"], label=labels)
    return path


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_quantize_writes_a_smaller_model_and_prints_the_table(mlp: Path, tmp_path: Path) -> None:
    before = sha(mlp)
    out = tmp_path / "q.onnx"
    r = cli("quantize", str(mlp), "-o", str(out), "--json", str(tmp_path / "q.json"))
    assert r.returncode == 0, r.stderr
    assert "W1" in r.stdout and "quantized 3 of" in r.stdout
    assert out.stat().st_size < mlp.stat().st_size / 2
    assert sha(mlp) == before
    payload = json.loads((tmp_path / "q.json").read_text())
    assert payload["summary"]["quantized"] == 3
    # 2 k multiply-adds per sample: too few to pay for integer kernels, so weight-only (and its bias float16)
    w1 = next(w for w in payload["weights"] if w["name"] == "W1")
    assert w1["action"] == "int8 load_time_cast" and "2048 multiply-adds per sample" in w1["reason"], w1
    assert {w["name"] for w in payload["weights"] if w["action"] == "skipped"} == {"B2"}
    assert "speed_check" in payload


BAD_INPUTS = {
    "missing": (lambda d, m: ["quantize", str(d / "nope.onnx"), "-o", str(d / "o.onnx")], "no such file"),
    "not_onnx": (lambda d, m: ["quantize", str(d / "data.npz"), "-o", str(d / "o.onnx")], "not a readable ONNX"),
    "same_path": (lambda d, m: ["quantize", str(m), "-o", str(m)], "output path is the input"),
    "missing_folder": (lambda d, m: ["quantize", str(m), "-o", str(d / "no" / "o.onnx")], "does not exist"),
    "unknown_op": (
        lambda d, m: ["quantize", str(m), "-o", str(d / "o.onnx"), "--ops", "Gemm,Frobnicate"],
        "unknown op 'Frobnicate'",
    ),
    "bad_form": (lambda d, m: ["quantize", str(m), "-o", str(d / "o.onnx"), "--form", "int3"], "form: 'int3'"),
    "nothing_to_quantize": (
        lambda d, m: ["quantize", str(m), "-o", str(d / "o.onnx"), "--min-size", "100000"],
        "no weight could be quantized",
    ),
    "eval_missing_input": (
        lambda d, m: ["eval", str(m), str(m), "--data", str(d / "wrong.npz")],
        "no array for model input",
    ),
    "eval_nan": (lambda d, m: ["eval", str(m), str(m), "--data", str(d / "nan.npz")], "NaN"),
    "bench_not_onnx": (lambda d, m: ["bench", str(d / "data.npz")], "data.npz"),
    "bad_dim": (lambda d, m: ["bench", str(m), "--dim", "seq"], "NAME=SIZE"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_exit_2_input_unchanged(case: str, mlp: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "wrong.npz", other=np.zeros((2, 32), np.float32))
    np.savez(tmp_path / "nan.npz", x=np.full((2, 32), np.nan, np.float32))
    before = sha(mlp)
    args, message = BAD_INPUTS[case]
    r = cli(*args(tmp_path, mlp))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert sha(mlp) == before
    assert not (tmp_path / "o.onnx").exists()


def test_truncated_model_exit_2(mlp: Path, tmp_path: Path) -> None:
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(mlp.read_bytes()[:700])
    r = cli("quantize", str(trunc), "-o", str(tmp_path / "o.onnx"))
    assert r.returncode == 2 and "trunc.onnx" in r.stderr and "Traceback" not in r.stderr


def test_eval_reports_fidelity_and_accuracy(mlp: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    assert cli("quantize", str(mlp), "-o", str(out), "--no-check-speed").returncode == 0
    r = cli("eval", str(mlp), str(out), "--data", str(tmp_path / "data.npz"), "--json", "-")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    (o,) = rep["outputs"]
    assert 0.99 < o["cosine_mean"] <= 1.0 and o["cosine_min"] <= o["cosine_mean"]
    assert o["top1_agreement"] is not None and o["reference_accuracy"] is not None
    assert float(o["sqnr_db"]) > 20
    gen = cli("eval", str(mlp), str(out))
    assert gen.returncode == 0 and "generated" in gen.stdout


def test_bench_two_models_side_by_side(mlp: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    assert cli("quantize", str(mlp), "-o", str(out), "--no-check-speed").returncode == 0
    r = cli("bench", str(mlp), str(out), "--seconds", "0.3", "--no-memory", "--json", "-")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [Path(m["path"]).name for m in rep["models"]] == ["mlp.onnx", "q.onnx"]
    assert rep["models"][1]["file_bytes"] < rep["models"][0]["file_bytes"]


def test_inspect_recommends(tmp_path: Path) -> None:
    model, _ = matmul_model(k=256, n=128)
    w = onnx.numpy_helper.to_array(model.graph.initializer[0]) * np.geomspace(0.01, 10, 128).astype(np.float32)
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "W"))
    path = save_model(model, tmp_path / "m.onnx")
    r = cli("inspect", str(path))
    assert r.returncode == 0, r.stderr
    assert "per-channel" in r.stdout
    js = json.loads(cli("inspect", str(path), "--json", "-").stdout)
    (w0,) = js["weights"]
    assert w0["sqnr_per_channel_db"] > w0["sqnr_per_tensor_db"] + 10


def test_help_lists_examples_and_exit_codes() -> None:
    for cmd in (
        "quantize",
        "eval",
        "bench",
        "inspect",
        "optimize",
        "prune",
        "cluster",
        "pack",
        "unpack",
        "compress",
        "doctor",
        "diagnose",
        "profile",
    ):
        r = cli(cmd, "--help")
        assert r.returncode == 0
        assert "Example" in r.stdout and "Exit codes" in r.stdout, cmd


def test_console_script_and_python_m_run_the_same_app(tmp_path: Path) -> None:
    """The one test that starts interpreters: the installed ``tensorslim`` script and ``python -m tensorslim``."""
    script = Path(sys.executable).parent / "tensorslim"
    for argv in ([str(script)], [sys.executable, "-m", "tensorslim"]):
        r = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and r.stdout.strip() == f"tensorslim {__version__}", (argv, r.stderr)
    bad = subprocess.run([str(script), "quantize", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_model_without_weights_is_rejected(tmp_path: Path) -> None:
    model = make([helper.make_node("Relu", ["x"], ["y"])], [("x", F, [2])], [("y", F, [2])])
    p = save_model(model, tmp_path / "relu.onnx")
    r = cli("quantize", str(p), "-o", str(tmp_path / "o.onnx"))
    assert r.returncode == 2 and "no weight could be quantized" in r.stderr


@pytest.mark.slow  # the built-in recipes plus a 2-trial search on the 1.9 M-parameter CNN: about a minute
def test_optimize_on_the_bundled_example(tmp_path: Path) -> None:
    # the finalists are timed after the search (memory in a fresh process each): give a busy machine time
    r = cli("optimize", "-o", str(tmp_path / "out"), "--seconds", "0.5", "--budget", "2", "--json", str(tmp_path / "o.json"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "o.json").read_text())
    rows = {row["name"]: row for row in rep["rows"]}
    assert rows["float"]["accuracy"] > 0.95
    q = rows["dynamic-int8"]
    assert q["file_bytes"] < 0.3 * rows["float"]["file_bytes"]
    assert q["accuracy"] >= rows["float"]["accuracy"] - 0.01
    assert "dynamic-int8" in r.stdout
    assert rep["split"] == "selection split digits_val.npz" and q["p50_ratio_ci"] is not None
    assert rows["int8-blockwise"]["changed"] is False  # the CNN has no MatMul or Gather: marked, not a technique
