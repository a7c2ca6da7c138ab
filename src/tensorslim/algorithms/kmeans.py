"""One-dimensional k-means for weight clustering: exact Lloyd iterations on sorted values, rows in parallel.

Every row of a 2-D array (one row per channel, or a single row for a whole tensor) is clustered on its own
into ``k`` centroids. In one dimension the clusters of a Lloyd step are contiguous intervals of the sorted
values, so an assignment is ``k - 1`` boundary counts and a centroid update is a difference of cumulative
sums: each iteration costs ``O(rows * n * k)`` comparisons and no per-value Python work.

Initialisations (:class:`KMeansInit`): ``kmeans++`` (D² sampling, seeded), ``linear`` (evenly spaced
between the minimum and the maximum) and ``density`` (evenly spaced quantiles of the values). Lloyd
iterations never increase the squared error of the initial centroids.

Sparsity is preserved by the caller: values that must stay zero are masked out (``valid``), and index 0
is reserved for an exact 0.0 centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = ["KMeansInit", "KMeansResult", "assign", "error_feedback_assign", "kmeans_rows", "sse"]

_CHUNK_ELEMENTS = 1 << 24  # rows * n * k comparisons per chunk: bounds the temporary memory


class KMeansInit(StrEnum):
    """How the initial centroids are chosen."""

    KMEANS_PP = "kmeans++"
    LINEAR = "linear"
    DENSITY = "density"


@dataclass(frozen=True)
class KMeansResult:
    """Centroids (``rows x k``, ascending per row), labels (``rows x n``) and the squared error per row."""

    centroids: np.ndarray
    labels: np.ndarray
    sse: np.ndarray
    iterations: int


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest-centroid labels of ``values`` (``rows x n``) for ascending ``centroids`` (``rows x k``)."""
    mids = (centroids[:, 1:] + centroids[:, :-1]) * 0.5
    labels = np.empty(values.shape, np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(1, values.shape[1] * max(1, mids.shape[1])))
    for s in range(0, values.shape[0], step):
        v, m = values[s : s + step], mids[s : s + step]
        labels[s : s + step] = np.sum(v[:, :, None] > m[:, None, :], axis=2)
    return labels


def sse(values: np.ndarray, centroids: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Squared error per row of ``values`` quantised to their nearest centroid (``weights`` mask values)."""
    c = np.sort(centroids, axis=1)
    lab = assign(values, c)
    err = (values - np.take_along_axis(c, lab, axis=1)) ** 2
    if weights is not None:
        err = err * weights
    return np.asarray(err.sum(axis=1), np.float64)


def _init(sorted_v: np.ndarray, counts: np.ndarray, k: int, method: KMeansInit, rng: np.random.Generator) -> np.ndarray:
    rows, n = sorted_v.shape
    # valid values occupy sorted_v[r, :counts[r]]; the padding (+inf) sits at the end
    lo = sorted_v[:, 0]
    hi = np.take_along_axis(sorted_v, np.maximum(counts - 1, 0)[:, None], axis=1)[:, 0]
    if method is KMeansInit.LINEAR:
        t = np.linspace(0.0, 1.0, k)[None, :]
        return lo[:, None] + (hi - lo)[:, None] * t
    if method is KMeansInit.DENSITY:
        q = (np.arange(k) + 0.5) / k
        pos = np.minimum((q[None, :] * counts[:, None]).astype(np.int64), np.maximum(counts - 1, 0)[:, None])
        return np.take_along_axis(sorted_v, pos, axis=1)
    # k-means++: first centre uniformly, then D² sampling, every row at once
    valid = np.arange(n)[None, :] < counts[:, None]
    vals = np.where(valid, sorted_v, 0.0)
    first = np.minimum((rng.random(rows) * counts).astype(np.int64), np.maximum(counts - 1, 0))
    cents = np.empty((rows, k))
    cents[:, 0] = vals[np.arange(rows), first]
    d2 = np.where(valid, (vals - cents[:, :1]) ** 2, 0.0)
    for j in range(1, k):
        cum = np.cumsum(d2, axis=1)
        total = cum[:, -1]
        r = rng.random(rows) * total
        idx = np.minimum(np.sum(cum < r[:, None], axis=1), np.maximum(counts - 1, 0))
        pick = vals[np.arange(rows), idx]
        # rows whose values are all covered already (total 0) repeat their last centre
        cents[:, j] = np.where(total > 0, pick, cents[:, j - 1])
        d2 = np.minimum(d2, np.where(valid, (vals - cents[:, j : j + 1]) ** 2, 0.0))
    return cents


def kmeans_rows(
    values: np.ndarray,
    k: int,
    *,
    init: KMeansInit | str = KMeansInit.KMEANS_PP,
    valid: np.ndarray | None = None,
    max_iter: int = 30,
    tol: float = 1e-7,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
) -> KMeansResult:
    """Cluster each row of ``values`` into ``k`` centroids.

    Args:
        values: ``rows x n`` array.
        k: centroids per row (at least 1).
        init: see :class:`KMeansInit`.
        valid: optional boolean mask; masked-out values take no part (their label is 0).
        max_iter: Lloyd iterations at most.
        tol: stop when no centroid moves by more than ``tol`` times the row's value range.
        seed: seed of the k-means++ sampling.
        sample_weight: optional positive weight per value (``rows x n``): the error minimised is
            ``sum(weight * (value - centroid)^2)`` (activation-aware clustering).

    Returns:
        The :class:`KMeansResult`; centroids are sorted ascending within each row, and rows with fewer
        distinct values than ``k`` repeat centroids.
    """
    if k < 1:
        raise ValueError(f"k: must be at least 1, got {k}")
    method = KMeansInit(init)
    v = np.asarray(values, np.float64)
    if v.ndim != 2:
        raise ValueError(f"values: expected a 2-D array (rows x n), got shape {v.shape}")
    rows, n = v.shape
    mask = np.ones(v.shape, bool) if valid is None else np.asarray(valid, bool)
    counts = mask.sum(axis=1)
    padded = np.where(mask, v, np.inf)
    order = np.argsort(padded, axis=1, kind="stable")
    sorted_v = np.take_along_axis(padded, order, axis=1)
    sw = np.ones(v.shape) if sample_weight is None else np.asarray(sample_weight, np.float64)
    sorted_w = np.where(np.isfinite(sorted_v), np.take_along_axis(sw, order, axis=1), 0.0)
    if rows == 0 or n == 0:
        return KMeansResult(np.zeros((rows, k)), np.zeros(v.shape, np.int64), np.zeros(rows), 0)
    empty = counts == 0
    sorted_v[empty] = 0.0
    counts = np.where(empty, 1, counts)
    rng = np.random.default_rng(seed)
    cents = np.sort(_init(sorted_v, counts, k, method, rng), axis=1)
    finite = np.where(np.isfinite(sorted_v), sorted_v, 0.0)
    csum = np.concatenate([np.zeros((rows, 1)), np.cumsum(finite * sorted_w, axis=1)], axis=1)
    wsum = np.concatenate([np.zeros((rows, 1)), np.cumsum(sorted_w, axis=1)], axis=1)
    span = np.maximum(
        np.take_along_axis(sorted_v, (counts - 1)[:, None], axis=1)[:, 0] - sorted_v[:, 0], np.finfo(float).tiny
    )
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        bounds = np.concatenate(
            [np.zeros((rows, 1), np.int64), assign_counts(sorted_v, cents, counts), counts[:, None]], axis=1
        )
        sizes = np.take_along_axis(wsum, bounds[:, 1:], axis=1) - np.take_along_axis(wsum, bounds[:, :-1], axis=1)
        sums = np.take_along_axis(csum, bounds[:, 1:], axis=1) - np.take_along_axis(csum, bounds[:, :-1], axis=1)
        new = np.where(sizes > 0, sums / np.where(sizes > 0, sizes, 1.0), cents)  # an empty cluster keeps its centroid
        new = np.sort(new, axis=1)
        moved = np.max(np.abs(new - cents) / span[:, None])
        cents = new
        if moved <= tol:
            break
    labels = assign(np.where(mask, v, 0.0), cents)
    labels[~mask] = 0
    err = (np.where(mask, v, 0.0) - np.take_along_axis(cents, labels, axis=1)) ** 2 * sw
    return KMeansResult(cents, labels, np.where(mask, err, 0.0).sum(axis=1), it)


def error_feedback_assign(
    weight: np.ndarray, centroids: np.ndarray, upper_hinv: np.ndarray, *, keep_zero: bool = False
) -> np.ndarray:
    """Assign ``out x in`` weights to their row's centroids column by column with error feedback (GPTQ).

    Each column is rounded to the nearest centroid and its error, scaled by the inverse Hessian, is spread
    over the columns not yet assigned, so the layer output (not the weight) error is minimised.

    Args:
        weight: ``out x in``.
        centroids: ``out x k`` (or ``1 x k`` shared), ascending.
        upper_hinv: upper Cholesky factor of the damped inverse Hessian (``in x in``).
        keep_zero: weights that are exactly zero stay at index 0 (centroid 0.0).

    Returns:
        ``out x in`` labels.
    """
    w = np.array(weight, np.float64)
    c = np.broadcast_to(np.asarray(centroids, np.float64), (w.shape[0], centroids.shape[1]))
    zero = w == 0 if keep_zero else None
    mids = (c[:, 1:] + c[:, :-1]) * 0.5
    labels = np.empty(w.shape, np.int64)
    rows = np.arange(w.shape[0])
    cols, block = w.shape[1], 128
    for b0 in range(0, cols, block):
        b1 = min(cols, b0 + block)
        wb = w[:, b0:b1].copy()
        errs = np.zeros_like(wb)
        ub = upper_hinv[b0:b1, b0:b1]
        for j in range(b1 - b0):
            col = wb[:, j]
            lab = np.sum(col[:, None] > mids, axis=1)
            if zero is not None:
                lab = np.where(zero[:, b0 + j], 0, lab)
            q = c[rows, lab]
            labels[:, b0 + j] = lab
            err = (col - q) / ub[j, j]
            wb[:, j:] -= np.outer(err, ub[j, j:])
            errs[:, j] = err
        w[:, b1:] -= errs @ upper_hinv[b0:b1, b1:]
    return labels


def assign_counts(sorted_v: np.ndarray, centroids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For sorted rows, how many valid values lie below each of the ``k - 1`` midpoints (``rows x (k-1)``)."""
    mids = (centroids[:, 1:] + centroids[:, :-1]) * 0.5
    out = np.empty(mids.shape, np.int64)
    for r in range(0, sorted_v.shape[0], 64):
        block = sorted_v[r : r + 64]
        out[r : r + 64] = [
            np.searchsorted(row, m, side="right") for row, m in zip(block, mids[r : r + 64], strict=True)
        ]
    return np.minimum(out, counts[:, None])
