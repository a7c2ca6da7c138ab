"""Inputs made up from a model's input signature, when no data is given."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from tensorslim.data.dataset import Dataset
from tensorslim.data.load import BatchAxes, resolve_layouts
from tensorslim.runtime.base import TensorSpec

__all__ = [
    "MAX_TRIAL_VALUES", "OPEN_SIZES", "batch_size_for", "first_size_that_runs", "generate_inputs",
    "generate_runnable", "random_input",
]  # fmt: skip

#: The sizes made-up inputs try, in turn, for the dims a model leaves open (the batch axis aside): 1 costs least;
#: a strided net whose branches meet again (a feature pyramid's upsampled map concatenated with an earlier one,
#: a U-Net's skip connections) runs only at a multiple of its largest stride, and some nets need a minimum size.
OPEN_SIZES = (1, 32, 64, 128, 256, 320, 640)
#: A size whose made-up inputs would hold more values than this, in all, is not tried.
MAX_TRIAL_VALUES = 1 << 26

_T = TypeVar("_T")


def first_size_that_runs(
    build: Callable[[int], _T], run: Callable[[_T], object], values: Callable[[int], int],
    sizes: Sequence[int] = OPEN_SIZES,
) -> tuple[_T, int, str]:
    """The made-up inputs ``build(n)`` of the first ``n`` in ``sizes`` that ``run`` runs without raising (the open
    dims of the inputs at ``n``; ``values(n)``: how many values they hold, sizes over :data:`MAX_TRIAL_VALUES`
    are skipped), that ``n``, and the first size's error in one line when a later one was needed (``""`` else).
    When none runs: the first size's inputs, so that the caller's own run reports the failure its own way."""
    first: tuple[_T, int] | None = None
    error = ""
    for n in sizes:
        if first is not None and values(n) > MAX_TRIAL_VALUES:
            break
        made = build(n)
        try:
            run(made)
        except Exception as e:  # whatever the runtime raises: the caller's run reports it if no size runs
            if first is None:
                first = made, n
                error = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            continue
        return made, n, error
    assert first is not None, "sizes is not empty"
    return first[0], first[1], ""


def _open_dims(specs: Sequence[TensorSpec], lays: Mapping[str, Any], overrides: Mapping[str, int]) -> bool:
    return any(_dim(d, overrides, -1) == -1 for s in specs for d in lays[s.name].sample_shape)


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


def generate_runnable(
    runtime: Any,
    num_samples: int = 8,
    *,
    seed: int = 0,
    dim_overrides: Mapping[str, int] | None = None,
    bounds: Mapping[str, int] | None = None,
    batch_axis: BatchAxes | None = None,
) -> Dataset:
    """:func:`generate_inputs` for ``runtime`` (a :class:`~tensorslim.runtime.base.Runtime`): the sizes the model
    leaves open take the first of :data:`OPEN_SIZES` at which ``runtime`` runs one call of them (YOLO-style
    detectors fail at 1x1); the note says when 1 did not run and why."""
    specs = runtime.inputs
    overrides = dict(dim_overrides or {})
    lays = resolve_layouts(specs, batch_axis)

    def build(n: int) -> Dataset:
        return generate_inputs(specs, num_samples, seed=seed, dim_overrides=overrides, default_dim=n, bounds=bounds,
                               batch_axis=batch_axis)  # fmt: skip

    if not _open_dims(specs, lays, overrides):
        return build(1)

    def run(ds: Dataset) -> None:
        feeds, _ = next(iter(ds.batches(1)))
        runtime.run(feeds)

    def values(n: int) -> int:
        return sum(int(np.prod([_dim(d, overrides, n) for d in lays[s.name].sample_shape])) for s in specs)

    ds, n, error = first_size_that_runs(build, run, values)
    if error:
        ds.notes.append(f"generated inputs with the open sizes made 1 do not run ({error}); "
                        f"made {n}, the first of {', '.join(map(str, OPEN_SIZES))} that runs")  # fmt: skip
    return ds


def batch_size_for(specs: Sequence[TensorSpec], requested: int) -> int:
    """``requested``, or the model's fixed batch size when its batch axis is static (see
    :meth:`Dataset.call_size`, which every :meth:`Dataset.batches` applies anyway)."""
    lays = resolve_layouts(specs)
    fixed = {b for b in (lay.fixed_batch for lay in lays.values()) if b is not None}
    if fixed:
        return min(fixed)
    return max(1, requested)
