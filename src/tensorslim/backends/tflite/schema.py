"""Access to the TFLite flatbuffer schema that ships with ai-edge-litert (no TensorFlow import).

The generated object API (``ModelT``, ``SubGraphT``, ``TensorT``, ...) is the in-memory model everywhere in
this backend. This module imports it with a clear error when the optional dependency is missing, and maps
between the schema's enums and names and NumPy dtypes.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from tensorslim.errors import InputError

__all__ = [
    "FILE_IDENTIFIER",
    "SCHEMA_VERSION",
    "numpy_dtype",
    "op_code",
    "op_name",
    "schema",
    "tensor_type",
    "type_name",
]

#: The flatbuffer file identifier of TFLite models (bytes 4..8 of the file).
FILE_IDENTIFIER = b"TFL3"
#: The only schema version LiteRT reads.
SCHEMA_VERSION = 3

_MODULE: ModuleType | None = None


def schema() -> Any:
    """The ``schema_py_generated`` module of ai-edge-litert.

    Raises:
        InputError: ai-edge-litert is not installed.
    """
    global _MODULE
    if _MODULE is None:
        try:
            from ai_edge_litert import schema_py_generated
        except ImportError as e:
            raise InputError(
                "reading .tflite files needs ai-edge-litert; install it with: pip install 'tensorslim[tflite]'"
            ) from e
        _MODULE = schema_py_generated
    return _MODULE


def _enum(cls: Any) -> dict[str, int]:
    return {k: v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_OP_NAMES: dict[int, str] = {}
_OP_CODES: dict[str, int] = {}
_TYPE_NAMES: dict[int, str] = {}

_NUMPY_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT32": np.int32,
    "INT64": np.int64,
    "INT16": np.int16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}


def _tables() -> None:
    if not _OP_NAMES:
        s = schema()
        for name, code in _enum(s.BuiltinOperator).items():
            _OP_NAMES[code] = name
            _OP_CODES[name] = code
        _TYPE_NAMES.update({v: k for k, v in _enum(s.TensorType).items()})


def op_name(code: Any) -> str:
    """Name of a builtin operator (``"FULLY_CONNECTED"``); custom ops are ``"CUSTOM:<name>"``.

    Args:
        code: an ``OperatorCodeT`` or a builtin operator number.
    """
    _tables()
    if isinstance(code, int):
        return _OP_NAMES.get(code, f"UNKNOWN_{code}")
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = _OP_NAMES.get(builtin, f"UNKNOWN_{builtin}")
    if name == "CUSTOM":
        raw = code.customCode
        custom = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return f"CUSTOM:{custom}"
    return name


def op_code(name: str) -> int:
    """Builtin operator number of ``name``."""
    _tables()
    return _OP_CODES[name]


def type_name(tensor_type: int) -> str:
    """Name of a schema tensor type (``"FLOAT32"``)."""
    _tables()
    return _TYPE_NAMES.get(tensor_type, f"UNKNOWN_{tensor_type}")


def tensor_type(name: str) -> int:
    """Schema tensor type of ``name`` (``"INT8"``)."""
    return int(getattr(schema().TensorType, name))


def numpy_dtype(tensor_type: int) -> np.dtype | None:
    """NumPy dtype of a schema tensor type, or ``None`` for types NumPy cannot hold (strings, int4...)."""
    np_type = _NUMPY_TYPES.get(type_name(tensor_type))
    return None if np_type is None else np.dtype(np_type)
