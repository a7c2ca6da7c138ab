"""float16: weights and compute in float16, float32 model inputs and outputs kept.

Before -> after::

    x(f32) -> MatMul(W f32) -> LayerNorm -> y(f32)
    x(f32) -> Cast(f16) -> MatMul(W f16) -> LayerNorm(f16) -> Cast(f32) -> y(f32)

Nodes whose op is on an allow list of float16-safe ops (and not on the user's block list) run in float16;
every other node keeps float32, with a ``Cast`` on each edge between the two regions (one Cast per tensor,
shared by its consumers). Float initializers and Constant tensors used only by float16 nodes are stored
as float16; large weights of float32 nodes are stored as float16 too, behind a Cast that ONNX Runtime folds
once at load. Gemm is not on the allow list: ONNX Runtime 1.32's CPU graph optimizer crashes on some float16
Gemm patterns, and its CPU Gemm has no float16 kernel anyway. :func:`find_overflows` runs the converted
model on data and names the nodes that produce NaN or infinity, so the caller can block them and convert again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tensorslim._regex import NameMatcher, name_matcher
from tensorslim.backends.onnx.editor import NameGenerator
from tensorslim.backends.onnx.graph import GraphIndex, replace_nodes, subgraph_reads
from tensorslim.errors import InputError
from tensorslim.passes._config import regex_tuple
from tensorslim.passes.base import Pass, PassResult, WeightRecord
from tensorslim.runtime.ort import thread_budget

__all__ = ["FLOAT16_OPS", "Float16Config", "Float16Pass", "find_overflows", "float_values"]

FLOAT16_OPS: tuple[str, ...] = (
    "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv", "ConvTranspose", "Div", "Erf",
    "Expand", "Flatten", "Gather", "Gelu", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid",
    "HardSwish", "Identity", "LayerNormalization", "LeakyRelu", "MatMul", "MaxPool", "Mul", "Neg", "Pow",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Sigmoid", "Slice", "Softmax",
    "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Tile", "Transpose", "Unsqueeze", "Where",
)  # fmt: skip


@dataclass(frozen=True)
class Float16Config:
    """Configuration of the float16 conversion.

    Attributes:
        block_ops: op types that stay float32 (added to those not on the float16 allow list).
        block_nodes: regular expressions on node names that stay float32 (e.g. nodes that overflow).
    """

    block_ops: tuple[str, ...] = ()
    block_nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_ops", tuple(self.block_ops))
        object.__setattr__(self, "block_nodes", regex_tuple("block_nodes", self.block_nodes))


def float_values(model: onnx.ModelProto) -> set[str]:
    """Names of the float32 tensors of the main graph (after ONNX shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    names = {v.name for v in [*g.input, *g.output, *g.value_info] if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    names |= {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    names.add(n.output[0])
    return names


class Float16Pass(Pass):
    """Convert the main graph's float32 compute to float16 where it is safe."""

    name = "float16"

    def __init__(self, config: Float16Config | None = None) -> None:
        self.config = config or Float16Config()

    def _is_f16(self, node: onnx.NodeProto, blocked: NameMatcher) -> bool:
        if node.domain not in ("", "ai.onnx") or node.op_type not in FLOAT16_OPS:
            return False
        if node.op_type in self.config.block_ops:
            return False
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return False
        return not blocked(node.name or "")

    def call(self, model: onnx.ModelProto) -> PassResult:
        """Convert ``model`` in place (the base class hands us a copy)."""
        blocked = name_matcher(self.config.block_nodes, "block_nodes")
        floats = float_values(model)
        g = model.graph
        names = NameGenerator(model)
        nodes = list(g.node)  # one list of wrappers: node identities stay valid below
        f16_nodes = {id(n) for n in nodes if self._is_f16(n, blocked)}
        consumers = GraphIndex(g, nodes=nodes).consumers
        for n in nodes:  # see _batch_transpose_into_matmul
            if id(n) in f16_nodes and _batch_transpose_into_matmul(n, consumers, f16_nodes):
                f16_nodes.discard(id(n))
        sub_used = subgraph_reads(g)  # If/Loop/Scan bodies read these by name, as float32: they stay float32
        f16_nodes -= {id(n) for n in nodes if sub_used.intersection(n.output)}
        graph_outputs = {o.name for o in g.output}
        inits = {t.name: t for t in g.initializer}
        const_nodes = {n.output[0]: n for n in nodes if n.op_type == "Constant" and n.output}
        records: list[WeightRecord] = []
        # tensors stored in float16: float constants whose every consumer runs in float16
        stored_f16: set[str] = set()
        for name in [*inits, *const_nodes]:
            if name not in floats or name in graph_outputs or name in sub_used:
                continue
            users = consumers.get(name, [])
            if users and all(id(u) in f16_nodes for u in users):
                stored_f16.add(name)
        for name in sorted(stored_f16):
            if name in inits:
                t = inits[name]
                arr = numpy_helper.to_array(t)
                t.CopyFrom(numpy_helper.from_array(_to_f16(arr), name))
                src_kind = "initializer"
            else:
                attr = next(a for a in const_nodes[name].attribute if a.name == "value")
                arr = numpy_helper.to_array(attr.t)
                attr.t.CopyFrom(numpy_helper.from_array(_to_f16(arr), name))
                src_kind = "constant"
            if arr.size >= 16:
                records.append(WeightRecord(
                    name=name, ops=",".join(dict.fromkeys(u.op_type for u in consumers[name])),
                    nodes=",".join(dict.fromkeys(u.name for u in consumers[name])), shape=tuple(arr.shape),
                    action="float16", reason=src_kind, bytes_before=int(arr.nbytes), bytes_after=int(arr.nbytes // 2),
                ))  # fmt: skip
        # large weights of float32 nodes: float16 storage, Cast back to float32 (folded at session load)
        new_casts: list[onnx.NodeProto] = []
        for name in sorted(inits):
            users = consumers.get(name, [])
            t = inits[name]
            if name in stored_f16 or name not in floats or name in graph_outputs or not (users or name in sub_used):
                continue
            if any(id(u) in f16_nodes for u in users) or t.data_type != TensorProto.FLOAT:
                continue
            arr = numpy_helper.to_array(t)
            if arr.size < 1024 or np.any(np.abs(arr) > float(np.finfo(np.float16).max)):
                continue
            stored = names(f"{name}_f16")
            g.initializer.append(numpy_helper.from_array(_to_f16(arr), stored))
            new_casts.append(helper.make_node("Cast", [stored], [name], name=names(f"{name}_CastStored"),
                                              to=TensorProto.FLOAT))  # fmt: skip
            records.append(WeightRecord(
                name=name, ops=",".join(dict.fromkeys(u.op_type for u in users)) or "(subgraph)",
                nodes=",".join(dict.fromkeys(u.name for u in users)), shape=tuple(arr.shape),
                action="float16 storage", reason="float32 compute (Cast folded at load)",
                bytes_before=int(arr.nbytes), bytes_after=int(arr.nbytes // 2),
            ))  # fmt: skip
        if new_casts:
            cast_names = {c.output[0] for c in new_casts}
            keep = [t for t in g.initializer if t.name not in cast_names]
            del g.initializer[:]
            g.initializer.extend(keep)
        # every float value produced by a float16 node (or stored in float16) is float16
        f16_values = set(stored_f16)
        for n in nodes:
            if id(n) in f16_nodes:
                f16_values.update(o for o in n.output if o in floats)
        new_nodes: list[onnx.NodeProto] = list(new_casts)
        casts: dict[tuple[str, int], str] = {}

        def cast(value: str, to: int) -> str:
            key = (value, to)
            if key not in casts:
                out = names(f"{value}_to_{'f16' if to == TensorProto.FLOAT16 else 'f32'}")
                new_nodes.append(helper.make_node("Cast", [value], [out], name=names(f"{value}_Cast"), to=to))
                casts[key] = out
            return casts[key]

        for n in nodes:
            is16 = id(n) in f16_nodes
            for idx, inp in enumerate(n.input):
                if not inp or inp not in floats:
                    continue
                if is16 and inp not in f16_values:
                    n.input[idx] = cast(inp, TensorProto.FLOAT16)
                elif not is16 and inp in f16_values:
                    n.input[idx] = cast(inp, TensorProto.FLOAT)
            new_nodes.append(n)
        # graph outputs stay float32: rename the float16 producer's output and cast back under the old name
        for o in g.output:
            if o.name in f16_values:
                tmp = names(f"{o.name}_f16")
                for n in new_nodes:
                    for i, out in enumerate(n.output):
                        if out == o.name:
                            n.output[i] = tmp
                    for i, inp in enumerate(n.input):
                        if inp == o.name:
                            n.input[i] = tmp
                new_nodes.append(helper.make_node("Cast", [tmp], [o.name], name=names(f"{o.name}_CastOut"),
                                                  to=TensorProto.FLOAT))  # fmt: skip
        replace_nodes(g, _topological(new_nodes, {i.name for i in g.input} | {t.name for t in g.initializer}))
        del g.value_info[:]  # stale float32 types; ONNX Runtime infers them again
        records += _store_subgraph_weights(model, names)
        return PassResult(model, bool(f16_nodes or new_casts) or bool(records), records)

def _batch_transpose_into_matmul(
    node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], f16_nodes: set[int]
) -> bool:
    """A float16 ``Transpose`` that moves the first axis and feeds a float16 ``MatMul``: ONNX Runtime 1.32's CPU
    optimizer fuses the pair (MatmulTransposeFusion, then NchwcTransformer) and crashes at session creation
    (measured on a PyTorch GRU export: ``Transpose(perm=[1, 0, 2]) -> Reshape -> Transpose -> MatMul``). Such a
    Transpose stays float32, and the Cast between them keeps the optimizer from fusing."""
    if node.op_type != "Transpose":
        return False
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    if perm is not None and perm and perm[0] == 0:
        return False
    return any(u.op_type == "MatMul" and id(u) in f16_nodes for o in node.output for u in consumers.get(o, []))


def _store_subgraph_weights(model: onnx.ModelProto, names: NameGenerator) -> list[WeightRecord]:
    """Inside subgraphs, large float32 constants become float16 behind a Cast to float32 (folded at load).

    Bodies keep float32 compute: ``W (f32)  ->  W_f16 -> Cast(to=float) -> W``, for initializers and
    ``Constant`` nodes of at least 1024 elements within float16's range.
    """
    from tensorslim.backends.onnx.weights import iter_graphs

    f16max = float(np.finfo(np.float16).max)
    records: list[WeightRecord] = []

    def convert(arr: np.ndarray) -> bool:
        return arr.dtype == np.float32 and arr.size >= 1024 and bool(np.all(np.abs(arr) <= f16max))

    for scope in list(iter_graphs(model.graph))[1:]:
        g = scope.graph
        out: list[onnx.NodeProto] = []
        casts: list[onnx.NodeProto] = []
        for n in g.node:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            out.append(c)
            attr = next((a for a in c.attribute if a.name == "value"), None) if c.op_type == "Constant" else None
            if attr is None or attr.type != onnx.AttributeProto.TENSOR or len(c.output) != 1:
                continue
            arr = numpy_helper.to_array(attr.t)
            if not convert(arr):
                continue
            name, stored = c.output[0], names(f"{c.output[0]}_f16")
            attr.t.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), stored))
            c.output[0] = stored
            out.append(
                helper.make_node("Cast", [stored], [name], name=names(f"{name}_CastStored"), to=TensorProto.FLOAT)
            )
            records.append(_storage_record(name, arr, "constant in a subgraph"))
        keep = []
        for t in g.initializer:
            arr = numpy_helper.to_array(t)
            if t.name in {i.name for i in g.input} or not convert(arr):
                keep.append(t)
                continue
            stored = names(f"{t.name}_f16")
            keep.append(numpy_helper.from_array(arr.astype(np.float16), stored))
            casts.append(helper.make_node("Cast", [stored], [t.name], name=names(f"{t.name}_CastStored"),
                                          to=TensorProto.FLOAT))  # fmt: skip
            records.append(_storage_record(t.name, arr, "initializer in a subgraph"))
        del g.initializer[:]
        g.initializer.extend(keep)
        del g.node[:]
        g.node.extend([*casts, *out])
    return records


def _storage_record(name: str, arr: np.ndarray, where: str) -> WeightRecord:
    return WeightRecord(
        name=name, ops="", nodes="", shape=tuple(arr.shape), action="float16 storage",
        reason=f"{where}; float32 compute (Cast folded at load)", bytes_before=int(arr.nbytes),
        bytes_after=int(arr.nbytes // 2),
    )  # fmt: skip


def _to_f16(arr: np.ndarray) -> np.ndarray:
    """float16 copy; values beyond float16's range saturate to +-65504 instead of becoming infinite."""
    f16max = float(np.finfo(np.float16).max)
    return np.clip(arr, -f16max, f16max).astype(np.float16)


def find_overflows(model: onnx.ModelProto, feeds_list: list[dict[str, np.ndarray]]) -> list[str]:
    """Names of float16 nodes whose outputs hold NaN or infinity on ``feeds_list`` while their inputs do not."""
    import onnxruntime as ort

    m = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {v.name: v.type.tensor_type.elem_type for v in m.graph.value_info}
    present = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in present and types.get(o) in (TensorProto.FLOAT, TensorProto.FLOAT16):
                m.graph.output.append(helper.make_tensor_value_info(o, types[o], None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = thread_budget()
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    bad_values: set[str] = set()
    for feeds in feeds_list:
        try:
            values = sess.run(None, feeds)
        except Exception as e:  # ONNX Runtime's own error types; the data does not fit the model
            shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feeds.items())
            first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise InputError(
                f"float16 overflow check: the model does not run on the data ({shapes}): {first}; give data in "
                "the model's input shapes"
            ) from e
        for name, value in zip(names, values, strict=True):
            arr = np.asarray(value)
            if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
                bad_values.add(name)
    culprits = []
    for n in model.graph.node:
        if any(o in bad_values for o in n.output) and not any(i in bad_values for i in n.input):
            culprits.append(n.name)
    return culprits


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where every input is produced before use (stable for already-sorted parts)."""
    produced = set(available) | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        progressed = False
        for n in pending:
            if all(i in produced for i in n.input):
                ordered.append(n)
                produced.update(n.output)
                progressed = True
            else:
                rest.append(n)
        if not progressed:  # inputs from outer scopes or unknown: keep the remaining order
            ordered.extend(rest)
            break
        pending = rest
    return ordered
