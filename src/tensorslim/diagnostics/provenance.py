"""How a quantized model was made: recorded in its ``metadata_props`` by ``quantize``, read back by ``diagnose``.

``tensorslim quantize`` (:func:`tensorslim.quantize`, and ``apply_recipe`` for its last quantization pass)
writes one entry, ``tensorslim.quantize``, a JSON object with the ``--mode`` and the options that change what
the command produces (``form``, ``bits``, ``kernel``, ``block_size``, ``method``, ``range``, ``activation_bits``,
``scheme``, ``granularity``, ``min_size``, ``ops``, ``exclude``) and whether calibration data was used.
``diagnose`` turns it back into the ``tensorslim quantize`` arguments that reproduce the model, so its suggested
command only adds ``--exclude``. For a model without the entry (made by another tool or an older tensorslim)
the mode is read from the graph: activation ``QuantizeLinear`` nodes mean static, ``MatMulNBits`` its
``bits``, float16 compute fp16, else dynamic.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import onnx

__all__ = ["KEY", "fp16_compute", "infer_quantize", "quantize_args", "record_quantize"]

KEY = "tensorslim.quantize"

_LAYOUT_OPS = frozenset({"Split", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Identity", "Gather",
                         "Slice", "Flatten", "Expand", "Tile"})  # fmt: skip
_NO_COMPUTE = _LAYOUT_OPS | {"Cast", "CastLike", "DequantizeLinear", "Shape", "Size"}


def fp16_compute(model: onnx.ModelProto) -> dict[str, int]:
    """Nodes per op type computing on float16 tensors (weights, inputs, casts to float16; through layout ops).

    Float16 weights only cast to float32 (dynamic int8's packed float16 scales, ``Split -> Cast``) are not float16
    compute: ONNX Runtime folds them once at load.
    """
    g = model.graph
    f16 = onnx.TensorProto.FLOAT16
    half = {t.name for t in g.initializer if t.data_type == f16}
    half |= {v.name for v in g.input if v.type.tensor_type.elem_type == f16}
    ops: Counter[str] = Counter()
    for n in g.node:  # nodes are topologically sorted
        const = n.op_type == "Constant" and any(a.name == "value" and a.t.data_type == f16 for a in n.attribute)
        if const or (n.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in n.attribute)):
            half.update(n.output)
        elif any(i in half for i in n.input):
            if n.op_type in _LAYOUT_OPS:
                half.update(n.output)
            elif n.op_type not in _NO_COMPUTE:
                ops[n.op_type] += 1
                half.update(n.output)
    return dict(sorted(ops.items()))


def _mode_and_options(cfg: Any) -> tuple[str, dict[str, Any]]:
    from tensorslim.passes.blockwise_quant import BlockQuantConfig
    from tensorslim.passes.dynamic_quant import DynamicQuantConfig
    from tensorslim.passes.float16 import Float16Config
    from tensorslim.passes.static_quant import StaticQuantConfig

    if isinstance(cfg, DynamicQuantConfig):
        return "dynamic", {"form": cfg.form, "scheme": cfg.scheme, "granularity": cfg.granularity,
                           "range": cfg.range_method, "min_size": cfg.min_size, "ops": ",".join(cfg.op_types),
                           "exclude": list(cfg.exclude)}  # fmt: skip
    if isinstance(cfg, StaticQuantConfig):
        return "static", {"scheme": cfg.activation_scheme, "granularity": cfg.granularity,
                          "range": cfg.calibration, "activation_bits": cfg.activation_bits,
                          "ops": ",".join(cfg.op_types), "exclude": list(cfg.exclude)}  # fmt: skip
    if isinstance(cfg, BlockQuantConfig):
        opts = {"bits": cfg.bits, "block_size": cfg.block_size, "scheme": cfg.scheme, "method": cfg.method,
                "kernel": cfg.kernel, "min_size": cfg.min_size, "ops": ",".join(cfg.op_types),
                "exclude": list(cfg.exclude)}  # fmt: skip
        return ("int4" if cfg.bits == 4 else "blockwise"), opts
    if isinstance(cfg, Float16Config):
        return "fp16", {"ops": ",".join(cfg.block_ops) or None, "exclude": list(cfg.block_nodes)}
    return type(cfg).__name__, {}


def record_quantize(model: onnx.ModelProto, cfg: Any, *, data: bool) -> None:
    """Write (or replace) the ``tensorslim.quantize`` entry of ``model`` for the config ``cfg``."""
    mode, opts = _mode_and_options(cfg)
    value = json.dumps({"mode": mode, "options": opts, "data": bool(data)}, sort_keys=True)
    for p in list(model.metadata_props):
        if p.key == KEY:
            model.metadata_props.remove(p)
    model.metadata_props.append(onnx.StringStringEntryProto(key=KEY, value=value))


def infer_quantize(model: onnx.ModelProto) -> dict[str, Any]:
    """The recorded entry, else the mode read from the graph (``{"mode", "options", "data", "recorded"}``)."""
    for p in model.metadata_props:
        if p.key == KEY:
            try:
                d = json.loads(p.value)
            except ValueError:
                break
            if isinstance(d, dict) and isinstance(d.get("mode"), str):
                return {"options": {}, "data": False, **d, "recorded": True}
    g = model.graph
    consts = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    if any(n.op_type == "QuantizeLinear" and n.input[0] not in consts for n in g.node):
        return {"mode": "static", "options": {}, "data": True, "recorded": False}
    nbits = [n for n in g.node if n.op_type == "MatMulNBits"]
    if nbits:
        bits = next((a.i for a in nbits[0].attribute if a.name == "bits"), 4)
        opts = {"bits": bits, "kernel": "matmulnbits"}
        return {"mode": "int4" if bits == 4 else "blockwise", "options": opts, "data": False, "recorded": False}
    if fp16_compute(model):
        return {"mode": "fp16", "options": {}, "data": False, "recorded": False}
    return {"mode": "dynamic", "options": {}, "data": False, "recorded": False}


_FLAG = {"form": "--form", "scheme": "--scheme", "granularity": "--granularity", "range": "--range",
         "activation_bits": "--activation-bits", "bits": "--bits", "block_size": "--block-size", "method": "--method",
         "kernel": "--kernel", "min_size": "--min-size", "ops": "--ops"}  # fmt: skip
_MODE_FLAGS = {
    "dynamic": ("form", "scheme", "granularity", "range", "min_size", "ops"),
    "static": ("scheme", "granularity", "range", "activation_bits", "ops"),
    "int4": ("block_size", "scheme", "method", "kernel", "min_size", "ops"),
    "blockwise": ("bits", "block_size", "scheme", "method", "kernel", "min_size", "ops"),
    "fp16": ("ops",),
}


def quantize_args(info: dict[str, Any], data: str | None) -> list[str]:
    """``--mode M [options] [--data D]`` that reproduce the model ``info`` describes.

    ``data`` is the file to calibrate on (static needs one: ``CALIB.npz`` stands in when ``None``; int4 and
    blockwise use it for GPTQ when the model was made with data).
    """
    mode = info.get("mode", "dynamic")
    opts = info.get("options") or {}
    args = ["--mode", mode]
    for k in _MODE_FLAGS.get(mode, ()):
        if k in opts and opts[k] is not None:
            args += [_FLAG[k], str(opts[k])]
    for rx in opts.get("exclude") or ():  # the original exclusions stay
        args += ["--exclude", str(rx)]
    if mode == "static" or (mode in ("int4", "blockwise") and info.get("data")):
        args += ["--data", data or "CALIB.npz"]
    return args
