"""One entry point for evaluation and calibration data: :func:`load_data`.

Every command and API call takes the same forms, checked the same way against the model's inputs (names,
dtypes, fixed dims, at least one sample, no NaN or infinite values):

* an ``.npz`` with one array per model input, named after it (a ``.npy`` for a model with one input);
* a folder of ``.npz`` files (one feed each, or a batch each; samples may differ in shape between files);
* a folder of images with a declared preprocessing (:mod:`tensorslim.data.images`), a text file of sentences
  (with a tokenizer, in :mod:`tensorslim.frontends.inputs`);
* in Python: a :class:`Dataset`, one feed dict, or an iterable of feed dicts (consumed up to ``max_samples``).

Each array is read by its rank against the model input (:mod:`tensorslim.data.layout`): samples along the
model's batch axis (``[N, 16, 96]`` for ``[1, 16, 96]``), a stack of per-sample feeds (``[N, 1, 16, 96]``),
``[N]`` for a scalar input, or one sample. An array named ``label`` (or ``labels``) holds the class index of
each sample and turns on task accuracy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorslim.data.dataset import Arrays, Dataset
from tensorslim.data.files import SAVE_HINT, ArrayFile
from tensorslim.data.layout import InputLayout, layouts, to_samples
from tensorslim.errors import InputError
from tensorslim.runtime.base import TensorSpec

if TYPE_CHECKING:
    from tensorslim.data.images import ImagePreprocess

__all__ = [
    "LABEL_KEYS",
    "BatchAxes",
    "DataLike",
    "from_feeds",
    "load_data",
    "load_npz",
    "load_npz_folder",
    "using_batch_axes",
]

LABEL_KEYS = ("label", "labels")

#: ``{input_name: axis or None}``: batch axes the user gave (``--batch-axis``), over what the graph says.
BatchAxes = Mapping[str, int | None]

#: Every form of data :func:`load_data` takes.
DataLike = str | os.PathLike[str] | Dataset | Mapping[str, Any] | Iterable[Mapping[str, Any]]

_BATCH_AXES: ContextVar[BatchAxes | None] = ContextVar("tensorslim_batch_axes", default=None)


@contextlib.contextmanager
def using_batch_axes(axes: BatchAxes) -> Iterator[None]:
    """Within the block, data loaded without an explicit ``batch_axis`` uses ``axes`` (the CLI's ``--batch-axis``)."""
    token = _BATCH_AXES.set(dict(axes))
    try:
        yield
    finally:
        _BATCH_AXES.reset(token)


def resolve_layouts(specs: Sequence[TensorSpec], batch_axis: BatchAxes | None = None) -> dict[str, InputLayout]:
    """The layout of every input: ``batch_axis`` (or the CLI's ``--batch-axis``) over what the shapes say."""
    return layouts(specs, _BATCH_AXES.get() if batch_axis is None else batch_axis)


def _fixed_batch(lays: Mapping[str, InputLayout]) -> int | None:
    fixed = {b for b in (lay.fixed_batch for lay in lays.values()) if b is not None}
    return min(fixed) if fixed else None


def _count(group: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(group.values())).shape[0]) if group else 0


def _validate(
    where: str, arrays: Mapping[str, Any], specs: Sequence[TensorSpec], lays: Mapping[str, InputLayout]
) -> tuple[Arrays, list[str]]:
    """The model's arrays of ``arrays``, sample-major and checked against the model inputs, with notes.

    Without ``specs`` (a model too large to open here) every array is kept with samples along axis 0.
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
    by_name = {s.name: s for s in specs}
    out: Arrays = {}
    notes: list[str] = []
    for name in names:
        lay = lays.get(name)
        if lay is not None:
            arr = to_samples(where, lay, arrays[name])
        else:
            arr = np.asarray(arrays[name])
            if arr.ndim == 0:
                raise InputError(f"{where}: array {name!r} is a scalar; give one value per sample ([N])")
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise InputError(f"{where}: array {name!r} holds {bad} NaN or infinite values; clean the data")
        spec = by_name.get(name)
        if spec is not None and arr.dtype != spec.dtype:
            if np.can_cast(arr.dtype, spec.dtype, casting="same_kind") or (
                np.issubdtype(arr.dtype, np.integer) and np.issubdtype(spec.dtype, np.integer)
            ):
                raw = np.issubdtype(arr.dtype, np.integer) and np.issubdtype(spec.dtype, np.floating)
                notes.append(f"{name}: cast {arr.dtype} -> {spec.dtype}" + (
                    " (values taken as they are: if the model expects normalized inputs, normalize the data first, "
                    "or give a folder of images with --image-size/--mean/--std)" if raw else ""))  # fmt: skip
                arr = arr.astype(spec.dtype)
            else:
                raise InputError(
                    f"{where}: array {name!r} is {arr.dtype} but the model input is {spec.dtype}; convert it"
                )
        out[name] = arr
    if specs:
        unused = [k for k in arrays if k not in by_name and k not in LABEL_KEYS]
        if unused:
            notes.append(f"array(s) {', '.join(map(repr, unused[:5]))}{' ...' if len(unused) > 5 else ''} match no "
                         f"model input (the model reads {', '.join(map(repr, names))}): not used")  # fmt: skip
    counts = {n: int(a.shape[0]) for n, a in out.items()}
    if getattr(arrays, "declared", None) is not None:  # prefixes of arrays that agree: cut to the shortest
        m = min(counts.values())
        out, counts = {k: v[:m] for k, v in out.items()}, dict.fromkeys(counts, m)
    shared = [k for k, c in counts.items() if c == 1 and k in lays and lays[k].batch_axis is None]
    others = {c for k, c in counts.items() if k not in shared}
    if shared and len(others) == 1:  # one value of an input without a batch axis (a scalar sample rate): every
        n = others.pop()  # sample shares it (a read-only view, no copies)
        for k in shared:
            out[k] = np.broadcast_to(out[k], (n, *out[k].shape[1:]))
            counts[k] = n
        notes.append(f"{', '.join(map(repr, shared))}: no batch axis in the model and one value given: every sample "
                     f"shares it")  # fmt: skip
    if len(set(counts.values())) > 1:
        axes = ", ".join(f"{k} {lays[k].batch_axis}" for k in out if k in lays)
        raise InputError(
            f"{where}: the arrays hold different sample counts {counts} (batch axes read from the model: {axes}); "
            "give each input the same number of samples, or name an input's batch axis with --batch-axis NAME=AXIS"
        )
    if next(iter(counts.values())) == 0:
        raise InputError(f"{where}: the data holds zero samples; give at least one sample")
    return out, notes


def _labels_of(where: str, arrays: Mapping[str, Any], names: Sequence[str], n: int) -> np.ndarray | None:
    key = next((k for k in LABEL_KEYS if k in arrays and k not in names), None)
    if key is None:
        return None
    labels = np.asarray(arrays[key])
    labels = labels.reshape(labels.shape[0], -1)[:, 0] if labels.ndim > 1 else labels.reshape(-1)
    if labels.shape[0] != n:
        raise InputError(f"{where}: {key!r} has {labels.shape[0]} entries for {n} samples; give one label per sample")
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_:
        return labels.astype(np.int64)
    whole = (
        np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and np.all(labels == np.rint(labels))
    )
    if not whole:
        raise InputError(
            f"{where}: {key!r} holds {labels.dtype} values that are not class indices; labels are the class "
            "number of each sample: save them as integers (e.g. label=numpy.asarray(y, numpy.int64))"
        )
    return labels.astype(np.int64)


def _declared_samples(lay: InputLayout, shape: tuple[int, ...]) -> int | None:
    """How many samples an array of ``shape`` holds for ``lay`` (``None``: a rank no form takes)."""
    r, b = len(lay.shape), lay.batch_axis
    if len(shape) == r - 1 or (b is None and len(shape) == r):
        return 1
    if len(shape) == r + 1:
        return shape[0] if b is None else shape[0] * shape[b + 1]
    return shape[b] if len(shape) == r and b is not None else None


def _prefix_rows(lay: InputLayout, shape: tuple[int, ...], max_samples: int) -> int | None:
    """Rows along axis 0 that hold the first ``max_samples`` samples, when they are a prefix of the array."""
    r, b = len(lay.shape), lay.batch_axis
    if len(shape) == r + 1:
        per = 1 if b is None else shape[b + 1]
        return -(-max_samples // per) if per > 0 else None
    return max_samples if len(shape) == r and b == 0 else None


class _LazyArrays(Mapping[str, Any]):
    """The arrays of an :class:`ArrayFile`, each read on first access (unused arrays are never read).

    With ``max_samples``, an input whose samples run along axis 0 is read only up to the rows that hold them
    (when every input declares the same sample count; else all is read and the mismatch reported).
    """

    def __init__(
        self, f: ArrayFile, names: Mapping[str, str], lays: Mapping[str, InputLayout], max_samples: int | None
    ) -> None:
        self._f, self._names = f, names
        self._cache: dict[str, np.ndarray] = {}
        self._rows: dict[str, int | None] = {}
        self.declared: int | None = None  # the sample count every input declares, when they are prefix-read
        inputs = [k for k in names if k in lays]
        if max_samples is None or not inputs or len(inputs) != len(lays):
            return
        headers = {k: f.header(names[k]) for k in inputs}
        counts = {_declared_samples(lays[k], h[0]) for k, h in headers.items()}
        if len(counts) != 1 or None in counts:
            return
        self.declared = counts.pop()
        self._rows = {k: _prefix_rows(lays[k], h[0], max_samples) for k, h in headers.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = self._f.read(self._names[key], self._rows.get(key))
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _read_file(
    p: Path, specs: Sequence[TensorSpec], lays: Mapping[str, InputLayout], max_samples: int | None = None
) -> tuple[Arrays, np.ndarray | None, list[str], bool]:
    """The model's arrays (and labels) of one ``.npz``/``.npy``, reading only the arrays (and, with
    ``max_samples``, the rows) it uses; and whether the file holds more samples than were read."""
    from tensorslim._files import check_input_kind

    check_input_kind(p)  # a FIFO named like an .npz would block the read
    with ArrayFile(p) as f:
        if f.is_npy:
            if len(specs) != 1:
                listed = ", ".join(s.name for s in specs) or "several inputs"
                raise InputError(
                    f"{p}: a .npy holds one array but the model takes {len(specs) or 'unknown'} inputs ({listed}); "
                    f"{SAVE_HINT}"
                )
            arrays = _LazyArrays(f, {specs[0].name: ""}, lays, max_samples)
        else:
            arrays = _LazyArrays(f, {n: n for n in f.names}, lays, max_samples)
        inputs, notes = _validate(str(p), arrays, specs, lays)
        n = _count(inputs)
        declared = arrays.declared if arrays.declared is not None and arrays.declared > n else None
        labels = _labels_of(str(p), arrays, list(inputs), declared or n)
    return inputs, None if labels is None else labels[:n], notes, bool(declared)


def _finish(
    parts: Sequence[tuple[Arrays, np.ndarray | None]], notes: list[str], source: str,
    lays: Mapping[str, InputLayout], max_samples: int | None, cut: bool = False,
) -> Dataset:  # fmt: skip
    groups, labels = _group(parts)
    ds = Dataset.from_groups(
        groups, labels=labels, source=source, notes=notes, batch_axes={k: v.batch_axis for k, v in lays.items()},
        fixed_batch=_fixed_batch(lays),
    )  # fmt: skip
    if ds.ragged:
        ds.notes.append(f"samples come in {len(ds.groups)} shapes, batched per shape: {ds.shape_summary()}")
    ds = ds.head(max_samples) if max_samples is not None else ds
    if cut and not any(n.startswith("using the first") for n in ds.notes):
        ds.notes.append(f"using the first {ds.num_samples} samples")
    k = ds.fixed_batch or 1
    if k > 1 and any(_count(g) % k for g in ds.groups):
        if ds.ragged or ds.num_samples < k:
            raise InputError(
                f"{source}: the model takes exactly {k} samples per call; give a multiple of {k} samples "
                f"(got {ds.num_samples})"
            )
        dropped = ds.num_samples % k
        ds = ds.head(ds.num_samples - dropped)
        ds.notes.append(f"the model takes {k} samples per call: the last {dropped} sample(s) left out")
    return ds


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


def load_npz(
    path: str | os.PathLike[str],
    specs: Sequence[TensorSpec],
    *,
    max_samples: int | None = None,
    batch_axis: BatchAxes | None = None,
) -> Dataset:
    """An ``.npz`` (or ``.npy``, or a folder of ``.npz``) checked against the model inputs ``specs``.

    Raises:
        InputError: missing file, not an ``.npz``, an input missing from the file, inconsistent sample
            counts, zero samples, NaN or infinite values, or shapes that fit none of the accepted forms.
    """
    p = Path(path)
    if p.is_dir():
        return load_npz_folder(p, specs, max_samples=max_samples, batch_axis=batch_axis)
    lays = resolve_layouts(specs, batch_axis)
    inputs, labels, notes, cut = _read_file(p, specs, lays, max_samples)
    return _finish([(inputs, labels)], notes, str(p), lays, max_samples, cut)


def load_npz_folder(
    path: str | os.PathLike[str],
    specs: Sequence[TensorSpec],
    *,
    max_samples: int | None = None,
    batch_axis: BatchAxes | None = None,
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
    lays = resolve_layouts(specs, batch_axis)
    parts: list[tuple[Arrays, np.ndarray | None]] = []
    notes: list[str] = []
    total, cut = 0, False
    for f in files:
        if max_samples is not None and total >= max_samples:
            cut = True  # files past the limit are not read
            break
        left = None if max_samples is None else max_samples - total
        inputs, labels, file_notes, file_cut = _read_file(f, specs, lays, left)
        cut = cut or file_cut
        parts.append((inputs, labels))
        notes.extend(n for n in file_notes if n not in notes)
        total += _count(inputs)
    return _finish(parts, notes, str(folder), lays, max_samples, cut)


def from_feeds(
    feeds: Iterable[Mapping[str, Any]],
    specs: Sequence[TensorSpec],
    *,
    max_samples: int | None = None,
    source: str = "iterable",
    batch_axis: BatchAxes | None = None,
) -> Dataset:
    """Data from an iterable of feed dicts ``{input_name: array}``, each one sample, one feed or a batch.

    Each value is read by its rank (:mod:`tensorslim.data.layout`). Items are consumed only until
    ``max_samples`` samples are in hand (a generator is not drained); samples of different shapes (sequence
    length) form separate groups.

    Raises:
        InputError: an item is not a dict, misses a model input, holds NaN/Inf or no samples, contradicts
            the model's dtypes or fixed dims, or the iterable is empty.
    """
    if isinstance(feeds, str | bytes | os.PathLike | Mapping):
        raise InputError("from_feeds needs an iterable of feed dicts; wrap one dict in a list")
    if not isinstance(feeds, Iterable):
        raise InputError(
            f"data is a {type(feeds).__name__}; give a path (.npz, a folder of .npz or of images), a Dataset, "
            "a feed dict {input_name: array} or an iterable of them"
        )
    lays = resolve_layouts(specs, batch_axis)
    parts: list[tuple[Arrays, np.ndarray | None]] = []
    notes: list[str] = []
    total = 0
    for i, feed in enumerate(feeds):
        where = f"calibration data item {i}"
        if not isinstance(feed, Mapping):
            raise InputError(
                f"{where} is a {type(feed).__name__}, not a dict; yield dicts of {{input_name: numpy array}}, "
                "one sample or a batch each"
            )
        arrays = {str(k): v for k, v in feed.items()}
        inputs, item_notes = _validate(where, arrays, specs, lays)
        parts.append((inputs, _labels_of(where, arrays, list(inputs), _count(inputs))))
        notes.extend(n for n in item_notes if n not in notes)
        total += _count(inputs)
        if max_samples is not None and total >= max_samples:
            break  # the next item is never pulled from a generator
    if not parts:
        raise InputError("the calibration data is empty (the iterable yielded no feed dicts); give at least one sample")
    return _finish(parts, notes, source, lays, max_samples)


def _image_files(folder: Path) -> list[Path]:
    from tensorslim.data.images import image_files

    return image_files(folder)


def load_data(
    data: DataLike,
    specs: Sequence[TensorSpec],
    *,
    max_samples: int | None = None,
    images: ImagePreprocess | None = None,
    batch_axis: BatchAxes | None = None,
) -> Dataset:
    """Any supported data source as a checked :class:`Dataset` of at most ``max_samples`` samples.

    Args:
        data: a :class:`Dataset`; an ``.npz`` or ``.npy`` file; a folder of ``.npz`` files; a folder of images
            (with ``images``); one feed dict ``{input_name: array}``; or an iterable of feed dicts.
        specs: the model's inputs.
        max_samples: use at most this many samples.
        images: how to turn image files into the model input; required for a folder of images.
        batch_axis: ``{input_name: axis}`` for inputs whose batch axis the shapes do not tell
            (``None`` for an input without one); the CLI's ``--batch-axis``.

    Raises:
        InputError: the source is missing, unreadable, empty, holds NaN/Inf, or does not fit the model.
    """
    if max_samples is not None and max_samples < 1:
        raise InputError(f"max_samples must be at least 1, got {max_samples}")
    if isinstance(data, Dataset):
        if specs and (not data.batch_axes or batch_axis is not None):  # samples along axis 0: add the model's layout
            lays = resolve_layouts(specs, batch_axis)
            axes, fixed = {k: v.batch_axis for k, v in lays.items()}, _fixed_batch(lays)
            if any(a != 0 for a in axes.values()) or fixed is not None:
                data = dataclasses.replace(data, batch_axes=axes, fixed_batch=fixed)
        return data.head(max_samples) if max_samples is not None else data
    if isinstance(data, Mapping):
        return from_feeds([data], specs, max_samples=max_samples, source="feed dict", batch_axis=batch_axis)
    if not isinstance(data, str | os.PathLike):
        return from_feeds(data, specs, max_samples=max_samples, batch_axis=batch_axis)
    path = Path(data)
    if images is not None:
        from tensorslim.data.images import load_images

        return load_images(path, specs, images, max_samples=max_samples)
    if path.is_dir() and not any(path.glob("*.npz")) and _image_files(path):
        raise InputError(
            f"{path}: a folder of images needs a declared preprocessing: pass --image-size (and --layout, "
            "--mean, --std, --scale as the model was trained), or images=ImagePreprocess(...) in the API"
        )
    return load_npz(path, specs, max_samples=max_samples, batch_axis=batch_axis)
