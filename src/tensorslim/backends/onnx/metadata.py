"""The ``metadata_props`` keys tensorslim writes into the ONNX models it makes, defined once.

* :data:`IO_METADATA_KEY`: the scale and zero point of each integer graph input and output (static
  quantization with integer I/O writes it; :class:`~tensorslim.runtime.ort.OrtRuntime` and the benchmark's
  input generator read it to accept float data).
"""

from __future__ import annotations

__all__ = ["IO_METADATA_KEY"]

IO_METADATA_KEY = "tensorslim.io_quantization"
