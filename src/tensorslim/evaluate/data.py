"""Evaluation and calibration data: ``.npz`` files (or a folder of them), a folder of images with a declared
preprocessing (:mod:`tensorslim.evaluate.images`), an iterable of feed dicts in the API, or inputs made up from
the input signature when no data is given.

An ``.npz`` holds one array per model input, named after the input, with samples along the first axis.
Extra arrays are allowed; an array called ``label`` (or ``labels``) holds the class of each sample and
turns on task accuracy in ``eval``.

Samples may differ in shape (sequence length): a :class:`Dataset` then holds several *shape groups*, each a
dict of arrays whose samples share one shape, and :meth:`Dataset.batches` yields same-shape batches.
Every source is checked the same way: the model's input names, dtypes and fixed dims, at least one
sample, no NaN or infinite values.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tensorslim.errors import InputError
from tensorslim.runtime.base import TensorSpec

if TYPE_CHECKING:
    from tensorslim.evaluate.images import ImagePreprocess

__all__ = ["Dataset", "from_feeds", "generate_inputs", "load_data", "load_npz", "load_npz_folder"]

LABEL_KEYS = ("label", "labels")

Arrays = dict[str, np.ndarray]


def _count(group: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(group.values())).shape[0]) if group else 0


@dataclass
class Dataset:
    """Model inputs (and optional labels), samples along the first axis.

    Attributes:
        inputs: one array per model input: all the samples when they share one shape, else the first
            shape group (use :attr:`groups`, :meth:`batches` or :meth:`head` for every sample).
        labels: class index per sample (in the order of :attr:`groups`), when the data has them.
        generated: the inputs were made up from the signature (no real data given).
        source: where the data came from, for reports.
        notes: remarks for the user (casts, truncation, shape groups).
        extra_groups: further shape groups when samples differ in shape (e.g. sequence length).
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    generated: bool = False
    source: str = ""
    notes: list[str] = field(default_factory=list)
    extra_groups: list[dict[str, np.ndarray]] = field(default_factory=list)

    @classmethod
    def from_groups(
        cls, groups: Sequence[Arrays], *, labels: np.ndarray | None = None, source: str = "", notes: Sequence[str] = ()
    ) -> Dataset:
        """A dataset of one or more shape groups (each a dict of same-shape arrays, same keys in every group)."""
        if not groups:
            return cls({}, labels, source=source, notes=list(notes))
        return cls(
            dict(groups[0]), labels, source=source, notes=list(notes), extra_groups=[dict(g) for g in groups[1:]]
        )

    @property
    def groups(self) -> list[dict[str, np.ndarray]]:
        """Every shape group; one for data whose samples share a shape."""
        return [self.inputs, *self.extra_groups] if self.inputs else list(self.extra_groups)

    @property
    def ragged(self) -> bool:
        """Whether the samples come in more than one shape."""
        return bool(self.extra_groups)

    @property
    def num_samples(self) -> int:
        """Number of samples (all groups)."""
        if not self.extra_groups:
            return _count(self.inputs)
        return sum(_count(g) for g in self.groups)

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], slice]]:
        """Consecutive same-shape batches of at most ``batch_size`` samples, with the slice each one covers."""
        offset = 0
        for group in self.groups:
            n = _count(group)
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                yield {k: v[start:stop] for k, v in group.items()}, slice(offset + start, offset + stop)
            offset += n

    def num_batches(self, batch_size: int) -> int:
        """How many batches :meth:`batches` yields."""
        return sum(-(-_count(g) // max(1, batch_size)) for g in self.groups)

    def head(self, n: int) -> Dataset:
        """The first ``n`` samples (in group order) as a new dataset; ``self`` when it has no more."""
        if self.num_samples <= n:
            return self
        groups, left = [], n
        for g in self.groups:
            if left <= 0:
                break
            groups.append({k: v[:left] for k, v in g.items()})
            left -= _count(groups[-1])
        labels = None if self.labels is None else self.labels[:n]
        ds = Dataset.from_groups(groups, labels=labels, source=self.source, notes=self.notes)
        ds.generated = self.generated
        ds.notes.append(f"using the first {n} samples")
        return ds

    def shape_summary(self) -> str:
        """``name 1x64 (10), 1x128 (5); ...``: per-sample shapes of each group and their sample counts."""
        parts = []
        for name in self.inputs or (self.extra_groups[0] if self.extra_groups else {}):
            shapes = [f"{'x'.join(map(str, g[name].shape[1:])) or 'scalar'} ({_count(g)})" for g in self.groups]
            parts.append(f"{name} {', '.join(shapes)}")
        return "; ".join(parts)


def _fixed_batch(spec: TensorSpec) -> int | None:
    if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
        return int(spec.shape[0])
    return None


def _validate(where: str, arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> tuple[Arrays, list[str]]:
    """Check ``arrays`` (samples along axis 0) against the model inputs; return the model's arrays and notes.

    Without ``specs`` (a model too large to open here) every array is kept and only counts/values are checked.
    """
    names = [s.name for s in specs] if specs else [k for k in arrays if k not in LABEL_KEYS]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(
            f"{where}: no array for model input(s) {', '.join(map(repr, missing))} (the data has "
            f"{', '.join(map(repr, arrays)) or 'no arrays'}); name each array after a model input"
        )
    if not names:
        raise InputError(f"{where}: the data holds no arrays; give one array per model input")
    counts = {n: int(np.asarray(arrays[n]).shape[0]) if np.ndim(arrays[n]) else -1 for n in names}
    if any(c < 0 for c in counts.values()):
        raise InputError(f"{where}: arrays must have samples along the first axis; got a scalar")
    if len(set(counts.values())) > 1:
        raise InputError(f"{where}: arrays have different sample counts {counts}; give each input the same count")
    by_name = {s.name: s for s in specs}
    out: Arrays = {}
    notes: list[str] = []
    for name in names:
        arr = np.asarray(arrays[name])
        if arr.shape[0] == 0:
            raise InputError(f"{where}: array {name!r} holds zero samples; give at least one sample")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise InputError(f"{where}: array {name!r} holds {bad} NaN or infinite values; clean the data")
        spec = by_name.get(name)
        if spec is not None:
            if arr.dtype != spec.dtype:
                if np.can_cast(arr.dtype, spec.dtype, casting="same_kind") or (
                    np.issubdtype(arr.dtype, np.integer) and np.issubdtype(spec.dtype, np.integer)
                ):
                    notes.append(f"{name}: cast {arr.dtype} -> {spec.dtype}")
                    arr = arr.astype(spec.dtype)
                else:
                    raise InputError(
                        f"{where}: array {name!r} is {arr.dtype} but the model input is {spec.dtype}; convert it"
                    )
            _check_shape(where, spec, arr)
        out[name] = arr
    return out, notes


def _labels_of(where: str, arrays: Mapping[str, np.ndarray], names: Sequence[str], n: int) -> np.ndarray | None:
    labels = next((np.asarray(arrays[k]) for k in LABEL_KEYS if k in arrays and k not in names), None)
    if labels is None:
        return None
    labels = labels.reshape(labels.shape[0], -1)[:, 0] if labels.ndim > 1 else labels
    if labels.shape[0] != n:
        raise InputError(f"{where}: 'label' has {labels.shape[0]} entries for {n} samples")
    return labels


def _read_npz(p: Path) -> Arrays:
    if not p.is_file():
        raise InputError(f"{p}: no such data file; check the path")
    try:
        with np.load(p, allow_pickle=False) as f:
            return {k: np.asarray(f[k]) for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise InputError(
            f"{p}: not a readable .npz file; save the data with numpy.savez(path, **{{input_name: array}})"
        ) from e


def load_npz(path: str | os.PathLike[str], specs: Sequence[TensorSpec], *, max_samples: int | None = None) -> Dataset:
    """Load ``path`` and check it against the model inputs ``specs``.

    Raises:
        InputError: missing file, not an ``.npz``, an input missing from the file, inconsistent sample
            counts, zero samples, NaN or infinite values, or per-sample shapes that contradict the model.
    """
    p = Path(path)
    arrays = _read_npz(p)
    inputs, notes = _validate(str(p), arrays, specs)
    labels = _labels_of(str(p), arrays, list(inputs), _count(inputs))
    ds = Dataset(inputs, labels, source=str(p), notes=notes)
    return ds.head(max_samples) if max_samples is not None else ds


def _group(parts: Sequence[tuple[Arrays, np.ndarray | None]]) -> tuple[list[Arrays], np.ndarray | None]:
    """Concatenate parts whose samples share a shape; groups in order of first appearance."""
    keyed: dict[tuple[Any, ...], list[int]] = {}
    for i, (arrays, _) in enumerate(parts):
        key = tuple((k, v.shape[1:], v.dtype.str) for k, v in arrays.items())
        keyed.setdefault(key, []).append(i)
    groups: list[Arrays] = []
    order: list[int] = []
    for idx in keyed.values():
        order.extend(idx)
        first = parts[idx[0]][0]
        groups.append(first if len(idx) == 1 else {k: np.concatenate([parts[i][0][k] for i in idx]) for k in first})
    all_labels = [parts[i][1] for i in order]
    present = [x for x in all_labels if x is not None]
    labels = np.concatenate(present) if present and len(present) == len(all_labels) else None
    return groups, labels


def _ragged_note(ds: Dataset) -> None:
    if ds.ragged:
        ds.notes.append(f"samples come in {len(ds.groups)} shapes, batched per shape: {ds.shape_summary()}")


def load_npz_folder(
    path: str | os.PathLike[str], specs: Sequence[TensorSpec], *, max_samples: int | None = None
) -> Dataset:
    """Every ``*.npz`` in the folder ``path`` (sorted by name), checked like :func:`load_npz`.

    Files may differ in per-sample shape (e.g. sequence length); samples of one shape form one group.
    With ``max_samples``, files past the limit are not read.

    Raises:
        InputError: the folder holds no ``.npz`` files, or a file fails the checks of :func:`load_npz`.
    """
    folder = Path(path)
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise InputError(f"{folder}: the folder holds no .npz files; give an .npz file or a folder of them")
    parts: list[tuple[Arrays, np.ndarray | None]] = []
    notes: list[str] = []
    total = 0
    for f in files:
        if max_samples is not None and total >= max_samples:
            break
        arrays = _read_npz(f)
        inputs, file_notes = _validate(str(f), arrays, specs)
        parts.append((inputs, _labels_of(str(f), arrays, list(inputs), _count(inputs))))
        notes.extend(n for n in file_notes if n not in notes)
        total += _count(inputs)
    groups, labels = _group(parts)
    ds = Dataset.from_groups(groups, labels=labels, source=str(folder), notes=notes)
    _ragged_note(ds)
    return ds.head(max_samples) if max_samples is not None else ds


def _as_batched(i: int, feed: Any, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(feed, Mapping):
        raise InputError(
            f"calibration data item {i} is a {type(feed).__name__}, not a dict; yield dicts of "
            "{input_name: numpy array}, one sample or a batch each"
        )
    ranks = {s.name: len(s.shape) for s in specs if s.shape}
    out = {}
    for k, v in feed.items():
        arr = np.asarray(v)
        # one sample (the model's rank minus the batch axis) gets a batch axis of 1
        out[str(k)] = arr[np.newaxis] if str(k) in ranks and arr.ndim == ranks[str(k)] - 1 else arr
    return out


def from_feeds(
    feeds: Iterable[Mapping[str, Any]],
    specs: Sequence[TensorSpec],
    *,
    max_samples: int | None = None,
    source: str = "iterable",
) -> Dataset:
    """Calibration data from an iterable of feed dicts ``{input_name: array}``, each one sample or a batch.

    A value whose rank is the model input's rank minus one is one sample; otherwise samples go along the
    first axis. Items are consumed only until ``max_samples`` samples are in hand (a generator is not
    drained); samples of different shapes (sequence length) form separate groups.

    Raises:
        InputError: an item is not a dict, misses a model input, holds NaN/Inf or no samples, contradicts
            the model's dtypes or fixed dims, or the iterable is empty.
    """
    if isinstance(feeds, str | bytes | os.PathLike | Mapping):
        raise InputError("from_feeds needs an iterable of feed dicts; wrap one dict in a list")
    parts: list[tuple[Arrays, np.ndarray | None]] = []
    notes: list[str] = []
    total = 0
    for i, feed in enumerate(feeds):
        arrays = _as_batched(i, feed, specs)
        where = f"calibration data item {i}"
        inputs, item_notes = _validate(where, arrays, specs)
        parts.append((inputs, _labels_of(where, arrays, list(inputs), _count(inputs))))
        notes.extend(n for n in item_notes if n not in notes)
        total += _count(inputs)
        if max_samples is not None and total >= max_samples:
            break  # the next item is never pulled from a generator
    if not parts:
        raise InputError("the calibration data is empty (the iterable yielded no feed dicts); give at least one sample")
    groups, labels = _group(parts)
    ds = Dataset.from_groups(groups, labels=labels, source=source, notes=notes)
    _ragged_note(ds)
    return ds.head(max_samples) if max_samples is not None else ds


def _image_files(folder: Path) -> list[Path]:
    from tensorslim.evaluate.images import IMAGE_SUFFIXES

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_data(
    data: str | os.PathLike[str] | Dataset | Mapping[str, Any] | Iterable[Mapping[str, Any]],
    specs: Sequence[TensorSpec],
    *,
    max_samples: int | None = None,
    images: ImagePreprocess | None = None,
) -> Dataset:
    """Any supported data source as a checked :class:`Dataset` of at most ``max_samples`` samples.

    Args:
        data: a :class:`Dataset`; an ``.npz`` file; a folder of ``.npz`` files; a folder of images (with
            ``images``); one feed dict ``{input_name: array}`` (a batch); or an iterable of feed dicts.
        specs: the model's inputs.
        max_samples: use at most this many samples.
        images: how to turn image files into the model input; required for a folder of images.

    Raises:
        InputError: the source is missing, unreadable, empty, holds NaN/Inf, or does not fit the model.
    """
    if max_samples is not None and max_samples < 1:
        raise InputError(f"max_samples must be at least 1, got {max_samples}")
    if isinstance(data, Dataset):
        return data.head(max_samples) if max_samples is not None else data
    if isinstance(data, Mapping):
        return from_feeds([data], specs, max_samples=max_samples, source="feed dict")
    if not isinstance(data, str | os.PathLike):
        return from_feeds(data, specs, max_samples=max_samples)
    path = Path(data)
    if images is not None:
        from tensorslim.evaluate.images import load_images

        return load_images(path, specs, images, max_samples=max_samples)
    if path.is_dir():
        if not any(path.glob("*.npz")) and _image_files(path):
            raise InputError(
                f"{path}: a folder of images needs a declared preprocessing: pass --image-size (and --layout, "
                "--mean, --std, --scale as the model was trained), or images=ImagePreprocess(...) in the API"
            )
        return load_npz_folder(path, specs, max_samples=max_samples)
    return load_npz(path, specs, max_samples=max_samples)


def _check_shape(p: str | Path, spec: TensorSpec, arr: np.ndarray) -> None:
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
) -> Dataset:
    """Make up ``num_samples`` inputs from the signature: standard normal floats, small non-negative
    integers (ones for inputs named like a mask), ``True`` for booleans.

    Unknown dims other than the first take ``dim_overrides[name]`` or ``default_dim``; integers stay below
    ``bounds[name]`` (``Runtime.index_bounds()``: the size of the table an index input gathers from).
    """
    overrides = dict(dim_overrides or {})
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        rest = tuple(_dim(d, overrides, default_dim) for d in spec.shape[1:])
        fixed = _fixed_batch(spec)
        n = num_samples if fixed in (None, 1) else fixed * num_samples
        inputs[spec.name] = random_input(rng, spec.name, spec.dtype, (n, *rest), (bounds or {}).get(spec.name))
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
