"""The command line on .tflite files: quantize (every mode), eval, bench, inspect, one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

import tflite_models as tm
from models import cli


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    p = tmp_path / "cnn.tflite"
    p.write_bytes(tm.cnn())
    r = tm.rng(4)
    np.savez(tmp_path / "data.npz", image=r.random((24, 12, 12, 3)).astype(np.float32), label=r.integers(0, 10, 24))
    return p


def test_quantize_every_mode_then_eval_bench_inspect(cnn: Path, tmp_path: Path) -> None:
    before = hashlib.sha256(cnn.read_bytes()).hexdigest()
    sizes = {}
    for mode in ("dynamic", "fp16", "static"):
        out = tmp_path / f"{mode}.tflite"
        args = ["quantize", str(cnn), "-o", str(out), "--mode", mode, "--no-check-speed", "--json", "-"]
        if mode == "dynamic":
            args += ["--min-size", "0"]
        if mode == "static":
            args += ["--data", str(tmp_path / "data.npz")]
        r = cli(*args)
        assert r.returncode == 0, r.stderr
        payload = json.loads(r.stdout)
        assert payload["format"] == "tflite" and payload["mode"] == mode and payload["summary"]["quantized"] >= 1
        sizes[mode] = out.stat().st_size
    assert sizes["dynamic"] < sizes["fp16"] < cnn.stat().st_size
    assert hashlib.sha256(cnn.read_bytes()).hexdigest() == before
    r = cli("eval", str(cnn), str(tmp_path / "static.tflite"), "--data", str(tmp_path / "data.npz"), "--json", "-")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["outputs"][0]
    assert out["cosine_mean"] > 0.99 and out["candidate_accuracy"] is not None
    r = cli("bench", str(cnn), str(tmp_path / "dynamic.tflite"), "--seconds", "0.2", "--json", "-")
    assert r.returncode == 0, r.stderr
    assert [m["name"] for m in json.loads(r.stdout)["models"]] == ["cnn.tflite", "dynamic.tflite"]
    r = cli("inspect", str(cnn), "--json", "-")
    assert r.returncode == 0, r.stderr
    assert {w["name"] for w in json.loads(r.stdout)["weights"]} >= {"fc/w", "conv2/w"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["quantize", "{bad}", "-o", "{out}"], "not a TFLite flatbuffer"),
        (["quantize", "{model}", "-o", "{out}", "--mode", "static"], "needs calibration data"),
        (["quantize", "{model}", "-o", "{out}", "--mode", "blockwise"], "not available for .tflite"),
        (["quantize", "{model}", "-o", "{out}", "--scheme", "asymmetric"], "apply to ONNX models"),
        (["quantize", "{model}", "-o", "{out}", "--form", "fast"], "--form"),
        (["quantize", "{model}", "-o", "{out}", "--mode", "fp16", "--form", "weight_only"], "--mode dynamic"),
        (["bench", "{model}", "{onnx}"], "one format"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(cnn: Path, tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    (tmp_path / "m.onnx").write_bytes(b"x")
    fmt = {"bad": str(bad), "out": str(tmp_path / "o.tflite"), "model": str(cnn), "onnx": str(tmp_path / "m.onnx")}
    r = cli(*[a.format(**fmt) for a in args])
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not (tmp_path / "o.tflite").exists()
