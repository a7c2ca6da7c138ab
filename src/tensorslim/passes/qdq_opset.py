"""Raise a model's opset for per-channel Q/DQ: the first step of static quantization's pipeline.

Per-channel ``DequantizeLinear`` (its ``axis`` attribute) needs opset 13. :class:`QdqOpsetPass` converts an
older model with ONNX's version converter; when the converter fails the model is handed on as it is and the
static pass, seeing an opset below 13, quantizes weights per tensor. Below opset 10 there is no
``QuantizeLinear`` at all: that is the user's model to re-export (:class:`~tensorslim.errors.InputError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnx
import onnx.version_converter

from tensorslim.backends.onnx.editor import opset_version
from tensorslim.errors import ConfigError, InputError
from tensorslim.passes.base import Pass, PassResult

__all__ = ["QDQ_MIN_OPSET", "QdqOpsetConfig", "QdqOpsetPass", "check_qdq_opset", "run"]

QDQ_MIN_OPSET = 10  # QuantizeLinear/DequantizeLinear exist from here (per tensor only)


@dataclass(frozen=True)
class QdqOpsetConfig:
    """Options of :class:`QdqOpsetPass`.

    Attributes:
        opset: the opset an older model is converted to (13: per-channel ``DequantizeLinear``).
    """

    opset: int = 13

    def __post_init__(self) -> None:
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or self.opset < 13:
            raise ConfigError(f"opset: {self.opset!r} is not an integer >= 13 (per-channel DequantizeLinear)")


def check_qdq_opset(model: onnx.ModelProto, cause: BaseException | None = None) -> None:
    """Raise :class:`InputError` when ``model``'s opset has no ``QuantizeLinear`` (below 10)."""
    if opset_version(model) < QDQ_MIN_OPSET:
        raise InputError(
            f"opset {opset_version(model)} has no QuantizeLinear; re-export the model with opset >= 13"
        ) from cause


class QdqOpsetPass(Pass):
    """Convert a model below ``config.opset`` to it (see the module docstring)."""

    name = "qdq_opset"

    def __init__(self, config: QdqOpsetConfig | None = None) -> None:
        self.config = config or QdqOpsetConfig()

    def call(self, model: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        """Convert this copy of ``model`` when its opset is older; a note says what happened."""
        before, target = opset_version(model), self.config.opset
        if before >= target:
            return PassResult(model, False, [], [])
        try:
            upgraded = onnx.version_converter.convert_version(model, target)
            onnx.checker.check_model(upgraded)
        except Exception as e:  # the converter raises several types
            check_qdq_opset(model, e)
            return PassResult(model, False, [], [
                f"opset {before} could not be raised to {target} ({type(e).__name__}): per-tensor weights"])
        return PassResult(upgraded, True, [], [f"model converted from opset {before} to {target} for per-channel QDQ"])


def run(
    model: onnx.ModelProto, config: QdqOpsetConfig, data: Any = None, target: Any = None
) -> PassResult[onnx.ModelProto]:
    """The registry's runner of ``qdq_opset``."""
    return QdqOpsetPass(config)(model)
