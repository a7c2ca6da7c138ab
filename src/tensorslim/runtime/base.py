"""The runtime interface shared by the ONNX Runtime and LiteRT backends."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from tensorslim.runtime.spec import TensorSpec

__all__ = ["Runtime", "TensorSpec", "open_runtime"]


class Runtime(Protocol):
    """A loaded model that can run inference."""

    path: Path | None

    @property
    def inputs(self) -> list[TensorSpec]:
        """The model's inputs."""
        ...

    @property
    def outputs(self) -> list[TensorSpec]:
        """The model's outputs."""
        ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the model on one batch; outputs in the order of :attr:`outputs`."""
        ...

    def index_bounds(self) -> dict[str, int]:
        """Sizes of the constant tables that integer inputs index (exclusive bounds for generated inputs)."""
        ...


def open_runtime(path: str | os.PathLike[str], *, threads: int = 0) -> Runtime:
    """Open ``path`` with the runtime its format needs.

    Raises:
        InputError: unknown format, or the runtime cannot load the file.
    """
    from tensorslim._files import check_input_kind
    from tensorslim.errors import InputError
    from tensorslim.runtime.ort import OrtRuntime

    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a model file; pass the .onnx, .tflite or .tslim file")
    if not p.exists():
        raise InputError(f"{p}: no such file; check the path")
    check_input_kind(p)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return OrtRuntime(p, threads=threads)
    if suffix == ".tslim":  # a packed model: unpacked in memory, weights bit-exact
        from tensorslim.pack import unpack_model

        return OrtRuntime(unpack_model(p), threads=threads)
    if suffix == ".tflite" or _has_tflite_identifier(p):
        from tensorslim.runtime.litert import LiteRTRuntime

        return LiteRTRuntime(p, threads=threads)
    raise InputError(
        f"{p}: unknown model format {suffix or '(no extension)'!r}; tensorslim reads .onnx, .tslim and .tflite files"
    )


def _has_tflite_identifier(path: Path) -> bool:
    """Whether ``path`` starts like a TFLite flatbuffer (file identifier ``TFL3`` at bytes 4..8)."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == b"TFL3"
    except OSError:
        return False
