"""Applying a static placement: Q/DQ pairs, int8 constants, per-channel int8 weights and int32 biases.

Pure application of decisions made elsewhere (:mod:`tensorslim.passes.static_quant`): which nodes run int8 and
every activation's :class:`~tensorslim.passes.static_graph.ActivationParams`::

    X -> Conv(W, b) -> Relu -> Y       with {Conv, Relu} int8 becomes
    X -> Q -> DQ -> Conv(DQ(W_q), DQ(b_q int32)) -> Q -> DQ -> Relu -> Q -> DQ -> Y

(the Relu's input shares its output's scale, so ONNX Runtime folds it into the QLinearConv), and a ``Mul`` by a
positive scalar becomes a ``DequantizeLinear`` of its input's codes with the scale multiplied.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import onnx

from tensorslim.algorithms.quantize import (
    QuantParams,
    QuantScheme,
    choose_qparams,
    dequantize,
    quantize,
    quantize_keeping_sums,
)
from tensorslim.backends.onnx.editor import GraphEditor, opset_version
from tensorslim.backends.onnx.graph import replace_nodes, subgraph_reads
from tensorslim.backends.onnx.weights import GraphScope, find_weights
from tensorslim.passes.base import WeightRecord
from tensorslim.passes.static_graph import ActivationParams, StaticGraph, activation_params, constant_value
from tensorslim.passes.static_placement import data_inputs

if TYPE_CHECKING:
    from tensorslim.passes.static_quant import StaticQuantConfig

__all__ = ["apply_qdq"]

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")


def apply_qdq(
    model: onnx.ModelProto,
    int8: set[str],
    params: dict[str, ActivationParams],
    cfg: StaticQuantConfig,
    means: dict[str, np.ndarray],
    notes: list[str],
    learned: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[WeightRecord]:
    """Insert the Q/DQ pairs of the nodes ``int8`` with ``params``, int8 constants and int8 weights (in place)."""
    index = StaticGraph(model)
    quant = {t for t in index.quantized(int8) if t in params}
    editor = GraphEditor(model)
    scope = GraphScope(model.graph, "")
    position = {n.name: i for i, n in enumerate(index.nodes)}
    wide_domain = "" if opset_version(model) >= 21 else "com.microsoft"
    shared: dict[tuple[float, int, str], tuple[str, str]] = {}
    dq_name: dict[str, str] = {}
    after: dict[str, list[onnx.NodeProto]] = {}
    producers: dict[str, onnx.NodeProto] = {}

    def qparams(ap: ActivationParams, base: str) -> tuple[str, str]:
        key = (ap.scale, ap.zero_point, ap.dtype)
        if key not in shared:
            shared[key] = (
                editor.add_tensor(scope, f"{base}_scale", np.array(ap.scale, np.float32), as_constant=False),
                editor.add_tensor(scope, f"{base}_zero_point", np.array(ap.zero_point, ap.dtype), as_constant=False),
            )
        return shared[key]

    absorbed = index.absorbed(int8, quant)
    qname: dict[str, str] = {}
    for t in sorted(quant):
        if t in absorbed:
            continue
        ap = params[t]
        s, z = qparams(ap, t)
        domain = wide_domain if ap.bits == 16 else ""
        q, dq = editor.names(f"{t}_quantized"), editor.names(f"{t}_dequantized")
        qname[t] = q
        prod = index.producer.get(t)
        readers = index.consumers.get(t, [])
        int8_producer = prod is not None and prod.name in int8
        if int8_producer and t in index.outputs:
            # the graph output keeps its name: the producer writes a fresh tensor, the DequantizeLinear the output
            assert prod is not None
            pre = editor.names(f"{t}_float")
            for k, o in enumerate(prod.output):
                if o == t:
                    prod.output[k] = pre
            after.setdefault(prod.name, []).extend([
                editor.node("QuantizeLinear", [pre, s, z], [q], f"{t}_QuantizeLinear", domain=domain),
                editor.node("DequantizeLinear", [q, s, z], [t], f"{t}_DequantizeLinear", domain=domain),
            ])  # fmt: skip
            producers[prod.name] = prod
            dq_name[t] = t
            continue
        users = readers if int8_producer else [u for u in readers if u.name in int8 and t in data_inputs(u)]
        if not users:
            continue
        first = min(users, key=lambda u: position[u.name])
        readers_of_dq = [u for u in users if not (u.op_type == "Mul" and u.output and u.output[0] in absorbed)]
        nodes = [editor.node("QuantizeLinear", [t, s, z], [q], f"{t}_QuantizeLinear", domain=domain)]
        if readers_of_dq:
            nodes.append(editor.node("DequantizeLinear", [q, s, z], [dq], f"{t}_DequantizeLinear", domain=domain))
        editor.insert_before(first, nodes)
        dq_name[t] = dq
        for u in readers_of_dq:
            for i, name in enumerate(u.input):
                if name == t:
                    u.input[i] = dq
    def source(y: str) -> str:
        while y in absorbed:
            y = absorbed[y][0]
        return y

    done = {y for y in absorbed if source(y) in qname and y in params}
    for y in sorted(done):
        # Mul(x, c) -> DequantizeLinear(x's codes, c * x's scale): the same values with no kernel at all
        src = source(y)
        ap = params[y]
        mul = index.producer[y]
        if y not in index.outputs and all(c.output and c.output[0] in done for c in index.consumers.get(y, [])):
            editor.drop_node(mul)  # read only by Muls absorbed further down the chain: a DQ here would run for nothing
            continue
        s, z = qparams(ap, y)
        domain = wide_domain if ap.bits == 16 else ""
        editor.replace(mul, [editor.node("DequantizeLinear", [qname[src], s, z], [y], f"{y}_DequantizeLinear",
                                         domain=domain)])  # fmt: skip
        dq_name[y] = y
    for name, extra in after.items():
        editor.replace(producers[name], [producers[name], *extra])
    for n in index.nodes:
        if n.name not in int8 or (n.op_type == "Mul" and n.output and n.output[0] in absorbed):
            continue
        for k in index.constant_inputs(n):
            v = constant_value(model, n.input[k])
            if v is None:
                continue
            ap = activation_params(n.input[k], float(min(v.min(), 0.0)), float(max(v.max(), 0.0)), "uint8")
            codes = np.clip(np.round(v / ap.scale) + ap.zero_point, 0, 255).astype(np.uint8)
            cn = editor.add_tensor(scope, f"{n.input[k]}_quantized", codes, as_constant=False)
            s, z = qparams(ap, n.input[k])
            dq = editor.names(f"{n.input[k]}_dequantized")
            editor.insert_before(n, [editor.node("DequantizeLinear", [cn, s, z], [dq],
                                                 f"{n.input[k]}_DequantizeLinear")])  # fmt: skip
            n.input[k] = dq
    wide = any(params[t].bits == 16 for t in quant)
    if wide and wide_domain and not any(o.domain == wide_domain for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(wide_domain, 1))
    compute = {n.output[0] for n in index.nodes if n.name in int8 and n.op_type in COMPUTE_OPS and n.output}
    records = quantize_weights(model, editor, compute, params, dq_name, cfg, means, notes, learned or {})
    editor.apply()
    drop_redundant_clamps(model)
    drop_unread_qdq(model)
    return records


def drop_unread_qdq(model: onnx.ModelProto) -> int:
    """Remove Q/DQ nodes whose outputs nothing reads (in place, repeatedly; returns how many): ONNX Runtime keeps
    and runs them on every inference."""
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return 0  # subgraphs read outer tensors by name: leave the graph as it is
    outputs = {o.name for o in g.output}
    removed = 0
    while True:
        read = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not set(n.output) & read]
        if not dead:
            return removed
        ids = {id(n) for n in dead}
        replace_nodes(g, [n for n in g.node if id(n) not in ids])
        removed += len(dead)


def drop_redundant_clamps(model: onnx.ModelProto) -> int:
    """Remove each ``Relu``/``Clip`` between two Q/DQ pairs of the same parameters whose int8 range already lies
    inside the clamp (in place; returns how many).

    ``Q -> DQ -> Relu -> Q -> DQ`` with one scale and the zero point at the bottom of the int8 range: the first Q
    already saturates at 0, so the Relu and the second pair change no value. ONNX Runtime folds such a clamp into
    the producer's integer kernel only when the clamp's output has one reader; with more (a residual branch) it
    leaves a ``DequantizeLinear -> QuantizeLinear`` pair that runs on every inference. Exact: the same values.
    """
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output} | subgraph_reads(g)  # an If branch may read a tensor by name

    def params(q: onnx.NodeProto) -> tuple[float, int, int, int] | None:
        if len(q.input) < 3 or any(a.name == "axis" for a in q.attribute):
            return None
        s, z = constant_value(model, q.input[1]), constant_value(model, q.input[2])
        if s is None or z is None or s.size != 1 or z.size != 1 or z.dtype not in (np.uint8, np.int8):
            return None
        info = np.iinfo(z.dtype)
        return float(s.reshape(())), int(z.reshape(())), int(info.min), int(info.max)

    dropped: set[int] = set()  # id() of the nodes to remove
    rename: dict[str, str] = {}
    count = 0
    for n in g.node:
        if n.op_type not in ("Relu", "Clip") or n.domain not in ("", "ai.onnx") or not n.input or not n.output:
            continue
        dq1 = producer.get(n.input[0])
        after = readers.get(n.output[0], [])
        if dq1 is None or dq1.op_type != "DequantizeLinear" or id(dq1) in dropped:
            continue
        if len(after) != 1 or after[0].op_type != "QuantizeLinear":
            continue
        q2 = after[0]
        q1 = producer.get(dq1.input[0])
        dq2s = readers.get(q2.output[0], [])
        if q1 is None or q1.op_type != "QuantizeLinear" or not dq2s:
            continue
        if any(d.op_type != "DequantizeLinear" for d in dq2s):
            continue
        p1 = params(q1)
        if p1 is None or any(params(m) != p1 for m in (dq1, q2, *dq2s)):
            continue
        scale, zp, qmin, qmax = p1
        lo, hi = 0.0, np.inf
        if n.op_type == "Clip":
            names = [*n.input[1:3], "", ""][:2]
            bounds = [constant_value(model, x) if x else None for x in names]
            if any(x and b is None for x, b in zip(names, bounds, strict=True)):
                continue  # a clamp computed at run time
            lo = float(bounds[0].reshape(())) if bounds[0] is not None else -np.inf
            hi = float(bounds[1].reshape(())) if bounds[1] is not None else np.inf
        if scale * (qmin - zp) < lo or scale * (qmax - zp) > hi:
            continue  # the int8 range reaches beyond the clamp: the clamp does something
        if {n.output[0], q2.output[0], *(d.output[0] for d in dq2s)} & outputs:
            continue
        dropped.update({id(n), id(q2), *(id(d) for d in dq2s)})
        for d in dq2s:
            rename[d.output[0]] = dq1.output[0]
        count += 1
    if not count:
        return 0
    keep = [n for n in g.node if id(n) not in dropped]
    for n in keep:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    replace_nodes(g, keep)
    return count


def bias_safe_scales(qp: QuantParams, bias: np.ndarray | None, x_scale: float) -> QuantParams:
    """Weight scales whose int32 bias codes (scale ``w_scale * x_scale``) neither divide by zero nor overflow:
    a channel with all-zero weights, or a bias too large for its tiny weight scale, gets a larger scale."""
    scale = np.asarray(qp.scale, np.float64).copy()
    floor = np.full(scale.shape, 1e-30)
    if bias is not None and bias.size in (1, scale.size):
        b = np.abs(np.asarray(bias, np.float64)).reshape(scale.shape if bias.size == scale.size else ())
        floor = np.maximum(floor, b / (max(x_scale, 1e-30) * (2**31 - 1)))
    need = ~(scale > floor)
    if not np.any(need):
        return qp
    scale[need] = np.maximum(floor[need] if floor.shape else floor, np.where(scale[need] > 0, scale[need], 1.0))
    return dataclasses.replace(qp, scale=scale.astype(np.float32))


def quantize_weights(
    model: onnx.ModelProto,
    editor: GraphEditor,
    compute: set[str],
    params: dict[str, ActivationParams],
    dq_name: dict[str, str],
    cfg: StaticQuantConfig,
    means: dict[str, np.ndarray],
    notes: list[str],
    learned: dict[str, tuple[np.ndarray, np.ndarray]],
) -> list[WeightRecord]:
    """Per-channel int8 weights (and int32 biases) of the Conv/Gemm/MatMul nodes whose outputs are ``compute``."""
    from tensorslim.passes.bias_correction import BiasCorrector

    records: list[WeightRecord] = []
    corrector = BiasCorrector(model, means, editor.names)
    for w in find_weights(model):
        uses = [u for u in w.weight_uses if u.node.output[0] in compute and u.input_index == 1]
        base = dict(name=w.name, ops=",".join(dict.fromkeys(u.op_type for u in w.uses)),
                    nodes=",".join(dict.fromkeys(u.node_name for u in w.uses)),
                    shape=tuple(int(d) for d in w.array.shape), bytes_before=w.nbytes)  # fmt: skip
        if not uses or len(uses) != len(w.uses) or not w.is_float or w.array.dtype != np.float32:
            records.append(WeightRecord(**base, action="skipped", bytes_after=w.nbytes,  # type: ignore[arg-type]
                                        reason="not the weight of a quantized Conv/Gemm/MatMul"))  # fmt: skip
            continue
        use = uses[0]
        source = {v: k for k, v in dq_name.items()}
        x = source.get(use.node.input[0], "")
        if not x:
            records.append(WeightRecord(**base, action="skipped", bytes_after=w.nbytes,  # type: ignore[arg-type]
                                        reason="its input activation stays float"))  # fmt: skip
            continue
        axis = use.channel_axis if cfg.granularity == "per_channel" else None
        qp = choose_qparams(w.array, scheme=QuantScheme.SYMMETRIC, axis=axis)
        bias_in = use.node.input[2] if len(use.node.input) > 2 and use.node.input[2] else ""
        qp = bias_safe_scales(qp, corrector.bias(bias_in) if bias_in else None, params[x].scale)
        codes = (quantize_keeping_sums(w.array, qp, use.channel_axis)
                 if cfg.keep_weight_sums and use.channel_axis is not None else quantize(w.array, qp))
        if w.name in learned and np.array_equal(learned[w.name][0], np.asarray(qp.scale)):
            codes = learned[w.name][1].astype(codes.dtype)  # learned rounding, same scales
        as_const = w.source == "constant"
        qn = editor.add_tensor(w.scope, f"{w.name}_quantized", codes, as_constant=as_const)
        sn = editor.add_tensor(w.scope, f"{w.name}_scale", qp.scale if axis is not None else qp.scale.reshape(()),
                               as_constant=as_const)  # fmt: skip
        zn = editor.add_tensor(
            w.scope,
            f"{w.name}_zero_point",
            np.zeros(qp.scale.shape if axis is not None else (), np.int8),
            as_constant=as_const,
        )
        dq = editor.names(f"{w.name}_dequantized")
        attrs = {"axis": axis} if axis is not None else {}
        nodes = [editor.node("DequantizeLinear", [qn, sn, zn], [dq], f"{w.name}_DequantizeLinear", **attrs)]
        nbytes = codes.nbytes + qp.scale.nbytes
        detail = ""
        if x in means:
            detail = corrector.correct(use.node, dequantize(codes, qp) - w.array, means[x])
        bias_name = use.node.input[2] if len(use.node.input) > 2 and use.node.input[2] else ""
        ap = params[x]
        x_scale = ap.scale
        if bias_name and use.op_type in ("Conv", "Gemm") and ap.bits == 8:
            bias = corrector.bias(bias_name)
            if (bias is not None and bias.ndim == 1 and bias.shape[0] == qp.scale.size) or (
                bias is not None and axis is None
            ):
                bscale = (qp.scale.astype(np.float64) * x_scale).astype(np.float32)
                ratio = np.divide(bias, bscale, out=np.zeros(np.broadcast(bias, bscale).shape, np.float64),
                                  where=bscale > 0)  # fmt: skip
                bq = np.clip(np.round(ratio), -(2**31), 2**31 - 1).astype(np.int32)
                bqn = editor.add_tensor(w.scope, f"{bias_name}_quantized", bq, as_constant=as_const)
                bsn = editor.add_tensor(w.scope, f"{bias_name}_scale", bscale.reshape(-1) if axis is not None
                                        else bscale.reshape(()), as_constant=as_const)  # fmt: skip
                bzn = editor.add_tensor(w.scope, f"{bias_name}_zero_point",
                                        np.zeros(bscale.shape if axis is not None else (), np.int32),
                                        as_constant=as_const)  # fmt: skip
                bdq = editor.names(f"{bias_name}_dequantized")
                battrs = {"axis": 0} if axis is not None else {}
                nodes.append(editor.node("DequantizeLinear", [bqn, bsn, bzn], [bdq],
                                         f"{bias_name}_DequantizeLinear", **battrs))  # fmt: skip
                use.node.input[2] = bdq
        editor.insert_before(use.node, nodes)
        use.node.input[1] = dq
        action = "int8 static (QDQ)" if ap.bits == 8 else "int8 static (QDQ, A16W8)"
        records.append(WeightRecord(**base, action=action, bytes_after=int(nbytes),  # type: ignore[arg-type]
                                    granularity="per_tensor" if axis is None else f"per_channel(axis={axis})",
                                    reason=f"input scale {x_scale:.3g} ({ap.dtype}){detail}"))  # fmt: skip
    corrector.write()
    if corrector.corrected:
        notes.append(f"bias correction: {corrector.corrected} layer(s) corrected ({corrector.added} "
                          "bias(es) added) for the expected output error of their int8 weights")  # fmt: skip
    return records
