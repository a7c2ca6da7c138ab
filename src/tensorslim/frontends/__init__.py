"""Front ends: turn models from other frameworks into ONNX for the rest of tensorslim.

* :func:`from_torch` exports a PyTorch ``nn.Module`` (or a loaded TorchScript / ``torch.export`` program) with
  PyTorch's own TorchScript-based exporter and checks ONNX Runtime against PyTorch on the example inputs.
* :mod:`tensorslim.frontends.inputs` reads what the command line needs for such models: ``--input-shape``
  specs, TorchScript and ``torch.export`` files, Hugging Face checkpoints on disk and tokenized text data.

torch and transformers are imported lazily, only when one of these is used.
"""

from tensorslim.frontends.torch import from_torch

__all__ = ["from_torch"]
