"""Integer model inputs and outputs for static quantization (like TFLite's ``inference_input_type=int8``).

After the Q/DQ pairs are in place, :func:`integer_io` makes each float graph input the quantized tensor
(its QuantizeLinear removed; a DequantizeLinear feeds the float readers) and each float graph output the
quantized tensor (a final QuantizeLinear; the DequantizeLinear a consumer would apply is left to it). The
scale and zero point of every such tensor go into the model's ``metadata_props`` as JSON under
:data:`IO_METADATA_KEY`, which :class:`~tensorslim.runtime.ort.OrtRuntime` reads to accept float feeds.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tensorslim.backends.onnx.metadata import IO_METADATA_KEY

__all__ = ["IO_METADATA_KEY", "integer_io", "read_io_quantization"]

_ONNX_TYPES = {"uint8": onnx.TensorProto.UINT8, "int8": onnx.TensorProto.INT8}


def read_io_quantization(model: onnx.ModelProto) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``{"inputs": {name: {scale, zero_point, dtype}}, "outputs": {...}}`` record, or ``{}``."""
    for p in model.metadata_props:
        if p.key == IO_METADATA_KEY:
            return dict(json.loads(p.value))
    return {}


def _unique(graph: onnx.GraphProto, base: str) -> str:
    used = {t.name for t in graph.initializer} | {o for n in graph.node for o in (*n.input, *n.output)}
    used |= {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    name, i = base, 0
    while name in used:
        i += 1
        name = f"{base}_{i}"
    return name


def integer_io(model: onnx.ModelProto, params: dict[str, Any]) -> str:
    """Give the graph inputs and outputs named in ``params`` (name -> ActivationParams) integer types.

    Edits ``model`` in place and returns a note for the result.
    """
    g = model.graph
    record: dict[str, dict[str, dict[str, Any]]] = {"inputs": {}, "outputs": {}}
    new_nodes_front: list[onnx.NodeProto] = []
    input_names = {i.name for i in g.input}
    output_names = {o.name for o in g.output}

    def consts(name: str, ap: Any) -> tuple[str, str]:
        s, z = _unique(g, f"{name}_io_scale"), ""
        g.initializer.append(numpy_helper.from_array(np.array(ap.scale, np.float32), s))
        z = _unique(g, f"{name}_io_zero_point")
        g.initializer.append(numpy_helper.from_array(np.array(ap.zero_point, ap.dtype), z))
        return s, z

    for vi in g.input:
        ap = params.get(vi.name)
        if ap is None or vi.name in output_names:
            continue
        x = vi.name
        qnode = next((n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == x), None)
        if qnode is not None and len(qnode.input) > 2:
            # reuse the pair: the DequantizeLinear reads the input directly
            q = qnode.output[0]
            dqs = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input and n.input[0] == q]
            if len(dqs) != 1:
                continue
            dq = dqs[0].output[0]
            g.node.remove(qnode)
            dqs[0].input[0] = x
            for n in g.node:
                if n is not dqs[0]:
                    for i, name in enumerate(n.input):
                        if name in (x, q):
                            n.input[i] = dq
            ap_used = ap  # the pair was made from these parameters
        else:
            s, z = consts(x, ap)
            dq = _unique(g, f"{x}_dequantized")
            for n in g.node:
                for i, name in enumerate(n.input):
                    if name == x:
                        n.input[i] = dq
            new_nodes_front.append(helper.make_node("DequantizeLinear", [x, s, z], [dq], name=_unique(g, f"{x}_io_DQ")))
            ap_used = ap
        vi.type.tensor_type.elem_type = _ONNX_TYPES[ap_used.dtype]
        record["inputs"][x] = {"scale": ap_used.scale, "zero_point": ap_used.zero_point, "dtype": ap_used.dtype}
    for node in reversed(new_nodes_front):
        g.node.insert(0, node)
    for vo in g.output:
        ap = params.get(vo.name)
        if ap is None or vo.name in input_names:
            continue
        y = vo.name
        y_float = _unique(g, f"{y}_float")
        for n in g.node:
            for i, name in enumerate(n.output):
                if name == y:
                    n.output[i] = y_float
            for i, name in enumerate(n.input):
                if name == y:
                    n.input[i] = y_float
        for v in g.value_info:
            if v.name == y:
                v.name = y_float
        s, z = consts(y, ap)
        g.node.append(helper.make_node("QuantizeLinear", [y_float, s, z], [y], name=_unique(g, f"{y}_io_Q")))
        vo.type.tensor_type.elem_type = _ONNX_TYPES[ap.dtype]
        record["outputs"][y] = {"scale": ap.scale, "zero_point": ap.zero_point, "dtype": ap.dtype}
    for p in list(model.metadata_props):
        if p.key == IO_METADATA_KEY:
            model.metadata_props.remove(p)
    model.metadata_props.append(onnx.StringStringEntryProto(key=IO_METADATA_KEY, value=json.dumps(record)))
    parts = [f"{k} {v['dtype']} (scale {v['scale']:.4g}, zero point {v['zero_point']})"
             for side in ("inputs", "outputs") for k, v in record[side].items()]  # fmt: skip
    return "integer model inputs/outputs (quantize float data with these parameters): " + "; ".join(parts)
