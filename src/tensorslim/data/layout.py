"""Where each model input keeps its samples, and turning user arrays into samples.

Every input gets a *batch axis* from its declared shape (or from the user: ``--batch-axis name=1``,
``batch_axis={"name": 1}``):

* a scalar input (shape ``[]``) has none: one sample per call;
* an input whose first dim is dynamic (``[batch, 128]``, ``[None, 3, 224, 224]``) batches along axis 0;
* an input whose first dim is fixed looks for a named dim it shares with other inputs' batch dims
  (``[2, batch, 128]`` beside ``x: [batch, 16]`` -> axis 1), then, if its first dim is not 1, for its only
  dynamic dim (``[2, N, 128]`` -> axis 1); beside inputs with a fixed batch of 1 (a model exported for one
  sample: ``ids [1, 16]``), a fully fixed input whose first dim is not 1 batches along its only dim of size 1
  (the state ``[2, 1, 128]`` of a two-layer LSTM -> axis 1); else axis 0 with a fixed batch (``[1, 16, 96]``:
  one sample a call).

An array for an input of rank ``r`` with batch axis ``b`` is read by its rank, which makes every form
unambiguous::

    rank r      samples along axis b             [N, 16, 96] for [1, 16, 96]; [2, N, 128] for [2, batch, 128]
    rank r + 1  a stack of per-call feeds        [N, 1, 16, 96];  [N, 2, 1, 128]; [N] for a scalar input
    rank r - 1  one sample without a batch axis  [16, 96];         [2, 128]

and stored *sample-major*: samples along axis 0, then the input's shape without its batch axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tensorslim.errors import InputError
from tensorslim.runtime.base import TensorSpec

__all__ = ["InputLayout", "layouts", "output_batch_axes", "parse_batch_axes", "to_samples"]

Dim = int | str | None


def _fixed(d: Dim) -> bool:
    return isinstance(d, int) and d > 0


def _dim_text(d: Dim) -> str:
    return str(d) if _fixed(d) else (d if isinstance(d, str) and d else "?")


@dataclass(frozen=True)
class InputLayout:
    """A model input's declared shape and the axis its samples go along (``None``: no batch axis)."""

    name: str
    shape: tuple[Dim, ...]
    batch_axis: int | None

    @property
    def fixed_batch(self) -> int | None:
        """The fixed size of the batch axis (e.g. 1 for ``[1, 16, 96]``), else ``None``."""
        if self.batch_axis is None:
            return None
        d = self.shape[self.batch_axis]
        return int(d) if isinstance(d, int) and d > 0 else None

    @property
    def sample_shape(self) -> tuple[Dim, ...]:
        """The declared shape without the batch axis."""
        if self.batch_axis is None:
            return self.shape
        return self.shape[: self.batch_axis] + self.shape[self.batch_axis + 1 :]

    def accepted(self) -> str:
        """The array shapes this input takes, for messages."""
        dims = [_dim_text(d) for d in self.shape]
        per = [_dim_text(d) for d in self.sample_shape]
        if self.batch_axis is None:
            return f"[{', '.join(['N', *dims])}] (N samples) or [{', '.join(dims)}] (one sample)"
        along = [*dims]
        along[self.batch_axis] = "N"
        return (
            f"[{', '.join(along)}] (N samples along axis {self.batch_axis}), [{', '.join(['N', *dims])}] "
            f"(a stack of N feeds) or [{', '.join(per)}] (one sample)"
        )


def parse_batch_axes(items: Sequence[str] | None) -> dict[str, int | None]:
    """``["state=1", "sr=none"]`` -> ``{"state": 1, "sr": None}``.

    Raises:
        InputError: an item is not ``name=axis``.
    """
    out: dict[str, int | None] = {}
    for item in items or ():
        for part in item.split(","):
            name, sep, axis = part.strip().rpartition("=")
            a = axis.strip().lower()
            if not sep or not name.strip() or not (a.isdigit() or a == "none"):
                raise InputError(f"--batch-axis: {part!r} is not NAME=AXIS, e.g. --batch-axis state=1 (or state=none)")
            out[name.strip()] = None if a == "none" else int(a)
    return out


def layouts(specs: Sequence[TensorSpec], overrides: Mapping[str, int | None] | None = None) -> dict[str, InputLayout]:
    """The batch axis of every input in ``specs`` (see the module docstring); ``overrides`` win.

    Raises:
        InputError: an override names no model input or an axis outside the input's rank.
    """
    overrides = dict(overrides or {})
    names = [s.name for s in specs]
    unknown = [n for n in overrides if n not in names]
    if unknown and specs:
        raise InputError(
            f"--batch-axis: {', '.join(map(repr, unknown))} is not a model input (inputs: {', '.join(names)})"
        )
    given: set[Dim] = {
        s.shape[a] for s in specs if isinstance(a := overrides.get(s.name), int) and a < len(s.shape)
        and isinstance(s.shape[a], str)
    }  # fmt: skip
    free = [s for s in specs if s.name not in overrides]
    # named dims at other axes of inputs that batch along axis 0: sequence lengths, not batches
    other_syms: set[Dim] = {
        d for s in free if s.shape and not _fixed(s.shape[0]) for d in s.shape[1:] if isinstance(d, str)
    }
    other_syms -= given
    batch_syms: set[Dim] = {s.shape[0] for s in free if s.shape and isinstance(s.shape[0], str) and s.shape[0]}
    batch_syms = (batch_syms - other_syms) | given
    # a model exported for one sample: some input has a fixed batch of 1 on axis 0
    single = any(s.shape and s.shape[0] == 1 for s in free)
    out: dict[str, InputLayout] = {}
    for s in specs:
        shape = tuple(s.shape)
        if s.name in overrides:
            axis = overrides[s.name]
            if axis is not None and axis >= len(shape):
                raise InputError(
                    f"--batch-axis {s.name}={axis}: input {s.name!r} has shape {list(shape)} (rank {len(shape)}); "
                    f"give an axis from 0 to {len(shape) - 1}, or none"
                )
        else:
            axis = _detect(shape, batch_syms, other_syms, single)
        out[s.name] = InputLayout(s.name, shape, axis)
    return out


def _detect(shape: tuple[Dim, ...], batch_syms: set[Dim], other_syms: set[Dim], single: bool) -> int | None:
    if not shape:
        return None
    if not _fixed(shape[0]):
        return 0
    shared = [i for i, d in enumerate(shape) if isinstance(d, str) and d in batch_syms]
    if shared:
        return shared[0]
    dynamic = [i for i, d in enumerate(shape) if not _fixed(d)]
    if shape[0] != 1 and len(dynamic) == 1 and shape[dynamic[0]] not in other_syms:
        return dynamic[0]
    ones = [i for i, d in enumerate(shape) if d == 1]
    if single and shape[0] != 1 and not dynamic and len(ones) == 1:
        return ones[0]  # [2, 1, 128] beside [1, 16]: the batch of 1 is on axis 1
    return 0


def to_samples(where: str, layout: InputLayout, value: object) -> np.ndarray:
    """``value`` for the input ``layout`` as a sample-major array (samples along axis 0), read by its rank.

    Raises:
        InputError: a rank or fixed dim that fits none of the forms; the message lists the accepted shapes.
    """
    arr = np.asarray(value)
    r, b = len(layout.shape), layout.batch_axis

    def refuse(why: str) -> InputError:
        return InputError(
            f"{where}: array {layout.name!r} has shape {list(arr.shape)}{why}, but model input {layout.name!r} is "
            f"[{', '.join(_dim_text(d) for d in layout.shape)}] (rank r = {r}); give {layout.accepted()}"
        )

    if b is None:
        if arr.ndim == r:
            out = arr[np.newaxis]
        elif arr.ndim == r + 1:
            out = arr
        else:
            raise refuse(f" (rank {arr.ndim})")
    elif arr.ndim == r:
        out = np.moveaxis(arr, b, 0)
    elif arr.ndim == r + 1:
        per_feed = np.moveaxis(arr, b + 1, 1)
        out = per_feed.reshape(-1, *per_feed.shape[2:])
        fb = layout.fixed_batch
        if fb is not None and per_feed.shape[1] != fb:
            raise refuse(f" (a stack of feeds with batch {per_feed.shape[1]})")
    elif arr.ndim == r - 1:
        out = arr[np.newaxis]
    else:
        raise refuse(f" (rank {arr.ndim})")
    for i, (want, got) in enumerate(zip(layout.sample_shape, out.shape[1:], strict=True)):
        if _fixed(want) and want != got:
            # the axis of the user's array: model axis (a), one more for a stack (b), i for one sample
            model_axis = i if b is None or i < b else i + 1
            axis = model_axis + (arr.ndim - r) if arr.ndim >= r else i
            read = {r: "", r + 1: "rank r + 1, read as a stack of feeds: "}.get(
                arr.ndim, "rank r - 1, read as one sample: "
            )
            raise refuse(f" ({read}size {got} on axis {axis} where the model wants {want})")
    return out


def output_batch_axes(inputs: Mapping[str, InputLayout], outputs: Sequence[TensorSpec]) -> dict[str, int | None]:
    """Where each output keeps the samples of a call: the axis of a named dim shared with an input's batch
    axis, else 0; ``None`` (one sample per call, no batch axis) when no input has a batch axis."""
    if inputs and all(lay.batch_axis is None for lay in inputs.values()):
        return {o.name: None for o in outputs}
    syms = {
        lay.shape[lay.batch_axis] for lay in inputs.values()
        if lay.batch_axis is not None and isinstance(lay.shape[lay.batch_axis], str)
    }  # fmt: skip
    out: dict[str, int | None] = {}
    for o in outputs:
        shared = [i for i, d in enumerate(o.shape) if isinstance(d, str) and d in syms]
        out[o.name] = shared[0] if shared else 0
    return out
