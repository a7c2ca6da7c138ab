"""What a runtime says about a model input or output, below both runtimes (``base`` opens them; ``ort`` and
``litert`` describe their tensors with it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TensorSpec"]


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of a model input or output; unknown dims are strings or ``None``."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    @property
    def is_float(self) -> bool:
        """Whether the tensor holds floating-point values."""
        return bool(np.issubdtype(self.dtype, np.floating))
