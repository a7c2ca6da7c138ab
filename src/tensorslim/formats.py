"""Model formats as peers: one small interface (load, weights, rewrite, save, runtime) per format.

:func:`tensorslim.quantize` asks :func:`format_of` which format a model is in and hands the job to it; each
format loads, finds weights, rewrites (its passes, chosen by the config's type), verifies in its runtime and
saves its own models, and both return a :class:`~tensorslim.api.QuantizeResult` over their model type
(``onnx.ModelProto`` or the TFLite flatbuffer object). Adding a format is one more :class:`ModelFormat`
in :data:`FORMATS`. The methods import their backend on first use.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic

import onnx

from tensorslim.passes.base import ModelT

if TYPE_CHECKING:
    from tensorslim.api import QuantizeResult

__all__ = ["FORMATS", "ModelFormat", "OnnxFormat", "TfliteFormat", "format_of"]

PathLike = str | os.PathLike[str]


class ModelFormat(ABC, Generic[ModelT]):
    """What tensorslim needs of a model format."""

    name: str = ""

    @abstractmethod
    def holds(self, model: object) -> bool:
        """Whether ``model`` (a path or an in-memory model) is in this format."""

    @abstractmethod
    def load(self, path: PathLike) -> ModelT:
        """Read a model (checked)."""

    @abstractmethod
    def save(self, model: ModelT, path: PathLike) -> Path:
        """Write a model atomically."""

    @abstractmethod
    def size(self, model: ModelT) -> int:
        """Serialized size in bytes."""

    @abstractmethod
    def weights(self, model: ModelT) -> list[Any]:
        """The model's constant weights, each with its uses."""

    @abstractmethod
    def runtime(self, model: ModelT) -> Any:
        """The model loaded in this format's runtime (ONNX Runtime, LiteRT); raises ``InputError`` if it fails."""

    @abstractmethod
    def quantize(self, model: ModelT | PathLike, output: PathLike | None, **options: Any) -> QuantizeResult[ModelT]:
        """Rewrite the model with the quantization its config names (see :func:`tensorslim.quantize`)."""


class OnnxFormat(ModelFormat[onnx.ModelProto]):
    """ONNX: ``onnx.ModelProto``, ONNX Runtime."""

    name = "onnx"

    def holds(self, model: object) -> bool:
        """Everything that is not another format's (``.onnx`` files under any name, ``ModelProto``)."""
        return True

    def load(self, path: PathLike) -> onnx.ModelProto:
        """Read and check an ONNX file (external data included)."""
        from tensorslim.backends.onnx.io import load_model

        return load_model(path)

    def save(self, model: onnx.ModelProto, path: PathLike) -> Path:
        """Write atomically (external data past 2 GB)."""
        from tensorslim.backends.onnx.io import save_model

        return save_model(model, path)

    def size(self, model: onnx.ModelProto) -> int:
        """Serialized size, external data included."""
        from tensorslim.backends.onnx.io import model_size_bytes

        return model_size_bytes(model)

    def weights(self, model: onnx.ModelProto) -> list[Any]:
        """Every constant tensor a node consumes (:func:`tensorslim.backends.onnx.find_weights`)."""
        from tensorslim.backends.onnx.weights import find_weights

        return list(find_weights(model))

    def runtime(self, model: onnx.ModelProto) -> Any:
        """An ONNX Runtime session on the CPU."""
        from tensorslim.runtime.ort import OrtRuntime

        return OrtRuntime(model)

    def quantize(
        self, model: onnx.ModelProto | PathLike, output: PathLike | None, **options: Any
    ) -> QuantizeResult[onnx.ModelProto]:
        """The mode's pipeline (:func:`tensorslim.pipeline.run_pipeline`), verified, recorded and saved."""
        from tensorslim.api.core import _quantize_onnx

        return _quantize_onnx(model, output, **options)


class TfliteFormat(ModelFormat[Any]):
    """TFLite: the flatbuffer object API's ``ModelT``, LiteRT."""

    name = "tflite"

    def holds(self, model: object) -> bool:
        """A path whose bytes are a TFLite flatbuffer."""
        from tensorslim.backends.tflite.io import is_tflite

        return isinstance(model, str | os.PathLike) and is_tflite(model)

    def load(self, path: PathLike) -> Any:
        """Read and check a ``.tflite`` file."""
        from tensorslim.backends.tflite.io import load_model

        return load_model(path)

    def save(self, model: Any, path: PathLike) -> Path:
        """Write atomically."""
        from tensorslim.backends.tflite.io import save_model

        return save_model(model, path)

    def size(self, model: Any) -> int:
        """Serialized size."""
        from tensorslim.backends.tflite.io import serialize

        return len(serialize(model))

    def weights(self, model: Any) -> list[Any]:
        """Constant weights of the main subgraph."""
        from tensorslim.backends.tflite.weights import find_weights

        return list(find_weights(model))

    def runtime(self, model: Any) -> Any:
        """A LiteRT interpreter."""
        from tensorslim.backends.tflite.io import serialize
        from tensorslim.runtime.litert import make_interpreter

        return make_interpreter(serialize(model))

    def quantize(self, model: Any, output: PathLike | None, **options: Any) -> QuantizeResult[Any]:
        """The ONNX configs mapped onto the TFLite modes (see :func:`tensorslim.quantize`)."""
        from tensorslim.api.core import _quantize_tflite

        return _quantize_tflite(model, output, **options)


#: The formats, asked in order: the first that holds a model takes it (ONNX, last, takes the rest).
FORMATS: tuple[ModelFormat[Any], ...] = (TfliteFormat(), OnnxFormat())


def format_of(model: object) -> ModelFormat[Any]:
    """The format of ``model`` (a path or an in-memory model)."""
    return next(f for f in FORMATS if f.holds(model))
