"""Inputs made up from a model's input signature, when no data is given."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from tensorslim.data.dataset import Dataset
from tensorslim.data.load import BatchAxes, resolve_layouts
from tensorslim.runtime.base import TensorSpec

__all__ = ["batch_size_for", "generate_inputs", "random_input"]


def _dim(d: int | str | None, overrides: Mapping[str, int], default: int) -> int:
    if isinstance(d, int) and d > 0:
        return d
    if isinstance(d, str) and d in overrides:
        return int(overrides[d])
    return default


def random_input(
    rng: np.random.Generator, name: str, dtype: npt.DTypeLike, shape: tuple[int, ...], bound: int | None = None
) -> np.ndarray:
    """One made-up input: standard normal floats, ``True`` booleans, ones for an input named like a mask, else
    integers in ``[0, min(100, bound))`` (``bound``: the size of the table an index input gathers from, such as
    token ids, token types or positions)."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind == "b":
        return np.ones(shape, dtype=np.bool_)
    if "mask" in name.lower():
        return np.ones(shape, dtype=dt)
    high = max(1, min(100, 100 if bound is None else bound))
    return rng.integers(0, high, size=shape).astype(dt)


def generate_inputs(
    specs: Sequence[TensorSpec],
    num_samples: int = 8,
    *,
    seed: int = 0,
    dim_overrides: Mapping[str, int] | None = None,
    default_dim: int = 1,
    bounds: Mapping[str, int] | None = None,
    batch_axis: BatchAxes | None = None,
) -> Dataset:
    """Make up ``num_samples`` inputs from the signature: standard normal floats, small non-negative
    integers (ones for inputs named like a mask), ``True`` for booleans.

    Unknown dims other than the batch axis take ``dim_overrides[name]`` or ``default_dim``; integers stay below
    ``bounds[name]`` (``Runtime.index_bounds()``: the size of the table an index input gathers from). A model
    with a fixed batch of ``k > 1`` gets ``k * num_samples`` samples (``num_samples`` calls).
    """
    overrides = dict(dim_overrides or {})
    rng = np.random.default_rng(seed)
    lays = resolve_layouts(specs, batch_axis)
    fixed = {b for b in (lay.fixed_batch for lay in lays.values()) if b is not None}
    k = min(fixed) if fixed else None
    n = num_samples if k in (None, 1) else k * num_samples
    inputs: dict[str, np.ndarray] = {}
    guessed: list[str] = []
    for spec in specs:
        sample = lays[spec.name].sample_shape
        rest = tuple(_dim(d, overrides, default_dim) for d in sample)
        inputs[spec.name] = random_input(rng, spec.name, spec.dtype, (n, *rest), (bounds or {}).get(spec.name))
        if any(_dim(d, overrides, -1) == -1 for d in sample):
            guessed.append(f"{spec.name!r} as {'x'.join(map(str, rest)) or 'a scalar'} per sample")
    note = (
        "no data given: inputs were generated from the input signature (random normal floats, small "
        "integers)" + (f", with the sizes the model leaves open made {default_dim} ({'; '.join(guessed)})" if guessed
                       else "") + "; pass --data DATA.npz for a meaningful comparison"
    )  # fmt: skip
    return Dataset(
        inputs, None, generated=True, source="generated", notes=[note],
        batch_axes={k: v.batch_axis for k, v in lays.items()}, fixed_batch=k,
    )  # fmt: skip


def batch_size_for(specs: Sequence[TensorSpec], requested: int) -> int:
    """``requested``, or the model's fixed batch size when its batch axis is static (see
    :meth:`Dataset.call_size`, which every :meth:`Dataset.batches` applies anyway)."""
    lays = resolve_layouts(specs)
    fixed = {b for b in (lay.fixed_batch for lay in lays.values()) if b is not None}
    if fixed:
        return min(fixed)
    return max(1, requested)
