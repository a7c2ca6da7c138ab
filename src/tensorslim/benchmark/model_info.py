"""Static facts about an ONNX file: validation, size on disk and weight bytes.

The model is read with ``load_model(path, external_data=False)`` so that huge external weights are
never pulled into memory; external tensors are counted by their ``length`` entry.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from onnx import AttributeProto, ModelProto, NodeProto, SparseTensorProto, TensorProto

from tensorslim.backends.onnx.graph import all_graphs
from tensorslim.backends.onnx.io import load_model
from tensorslim.errors import InputError

__all__ = ["external_data_files", "file_bytes", "load_model_proto", "tensor_nbytes", "weight_bytes"]

# Bits per element of the data types numpy cannot describe (or packs).
_BITS: dict[int, int] = {
    TensorProto.BOOL: 8,
    TensorProto.INT8: 8,
    TensorProto.UINT8: 8,
    TensorProto.INT16: 16,
    TensorProto.UINT16: 16,
    TensorProto.FLOAT16: 16,
    TensorProto.BFLOAT16: 16,
    TensorProto.INT32: 32,
    TensorProto.UINT32: 32,
    TensorProto.FLOAT: 32,
    TensorProto.INT64: 64,
    TensorProto.UINT64: 64,
    TensorProto.DOUBLE: 64,
    TensorProto.COMPLEX64: 64,
    TensorProto.COMPLEX128: 128,
}
for _name, _bits in (
    ("FLOAT8E4M3FN", 8),
    ("FLOAT8E4M3FNUZ", 8),
    ("FLOAT8E5M2", 8),
    ("FLOAT8E5M2FNUZ", 8),
    ("FLOAT8E8M0", 8),
    ("INT4", 4),
    ("UINT4", 4),
    ("FLOAT4E2M1", 4),
    ("INT2", 2),
    ("UINT2", 2),
):
    if hasattr(TensorProto, _name):
        _BITS[int(getattr(TensorProto, _name))] = _bits


def load_model_proto(path: str | os.PathLike[str]) -> ModelProto:
    """Load the model structure without external data, validating that it is a usable ONNX file.

    Args:
        path: Path of the ``.onnx`` file.

    Returns:
        The parsed model (external tensors left as references).

    Raises:
        InputError: The file does not exist, is not a regular file, cannot be parsed as ONNX, or has no
            graph nodes. The message names the file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; check the path")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    return load_model(p, check=False, external_data=False)


def _iter_nodes(model: ModelProto) -> Iterator[NodeProto]:
    for graph in all_graphs(model.graph):
        yield from graph.node
    for func in model.functions:
        for node in func.node:
            yield node
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    for graph in all_graphs(attr.g):
                        yield from graph.node
                elif attr.type == AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        for graph in all_graphs(sub):
                            yield from graph.node


def _external_entries(tensor: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def tensor_nbytes(tensor: TensorProto) -> int:
    """Raw byte size of one tensor's data, wherever it is stored.

    External data counts its ``length`` entry (or the element count times the element size when the
    entry is missing); ``raw_data`` counts its length; typed fields count elements times element size;
    strings count their bytes.
    """
    if tensor.data_location == TensorProto.EXTERNAL:
        entries = _external_entries(tensor)
        if "length" in entries:
            return int(entries["length"])
        return _dense_nbytes(tensor)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    if tensor.data_type == TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    return _dense_nbytes(tensor)


def _dense_nbytes(tensor: TensorProto) -> int:
    numel = math.prod(tensor.dims) if len(tensor.dims) else 1
    bits = _BITS.get(tensor.data_type, 0)
    return (numel * bits + 7) // 8


def _sparse_nbytes(sparse: SparseTensorProto) -> int:
    return tensor_nbytes(sparse.values) + tensor_nbytes(sparse.indices)


def _constant_attr_nbytes(attr: AttributeProto) -> int:
    if attr.name == "value" and attr.type == AttributeProto.TENSOR:
        return tensor_nbytes(attr.t)
    if attr.name == "sparse_value" and attr.type == AttributeProto.SPARSE_TENSOR:
        return _sparse_nbytes(attr.sparse_tensor)
    if attr.name == "value_float":
        return 4
    if attr.name == "value_int":
        return 8
    if attr.name == "value_floats":
        return 4 * len(attr.floats)
    if attr.name == "value_ints":
        return 8 * len(attr.ints)
    if attr.name == "value_string":
        return len(attr.s)
    if attr.name == "value_strings":
        return sum(len(s) for s in attr.strings)
    return 0


def weight_bytes(model: ModelProto) -> int:
    """Sum the raw bytes of all initializers and ``Constant`` node tensors, subgraphs included.

    Args:
        model: A model loaded with ``load_external_data=False`` (loaded data works too).

    Returns:
        Total weight bytes.
    """
    total = 0
    for graph in all_graphs(model.graph):
        total += sum(tensor_nbytes(t) for t in graph.initializer)
        total += sum(_sparse_nbytes(s) for s in graph.sparse_initializer)
    for node in _iter_nodes(model):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            total += sum(_constant_attr_nbytes(a) for a in node.attribute)
    return total


def _all_tensors(model: ModelProto) -> Iterable[TensorProto]:
    for graph in all_graphs(model.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in _iter_nodes(model):
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == AttributeProto.SPARSE_TENSOR:
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices


def external_data_files(model: ModelProto, model_path: str | os.PathLike[str]) -> list[Path]:
    """Return the distinct external-data files the model references, resolved next to the model.

    Raises:
        InputError: A referenced file does not exist.
    """
    base = Path(model_path).parent
    seen: dict[Path, None] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = _external_entries(tensor).get("location")
        if not location:
            raise InputError(f"{model_path}: tensor {tensor.name!r} is external but has no location")
        seen.setdefault(base / location, None)
    files = list(seen)
    for f in files:
        if not f.is_file():
            raise InputError(f"{model_path}: external data file {f} is missing")
    return files


def file_bytes(model: ModelProto, model_path: str | os.PathLike[str]) -> int:
    """Bytes on disk of the model file plus all external-data files it references.

    Raises:
        InputError: A referenced external-data file does not exist.
    """
    total = os.path.getsize(model_path)
    total += sum(f.stat().st_size for f in external_data_files(model, model_path))
    return total
