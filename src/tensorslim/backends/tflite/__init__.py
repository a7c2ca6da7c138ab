"""The TFLite backend: ``.tflite`` flatbuffers read and written through the schema that ships with
ai-edge-litert (no TensorFlow import), weight enumeration, and the dynamic-range, float16, full-integer and
4-bit (:mod:`~tensorslim.backends.tflite.int4`) passes, and pruning and clustering in place
(:mod:`~tensorslim.backends.tflite.sparsify`). The quantization maths is :mod:`tensorslim.algorithms`, shared
with the ONNX backend.
"""

from tensorslim.backends.tflite.dynamic import TfliteDynamicConfig, TfliteDynamicPass, plan_dynamic
from tensorslim.backends.tflite.fp16 import TfliteFloat16Config, TfliteFloat16Pass
from tensorslim.backends.tflite.int4 import TfliteInt4Config, TfliteInt4Pass
from tensorslim.backends.tflite.io import is_tflite, load_model, save_model, serialize
from tensorslim.backends.tflite.quantize import TfliteMode, TfliteQuantizeResult, quantize_tflite
from tensorslim.backends.tflite.sparsify import TfliteClusterPass, TflitePrunePass
from tensorslim.backends.tflite.static import TfliteStaticConfig, TfliteStaticPass, plan_static
from tensorslim.backends.tflite.weights import find_weights

__all__ = [
    "TfliteClusterPass",
    "TfliteDynamicConfig",
    "TfliteDynamicPass",
    "TfliteFloat16Config",
    "TfliteFloat16Pass",
    "TfliteInt4Config",
    "TfliteInt4Pass",
    "TfliteMode",
    "TflitePrunePass",
    "TfliteQuantizeResult",
    "TfliteStaticConfig",
    "TfliteStaticPass",
    "find_weights",
    "is_tflite",
    "load_model",
    "plan_dynamic",
    "plan_static",
    "quantize_tflite",
    "save_model",
    "serialize",
]
