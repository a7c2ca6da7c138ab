"""Run a reference and a candidate model on the same inputs and state how close they are.

Per output: cosine similarity per sample (mean and min), SQNR in dB, max absolute error, and, where the
output looks like class scores (``[N, C]`` floats with ``C > 1``), top-1 agreement between the two models
and, when the data carries labels, the task accuracy of each.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tensorslim.algorithms.fidelity import cosine_rows, max_abs_error, sqnr_db, top1_agreement
from tensorslim.data import (
    BatchAxes,
    Dataset,
    InputLayout,
    batch_size_for,
    generate_runnable,
    load_data,
    output_batch_axes,
)
from tensorslim.data.load import DataLike
from tensorslim.errors import InputError
from tensorslim.progress import track
from tensorslim.runtime.base import Runtime, open_runtime

__all__ = ["EvalReport", "OutputFidelity", "evaluate", "run_dataset"]


@dataclass(frozen=True)
class OutputFidelity:
    """How close one output of the candidate is to the reference."""

    name: str
    cosine_mean: float
    cosine_min: float
    sqnr_db: float
    max_abs_error: float
    top1_agreement: float | None = None
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None


@dataclass
class EvalReport:
    """Fidelity of every output, the data used and any notes."""

    reference: str
    candidate: str
    num_samples: int
    data_source: str
    outputs: list[OutputFidelity] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``inf`` SQNR is written as a string)."""
        d = asdict(self)
        for o in d["outputs"]:
            if isinstance(o["sqnr_db"], float) and not np.isfinite(o["sqnr_db"]):
                o["sqnr_db"] = str(o["sqnr_db"])
        return d

    @property
    def accuracy_drop(self) -> float | None:
        """Reference minus candidate task accuracy of the first output with labels, in points (0-100)."""
        for o in self.outputs:
            if o.reference_accuracy is not None and o.candidate_accuracy is not None:
                return 100.0 * (o.reference_accuracy - o.candidate_accuracy)
        return None


def _looks_like_scores(arr: np.ndarray) -> bool:
    return arr.ndim == 2 and arr.shape[1] > 1 and np.issubdtype(arr.dtype, np.floating)


def run_dataset(rt: Runtime, data: Dataset, batch_size: int) -> list[np.ndarray]:
    """Run ``rt`` over ``data`` in batches; each output with its samples along the first axis (moved there from
    the output's batch axis, or stacked when the model takes one sample per call without a batch axis)."""
    if not data.batch_axes:  # built by hand (samples along axis 0): take the model's layout
        data = load_data(data, rt.inputs)
    chunks: list[list[np.ndarray]] = [[] for _ in rt.outputs]
    bs = batch_size_for(rt.inputs, batch_size)
    name = os.path.basename(str(getattr(rt, "path", "") or "model"))
    lays = {k: InputLayout(k, s.shape, data.batch_axes.get(k, 0)) for k, s in ((s.name, s) for s in rt.inputs)}
    axes = output_batch_axes(lays, rt.outputs)
    for feeds, _ in track(data.batches(bs), f"running {name}", total=data.num_batches(bs)):
        for i, (spec, out) in enumerate(zip(rt.outputs, rt.run(feeds), strict=True)):
            axis = axes.get(spec.name, 0)
            if axis is None or out.ndim == 0:
                chunks[i].append(out[np.newaxis])
            else:
                chunks[i].append(np.moveaxis(out, axis, 0) if 0 < axis < out.ndim else out)
    return [np.concatenate(c, axis=0) if c else np.empty(0) for c in chunks]


def evaluate(
    reference: str | os.PathLike[str] | Runtime,
    candidate: str | os.PathLike[str] | Runtime,
    data: DataLike | None = None,
    *,
    batch_size: int = 32,
    max_samples: int | None = None,
    threads: int = 0,
    seed: int = 0,
    batch_axis: BatchAxes | None = None,
) -> EvalReport:
    """Compare ``candidate`` with ``reference`` on ``data`` (any form :func:`tensorslim.data.load_data` takes,
    or ``None`` to generate inputs from the signature; ``batch_axis`` as there).

    Raises:
        InputError: unreadable models or data, or models whose inputs or outputs do not match.
    """
    ref = reference if not isinstance(reference, str | os.PathLike) else open_runtime(reference, threads=threads)
    cand = candidate if not isinstance(candidate, str | os.PathLike) else open_runtime(candidate, threads=threads)
    ref_names = [i.name for i in ref.inputs]
    cand_names = [i.name for i in cand.inputs]
    if sorted(ref_names) != sorted(cand_names):
        raise InputError(
            f"the models take different inputs ({', '.join(ref_names)} vs {', '.join(cand_names)}); "
            "compare a model with its own optimized version"
        )
    if len(ref.outputs) != len(cand.outputs):
        raise InputError("the models have different numbers of outputs; compare a model with its optimized version")
    if data is None:
        ds = generate_runnable(
            ref, num_samples=max_samples or 16, seed=seed, bounds=ref.index_bounds(), batch_axis=batch_axis
        )
    else:
        ds = load_data(data, ref.inputs, max_samples=max_samples, batch_axis=batch_axis)
    try:
        ref_out = run_dataset(ref, ds, batch_size)
        cand_out = run_dataset(cand, ds, batch_size)
    except InputError as e:
        if not ds.generated:
            raise
        raise InputError(f"{e}; the inputs were made up: pass real ones with --data DATA.npz") from None
    report = EvalReport(
        reference=str(getattr(ref, "path", "") or "reference"),
        candidate=str(getattr(cand, "path", "") or "candidate"),
        num_samples=ds.num_samples,
        data_source=ds.source,
        notes=list(ds.notes),
    )
    for spec, a, b in zip(ref.outputs, ref_out, cand_out, strict=True):
        if a.shape != b.shape:
            raise InputError(f"output {spec.name!r} has shape {list(a.shape)} vs {list(b.shape)}; models differ")
        if not np.issubdtype(a.dtype, np.number) or a.size == 0:
            continue
        if np.issubdtype(b.dtype, np.floating) and not np.all(np.isfinite(b)):
            report.notes.append(f"{spec.name}: the candidate produced NaN or infinite values")
        n = a.shape[0] if a.ndim > 1 else 1
        cos = cosine_rows(a.reshape(n, -1), b.reshape(n, -1))
        top1 = ref_acc = cand_acc = None
        if _looks_like_scores(a):
            top1 = top1_agreement(a, b)
            if ds.labels is not None and ds.labels.shape[0] == a.shape[0]:
                from tensorslim.evaluate.metrics import class_labels

                labels = class_labels(ds.labels, ds.source)
                ref_acc = float(np.mean(np.argmax(a, axis=1) == labels))
                cand_acc = float(np.mean(np.argmax(b, axis=1) == labels))
        report.outputs.append(
            OutputFidelity(
                name=spec.name,
                cosine_mean=float(np.mean(cos)),
                cosine_min=float(np.min(cos)),
                sqnr_db=sqnr_db(a, b),
                max_abs_error=max_abs_error(a, b),
                top1_agreement=top1,
                reference_accuracy=ref_acc,
                candidate_accuracy=cand_acc,
            )
        )
    return report
