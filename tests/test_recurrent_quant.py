"""Recurrent and control-flow models: LSTM/GRU with state inputs and outputs, weights inside ``If`` bodies.

The ONNX-only tests build the exporter's pattern inline (gate reordering left as ``Slice``/``Concat`` on the
weight inside an ``If`` branch, which the TorchScript exporter does not fold); the others export small PyTorch
models (skipped without torch) and check every output's cosine and the file size through ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorslim as ts
from models import run
from tensorslim.algorithms.fidelity import cosine_rows
from tensorslim.passes.dynamic_quant import DynamicQuantConfig
from tensorslim.passes.fold_weight_chains import FoldWeightChainsPass
from tensorslim.passes.static_quant import StaticQuantConfig

H, F = 64, 32
_SHAPES: dict[str, list[int | str]] = {"y": ["T", 1, "B", H], "h": [1, "B", H], "c": [1, "B", H]}


def _branch(tag: str, w: str, r: str) -> onnx.GraphProto:
    """An LSTM whose W and R are the outer weights with the gate blocks reordered by Slice + Concat."""
    nodes, consts = [], []
    for name, src in ((f"{tag}_W", w), (f"{tag}_R", r)):
        parts = []
        for k, (lo, hi) in enumerate(((0, H), (3 * H, 4 * H), (H, 3 * H))):  # i, o, f+c as PyTorch exports them
            starts, ends, axes = (f"{name}_{x}{k}" for x in ("s", "e", "a"))
            consts += [
                helper.make_node("Constant", [], [starts], value=numpy_helper.from_array(np.array([lo], np.int64))),
                helper.make_node("Constant", [], [ends], value=numpy_helper.from_array(np.array([hi], np.int64))),
                helper.make_node("Constant", [], [axes], value=numpy_helper.from_array(np.array([0], np.int64))),
            ]
            nodes.append(helper.make_node("Slice", [src, starts, ends, axes], [f"{name}_p{k}"]))
            parts.append(f"{name}_p{k}")
        nodes.append(helper.make_node("Concat", parts, [f"{name}_cat"], axis=0))
        ax = f"{name}_ax"
        consts.append(helper.make_node("Constant", [], [ax], value=numpy_helper.from_array(np.array([0], np.int64))))
        nodes.append(helper.make_node("Unsqueeze", [f"{name}_cat", ax], [f"{name}_3d"]))
    nodes.append(
        helper.make_node(
            "LSTM", ["x", f"{tag}_W_3d", f"{tag}_R_3d", "", "", "h0", "c0"], [f"{tag}_y", f"{tag}_h", f"{tag}_c"],
            hidden_size=H,
        )
    )  # fmt: skip
    outs = [helper.make_tensor_value_info(f"{tag}_{k}", TensorProto.FLOAT, _SHAPES[k]) for k in "yhc"]
    return helper.make_graph(consts + nodes, tag, [], outs)


def _if_lstm_model(seed: int = 0) -> onnx.ModelProto:
    r = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((r.standard_normal((4 * H, F)) * 0.2).astype(np.float32), name) for name in ("wa", "wb")
    ] + [numpy_helper.from_array((r.standard_normal((4 * H, H)) * 0.1).astype(np.float32), n) for n in ("ra", "rb")]
    node = helper.make_node(
        "If", ["flag"], ["y", "h", "c"], then_branch=_branch("a", "wa", "ra"), else_branch=_branch("b", "wb", "rb")
    )
    graph = helper.make_graph(
        [node],
        "if_lstm",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", F]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "B", H]),
            helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "B", H]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, _SHAPES[n]) for n in ("y", "h", "c")],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(flag: bool, seed: int = 1) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {
        "x": r.standard_normal((6, 2, F)).astype(np.float32),
        "h0": (r.standard_normal((1, 2, H)) * 0.5).astype(np.float32),
        "c0": (r.standard_normal((1, 2, H)) * 0.5).astype(np.float32),
        "flag": np.array(flag),
    }


def test_fold_makes_lstm_weights_inside_if_constants_and_is_exact() -> None:
    model = _if_lstm_model()
    res = FoldWeightChainsPass()(model)
    assert res.modified
    onnx.checker.check_model(res.model)
    assert not res.model.graph.initializer  # the outer weights only fed the chains: gone
    for attr in res.model.graph.node[0].attribute:
        ops = [n.op_type for n in attr.g.node]
        assert "Slice" not in ops and "Concat" not in ops and "Unsqueeze" not in ops
        lstm = next(n for n in attr.g.node if n.op_type == "LSTM")
        consts = {n.output[0]: n for n in attr.g.node if n.op_type == "Constant"}
        assert lstm.input[1] in consts and lstm.input[2] in consts
    for flag in (True, False):
        for a, b in zip(run(model, _feeds(flag)), run(res.model, _feeds(flag)), strict=True):
            np.testing.assert_array_equal(a, b)


def test_fold_leaves_a_model_without_chains_alone() -> None:
    from models import rnn_model

    model, _ = rnn_model("GRU")
    assert not FoldWeightChainsPass()(model).modified


@pytest.mark.parametrize("form", ["auto", "weight_only"])
def test_if_lstm_weights_are_quantized_in_both_branches(form: str) -> None:
    model = _if_lstm_model()
    res = ts.quantize(model, config=DynamicQuantConfig(form=form))
    done = [r for r in res.records if not r.skipped and "LSTM" in r.ops]
    assert len(done) == 4  # W and R of both branches
    assert res.size_ratio <= 0.30
    for flag in (True, False):
        for a, b in zip(run(model, _feeds(flag)), run(res.model, _feeds(flag)), strict=True):
            assert cosine_rows(a.reshape(-1, H), b.reshape(-1, H)).min() >= 0.999


# ---- PyTorch exports -------------------------------------------------------------------------------------


def _export(module: object, args: tuple[object, ...], path: Path, names: list[str], outs: list[str], **kw: object):
    torch = pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), input_names=names, output_names=outs, opset_version=17, dynamo=False, **kw
        )
    return path


def _cosines(ref: Path, cand: Path, feeds: list[dict[str, np.ndarray]]) -> list[float]:
    out = []
    for f in feeds:
        for a, b in zip(run(ref, f), run(cand, f), strict=True):
            out.append(float(cosine_rows(a.reshape(1, -1), b.reshape(1, -1))[0]))
    return out


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[dict[str, np.ndarray]]]]:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    tmp = tmp_path_factory.mktemp("recurrent")
    torch.manual_seed(0)
    r = np.random.default_rng(3)

    class Lstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.rnn, self.out = nn.Linear(40, 96), nn.LSTM(96, 128, num_layers=2), nn.Linear(128, 40)

        def forward(self, x, h, c):  # type: ignore[no-untyped-def]
            y, (h2, c2) = self.rnn(self.inp(x), (h, c))
            return self.out(y), h2, c2

    class Gru(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.out = nn.Linear(40, 96), nn.Linear(256, 40)
            self.rnn = nn.GRU(96, 128, bidirectional=True)

        def forward(self, x, h):  # type: ignore[no-untyped-def]
            y, h2 = self.rnn(self.inp(x), h)
            return self.out(y), h2

    class Branchy(nn.Module):  # an If on a scalar input, a recurrent cell in each branch (as in Silero VAD)
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv1d(1, 64, 16, 8), nn.Conv1d(1, 64, 8, 4)
            self.ra, self.rb = nn.LSTMCell(64, 128), nn.LSTMCell(64, 128)
            self.o = nn.Linear(128, 1)

        def forward(self, x, state, sr):  # type: ignore[no-untyped-def]
            if sr == 16000:
                z = torch.relu(self.a(x.unsqueeze(1))).mean(-1)
                h, c = self.ra(z, (state[0], state[1]))
            else:
                z = torch.relu(self.b(x.unsqueeze(1))).mean(-1)
                h, c = self.rb(z, (state[0], state[1]))
            return torch.sigmoid(self.o(h)), torch.stack([h, c])

    out: dict[str, tuple[Path, list[dict[str, np.ndarray]]]] = {}
    lstm = _export(
        Lstm().eval(), (torch.randn(5, 1, 40), torch.zeros(2, 1, 128), torch.zeros(2, 1, 128)), tmp / "lstm.onnx",
        ["x", "h", "c"], ["y", "hn", "cn"], dynamic_axes={"x": {0: "T", 1: "B"}, "h": {1: "B"}, "c": {1: "B"}},
    )  # fmt: skip
    out["lstm"] = (lstm, [{"x": r.standard_normal((7, 2, 40)).astype(np.float32),
                           "h": (r.standard_normal((2, 2, 128)) * 0.5).astype(np.float32),
                           "c": (r.standard_normal((2, 2, 128)) * 0.5).astype(np.float32)} for _ in range(2)])  # fmt: skip
    gru = _export(
        Gru().eval(), (torch.randn(5, 1, 40), torch.zeros(2, 1, 128)), tmp / "gru.onnx", ["x", "h"], ["y", "hn"],
        dynamic_axes={"x": {0: "T", 1: "B"}, "h": {1: "B"}},
    )  # fmt: skip
    out["gru"] = (gru, [{"x": r.standard_normal((7, 2, 40)).astype(np.float32),
                         "h": (r.standard_normal((2, 2, 128)) * 0.5).astype(np.float32)} for _ in range(2)])  # fmt: skip
    scripted = torch.jit.script(Branchy().eval())
    branchy = _export(
        scripted, (torch.randn(1, 256), torch.zeros(2, 1, 128), torch.tensor(16000)), tmp / "if.onnx",
        ["input", "state", "sr"], ["prob", "stateN"], dynamic_axes={"input": {0: "B"}, "state": {1: "B"}},
    )  # fmt: skip
    out["if"] = (branchy, [{"input": r.standard_normal((2, 256)).astype(np.float32),
                            "state": (r.standard_normal((2, 2, 128)) * 0.5).astype(np.float32),
                            "sr": np.array(sr, np.int64)} for sr in (16000, 8000)])  # fmt: skip
    return out


@pytest.mark.parametrize("name", ["lstm", "gru", "if"])
@pytest.mark.parametrize("form", ["auto", "weight_only", "integer"])
def test_torch_recurrent_dynamic(torch_models, tmp_path: Path, name: str, form: str) -> None:  # type: ignore[no-untyped-def]
    src, feeds = torch_models[name]
    out = tmp_path / "q.onnx"
    res = ts.quantize(src, out, config=DynamicQuantConfig(form=form))
    rnn = [r for r in res.records if r.ops in ("LSTM", "GRU")]
    assert rnn and all(not r.skipped for r in rnn if len(r.shape) == 3)  # W and R; biases stay float
    assert out.stat().st_size <= 0.30 * src.stat().st_size
    assert min(_cosines(src, out, feeds)) >= 0.99


def test_torch_if_model_before_the_fold_kept_recurrent_weights_float(torch_models) -> None:  # type: ignore[no-untyped-def]
    """The TorchScript exporter leaves the gate reordering inside the If branches: the fold is what finds them."""
    src, _ = torch_models["if"]
    model = onnx.load(str(src))
    bodies = [a.g for n in model.graph.node if n.op_type == "If" for a in n.attribute]
    assert bodies and all(any(n.op_type == "Slice" for n in g.node) for g in bodies)


def test_static_recurrent_with_batch_first_state(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.rnn, self.out = nn.Embedding(200, 64), nn.GRU(64, 128, batch_first=True), nn.Linear(128, 20)

        def forward(self, ids, h):  # type: ignore[no-untyped-def]
            y, h2 = self.rnn(self.emb(ids), h.unsqueeze(0))
            return self.out(y[:, -1]), h2[0]

    src = _export(
        Text().eval(), (torch.randint(0, 200, (1, 12)), torch.zeros(1, 128)), tmp_path / "text.onnx", ["ids", "h"],
        ["logits", "hn"], dynamic_axes={"ids": {0: "B"}, "h": {0: "B"}, "logits": {0: "B"}, "hn": {0: "B"}},
    )  # fmt: skip
    r = np.random.default_rng(0)

    def data(n: int) -> dict[str, np.ndarray]:
        return {"ids": r.integers(0, 200, (n, 12)), "h": (r.standard_normal((n, 128)) * 0.5).astype(np.float32)}

    out = tmp_path / "static.onnx"
    ts.quantize(src, out, config=StaticQuantConfig(), data=data(64))
    assert out.stat().st_size <= 0.30 * src.stat().st_size
    assert min(_cosines(src, out, [data(16)])) >= 0.98


def test_fp16_stores_weights_inside_if_bodies_and_takes_state_inputs() -> None:
    """State inputs with the batch on axis 1 and a fixed first axis: the generated overflow-check feeds take the
    model's own shapes (they were batched along axis 0, and ONNX Runtime refused them: exit 3)."""
    from tensorslim.passes.float16 import Float16Config

    model = _if_lstm_model()
    res = ts.quantize(model, config=Float16Config())
    assert res.size_ratio <= 0.55
    assert sum(r.action == "float16 storage" for r in res.records) == 4  # W and R of both branches
    for flag in (True, False):
        for a, b in zip(run(model, _feeds(flag)), run(res.model, _feeds(flag)), strict=True):
            assert cosine_rows(a.reshape(-1, H), b.reshape(-1, H)).min() >= 0.9999


def test_dynamic_pass_alone_folds_the_chains() -> None:
    """Recipes and the search call the pass directly, without :func:`ts.quantize`'s preparation."""
    from tensorslim.passes.dynamic_quant import DynamicQuantPass

    res = DynamicQuantPass()(_if_lstm_model())
    assert sum(not r.skipped and "LSTM" in r.ops for r in res.records) == 4
    assert any("folded" in n for n in res.notes)


# ---- int4: LSTM/GRU/RNN W and R as 4-bit ladder blocks dequantized at load --------------------------------


@pytest.mark.parametrize("name", ["lstm", "gru", "if"])
def test_torch_recurrent_int4(torch_models, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    from tensorslim.passes.blockwise_quant import BlockQuantConfig

    src, feeds = torch_models[name]
    out = tmp_path / "q4.onnx"
    res = ts.quantize(src, out, config=BlockQuantConfig(bits=4))
    rnn = [r for r in res.records if r.ops in ("LSTM", "GRU") and len(r.shape) == 3]
    assert rnn and all(r.action.startswith("int4 ladder") for r in rnn), [(r.name, r.action, r.reason) for r in rnn]
    assert out.stat().st_size <= 0.20 * src.stat().st_size
    assert min(_cosines(src, out, feeds)) >= 0.99


@pytest.mark.parametrize("opset", [11, 14, 21])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_recurrent_int4_across_opsets_with_calibration_data(tmp_path: Path, opset: int, cell: str) -> None:
    """A bidirectional LSTM/GRU exported at opset 11, 14 and 21: W and R take 4-bit blocks (both directions
    sharing each gate unit's step), GPTQ for the Linear layers from the calibration samples, output cosine kept."""
    torch = pytest.importorskip("torch")
    from tensorslim.passes.blockwise_quant import BlockQuantConfig

    nn = torch.nn
    torch.manual_seed(1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(32, 64)
            self.rnn = getattr(nn, cell)(64, 96, bidirectional=True)
            self.out = nn.Linear(192, 16)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.out(self.rnn(self.inp(x))[0])

    src = tmp_path / f"{cell}{opset}.onnx"
    _export_at(Net().eval(), (torch.randn(6, 1, 32),), src, ["x"], ["y"], opset, {"x": {0: "T", 1: "B"}})
    r = np.random.default_rng(5)
    calib = [{"x": r.standard_normal((6, 1, 32)).astype(np.float32)} for _ in range(16)]
    out = tmp_path / "q4.onnx"
    res = ts.quantize(src, out, config=BlockQuantConfig(bits=4), data=calib)
    rnn = [x for x in res.records if x.ops == cell and len(x.shape) == 3]
    assert len(rnn) == 2 and all(x.action.startswith("int4 ladder") for x in rnn)
    assert all(x.sqnr_db is not None and x.sqnr_db > 15 for x in rnn)
    assert out.stat().st_size <= 0.25 * src.stat().st_size
    feeds = [{"x": r.standard_normal((9, 2, 32)).astype(np.float32)} for _ in range(3)]
    assert min(_cosines(src, out, feeds)) >= 0.99


def _export_at(module: object, args: tuple[object, ...], path: Path, names: list[str], outs: list[str], opset: int,
               axes: dict[str, dict[int, str]]) -> Path:  # fmt: skip
    torch = pytest.importorskip("torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=names, output_names=outs, opset_version=opset,
                          dynamo=False, dynamic_axes=axes)  # fmt: skip
    return path
