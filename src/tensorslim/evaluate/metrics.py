"""Task metrics for the accuracy-aware search: one score per model on one data set, and the accuracy budget.

Built-in metrics (all higher is better, scores in the unit of :mod:`tensorslim.algorithms.fidelity`):

* ``top1``: task accuracy (fraction 0-1) of the first output that looks like class scores; needs labels;
* ``cosine``: mean per-sample cosine of every float output against the float model's outputs;
* ``sqnr``: SQNR in dB of every float output against the float model's outputs (the lowest one);
* ``embedding-cosine``: the first rank-3 output ``[N, tokens, hidden]`` mean-pooled over the tokens the
  ``attention_mask`` input keeps, then the mean per-sample cosine against the float model;
* ``python:module:function``: a user function ``fn(session_outputs, batch) -> float`` called per batch
  (``session_outputs``: the model's outputs for that batch, in output order; ``batch``: the input arrays, plus
  ``label`` when the data has labels), averaged over batches weighted by batch size.

The budget: ``--max-drop 1%`` (or ``0.01``) means ``score(candidate) >= score(float) - 0.01``: top-1 points
(0.99 -> 0.98) or cosine (1.0 -> 0.99).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tensorslim.algorithms.fidelity import cosine_rows, sqnr_db
from tensorslim.data import Dataset
from tensorslim.errors import InputError

__all__ = ["BUILTIN_METRICS", "Metric", "parse_max_drop", "resolve_metric"]

BUILTIN_METRICS = ("top1", "cosine", "sqnr", "embedding-cosine")
_MASK_NAMES = ("attention_mask", "mask", "input_mask")


@dataclass(frozen=True)
class Metric:
    """A named score of a model's outputs on a data set.

    Attributes:
        name: The spec it was resolved from (``top1``, ``cosine``, ``python:pkg.mod:fn``, ...).
        higher_is_better: Always true for the built-in metrics.
        needs_reference: Whether :meth:`score` compares with the float model's outputs.
        batch_size: Samples per call of a user function.
    """

    name: str
    higher_is_better: bool = True
    needs_reference: bool = True
    batch_size: int = 64

    def score(self, outputs: Sequence[np.ndarray], dataset: Dataset, reference: Sequence[np.ndarray] | None) -> float:
        """Score of ``outputs`` (one array per model output, all samples) on ``dataset``.

        Args:
            outputs: The candidate's outputs, concatenated over the data set.
            dataset: The inputs (and labels) the outputs were computed on.
            reference: The float model's outputs on the same data (for fidelity metrics).

        Raises:
            InputError: the metric cannot be computed on these outputs or data (the message says why).
        """
        if self.name == "top1":
            return _top1(outputs, dataset)
        if self.name in ("cosine", "sqnr", "embedding-cosine"):
            if reference is None:
                raise InputError(f"metric {self.name} compares with the float model's outputs; none were given")
            if self.name == "cosine":
                return _cosine(outputs, reference)
            if self.name == "sqnr":
                return _sqnr(outputs, reference)
            return _embedding_cosine(outputs, reference, dataset)
        return _python_metric(self.name, outputs, dataset, self.batch_size)

    def threshold(self, reference_score: float, max_drop: float | None, min_score: float | None) -> float:
        """The lowest acceptable score: ``reference_score - max_drop`` and/or ``min_score`` (the stricter).

        Raises:
            InputError: neither is given, or the float score is not finite (SQNR of the float model is
                infinite: give ``min_score``).
        """
        bounds = []
        if max_drop is not None:
            if not math.isfinite(reference_score):
                raise InputError(
                    f"metric {self.name}: the float model scores {reference_score}, so a drop from it means nothing; "
                    "give --min-score (e.g. --metric sqnr --min-score 30) instead of --max-drop"
                )
            bounds.append(reference_score - max_drop)
        if min_score is not None:
            bounds.append(min_score)
        if not bounds:
            raise InputError("no accuracy budget; give --max-drop (e.g. 1%) or --min-score")
        return max(bounds)


def parse_max_drop(text: str | float) -> float:
    """``"1%"`` -> 0.01, ``"0.01"`` -> 0.01, ``0.5`` -> 0.5 (in the metric's unit).

    Raises:
        InputError: not a number, negative, or a percentage above 100 %.
    """
    s = str(text).strip()
    pct = s.endswith("%")
    try:
        v = float(s[:-1] if pct else s)
    except ValueError:
        raise InputError(f"--max-drop {text!r}: not a number; write 1% or 0.01") from None
    if pct:
        v /= 100.0
    if not math.isfinite(v) or v < 0:
        raise InputError(f"--max-drop {text!r}: must be a non-negative number such as 1% or 0.01")
    if pct and v > 1.0:
        raise InputError(f"--max-drop {text!r}: a percentage above 100% allows any model; write 1% or 0.01")
    return v


def resolve_metric(spec: str, *, batch_size: int = 64) -> Metric:
    """The :class:`Metric` named by ``spec``: a built-in name or ``python:module:function``.

    A user function is imported here so that a typo fails before any work is done.

    Raises:
        InputError: unknown name, malformed ``python:`` spec, or a module or function that cannot be imported.
    """
    s = spec.strip()
    if s in BUILTIN_METRICS:
        return Metric(s, needs_reference=s != "top1", batch_size=batch_size)
    if s.startswith("python:"):
        load_user_function(s)
        return Metric(s, needs_reference=False, batch_size=batch_size)
    raise InputError(
        f"--metric {spec!r}: unknown metric; use one of {', '.join(BUILTIN_METRICS)} or python:module:function"
    )


def load_user_function(spec: str) -> Callable[..., float]:
    """Import the function of a ``python:module:function`` spec.

    Raises:
        InputError: malformed spec, the module cannot be imported, or it has no such callable.
    """
    parts = spec.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise InputError(f"--metric {spec!r}: write python:module:function (e.g. python:mymetrics:accuracy)")
    _, mod_name, fn_name = parts
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:
        raise InputError(
            f"--metric {spec}: cannot import module {mod_name!r} ({type(e).__name__}: {e}); "
            "put it on PYTHONPATH or in the current folder"
        ) from e
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise InputError(f"--metric {spec}: module {mod_name!r} has no function {fn_name!r}")
    return fn


def _float_outputs(outputs: Sequence[np.ndarray]) -> list[int]:
    return [i for i, o in enumerate(outputs) if np.issubdtype(np.asarray(o).dtype, np.floating) and np.size(o)]


def class_labels(labels: np.ndarray, source: str | None) -> np.ndarray:
    """``labels`` as integer class indices.

    Raises:
        InputError: the labels are not whole numbers (float scores, one-hot rows, strings): accuracy against
            them would read 0.00 % without a word.
    """
    a = np.asarray(labels)
    where = source or "the data"
    if a.ndim != 1:
        raise InputError(
            f"{where}: 'label' has shape {list(a.shape)}; give one integer class index per sample "
            "(np.argmax of one-hot rows)"
        )
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return a.astype(np.int64)
    bad = a[~(np.isfinite(a) & (a == np.round(a)))] if a.dtype.kind == "f" else a
    raise InputError(
        f"{where}: 'label' holds {a.dtype} values such as {bad.flat[0]}, not integer class indices; "
        "save the class index of each sample (e.g. np.int64)"
    )


def _top1(outputs: Sequence[np.ndarray], dataset: Dataset) -> float:
    if dataset.labels is None:
        raise InputError(
            f"metric top1 needs labels: add a 'label' array to {dataset.source or 'the data'}, or use --metric cosine"
        )
    labels = class_labels(dataset.labels, dataset.source)
    for o in outputs:
        a = np.asarray(o)
        if a.ndim == 2 and a.shape[1] > 1 and a.shape[0] == labels.shape[0]:
            return float(np.mean(np.argmax(a, axis=1) == labels))
    raise InputError(
        "metric top1 needs an output of class scores [samples, classes]; the model has none: use --metric cosine"
    )


def _pairs(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(outputs) != len(reference):
        raise InputError("the candidate has a different number of outputs than the float model")
    idx = _float_outputs(reference)
    if not idx:
        raise InputError("fidelity metrics need a floating-point output; the model has none")
    out = []
    for i in idx:
        a, b = np.asarray(reference[i]), np.asarray(outputs[i])
        if a.shape != b.shape:
            raise InputError(f"output {i} has shape {list(b.shape)}, the float model's {list(a.shape)}")
        out.append((a, b))
    return out


def _cosine(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    vals = []
    for a, b in _pairs(outputs, reference):
        n = a.shape[0] if a.ndim > 1 else 1
        b = np.nan_to_num(b.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        vals.append(float(np.mean(cosine_rows(a.reshape(n, -1), b.reshape(n, -1)))))
    return float(np.mean(vals))


def _sqnr(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    vals = []
    for a, b in _pairs(outputs, reference):
        vals.append(sqnr_db(a, b) if np.all(np.isfinite(b)) else float("-inf"))
    return float(min(vals))


def _embedding_cosine(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray], dataset: Dataset) -> float:
    pairs = _pairs(outputs, reference)
    a, b = next(((x, y) for x, y in pairs if x.ndim == 3), pairs[0])
    if a.ndim == 3:
        mask_name = next((n for n in _MASK_NAMES if n in dataset.inputs), None)
        if mask_name is None:
            raise InputError(
                "metric embedding-cosine pools over tokens with the attention_mask input; the data has none "
                "(use --metric cosine)"
            )
        m = np.asarray(dataset.inputs[mask_name], dtype=np.float64)
        if m.shape != a.shape[:2]:
            raise InputError(f"attention_mask has shape {list(m.shape)}, the output {list(a.shape[:2])} tokens")
        denom = np.maximum(m.sum(axis=1, keepdims=True), 1.0)
        a = (a * m[..., None]).sum(axis=1) / denom
        b = (np.nan_to_num(b.astype(np.float64)) * m[..., None]).sum(axis=1) / denom
    n = a.shape[0] if a.ndim > 1 else 1
    return float(np.mean(cosine_rows(a.reshape(n, -1), b.reshape(n, -1))))


def _python_metric(spec: str, outputs: Sequence[np.ndarray], dataset: Dataset, batch_size: int) -> float:
    fn = load_user_function(spec)
    total, weight = 0.0, 0
    for feeds, sl in dataset.batches(batch_size):
        batch = dict(feeds)
        if dataset.labels is not None:
            batch.setdefault("label", dataset.labels[sl])
        n = sl.stop - sl.start
        outs = [np.asarray(o)[sl] if np.ndim(o) else np.asarray(o) for o in outputs]
        try:
            v = float(fn(outs, batch))
        except Exception as e:
            raise InputError(
                f"metric function {spec.removeprefix('python:')} raised {type(e).__name__}: {e}; fix the function"
            ) from e
        if not math.isfinite(v):
            raise InputError(f"metric function {spec.removeprefix('python:')} returned {v}; return a finite number")
        total += v * n
        weight += n
    if weight == 0:
        raise InputError("the evaluation data holds no samples")
    return total / weight
