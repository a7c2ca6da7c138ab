"""The ``quantize --mode`` table: one place for the modes the code accepts and the help text that lists them.

``tensorslim quantize --help`` is generated from :data:`ONNX_MODES` and :data:`TFLITE_MODES`, and the ONNX
config builder (``tensorslim.commands.quantize._onnx_config``) accepts exactly the keys of :data:`ONNX_MODES`; a
test pins the TFLite names to :class:`~tensorslim.backends.tflite.quantize.TfliteMode`. Kept free of heavy
imports: the CLI builds its help from it at start-up.
"""

from __future__ import annotations

__all__ = ["ONNX_MODES", "TFLITE_MODES", "mode_help"]

#: ONNX ``--mode`` -> what it does (the config it builds: DynamicQuantConfig, StaticQuantConfig,
#: BlockQuantConfig with 4 bits, BlockQuantConfig with ``--bits``, Float16Config).
ONNX_MODES: dict[str, str] = {
    "dynamic": "int8 weights with scales, no calibration data (the default)",
    "static": "int8 weights and activations calibrated on --data (QLinearConv/QGemm after fusion; "
    "--activation-bits 16 for 16-bit activations)",
    "int4": "block-wise 4-bit weights: MatMul/Gemm on int8 kernels, Conv dequantized at load, Gather on "
    "GatherBlockQuantized; GPTQ with --data",
    "blockwise": "block-wise weights with --bits 4 or 8 (8 bits: MatMulNBits for MatMul/Gemm and Gather)",
    "fp16": "float16 weights and compute, float32 inputs and outputs (--data checks for overflow)",
}

#: ``.tflite`` ``--mode`` -> what it does (the values of ``TfliteMode``).
TFLITE_MODES: dict[str, str] = {
    "dynamic": "int8 weights, hybrid kernels",
    "fp16": "float16 weights",
    "static": "int8 weights and activations, needs --data",
}


def mode_help() -> str:
    """The ``--mode`` help text: every ONNX mode with its description, then the ``.tflite`` modes."""
    onnx = "; ".join(f"{m}: {d}" for m, d in ONNX_MODES.items())
    tfl = "; ".join(f"{m}: {d}" for m, d in TFLITE_MODES.items())
    return f"ONNX: {onnx}. For .tflite: {tfl}."
