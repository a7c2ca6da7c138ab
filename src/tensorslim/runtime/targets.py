"""Which runtime versions load a model, and the ``--target-runtime`` option that keeps outputs loadable.

Users deploy to runtimes older than the one on the build machine (mobile and embedded ONNX Runtime builds lag by
several releases). :func:`onnx_features` lists what an ONNX model needs, each with the first ONNX Runtime release
that loads it; :func:`check_target` turns a feature the target lacks into one error naming it;
:func:`lowest_versions` gives the lowest opset and IR version that still express the model, which
:func:`tensorslim.backends.onnx.io.save_model` stamps on every output::

    opset 21, IR 10, only ops unchanged since opset 13   ->  opset 13, IR 7 (loads in every ONNX Runtime >= 1.8)

Version facts were measured by loading probe models in each release (``tests/test_runtime_compat.py``); the
table lists only what tensorslim emits or keeps from its inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import onnx

from tensorslim.backends.onnx.graph import all_graphs, walk_nodes
from tensorslim.errors import InputError

__all__ = [
    "RuntimeFeature", "TargetRuntime", "check_target", "gather_block_quantized", "lowest_versions", "onnx_features",
    "target_for",
]  # fmt: skip

Version = tuple[int, int]

#: The help text of every command's ``--target-runtime`` option.
TARGET_HELP = (
    "Oldest runtime the output must load in, e.g. onnxruntime>=1.17 (ONNX) or litert>=1.2 (.tflite): forms it lacks "
    "are avoided or the command names the feature that needs a newer one [default: no limit]."
)

#: The highest ai.onnx opset and IR version each ONNX Runtime release loads (probe models loaded in 1.17.3,
#: 1.18.1, 1.20.1, 1.21.1, 1.22.1, 1.23.2, 1.24.3; the older rows from ONNX Runtime's compatibility table).
_ORT_MAX: dict[Version, tuple[int, int]] = {
    (1, 8): (14, 7), (1, 10): (15, 8), (1, 14): (18, 8), (1, 15): (19, 9), (1, 17): (20, 9),
    (1, 18): (21, 10), (1, 21): (22, 10), (1, 23): (23, 11), (1, 24): (24, 12),
}  # fmt: skip
#: First ONNX Runtime release with each contrib op tensorslim emits (GatherBlockQuantized: absent in 1.18.1,
#: loads in 1.20.1; 1.19 not measured).
_CONTRIB_OPS: dict[str, Version] = {
    "MatMulNBits": (1, 17),
    "GatherBlockQuantized": (1, 20),
    "QuantizeLinear": (1, 8),
    "DequantizeLinear": (1, 8),
    "DynamicQuantizeMatMul": (1, 8),
    "MatMulIntegerToFloat": (1, 8),
    "QLinearAdd": (1, 8),
}
#: GatherBlockQuantized on uint8-packed data with a ``bits`` attribute: 1.20.1 to 1.22.1 reject the attribute
#: (and 1.20 takes int4/uint4 data only); 1.23.2 loads it.
_GBQ_UINT8: Version = (1, 23)
#: DequantizeLinear of int4/uint4 tensors: 1.18.1 registers the type but has no kernel; 1.20.1 runs it.
_INT4_TYPES: Version = (1, 20)
_IR_FOR_TYPE: dict[int, int] = {
    onnx.TensorProto.INT4: 10, onnx.TensorProto.UINT4: 10,
    onnx.TensorProto.FLOAT8E4M3FN: 9, onnx.TensorProto.FLOAT8E4M3FNUZ: 9, onnx.TensorProto.FLOAT8E5M2: 9,
    onnx.TensorProto.FLOAT8E5M2FNUZ: 9,
}  # fmt: skip
if hasattr(onnx.TensorProto, "FLOAT4E2M1"):
    _IR_FOR_TYPE[onnx.TensorProto.FLOAT4E2M1] = 11


@dataclass(frozen=True)
class RuntimeFeature:
    """Something a model needs from the runtime that loads it.

    Attributes:
        what: What it is, in words (``"opset 21"``, ``"com.microsoft.MatMulNBits"``).
        onnxruntime: The first ONNX Runtime release that loads it.
    """

    what: str
    onnxruntime: Version


@dataclass(frozen=True)
class TargetRuntime:
    """The oldest runtime an output must load in: ``onnxruntime>=1.17`` or ``litert>=1.2``.

    Attributes:
        runtime: ``onnxruntime`` or ``litert``.
        version: ``(major, minor)``.
    """

    runtime: str
    version: Version

    @classmethod
    def parse(cls, text: str) -> TargetRuntime:
        """Read ``NAME>=MAJOR.MINOR`` (``ort`` and ``onnxruntime``, ``litert`` and ``tflite`` are accepted names).

        Raises:
            InputError: the text is not of that form.
        """
        m = re.fullmatch(r"\s*([a-zA-Z_-]+)\s*>=\s*(\d+)\.(\d+)(?:\.\d+)?\s*", text or "")
        names = {"onnxruntime": "onnxruntime", "ort": "onnxruntime", "litert": "litert", "tflite": "litert",
                 "ai-edge-litert": "litert"}  # fmt: skip
        if m is None or m.group(1).lower() not in names:
            raise InputError(
                f"--target-runtime: {text!r} is not of the form onnxruntime>=1.17 or litert>=1.2 (the oldest "
                "runtime the output must load in)"
            )
        return cls(names[m.group(1).lower()], (int(m.group(2)), int(m.group(3))))

    def __str__(self) -> str:
        return f"{self.runtime}>={self.version[0]}.{self.version[1]}"

    def has(self, feature: RuntimeFeature) -> bool:
        """Whether this runtime loads ``feature`` (LiteRT targets say nothing about ONNX features)."""
        return self.runtime != "onnxruntime" or self.version >= feature.onnxruntime


def target_for(text: str | None, *, model_kind: str) -> TargetRuntime | None:
    """Parse a ``--target-runtime`` for an output of ``model_kind`` (``onnx`` or ``tflite``).

    Raises:
        InputError: the text is malformed, or names the other kind's runtime.
    """
    if text is None:
        return None
    target = TargetRuntime.parse(text)
    want = "onnxruntime" if model_kind == "onnx" else "litert"
    if target.runtime != want:
        raise InputError(
            f"--target-runtime {text}: the output is a {'.onnx' if model_kind == 'onnx' else '.tflite'} model, run "
            f"by {want}; give {want}>=VERSION"
        )
    return target


def gather_block_quantized(bits: int) -> RuntimeFeature:
    """``GatherBlockQuantized`` as tensorslim writes it for ``bits``-bit embeddings (4: int4/uint4 tables, 1.20;
    8: uint8 tables with a ``bits`` attribute, 1.23)."""
    if bits == 4:
        return RuntimeFeature("com.microsoft.GatherBlockQuantized", _CONTRIB_OPS["GatherBlockQuantized"])
    return RuntimeFeature("com.microsoft.GatherBlockQuantized on uint8-packed data", _GBQ_UINT8)


def _release_for(opset: int, ir: int) -> Version:
    for release, (max_opset, max_ir) in sorted(_ORT_MAX.items()):
        if opset <= max_opset and ir <= max_ir:
            return release
    return max(_ORT_MAX)


def _tensor_types(model: onnx.ModelProto) -> set[int]:
    types: set[int] = set()
    for g in all_graphs(model.graph):
        types.update(t.data_type for t in g.initializer)
        for vi in [*g.input, *g.output, *g.value_info]:
            types.add(vi.type.tensor_type.elem_type)
    for n in walk_nodes(model.graph):
        for a in n.attribute:
            if a.name == "to" and a.type == onnx.AttributeProto.INT:
                types.add(int(a.i))
            elif a.type == onnx.AttributeProto.TENSOR:
                types.add(a.t.data_type)
    return types


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


#: Ops whose versions from opset 19 on changed only their type lists (float8, int4, ...), not their meaning.
_TYPE_ONLY = frozenset(
    {"Cast", "CastLike", "Constant", "ConstantOfShape", "Flatten", "Identity", "Reshape", "Shape", "Size", "Squeeze",
     "Transpose", "Unsqueeze", "If", "Loop", "Scan", "Equal", "QuantizeLinear", "DequantizeLinear"}
)  # fmt: skip


class _Types:
    """Element types (``tensor(float)``) of a model's values, inferred on first use."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self._types: dict[str, str] | None = None

    def get(self, name: str) -> str | None:
        if self._types is None:
            self._types = {}
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model)
            except Exception:  # unknown types keep the ops at their stamped versions
                inferred = self.model
            for g in all_graphs(inferred.graph):
                for t in g.initializer:
                    self._types[t.name] = _type_str(t.data_type)
                for vi in [*g.input, *g.output, *g.value_info]:
                    if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                        self._types[vi.name] = _type_str(vi.type.tensor_type.elem_type)
        return self._types.get(name)


def _type_str(dtype: int) -> str:
    return f"tensor({onnx.TensorProto.DataType.Name(dtype).lower()})"


def _fits(node: onnx.NodeProto, schema: Any, types: _Types) -> bool:
    """Whether ``schema`` (an older version of the node's op) takes the node's attributes, arity and types."""
    if not {a.name for a in node.attribute} <= set(schema.attributes):
        return False
    if not (schema.min_input <= len(node.input) <= schema.max_input):
        return False
    if not (schema.min_output <= len(node.output) <= schema.max_output):
        return False
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    for names, formals in ((node.input, schema.inputs), (node.output, schema.outputs)):
        for i, name in enumerate(names):
            if not name:
                continue
            formal = formals[min(i, len(formals) - 1)]
            if formal.type_str.startswith(("seq(", "optional(")):
                return False
            t = types.get(name)
            ok = allowed.get(formal.type_str, {formal.type_str})
            if t is None or t not in ok:
                return False
    return True


def _node_since(node: onnx.NodeProto, opset: int, types: _Types) -> int:
    """The lowest opset whose version of ``node``'s op means the same for it."""
    schema = onnx.defs.get_schema(node.op_type, opset, "")
    since = int(schema.since_version)
    while node.op_type in _TYPE_ONLY and since >= 19:
        try:
            prev = onnx.defs.get_schema(node.op_type, since - 1, "")
        except Exception:
            break
        if not _fits(node, prev, types):
            break
        since = int(prev.since_version)
    return since


def lowest_versions(model: onnx.ModelProto) -> tuple[int, int]:
    """The lowest ai.onnx opset and IR version that express ``model`` unchanged.

    The opset is the newest ``since_version`` among the schemas its ops resolve to at the stamped opset (an op
    unchanged since opset 13 means the same at 13; ops whose newer versions only added tensor types or optional
    attributes, such as Transpose-21 and Reshape-19, step down while the older schema takes the node's types,
    attributes and arity); the IR version is the lowest that opset, the other domains,
    the tensor types (int4: 10, float8: 9) and model-local functions (8) allow, never below 7 nor above the
    stamped one. A model with ops ONNX does not know keeps its stamps.
    """
    opset = _default_opset(model)
    if not opset:
        return opset, model.ir_version
    need = 1
    types = _Types(model)
    for n in walk_nodes(model.graph):
        if n.domain not in ("", "ai.onnx"):
            continue
        try:
            need = max(need, _node_since(n, opset, types))
        except Exception:  # an op ONNX does not define at this opset: keep the model as stamped
            return opset, model.ir_version
    new_opset = min(opset, max(need, 7))
    imports = [onnx.helper.make_opsetid(o.domain, new_opset if o.domain in ("", "ai.onnx") else o.version)
               for o in model.opset_import if o.domain in ("", "ai.onnx", "ai.onnx.ml")]  # fmt: skip
    try:
        ir = onnx.helper.find_min_ir_version_for(imports, ignore_unknown=True)
    except Exception:
        return opset, model.ir_version
    ir = max(ir, 7, *(_IR_FOR_TYPE.get(t, 0) for t in _tensor_types(model)), 8 if model.functions else 0)
    return new_opset, min(model.ir_version, ir) if model.ir_version else ir


def onnx_features(model: onnx.ModelProto) -> list[RuntimeFeature]:
    """What loading ``model`` (stamped as :func:`lowest_versions` says) needs from ONNX Runtime, newest first."""
    out: list[RuntimeFeature] = []
    opset, ir = lowest_versions(model)  # as save_model stamps the file
    if opset:
        out.append(RuntimeFeature(f"opset {opset}", _release_for(opset, 0)))
    out.append(RuntimeFeature(f"IR version {ir}", _release_for(0, ir)))
    if ir >= 10 and {onnx.TensorProto.INT4, onnx.TensorProto.UINT4} & _tensor_types(model):
        out.append(RuntimeFeature("int4/uint4 tensors", _INT4_TYPES))
    for n in walk_nodes(model.graph):
        if n.domain != "com.microsoft":
            continue
        first = _CONTRIB_OPS.get(n.op_type, (1, 8))
        if n.op_type == "GatherBlockQuantized" and any(a.name == "bits" for a in n.attribute):
            out.append(RuntimeFeature("com.microsoft.GatherBlockQuantized on uint8-packed data", _GBQ_UINT8))
        out.append(RuntimeFeature(f"com.microsoft.{n.op_type}", first))
    unique = {f.what: f for f in out}
    return sorted(unique.values(), key=lambda f: (f.onnxruntime, f.what), reverse=True)


def check_target(model: onnx.ModelProto, target: TargetRuntime | None, *, option: str = "--target-runtime") -> None:
    """Raise when ``model`` (as it will be written) needs something ``target`` lacks.

    Raises:
        InputError: one line naming every missing feature and the release that has it.
    """
    if target is None or target.runtime != "onnxruntime":
        return
    missing = [f for f in onnx_features(model) if not target.has(f)]
    if missing:
        need = max(f.onnxruntime for f in missing)
        what = "; ".join(f"{f.what} needs onnxruntime>={f.onnxruntime[0]}.{f.onnxruntime[1]}" for f in missing)
        raise InputError(
            f"{option} {target}: the output would not load there ({what}); target onnxruntime>={need[0]}.{need[1]} "
            "or choose a mode without these features"
        )
