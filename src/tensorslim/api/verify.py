"""The one output check of the API: every model tensorslim writes passes :func:`verify_output`, then is saved.

The ONNX checker, then a load in ONNX Runtime (in a child process for a model that computes in float16: a
crash there must not take the caller down); a model past protobuf's 2 GB limit is checked from the written
file instead, before it replaces anything at the output path (:func:`write_output`).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from tensorslim.backends.onnx.io import model_size_bytes, save_model
from tensorslim.errors import InputError
from tensorslim.runtime.ort import OrtRuntime

__all__ = ["verify_output", "write_output"]


def write_output(
    model: onnx.ModelProto,
    output: str | os.PathLike[str] | None,
    *,
    float16: bool = False,
    load: bool = True,
    source: onnx.ModelProto | None = None,
) -> Path | None:
    """Check ``model`` (:func:`verify_output`), then write it atomically to ``output`` (``None``: check only).

    Returns:
        The path written, or ``None``.

    Raises:
        InputError: the model does not load in ONNX Runtime.
    """
    small = verify_output(model, float16=float16, load=load, source=source)
    # models past 2 GB are checked from the written file, before it replaces anything at the output path
    check = None if small else (lambda p: onnx.checker.check_model(str(p)))
    return save_model(model, output, verify=check) if output is not None else None


def verify_output(
    model: onnx.ModelProto, *, float16: bool, load: bool = True, source: onnx.ModelProto | None = None
) -> bool:
    """Run the ONNX checker on an output model, then (``load``) load it in ONNX Runtime: in a child process
    when it computes in float16, since an ONNX Runtime crash on such a graph must not take the caller down.

    Returns:
        Whether the model is under protobuf's 2 GB limit; larger ones are checked from the saved file instead.

    Raises:
        InputError: ONNX Runtime cannot load the model (a tensorslim bug).
    """
    small = model_size_bytes(model) < 2**31 - 2**24
    if not small:
        return False
    onnx.checker.check_model(model, full_check=False)
    if load and float16:
        _load_in_subprocess(model)
    elif load:
        try:
            OrtRuntime(model)
        except InputError as e:
            _input_loads(source)
            raise InputError(f"the optimized model does not load in ONNX Runtime: {e}; please report this") from e
    return True


def _input_loads(source: onnx.ModelProto | None) -> None:
    """When the output does not load, check the input: if it does not load either, that is the user's problem.

    Raises:
        InputError: the input does not load in ONNX Runtime (custom-domain ops, ops it does not know).
    """
    if source is None:
        return
    try:
        OrtRuntime(source)
    except InputError as e:
        raise InputError(
            f"the input model does not load in ONNX Runtime ({e}); tensorslim measures models on ONNX Runtime, "
            "so fix the model (or register the library of its custom ops) first"
        ) from e


def _load_in_subprocess(model: onnx.ModelProto) -> None:
    """Create an ONNX Runtime session for ``model`` in a child process; a crash there becomes an InputError."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tensorslim-verify-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model.SerializeToString())
        code = (
            "import sys, onnxruntime as ort; so = ort.SessionOptions(); so.log_severity_level = 3; "
            "ort.InferenceSession(sys.argv[1], so, providers=['CPUExecutionProvider'])"
        )
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600)
    if proc.returncode < 0:
        raise InputError(
            f"ONNX Runtime crashed (signal {-proc.returncode}) loading the converted model; keep the op types it "
            "trips on in float32 with --ops (block list), e.g. --ops LayerNormalization,Softmax"
        )
    if proc.returncode:  # pragma: no cover - would be a tensorslim bug
        last = proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise InputError(f"the converted model does not load in ONNX Runtime: {last}; please report this")
