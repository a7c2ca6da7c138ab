"""Tiny TFLite models written through the schema's object API (no TensorFlow), one builder per op kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as s

from tensorslim.backends.tflite.io import serialize

_TYPES = {np.dtype(np.float32): "FLOAT32", np.dtype(np.float16): "FLOAT16", np.dtype(np.int32): "INT32",
          np.dtype(np.int8): "INT8", np.dtype(np.int64): "INT64"}  # fmt: skip


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


class Builder:
    """Builds one-subgraph models: ``x = b.input(...)``, ``y = b.op(...)``, ``b.bytes([y])``."""

    def __init__(self) -> None:
        self.m = s.ModelT()
        self.m.version = 3
        self.m.description = b"tensorslim test model"
        self.m.buffers = [s.BufferT()]
        self.m.operatorCodes = []
        self.sg = s.SubGraphT()
        self.sg.tensors, self.sg.operators, self.sg.inputs = [], [], []
        self.sg.name = b"main"
        self.m.subgraphs = [self.sg]

    def tensor(self, name: str, shape: list[int], dtype: Any = np.float32, data: np.ndarray | None = None,
               signature: list[int] | None = None, buffer: int | None = None) -> int:  # fmt: skip
        t = s.TensorT()
        t.name, t.shape = name.encode(), np.asarray(shape, np.int32)
        t.type = getattr(s.TensorType, _TYPES[np.dtype(dtype)])
        if signature is not None:
            t.shapeSignature = np.asarray(signature, np.int32)
        if buffer is not None:
            t.buffer = buffer
        elif data is not None:
            b = s.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8)
            self.m.buffers.append(b)
            t.buffer = len(self.m.buffers) - 1
        else:
            self.m.buffers.append(s.BufferT())
            t.buffer = len(self.m.buffers) - 1
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def input(self, name: str, shape: list[int], dtype: Any = np.float32, dynamic_batch: bool = True) -> int:
        sig = [-1, *shape[1:]] if dynamic_batch else None
        i = self.tensor(name, shape, dtype, signature=sig)
        self.sg.inputs.append(i)
        return i

    def const(self, name: str, data: np.ndarray) -> int:
        return self.tensor(name, list(data.shape), data.dtype, data=data)

    def opcode(self, name: str, version: int = 1) -> int:
        code = getattr(s.BuiltinOperator, name)
        for i, c in enumerate(self.m.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
                return i
        c = s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), version
        self.m.operatorCodes.append(c)
        return len(self.m.operatorCodes) - 1

    def op(self, name: str, inputs: list[int], out_shape: list[int] | None = None, *, options: Any = None,
           options_type: str | None = None, out_dtype: Any = np.float32, outputs: list[int] | None = None,
           out_name: str | None = None) -> int:  # fmt: skip
        if outputs is None:
            assert out_shape is not None
            sig = [-1, *out_shape[1:]] if out_shape else None
            outputs = [self.tensor(out_name or f"{name.lower()}_{len(self.sg.operators)}", out_shape, out_dtype,
                                   signature=sig)]  # fmt: skip
        op = s.OperatorT()
        op.opcodeIndex = self.opcode(name)
        op.inputs, op.outputs = np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        if options is not None:
            op.builtinOptionsType = getattr(s.BuiltinOptions, options_type or type(options).__name__[:-1])
            op.builtinOptions = options
        self.sg.operators.append(op)
        return outputs[0]

    def bytes(self, outputs: list[int]) -> bytes:
        self.sg.outputs = outputs
        return serialize(self.m)

    def save(self, path: Path, outputs: list[int]) -> Path:
        path.write_bytes(self.bytes(outputs))
        return path


def _fc_opts(act: int = 0) -> Any:
    o = s.FullyConnectedOptionsT()
    o.fusedActivationFunction = act
    return o


def _conv_opts(act: int = 0, padding: int = 0) -> Any:
    o = s.Conv2DOptionsT()
    o.padding, o.strideW, o.strideH, o.dilationWFactor, o.dilationHFactor = padding, 1, 1, 1, 1
    o.fusedActivationFunction = act
    return o


def mlp(seed: int = 0, in_dim: int = 64, hidden: int = 96, out: int = 10, bias: bool = True) -> bytes:
    """x[N,in] -> FC+relu -> FC -> SOFTMAX."""
    r = rng(seed)
    b = Builder()
    x = b.input("x", [1, in_dim])
    w1 = b.const("w1", (r.standard_normal((hidden, in_dim)) * 0.2).astype(np.float32))
    b1 = b.const("b1", (r.standard_normal(hidden) * 0.1).astype(np.float32)) if bias else -1
    h = b.op("FULLY_CONNECTED", [x, w1, b1], [1, hidden], options=_fc_opts(act=1))
    w2 = b.const("w2", (r.standard_normal((out, hidden)) * 0.2).astype(np.float32))
    b2 = b.const("b2", (r.standard_normal(out) * 0.1).astype(np.float32)) if bias else -1
    y = b.op("FULLY_CONNECTED", [h, w2, b2], [1, out], options=_fc_opts())
    p = b.op("SOFTMAX", [y], [1, out], options=s.SoftmaxOptionsT(beta=1.0), out_name="probs")
    return b.bytes([p])


def cnn(seed: int = 0, size: int = 12, c_in: int = 3, c1: int = 16, c2: int = 24, classes: int = 10) -> bytes:
    """CONV_2D+relu -> DEPTHWISE_CONV_2D+relu6 -> MAX_POOL -> CONV_2D -> ADD(const) -> RESHAPE -> FC -> SOFTMAX."""
    r = rng(seed)
    b = Builder()
    x = b.input("image", [1, size, size, c_in])
    w = b.const("conv1/w", (r.standard_normal((c1, 3, 3, c_in)) * 0.3).astype(np.float32))
    bias = b.const("conv1/b", (r.standard_normal(c1) * 0.1).astype(np.float32))
    h = b.op("CONV_2D", [x, w, bias], [1, size, size, c1], options=_conv_opts(act=1))
    dw = b.const("dw/w", (r.standard_normal((1, 3, 3, c1)) * 0.5).astype(np.float32))
    dwb = b.const("dw/b", (r.standard_normal(c1) * 0.1).astype(np.float32))
    o = s.DepthwiseConv2DOptionsT()
    o.padding, o.strideW, o.strideH, o.depthMultiplier, o.dilationWFactor, o.dilationHFactor = 0, 1, 1, 1, 1, 1
    o.fusedActivationFunction = 3  # RELU6
    h = b.op("DEPTHWISE_CONV_2D", [h, dw, dwb], [1, size, size, c1], options=o)
    po = s.Pool2DOptionsT()
    po.padding, po.strideW, po.strideH, po.filterWidth, po.filterHeight = 1, 2, 2, 2, 2
    half = size // 2
    h = b.op("MAX_POOL_2D", [h], [1, half, half, c1], options=po, options_type="Pool2DOptions")
    w2 = b.const("conv2/w", (r.standard_normal((c2, 3, 3, c1)) * 0.1).astype(np.float32))
    b2 = b.const("conv2/b", (r.standard_normal(c2) * 0.1).astype(np.float32))
    h = b.op("CONV_2D", [h, w2, b2], [1, half, half, c2], options=_conv_opts())
    shift = b.const("shift", (r.standard_normal(c2) * 0.1).astype(np.float32))
    h = b.op("ADD", [h, shift], [1, half, half, c2], options=s.AddOptionsT())
    shape = b.const("flat_shape", np.asarray([-1, half * half * c2], np.int32))
    h = b.op("RESHAPE", [h, shape], [1, half * half * c2])
    wf = b.const("fc/w", (r.standard_normal((classes, half * half * c2)) * 0.05).astype(np.float32))
    bf = b.const("fc/b", (r.standard_normal(classes) * 0.1).astype(np.float32))
    y = b.op("FULLY_CONNECTED", [h, wf, bf], [1, classes], options=_fc_opts())
    p = b.op("SOFTMAX", [y], [1, classes], options=s.SoftmaxOptionsT(beta=1.0), out_name="probs")
    return b.bytes([p])


def shared_weights(seed: int = 0, dim: int = 48) -> bytes:
    """Two FULLY_CONNECTED ops read one weight tensor; a third reads another tensor on the same buffer."""
    r = rng(seed)
    b = Builder()
    x = b.input("x", [1, dim])
    w = b.const("w_shared", (r.standard_normal((dim, dim)) * 0.2).astype(np.float32))
    alias = b.tensor("w_alias", [dim, dim], np.float32, buffer=b.sg.tensors[w].buffer)
    h = b.op("FULLY_CONNECTED", [x, w, -1], [1, dim], options=_fc_opts(act=1))
    h = b.op("FULLY_CONNECTED", [h, w, -1], [1, dim], options=_fc_opts(act=1))
    y = b.op("FULLY_CONNECTED", [h, alias, -1], [1, dim], options=_fc_opts(), out_name="y")
    return b.bytes([y])


def embeddings(seed: int = 0, rows: int = 100, dim: int = 32) -> bytes:
    """ids[N,4] -> GATHER(E1) and EMBEDDING_LOOKUP(E2) -> ADD -> y[N,4,dim]."""
    r = rng(seed)
    b = Builder()
    ids = b.input("ids", [1, 4], np.int32)
    e1 = b.const("gather_table", r.standard_normal((rows, dim)).astype(np.float32))
    g = b.op("GATHER", [e1, ids], [1, 4, dim], options=s.GatherOptionsT())
    e2 = b.const("lookup_table", r.standard_normal((rows, dim)).astype(np.float32))
    flat_shape = b.const("flat", np.asarray([-1], np.int32))
    flat = b.op("RESHAPE", [ids, flat_shape], [4], out_dtype=np.int32)
    lk = b.op("EMBEDDING_LOOKUP", [flat, e2], [4, dim])
    shape = b.const("shape", np.asarray([1, 4, dim], np.int32))
    lk = b.op("RESHAPE", [lk, shape], [1, 4, dim])
    y = b.op("ADD", [g, lk], [1, 4, dim], options=s.AddOptionsT(), out_name="y")
    return b.bytes([y])


def matmul_and_deconv(seed: int = 0) -> bytes:
    """x[1,6,6,8] -> TRANSPOSE_CONV (weights [16,3,3,8]) -> RESHAPE [1,144,16] -> BATCH_MATMUL(const [16,40])."""
    r = rng(seed)
    b = Builder()
    x = b.input("x", [1, 6, 6, 8], dynamic_batch=False)
    out_shape = b.const("out_shape", np.asarray([1, 12, 12, 16], np.int32))
    w = b.const("deconv/w", (r.standard_normal((16, 3, 3, 8)) * 0.2).astype(np.float32))
    o = s.TransposeConvOptionsT()
    o.padding, o.strideW, o.strideH = 0, 2, 2
    h = b.op("TRANSPOSE_CONV", [out_shape, w, x, -1], [1, 12, 12, 16], options=o)
    shape = b.const("shape", np.asarray([1, 144, 16], np.int32))
    h = b.op("RESHAPE", [h, shape], [1, 144, 16])
    m = b.const("bmm/rhs", (r.standard_normal((16, 80)) * 0.2).astype(np.float32))
    y = b.op("BATCH_MATMUL", [h, m], [1, 144, 80], options=s.BatchMatMulOptionsT(), out_name="y")
    return b.bytes([y])


def lstm(seed: int = 0, steps: int = 5, features: int = 16, units: int = 32) -> bytes:
    """x[1,T,F] -> UNIDIRECTIONAL_SEQUENCE_LSTM (no peephole, no projection) -> y[1,T,units]."""
    r = rng(seed)
    b = Builder()
    x = b.input("x", [1, steps, features], dynamic_batch=False)
    ins = [x]
    for gate in ("input", "forget", "cell", "output"):
        ins.append(b.const(f"lstm/{gate}_w", (r.standard_normal((units, features)) * 0.3).astype(np.float32)))
    for gate in ("input", "forget", "cell", "output"):
        ins.append(b.const(f"lstm/{gate}_r", (r.standard_normal((units, units)) * 0.3).astype(np.float32)))
    ins += [-1, -1, -1]
    for gate in ("input", "forget", "cell", "output"):
        ins.append(b.const(f"lstm/{gate}_b", (r.standard_normal(units) * 0.1).astype(np.float32)))
    ins += [-1, -1]
    for name in ("output_state", "cell_state"):
        t = b.tensor(f"lstm/{name}", [1, units])
        b.sg.tensors[t].isVariable = True
        ins.append(t)
    ins += [-1, -1, -1, -1]
    o = s.UnidirectionalSequenceLSTMOptionsT()
    o.fusedActivationFunction, o.timeMajor = 4, False
    y = b.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [1, steps, units], options=o, out_name="y")
    return b.bytes([y])


def while_rnn(seed: int = 0, dim: int = 64, steps: int = 4) -> bytes:
    """x[1,dim] -> WHILE(i < steps: h = tanh(FC(h, W) + b), i += 1) -> h: an RNN as Keras 3 converts one, its
    weight in the loop body (subgraph 2), not in the main subgraph."""
    r = rng(seed)
    b = Builder()
    x = b.input("x", [1, dim], dynamic_batch=False)
    i0 = b.const("i0", np.zeros((), np.int32))
    main = b.sg

    def subgraph(name: str) -> Any:
        sg = s.SubGraphT()
        sg.tensors, sg.operators, sg.name = [], [], name.encode()
        b.m.subgraphs.append(sg)
        b.sg = sg
        return sg

    cond = subgraph("cond")
    ci, ch = b.tensor("c_i", [], np.int32), b.tensor("c_h", [1, dim])
    limit = b.const("steps", np.asarray(steps, np.int32))
    keep = b.tensor("c_keep", [], np.int32)
    b.sg.tensors[keep].type = s.TensorType.BOOL
    b.op("LESS", [ci, limit], outputs=[keep])
    cond.inputs, cond.outputs = [ci, ch], [keep]

    body = subgraph("body")
    bi, bh = b.tensor("b_i", [], np.int32), b.tensor("b_h", [1, dim])
    w = b.const("rnn/w", (r.standard_normal((dim, dim)) * (1.0 / np.sqrt(dim))).astype(np.float32))
    bias = b.const("rnn/b", (r.standard_normal(dim) * 0.1).astype(np.float32))
    z = b.op("FULLY_CONNECTED", [bh, w, bias], outputs=[b.tensor("b_z", [1, dim])], options=_fc_opts())
    h2 = b.op("TANH", [z], outputs=[b.tensor("b_h2", [1, dim])])
    one = b.const("one", np.asarray(1, np.int32))
    i2 = b.op("ADD", [bi, one], outputs=[b.tensor("b_i2", [], np.int32)], options=s.AddOptionsT())
    body.inputs, body.outputs = [bi, bh], [i2, h2]

    b.sg = main
    wo = s.WhileOptionsT()
    wo.condSubgraphIndex, wo.bodySubgraphIndex = 1, 2
    i_out, h_out = b.tensor("i_out", [], np.int32), b.tensor("h", [1, dim])
    b.op("WHILE", [i0, x], outputs=[i_out, h_out], options=wo)
    return b.bytes([h_out])


def with_unsupported_op(seed: int = 0) -> bytes:
    """x -> FC -> EXP (no int8 kernel in the list) -> FC -> y."""
    r = rng(seed)
    b = Builder()
    x = b.input("x", [1, 32])
    w1 = b.const("w1", (r.standard_normal((32, 32)) * 0.1).astype(np.float32))
    h = b.op("FULLY_CONNECTED", [x, w1, -1], [1, 32], options=_fc_opts())
    h = b.op("EXP", [h], [1, 32])
    w2 = b.const("w2", (r.standard_normal((8, 32)) * 0.1).astype(np.float32))
    y = b.op("FULLY_CONNECTED", [h, w2, -1], [1, 8], options=_fc_opts(), out_name="y")
    return b.bytes([y])
