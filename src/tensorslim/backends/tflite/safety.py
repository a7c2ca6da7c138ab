"""Keeping hostile ``.tflite`` files away from LiteRT's native code.

LiteRT trusts its input: an operator that lists fewer inputs than its kernel reads (a ``DEPTHWISE_CONV_2D``
without its bias slot) passes ``allocate_tensors`` and segfaults in ``invoke``. Two guards, applied by every
command that loads a ``.tflite`` (through :func:`tensorslim.backends.tflite.io.model_from_bytes` and
:func:`tensorslim.runtime.litert.make_interpreter`):

* :func:`check_operators`: each builtin operator lists at least the inputs its kernel needs, and the required
  ones are not the "absent" index ``-1``.
* :func:`probe`: the model is loaded and run once on zeros in a child process; if that process dies from a
  signal, the caller gets an :class:`~tensorslim.errors.InputError` naming the signal instead of dying itself.
  Results are cached per content hash, so a model is probed once per process.

Before -> after: ``bench bad.tflite`` exit 139 with no message -> exit 2 "LiteRT crashed (SIGSEGV) ...".
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tensorslim.errors import InputError

__all__ = ["MAX_TENSOR_BYTES", "MIN_INPUTS", "check_operators", "check_tensor_sizes", "probe", "vet"]

#: the largest tensor a model may declare (LiteRT allocates declared shapes up front: a 4 GiB intermediate
#: tensor in a 50 KB file took 20 s and 4 GiB in ``allocate_tensors``)
MAX_TENSOR_BYTES = 2**31

#: builtin operator -> (inputs the kernel reads, how many of the first ones must be present)
MIN_INPUTS: dict[str, tuple[int, int]] = {
    "ADD": (2, 2), "SUB": (2, 2), "MUL": (2, 2), "DIV": (2, 2), "MAXIMUM": (2, 2), "MINIMUM": (2, 2),
    "POW": (2, 2), "SQUARED_DIFFERENCE": (2, 2), "FLOOR_DIV": (2, 2), "FLOOR_MOD": (2, 2),
    "CONV_2D": (3, 2), "DEPTHWISE_CONV_2D": (3, 2), "CONV_3D": (3, 2), "FULLY_CONNECTED": (2, 2),
    "TRANSPOSE_CONV": (3, 3), "BATCH_MATMUL": (2, 2), "AVERAGE_POOL_2D": (1, 1), "MAX_POOL_2D": (1, 1),
    "L2_POOL_2D": (1, 1), "SOFTMAX": (1, 1), "LOG_SOFTMAX": (1, 1), "RELU": (1, 1), "RELU6": (1, 1),
    "LOGISTIC": (1, 1), "TANH": (1, 1), "HARD_SWISH": (1, 1), "GELU": (1, 1), "PRELU": (2, 2),
    "RESHAPE": (1, 1), "SQUEEZE": (1, 1), "EXPAND_DIMS": (2, 2), "TRANSPOSE": (2, 2), "PAD": (2, 2),
    "PADV2": (3, 3), "MEAN": (2, 2), "SUM": (2, 2), "REDUCE_MAX": (2, 2), "REDUCE_MIN": (2, 2),
    "REDUCE_PROD": (2, 2), "GATHER": (2, 2), "GATHER_ND": (2, 2), "SLICE": (3, 3), "STRIDED_SLICE": (4, 4),
    "CONCATENATION": (1, 1), "SPLIT": (2, 2), "SPLIT_V": (3, 3), "TILE": (2, 2), "CAST": (1, 1),
    "DEQUANTIZE": (1, 1), "QUANTIZE": (1, 1), "RESIZE_BILINEAR": (2, 2), "RESIZE_NEAREST_NEIGHBOR": (2, 2),
    "EMBEDDING_LOOKUP": (2, 2), "L2_NORMALIZATION": (1, 1), "SQRT": (1, 1), "RSQRT": (1, 1), "EXP": (1, 1),
    "LOG": (1, 1), "ABS": (1, 1), "NEG": (1, 1), "SIN": (1, 1), "COS": (1, 1), "ARG_MAX": (2, 2),
    "ARG_MIN": (2, 2), "SELECT": (3, 3), "SELECT_V2": (3, 3), "BROADCAST_TO": (2, 2), "SHAPE": (1, 1),
    "PACK": (1, 1), "UNPACK": (1, 1), "LEAKY_RELU": (1, 1), "SPACE_TO_DEPTH": (1, 1), "DEPTH_TO_SPACE": (1, 1),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (20, 1), "LSTM": (20, 1), "UNIDIRECTIONAL_SEQUENCE_RNN": (5, 5),
    "RNN": (5, 5), "SVDF": (5, 3),
}  # fmt: skip

_PROBED: dict[str, str | None] = {}
_VETTED: set[str] = set()
_PROBE_CODE = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1])
it.allocate_tensors()
try:
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
except Exception:
    sys.exit(0)
it.invoke()
"""


def check_operators(model: Any, label: str) -> None:
    """Refuse builtin operators with fewer inputs than their kernel reads.

    Raises:
        InputError: an operator lists too few inputs, or leaves a required one absent (-1).
    """
    from tensorslim.backends.tflite.schema import op_name

    codes = model.operatorCodes or []
    for si, sg in enumerate(model.subgraphs or []):
        for oi, op in enumerate(sg.operators or []):
            name = op_name(codes[op.opcodeIndex])
            need = MIN_INPUTS.get(name)
            if need is None:
                continue
            inputs = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            slots, required = need
            if len(inputs) < slots or any(i < 0 for i in inputs[:required]):
                raise InputError(
                    f"{label}: subgraph {si} operator {oi} ({name}) lists inputs {inputs}, its kernel reads "
                    f"{slots} (the first {required} present); the file is corrupt, re-convert the model"
                )


def check_tensor_sizes(model: Any, label: str) -> None:
    """Refuse tensors whose declared shape is negative (other than -1) or holds more than 2 GiB.

    Raises:
        InputError: a tensor declares an impossible or oversized shape.
    """
    import math

    from tensorslim.backends.tflite.schema import numpy_dtype

    for si, sg in enumerate(model.subgraphs or []):
        for ti, t in enumerate(sg.tensors or []):
            shape = [int(d) for d in (t.shape if t.shape is not None else [])]
            if any(d < -1 for d in shape):
                raise InputError(f"{label}: subgraph {si} tensor {ti} has shape {shape}; the file is corrupt")
            dtype = numpy_dtype(t.type)
            nbytes = math.prod(max(d, 1) for d in shape) * (dtype.itemsize if dtype is not None else 1)
            if nbytes > MAX_TENSOR_BYTES:
                raise InputError(
                    f"{label}: subgraph {si} tensor {ti} declares shape {shape} ({nbytes / 2**30:.1f} GiB), over the "
                    f"{MAX_TENSOR_BYTES / 2**30:.0f} GiB a tensor may hold; the file is corrupt, re-convert the model"
                )


def probe(model: str | os.PathLike[str] | bytes, *, label: str = "model", timeout: float = 600.0) -> None:
    """Load and run ``model`` once on zeros in a child process; a crash there is an InputError here.

    Errors LiteRT reports normally (a failed ``prepare``) are left for the caller to meet in-process.

    Raises:
        InputError: LiteRT died from a signal or did not finish within ``timeout`` seconds.
    """
    if os.environ.get("TENSORSLIM_LITERT_PROBE", "1") == "0":
        return
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    key = hashlib.sha256(data).hexdigest()
    if key not in _PROBED:
        _PROBED[key] = _run_probe(model, data, timeout)
    reason = _PROBED[key]
    if reason is not None:
        raise InputError(
            f"{label}: {reason}; the file is corrupt or crafted (a well-formed model does not crash LiteRT), "
            "re-convert or re-download it"
        )


def vet(model: str | os.PathLike[str] | bytes, *, label: str = "model") -> None:
    """The structural checks of :func:`~tensorslim.backends.tflite.io.model_from_bytes`, then :func:`probe`;
    once per content hash.

    Raises:
        InputError: the file fails a structural check or crashes LiteRT.
    """
    from tensorslim.backends.tflite.io import model_from_bytes

    stat_key = None
    if not isinstance(model, bytes):  # a file vetted before and unchanged since is not read again (load timing)
        st = os.stat(model)
        stat_key = f"{os.path.realpath(model)}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        if stat_key in _VETTED:
            return
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    key = hashlib.sha256(data).hexdigest()
    if key not in _VETTED:
        model_from_bytes(data, label=label)
        probe(data, label=label)
        _VETTED.add(key)
    if stat_key is not None:
        _VETTED.add(stat_key)


def _run_probe(model: str | os.PathLike[str] | bytes, data: bytes, timeout: float) -> str | None:
    from tensorslim._files import register_temp, release_temp

    tmp: str | None = None
    if isinstance(model, bytes):
        fd, tmp = tempfile.mkstemp(prefix="tensorslim-probe-", suffix=".tflite")
        register_temp(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        path = tmp
    else:
        path = str(model)
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE_CODE, path],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except subprocess.TimeoutExpired:
        return f"LiteRT did not finish running the model once on zeros within {timeout:g} s"
    finally:
        if tmp is not None:
            release_temp(tmp)
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        return f"LiteRT crashed ({sig}) loading or running the model"
    return None
