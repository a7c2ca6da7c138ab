"""The checked samples a command feeds a model: :class:`Dataset`.

A dataset stores each input *sample-major* (samples along axis 0, then the input's shape without its batch
axis) and remembers where the model wants its samples (:mod:`tensorslim.data.layout`): :meth:`Dataset.batches`
turns consecutive samples back into the model's layout (batch axis moved into place, one sample per call for a
scalar input or a fixed batch of 1), so every consumer feeds the model what it declares.

Samples may differ in shape (sequence length): a dataset then holds several *shape groups*, each a dict of
arrays whose samples share one shape, and :meth:`Dataset.batches` yields same-shape batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Arrays", "Dataset"]

Arrays = dict[str, np.ndarray]


def _count(group: Mapping[str, np.ndarray]) -> int:
    return int(next(iter(group.values())).shape[0]) if group else 0


@dataclass
class Dataset:
    """Model inputs (and optional labels), stored sample-major (samples along axis 0).

    Attributes:
        inputs: one array per model input: all the samples when they share one shape, else the first
            shape group (use :attr:`groups`, :meth:`batches` or :meth:`head` for every sample).
        labels: class index per sample (in the order of :attr:`groups`), when the data has them.
        generated: the inputs were made up from the signature (no real data given).
        source: where the data came from, for reports.
        notes: remarks for the user (casts, truncation, shape groups).
        extra_groups: further shape groups when samples differ in shape (e.g. sequence length).
        batch_axes: the model's batch axis of each input (``None``: the input has none, one sample per call);
            an input not listed batches along axis 0.
        fixed_batch: the model takes exactly this many samples per call (e.g. 1 for an input ``[1, 16, 96]``).
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    generated: bool = False
    source: str = ""
    notes: list[str] = field(default_factory=list)
    extra_groups: list[dict[str, np.ndarray]] = field(default_factory=list)
    batch_axes: dict[str, int | None] = field(default_factory=dict)
    fixed_batch: int | None = None

    @classmethod
    def from_groups(
        cls,
        groups: Sequence[Arrays],
        *,
        labels: np.ndarray | None = None,
        source: str = "",
        notes: Sequence[str] = (),
        batch_axes: Mapping[str, int | None] | None = None,
        fixed_batch: int | None = None,
    ) -> Dataset:
        """A dataset of one or more shape groups (each a dict of same-shape arrays, same keys in every group)."""
        first, rest = (dict(groups[0]), [dict(g) for g in groups[1:]]) if groups else ({}, [])
        return cls(
            first, labels, source=source, notes=list(notes), extra_groups=rest,
            batch_axes=dict(batch_axes or {}), fixed_batch=fixed_batch,
        )  # fmt: skip

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

    def call_size(self, batch_size: int) -> int:
        """Samples per model call for a requested ``batch_size``: the model's fixed batch when it has one,
        1 when an input has no batch axis, else ``batch_size``."""
        if any(a is None for a in self.batch_axes.values()):
            return 1
        if self.fixed_batch is not None:
            return self.fixed_batch
        return max(1, batch_size)

    def feed(self, name: str, samples: np.ndarray) -> np.ndarray:
        """Sample-major ``samples`` of input ``name`` in the model's layout (batch axis in place)."""
        axis = self.batch_axes.get(name, 0)
        if axis is None:
            return np.asarray(samples[0])
        return samples if axis == 0 else np.ascontiguousarray(np.moveaxis(samples, 0, axis))

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], slice]]:
        """Consecutive same-shape model feeds of at most ``batch_size`` samples (exactly the model's fixed batch,
        one for a scalar input), in the model's layout, with the slice of samples each one covers."""
        bs = self.call_size(batch_size)
        offset = 0
        for group in self.groups:
            n = _count(group)
            for start in range(0, n, bs):
                stop = min(start + bs, n)
                yield {k: self.feed(k, v[start:stop]) for k, v in group.items()}, slice(offset + start, offset + stop)
            offset += n

    def num_batches(self, batch_size: int) -> int:
        """How many batches :meth:`batches` yields."""
        bs = self.call_size(batch_size)
        return sum(-(-_count(g) // bs) for g in self.groups)

    def head(self, n: int) -> Dataset:
        """The first ``n`` samples (in group order) as a new dataset; ``self`` when it has no more."""
        if self.num_samples <= n:
            return self
        ds = self.window(0, n)
        ds.notes.append(f"using the first {n} samples")
        return ds

    def window(self, start: int, n: int) -> Dataset:
        """Samples ``start`` to ``start + n`` (in group order, fewer at the end) as a new dataset.

        Raises:
            ValueError: ``start`` is negative or past the last sample, or ``n`` < 1.
        """
        if not 0 <= start < self.num_samples or n < 1:
            raise ValueError(f"window: samples {start}..{start + n} of {self.num_samples}")
        groups, skip, left = [], start, n
        for g in self.groups:
            count = _count(g)
            if skip >= count:
                skip -= count
                continue
            if left <= 0:
                break
            groups.append({k: v[skip : skip + left] for k, v in g.items()})
            left -= _count(groups[-1])
            skip = 0
        labels = None if self.labels is None else self.labels[start : start + n]
        return self.like(groups, labels=labels)

    def like(self, groups: Sequence[Arrays], *, labels: np.ndarray | None = None) -> Dataset:
        """A dataset of ``groups`` with this one's layout, source, notes and ``generated`` flag."""
        ds = Dataset.from_groups(
            groups, labels=labels, source=self.source, notes=self.notes, batch_axes=self.batch_axes,
            fixed_batch=self.fixed_batch,
        )  # fmt: skip
        ds.generated = self.generated
        return ds

    def shape_summary(self) -> str:
        """``name 1x64 (10), 1x128 (5); ...``: per-sample shapes of each group and their sample counts."""
        parts = []
        for name in self.inputs or (self.extra_groups[0] if self.extra_groups else {}):
            shapes = [f"{'x'.join(map(str, g[name].shape[1:])) or 'scalar'} ({_count(g)})" for g in self.groups]
            parts.append(f"{name} {', '.join(shapes)}")
        return "; ".join(parts)
