"""The ``quantize --mode`` table, read from :mod:`tensorslim.registry`: the modes the code accepts and their help.

``tensorslim quantize --help`` is generated from :data:`ONNX_MODES` and :data:`TFLITE_MODES`, and the ONNX
config builder (``tensorslim.commands.quantize._onnx_config``) accepts exactly the keys of :data:`ONNX_MODES`; a
test pins the TFLite names to :class:`~tensorslim.backends.tflite.quantize.TfliteMode`. Kept free of heavy
imports: the CLI builds its help from it at start-up.
"""

from __future__ import annotations

from tensorslim.registry import modes_for

__all__ = ["ONNX_MODES", "TFLITE_MODES", "mode_help"]

#: ONNX ``--mode`` -> what it does (each mode's pass kind is in :data:`tensorslim.registry.MODES`).
ONNX_MODES: dict[str, str] = modes_for("onnx")

#: ``.tflite`` ``--mode`` -> what it does (the values of ``TfliteMode``).
TFLITE_MODES: dict[str, str] = modes_for("tflite")


def mode_help() -> str:
    """The ``--mode`` help text: every ONNX mode with its description, then the ``.tflite`` modes."""
    onnx = "; ".join(f"{m}: {d}" for m, d in ONNX_MODES.items())
    tfl = "; ".join(f"{m}: {d}" for m, d in TFLITE_MODES.items())
    return f"ONNX: {onnx}. For .tflite: {tfl}."
