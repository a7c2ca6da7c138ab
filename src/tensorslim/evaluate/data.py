"""Evaluation and calibration data: ``.npz`` files named after model inputs, or inputs made up from the
input signature when no data is given.

An ``.npz`` holds one array per model input, named after the input, with samples along the first axis.
Extra arrays are allowed; an array called ``label`` (or ``labels``) holds the class of each sample and
turns on task accuracy in ``eval``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tensorslim.errors import InputError
from tensorslim.runtime.base import TensorSpec

__all__ = ["Dataset", "generate_inputs", "load_npz"]

LABEL_KEYS = ("label", "labels")


@dataclass
class Dataset:
    """Model inputs (and optional labels), samples along the first axis.

    Attributes:
        inputs: one array per model input.
        labels: class index per sample, when the data has them.
        generated: the inputs were made up from the signature (no real data given).
        source: where the data came from, for reports.
        notes: remarks for the user (casts, truncation).
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    generated: bool = False
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def num_samples(self) -> int:
        """Number of samples."""
        return int(next(iter(self.inputs.values())).shape[0]) if self.inputs else 0

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], slice]]:
        """Consecutive batches of at most ``batch_size`` samples, with the slice each one covers."""
        n = self.num_samples
        for start in range(0, n, batch_size):
            sl = slice(start, min(start + batch_size, n))
            yield {k: v[sl] for k, v in self.inputs.items()}, sl


def _fixed_batch(spec: TensorSpec) -> int | None:
    if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
        return int(spec.shape[0])
    return None


def load_npz(path: str | os.PathLike[str], specs: Sequence[TensorSpec], *, max_samples: int | None = None) -> Dataset:
    """Load ``path`` and check it against the model inputs ``specs``.

    Raises:
        InputError: missing file, not an ``.npz``, an input missing from the file, inconsistent sample
            counts, zero samples, NaN or infinite values, or per-sample shapes that contradict the model.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such data file; check the path")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise InputError(
            f"{p}: not a readable .npz file; save the data with numpy.savez(path, **{{input_name: array}})"
        ) from e
    names = [s.name for s in specs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(
            f"{p}: no array for model input(s) {', '.join(map(repr, missing))} (the file has "
            f"{', '.join(map(repr, arrays)) or 'no arrays'}); name each array after a model input"
        )
    inputs: dict[str, np.ndarray] = {}
    notes: list[str] = []
    counts = {n: int(arrays[n].shape[0]) if arrays[n].ndim else -1 for n in names}
    if any(c < 0 for c in counts.values()):
        raise InputError(f"{p}: arrays must have samples along the first axis; got a scalar")
    if len(set(counts.values())) > 1:
        raise InputError(f"{p}: arrays have different sample counts {counts}; give each input the same count")
    for spec in specs:
        arr = arrays[spec.name]
        if arr.shape[0] == 0:
            raise InputError(f"{p}: array {spec.name!r} holds zero samples; give at least one sample")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise InputError(f"{p}: array {spec.name!r} holds {bad} NaN or infinite values; clean the data")
        if arr.dtype != spec.dtype:
            if np.can_cast(arr.dtype, spec.dtype, casting="same_kind") or (
                np.issubdtype(arr.dtype, np.integer) and np.issubdtype(spec.dtype, np.integer)
            ):
                notes.append(f"{spec.name}: cast {arr.dtype} -> {spec.dtype}")
                arr = arr.astype(spec.dtype)
            else:
                raise InputError(
                    f"{p}: array {spec.name!r} is {arr.dtype} but the model input is {spec.dtype}; convert it"
                )
        _check_shape(p, spec, arr)
        inputs[spec.name] = arr
    labels = next((arrays[k] for k in LABEL_KEYS if k in arrays and k not in names), None)
    if labels is not None:
        labels = np.asarray(labels).reshape(labels.shape[0], -1)[:, 0] if labels.ndim > 1 else labels
        if labels.shape[0] != next(iter(counts.values())):
            raise InputError(f"{p}: 'label' has {labels.shape[0]} entries for {next(iter(counts.values()))} samples")
    ds = Dataset(inputs, labels, source=str(p), notes=notes)
    if max_samples is not None and ds.num_samples > max_samples:
        ds.inputs = {k: v[:max_samples] for k, v in ds.inputs.items()}
        ds.labels = ds.labels[:max_samples] if ds.labels is not None else None
        ds.notes.append(f"using the first {max_samples} samples")
    return ds


def _check_shape(p: Path, spec: TensorSpec, arr: np.ndarray) -> None:
    model_rank = len(spec.shape)
    if model_rank and arr.ndim != model_rank:
        raise InputError(
            f"{p}: array {spec.name!r} has shape {list(arr.shape)} but the model input {spec.name!r} has rank "
            f"{model_rank} {list(spec.shape)}; samples go along the first axis"
        )
    for axis, (want, got) in enumerate(zip(spec.shape[1:], arr.shape[1:], strict=False), start=1):
        if isinstance(want, int) and want > 0 and want != got:
            raise InputError(
                f"{p}: array {spec.name!r} has size {got} on axis {axis}, the model input wants {want} "
                f"(model shape {list(spec.shape)})"
            )


def _dim(d: int | str | None, overrides: Mapping[str, int], default: int) -> int:
    if isinstance(d, int) and d > 0:
        return d
    if isinstance(d, str) and d in overrides:
        return int(overrides[d])
    return default


def generate_inputs(
    specs: Sequence[TensorSpec],
    num_samples: int = 8,
    *,
    seed: int = 0,
    dim_overrides: Mapping[str, int] | None = None,
    default_dim: int = 1,
) -> Dataset:
    """Make up ``num_samples`` inputs from the signature: standard normal floats, small non-negative
    integers (ones for inputs named like a mask), ``True`` for booleans.

    Unknown dims other than the first take ``dim_overrides[name]`` or ``default_dim``.
    """
    overrides = dict(dim_overrides or {})
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        rest = tuple(_dim(d, overrides, default_dim) for d in spec.shape[1:])
        fixed = _fixed_batch(spec)
        n = num_samples if fixed in (None, 1) else fixed * num_samples
        shape = (n, *rest)
        if spec.is_float:
            arr: np.ndarray = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            arr = np.ones(shape, dtype=np.bool_)
        elif "mask" in spec.name.lower():
            arr = np.ones(shape, dtype=spec.dtype)
        else:
            arr = rng.integers(0, 100, size=shape).astype(spec.dtype)
        inputs[spec.name] = arr
    note = (
        "no data given: inputs were generated from the input signature (random normal floats, small "
        "integers); pass --data DATA.npz for a meaningful comparison"
    )
    return Dataset(inputs, None, generated=True, source="generated", notes=[note])


def batch_size_for(specs: Sequence[TensorSpec], requested: int) -> int:
    """``requested``, or the model's fixed batch size when the first dimension is static."""
    fixed = {b for b in (_fixed_batch(s) for s in specs) if b is not None}
    if fixed:
        return min(fixed)
    return max(1, requested)
