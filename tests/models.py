"""Tiny ONNX models built inline for the tests, one builder per op kind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def make(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple[str, int, Sequence[int | str]]],
    outputs: Sequence[tuple[str, int, Sequence[int | str] | None]],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    opset: int = OPSET,
    ir_version: int = 8,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None if s is None else list(s)) for n, t, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def ort_optimized(model: onnx.ModelProto, tmp: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime runs on this CPU (``ORT_ENABLE_ALL``: its fusions and the NCHWc layout)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp / "opt.onnx"))


def optimized_op_types(model: onnx.ModelProto, tmp: Path) -> list[str]:
    """Op types of the graph ONNX Runtime actually runs (after its fusions)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp / "optimized.onnx")).graph.node]


F = TensorProto.FLOAT
I64 = TensorProto.INT64


def matmul_model(k: int = 64, n: int = 48, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    w = rng(seed).standard_normal((k, n)).astype(np.float32)
    # a sequence of unknown length: its work per sample is not known from the graph, so auto keeps integer kernels
    m = make([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [("x", F, ["b", "seq", k])],
             [("y", F, ["b", "seq", n])], {"W": w})  # fmt: skip
    return m, {"x": rng(seed + 1).standard_normal((3, 5, k)).astype(np.float32)}


def gemm_model(trans_b: int = 1, alpha: float = 1.0, beta: float = 1.0, seed: int = 0):
    r = rng(seed)
    w = r.standard_normal((32, 64) if trans_b else (64, 32)).astype(np.float32)
    b = r.standard_normal(32).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc", transB=trans_b, alpha=alpha, beta=beta)
    m = make([node], [("x", F, ["b", 64])], [("y", F, ["b", 32])], {"W": w, "B": b})
    return m, {"x": r.standard_normal((4, 64)).astype(np.float32)}


def conv_model(group: int = 1, bias: bool = True, seed: int = 0):
    r = rng(seed)
    cin, cout = 16, 32 if group == 1 else 16
    w = r.standard_normal((cout, cin // group, 3, 3)).astype(np.float32)
    inits = {"W": w}
    ins = ["x", "W"]
    if bias:
        inits["B"] = r.standard_normal(cout).astype(np.float32)
        ins.append("B")
    node = helper.make_node("Conv", ins, ["y"], name="conv", pads=[1, 1, 1, 1], group=group)
    m = make([node], [("x", F, ["b", cin, 8, 8])], [("y", F, ["b", cout, 8, 8])], inits)
    return m, {"x": r.standard_normal((2, cin, 8, 8)).astype(np.float32)}


def conv_transpose_model(seed: int = 0):
    r = rng(seed)
    w = r.standard_normal((16, 8, 3, 3)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="deconv", strides=[2, 2])
    m = make([node], [("x", F, ["b", 16, 5, 5])], [("y", F, ["b", 8, 11, 11])], {"W": w})
    return m, {"x": r.standard_normal((2, 16, 5, 5)).astype(np.float32)}


def gather_model(seed: int = 0):
    r = rng(seed)
    e = r.standard_normal((100, 32)).astype(np.float32)
    node = helper.make_node("Gather", ["E", "ids"], ["y"], name="embed")
    m = make([node], [("ids", I64, ["b", 7])], [("y", F, ["b", 7, 32])], {"E": e})
    return m, {"ids": r.integers(0, 100, (3, 7)).astype(np.int64)}


def rnn_model(op: str = "LSTM", seed: int = 0):
    r = rng(seed)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    hidden, inp = 16, 24
    w = (0.3 * r.standard_normal((1, gates * hidden, inp))).astype(np.float32)
    rr = (0.3 * r.standard_normal((1, gates * hidden, hidden))).astype(np.float32)
    node = helper.make_node(op, ["x", "W", "R"], ["y"], name="rnn", hidden_size=hidden)
    m = make([node], [("x", F, [6, "b", inp])], [("y", F, [6, 1, "b", hidden])], {"W": w, "R": rr})
    return m, {"x": r.standard_normal((6, 2, inp)).astype(np.float32)}


def mlp_model(seed: int = 0, hidden: int = 64):
    """Two Gemm layers with a ReLU: a classifier on 32 features, 10 classes."""
    r = rng(seed)
    w1 = r.standard_normal((hidden, 32)).astype(np.float32) * 0.2
    w2 = r.standard_normal((10, hidden)).astype(np.float32) * 0.2
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["hr"], name="relu"),
        helper.make_node("Gemm", ["hr", "W2", "B2"], ["y"], name="fc2", transB=1),
    ]
    inits = {"W1": w1, "B1": np.zeros(hidden, np.float32), "W2": w2, "B2": np.zeros(10, np.float32)}
    m = make(nodes, [("x", F, ["b", 32])], [("y", F, ["b", 10])], inits)
    return m, {"x": r.standard_normal((16, 32)).astype(np.float32)}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Result:
    """Run the CLI in-process (a subprocess per call costs seconds of start-up)."""
    from typer.testing import CliRunner

    from tensorslim.commands import build_app

    r = CliRunner().invoke(build_app(), list(args))
    return Result(r.exit_code, r.stdout, r.stderr)
