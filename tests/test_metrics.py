"""Metrics of the accuracy-aware search: built-ins, user functions, the budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import mlp_model, run
from tensorslim.algorithms.fidelity import cosine_rows
from tensorslim.errors import InputError
from tensorslim.evaluate.data import Dataset
from tensorslim.evaluate.metrics import parse_max_drop, resolve_metric


@pytest.mark.parametrize(("text", "want"), [("1%", 0.01), ("0.01", 0.01), ("0", 0.0), (" 2.5% ", 0.025), (0.5, 0.5)])
def test_max_drop_forms(text: str | float, want: float) -> None:
    assert parse_max_drop(text) == pytest.approx(want)


@pytest.mark.parametrize(("text", "msg"), [("-1%", "non-negative"), ("abc", "not a number"), ("150%", "above 100%")])
def test_max_drop_rejects(text: str, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        parse_max_drop(text)


def test_unknown_and_malformed_metrics() -> None:
    with pytest.raises(InputError, match="unknown metric; use one of top1, cosine"):
        resolve_metric("top-1")
    with pytest.raises(InputError, match="write python:module:function"):
        resolve_metric("python:onlymodule")
    with pytest.raises(InputError, match="cannot import module 'no_such_module_xyz'"):
        resolve_metric("python:no_such_module_xyz:fn")


def _mlp_outputs(n: int = 40) -> tuple[list[np.ndarray], Dataset]:
    model, _ = mlp_model()
    x = np.random.default_rng(1).standard_normal((n, 32)).astype(np.float32)
    out = run(model, {"x": x})
    return out, Dataset({"x": x}, labels=out[0].argmax(1))


def test_top1_on_ort_outputs_and_needs_labels() -> None:
    out, ds = _mlp_outputs()
    m = resolve_metric("top1")
    assert m.score(out, ds, None) == 1.0
    flipped = ds.labels.copy()
    flipped[:10] = (flipped[:10] + 1) % 10
    assert m.score(out, Dataset(ds.inputs, flipped), None) == pytest.approx(0.75)
    with pytest.raises(InputError, match="metric top1 needs labels"):
        m.score(out, Dataset(ds.inputs, source="val.npz"), None)


def test_cosine_and_sqnr_against_reference() -> None:
    out, ds = _mlp_outputs()
    noisy = [out[0] + 0.01 * np.random.default_rng(2).standard_normal(out[0].shape).astype(np.float32)]
    cos = resolve_metric("cosine").score(noisy, ds, out)
    assert cos == pytest.approx(float(np.mean(cosine_rows(out[0], noisy[0]))))
    assert 0.99 < cos < 1.0
    assert resolve_metric("cosine").score(out, ds, out) == pytest.approx(1.0)
    sq = resolve_metric("sqnr")
    assert sq.score(out, ds, out) == float("inf")
    with pytest.raises(InputError, match="give --min-score"):
        sq.threshold(float("inf"), 0.01, None)
    assert sq.threshold(float("inf"), None, 30.0) == 30.0
    assert resolve_metric("cosine").threshold(1.0, 0.01, None) == pytest.approx(0.99)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(2, 9), st.floats(0.1, 10.0))
def test_embedding_cosine_ignores_padding_and_scale(n: int, tokens: int, scale: float) -> None:
    r = np.random.default_rng(n * 100 + tokens)
    ref = r.standard_normal((n, tokens, 8)).astype(np.float32)
    mask = np.ones((n, tokens), np.int64)
    mask[:, tokens // 2 + 1 :] = 0  # padded tokens
    cand = ref * np.float32(scale)
    cand[mask == 0] = r.standard_normal((int((mask == 0).sum()), 8)) * 100  # garbage on padding only
    ds = Dataset({"input_ids": np.zeros((n, tokens), np.int64), "attention_mask": mask})
    assert resolve_metric("embedding-cosine").score([cand], ds, [ref]) == pytest.approx(1.0, abs=1e-6)
    assert resolve_metric("cosine").score([cand], ds, [ref]) < 1.0 - 1e-6 or (mask == 1).all()


def test_embedding_cosine_needs_mask() -> None:
    a = np.ones((2, 3, 4), np.float32)
    with pytest.raises(InputError, match="attention_mask"):
        resolve_metric("embedding-cosine").score([a], Dataset({"ids": np.zeros((2, 3), np.int64)}), [a])


def _user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    (tmp_path / "usermetric_t.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    sys.modules.pop("usermetric_t", None)


def test_python_metric_weighted_by_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_module(tmp_path, monkeypatch, "import numpy as np\n"
                 "def acc(outs, batch):\n    return float(np.mean(outs[0].argmax(1) == batch['label']))\n")  # fmt: skip
    out, ds = _mlp_outputs(n=7)
    labels = ds.labels.copy()
    labels[:2] = (labels[:2] + 1) % 10  # 5 of 7 right; batches of 3, 3, 1 must be weighted by size
    m = resolve_metric("python:usermetric_t:acc", batch_size=3)
    assert m.score(out, Dataset(ds.inputs, labels), None) == pytest.approx(5 / 7)


def test_python_metric_that_raises_names_the_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_module(tmp_path, monkeypatch, "def bad(outs, batch):\n    raise KeyError('logits')\n")
    out, ds = _mlp_outputs(n=4)
    with pytest.raises(InputError, match=r"metric function usermetric_t:bad raised KeyError"):
        resolve_metric("python:usermetric_t:bad").score(out, ds, None)
    with pytest.raises(InputError, match="has no function 'missing'"):
        resolve_metric("python:usermetric_t:missing")
