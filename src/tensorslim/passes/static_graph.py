"""The graph facts static quantization decides from, and the scale/zero point of one activation.

:class:`StaticGraph` indexes the main graph once (producers, consumers, constants, float values, the weights of
Conv/Gemm/MatMul) and answers the questions of a placement: which activations get a Q/DQ pair when a set of
nodes runs int8, which of them share one scale (value-preserving ops, clamps, a ``Mul`` by a positive scalar
absorbed into the scale), and how much int8 work a set of nodes holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from tensorslim.algorithms.quantize import QuantScheme, choose_qparams
from tensorslim.backends.onnx.weights import WeightRole, find_weights
from tensorslim.passes.float16 import float_values
from tensorslim.passes.static_placement import CLAMPS, MAC_OPS, VALUE_PRESERVING, data_inputs

__all__ = ["MIN_SCALE", "ActivationParams", "StaticGraph", "activation_params", "code_dtype", "code_range",
           "constant_value"]  # fmt: skip

MIN_SCALE = 1e-10


def code_dtype(scheme: str, bits: int) -> str:
    """``uint8``/``int8``/``uint16``/``int16`` for an activation scheme and a code width."""
    return ("int" if scheme == "symmetric" else "uint") + str(bits)


def code_range(dtype: str) -> tuple[int, int]:
    """Smallest and largest code of an integer type name (``uint8``, ``int16``...)."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


@dataclass(frozen=True)
class ActivationParams:
    """Scale and zero point chosen for one activation tensor."""

    name: str
    scale: float
    zero_point: int
    dtype: str  # "uint8", "int8", "uint16" or "int16"
    range: tuple[float, float]

    @property
    def bits(self) -> int:
        """Code width: 8 or 16."""
        return 16 if self.dtype.endswith("16") else 8

    @property
    def qrange(self) -> tuple[int, int]:
        """Smallest and largest code."""
        return code_range(self.dtype)



def activation_params(t: str, lo: float, hi: float, dtype: str) -> ActivationParams:
    symmetric = dtype.startswith("int")
    qp = choose_qparams(
        np.array([lo, hi], np.float32),
        bits=16 if dtype.endswith("16") else 8,
        scheme=QuantScheme.SYMMETRIC if symmetric else QuantScheme.ASYMMETRIC,
        narrow=False,
    )
    scale, zero_point = float(np.asarray(qp.scale).reshape(-1)[0]), int(np.asarray(qp.zero_point).reshape(-1)[0])
    # a range of (almost) nothing: a scale that small would underflow the int32 bias scales built from it
    scale = max(scale, MIN_SCALE) if np.isfinite(scale) else 1.0
    return ActivationParams(t, scale, zero_point, dtype, (lo, hi))



class StaticGraph:
    """Producers, consumers, constants and float values of the main graph, for one placement decision."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.model = model
        self.nodes = list(g.node)
        self.constants = {t.name for t in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
        self.floats = float_values(model)
        self.outputs = {o.name for o in g.output}
        self.inputs = {i.name for i in g.input} - self.constants
        self.producer = {o: n for n in g.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in dict.fromkeys(n.input):
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.weights = {
            (u.node.name, u.input_index): w.name for w in find_weights(model) if w.is_float for u in w.weight_uses
            if u.role in (WeightRole.CONV, WeightRole.GEMM, WeightRole.MATMUL) and u.input_index == 1
        }  # fmt: skip

    def activation_inputs(self, n: onnx.NodeProto) -> list[str]:
        return [i for i in data_inputs(n) if i in self.floats and i not in self.constants]

    def constant_inputs(self, n: onnx.NodeProto) -> list[int]:
        """Indices of float constant data inputs that are not a Conv/Gemm/MatMul weight."""
        out = []
        for k, i in enumerate(n.input):
            data = i and i in data_inputs(n) and i in self.constants and i in self.floats
            if data and (n.name, k) not in self.weights:
                out.append(k)
        return out

    def quantized(self, int8: set[str]) -> set[str]:
        """Activations that get a Q/DQ pair when the nodes ``int8`` run on int8 kernels."""
        quant: set[str] = set()
        for n in self.nodes:
            if n.name not in int8:
                continue
            quant.update(self.activation_inputs(n))
            for o in n.output:
                if not o or o not in self.floats:
                    continue
                if n.op_type in ("MatMul", "Gemm") and not any(
                    c.name in int8 and o in data_inputs(c) for c in self.consumers.get(o, [])
                ):
                    continue  # float-output integer kernels (MatMulIntegerToFloat, QGemm): no Q needed
                quant.add(o)
        return quant

    def absorbed(self, int8: set[str], quant: set[str]) -> dict[str, tuple[str, float]]:
        """``y -> (x, c)`` for int8 ``Mul(x, c)`` with ``c`` a positive scalar constant: ``y`` needs no kernel
        of its own, it is ``x``'s int8 codes read with ``c`` times ``x``'s scale."""
        out: dict[str, tuple[str, float]] = {}
        for n in self.nodes:
            if n.name not in int8 or n.op_type != "Mul" or len(n.input) != 2 or not n.output:
                continue
            if n.output[0] not in quant:
                continue
            for x, cn in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
                if x in quant and cn in self.constants:
                    v = constant_value(self.model, cn)
                    if v is not None and v.size == 1 and v.dtype == np.float32 and np.isfinite(v).all():
                        c = float(v.reshape(-1)[0])
                        if c > 0:
                            out[n.output[0]] = (x, c)
                            break
        return out

    def ties(self, int8: set[str], quant: set[str]) -> tuple[dict[str, tuple[str, float]], set[str]]:
        """Tensors whose scales are tied: ``t -> (root, m)`` with ``scale(t) = m * scale(root)`` and the root's
        zero point (value-preserving ops and clamps: m = 1; an absorbed ``Mul`` by ``c``: m = c), and the clamp
        inputs whose range is their clamp's."""
        parent = {t: t for t in quant}
        mult = dict.fromkeys(quant, 1.0)

        def find(a: str) -> tuple[str, float]:
            m = 1.0
            path = []
            while parent[a] != a:
                path.append(a)
                m *= mult[a]
                a = parent[a]
            acc = m
            for p in path:  # compress: every node on the path points at the root with its total multiplier
                here = acc
                acc /= mult[p]
                parent[p], mult[p] = a, here
            return a, m

        def union(a: str, b: str, k: float) -> None:  # scale(b) = k * scale(a)
            ra, ma = find(a)
            rb, mb = find(b)
            if ra == rb:
                return
            if ra < rb:
                parent[rb], mult[rb] = ra, ma * k / mb
            else:
                parent[ra], mult[ra] = rb, mb / (ma * k)

        clamped: set[str] = set()
        for y, (x, c) in sorted(self.absorbed(int8, quant).items()):
            union(x, y, c)
        for n in self.nodes:
            if n.name not in int8 or not n.input or n.input[0] not in quant:
                continue
            x = n.input[0]
            outs = [o for o in n.output if o in quant]
            if n.op_type in VALUE_PRESERVING:
                for o in outs:
                    union(x, o, 1.0)
            elif (
                n.op_type in CLAMPS and outs and len(self.consumers.get(x, [])) == 1 and x not in self.outputs
                and x not in self.inputs
            ):  # fmt: skip
                union(x, outs[0], 1.0)
                clamped.add(x)
        return {t: find(t) for t in quant}, clamped

    def clamp_range(self, n: onnx.NodeProto) -> tuple[float, float]:
        if n.op_type == "Relu":
            return 0.0, 1.0
        lo, hi = -1.0, 1.0
        vals = {a.name: a.f for a in n.attribute}
        if "min" in vals or "max" in vals:
            lo, hi = vals.get("min", lo), vals.get("max", hi)
        for k, default in ((1, lo), (2, hi)):
            if len(n.input) > k and n.input[k]:
                v = constant_value(self.model, n.input[k])
                val = float(v.reshape(-1)[0]) if v is not None and v.size else default
                lo, hi = (val, hi) if k == 1 else (lo, val)
        lo, hi = max(lo, -1e4), min(hi, 1e4)
        return (lo, hi) if hi > lo else (-1.0, 1.0)

    def macs(self, names: set[str]) -> int:
        """Weight elements of the MAC nodes among ``names`` (a rough measure of the int8 work they hold)."""
        sizes = {t.name: int(np.prod(t.dims)) for t in self.model.graph.initializer}
        total = 0
        for n in self.nodes:
            if n.name in names and n.op_type in MAC_OPS:
                total += sizes.get(n.input[1], 1) if len(n.input) > 1 else 1
        return total


def constant_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for t in model.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return onnx.numpy_helper.to_array(a.t)
    return None


