"""Calibration data for recurrent models exported from PyTorch: a two-layer LSTM whose state inputs are
``[2, batch, H]`` (the batch on axis 1) beside a scalar gain, exported with a dynamic batch and with a fixed
batch of 1 (the state then ``[2, 1, H]``: every dim fixed). Each data form gives the same samples, and static
and int4 (GPTQ reads the data) quantize in each form."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import run
from tensorslim.api import load_calibration, quantize
from tensorslim.data import layouts
from tensorslim.passes.blockwise_quant import BlockQuantConfig
from tensorslim.passes.static_quant import StaticQuantConfig
from tensorslim.runtime.ort import OrtRuntime

torch = pytest.importorskip("torch")

N, T, D, H = 6, 5, 16, 32


def _export(dynamic: bool) -> onnx.ModelProto:
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(D, H, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(H, 64)

        def forward(self, x, h, c, gain):  # type: ignore[no-untyped-def]
            y, (hn, cn) = self.lstm(x, (h, c))
            return self.head(y * gain), hn, cn

    args = (torch.zeros(1, T, D), torch.zeros(2, 1, H), torch.zeros(2, 1, H), torch.tensor(1.0))
    names = ["x", "h", "c", "gain"]
    axes = {"x": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"}, "y": {0: "batch"}, "hn": {1: "batch"},
            "cn": {1: "batch"}} if dynamic else None  # fmt: skip
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), args, buf, input_names=names, output_names=["y", "hn", "cn"],
                          opset_version=13 if not dynamic else 17, dynamic_axes=axes, dynamo=False)  # fmt: skip
    return onnx.load_from_string(buf.getvalue())


@pytest.fixture(scope="module", params=["b1", "dyn"])
def lstm(request: pytest.FixtureRequest) -> onnx.ModelProto:
    return _export(request.param == "dyn")


def _samples() -> dict[str, np.ndarray]:
    """Form (a): samples along each input's batch axis; ``[N]`` for the scalar gain (form (c))."""
    r = np.random.default_rng(3)
    return {
        "x": r.standard_normal((N, T, D)).astype(np.float32),
        "h": (0.5 * r.standard_normal((2, N, H))).astype(np.float32),
        "c": (0.5 * r.standard_normal((2, N, H))).astype(np.float32),
        "gain": r.uniform(0.5, 2.0, N).astype(np.float32),
    }


def _feeds() -> list[dict[str, np.ndarray]]:
    """Form (e): one feed per sample, as the model takes it (the state ``[2, 1, H]``, the gain a scalar)."""
    a = _samples()
    return [{"x": a["x"][i : i + 1], "h": a["h"][:, i : i + 1], "c": a["c"][:, i : i + 1], "gain": a["gain"][i]}
            for i in range(N)]  # fmt: skip


def _forms(tmp: Path) -> dict[str, object]:
    tmp.mkdir()
    fs = _feeds()
    stacked = {k: np.stack([f[k] for f in fs]) for k in fs[0]}  # form (b): [N, *input_shape]
    np.savez(tmp / "a.npz", **_samples())
    np.savez(tmp / "b.npz", **stacked)
    (tmp / "d").mkdir()
    for i, f in enumerate(fs):
        np.savez(tmp / "d" / f"feed_{i}.npz", **f)
    return {"a": tmp / "a.npz", "b": tmp / "b.npz", "b-dict": stacked, "d": tmp / "d", "e": fs, "e-iter": iter(fs)}


def _cosine(model: onnx.ModelProto, other: onnx.ModelProto) -> float:
    worst = 1.0
    for feed in _feeds():
        f = {k: np.asarray(v) for k, v in feed.items()}
        for a, b in zip(run(model, f), run(other, f), strict=True):
            a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            worst = min(worst, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return worst


def test_state_batch_axis_is_one_and_the_gain_has_none(lstm: onnx.ModelProto) -> None:
    lay = layouts(OrtRuntime(lstm).inputs)
    assert [lay[k].batch_axis for k in ("x", "h", "c", "gain")] == [0, 1, 1, None]


def test_every_form_gives_the_same_samples(lstm: onnx.ModelProto, tmp_path: Path) -> None:
    ref = _samples()
    for name, data in _forms(tmp_path / "forms").items():
        ds = load_calibration(data, lstm)  # type: ignore[arg-type]
        assert ds.num_samples == N, name
        np.testing.assert_array_equal(ds.inputs["h"], np.moveaxis(ref["h"], 1, 0), err_msg=name)
        np.testing.assert_array_equal(ds.inputs["gain"], ref["gain"], err_msg=name)
        np.testing.assert_array_equal(ds.inputs["x"], ref["x"], err_msg=name)


def test_static_and_int4_take_every_form(lstm: onnx.ModelProto, tmp_path: Path) -> None:
    for name, data in _forms(tmp_path / "static").items():
        s = quantize(lstm, config=StaticQuantConfig(latency_check=False), data=data)  # type: ignore[arg-type]
        assert "QuantizeLinear" in {n.op_type for n in s.model.graph.node}, name
        assert _cosine(lstm, s.model) > 0.98, name
    for name, data in _forms(tmp_path / "int4").items():
        q = quantize(lstm, config=BlockQuantConfig(bits=4), data=data)  # type: ignore[arg-type]
        assert any(r.action.startswith("int4") and "(GPTQ)" in r.reason for r in q.records), name
        assert _cosine(lstm, q.model) > 0.99, name


def test_fixed_state_rule_on_declared_shapes() -> None:
    from tensorslim.runtime.base import TensorSpec

    def axes(*shapes: tuple) -> list[int | None]:
        specs = [TensorSpec(f"i{k}", np.dtype(np.float32), s) for k, s in enumerate(shapes)]
        return [lay.batch_axis for lay in layouts(specs).values()]

    assert axes((1, 16), (2, 1, 128), ()) == [0, 1, None]  # a batch-1 export: the state's 1 is its batch
    assert axes((4, 16), (2, 1, 128)) == [0, 0]  # no input with a fixed batch of 1: nothing to match
    assert axes((1, 16), (2, 1, 1)) == [0, 0]  # two dims of 1: ambiguous, axis 0 (--batch-axis decides)
    assert axes((1, 16), (2, "n", 128)) == [0, 1]  # the only dynamic dim, as before
