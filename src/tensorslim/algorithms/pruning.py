"""Pruning maths: masks from scores, N:M patterns, Wanda scores and least-squares weight updates.

Conventions: a 2-D weight is ``out x in`` (one row per output channel, the reduction along the columns);
callers move their tensors into that layout. A mask is boolean, ``True`` where a weight is kept.

* :func:`magnitude_mask` / :func:`global_thresholds`: keep the largest scores per tensor, or one threshold
  over many tensors (with a per-tensor cap).
* :func:`nm_mask`: in every group of ``m`` consecutive inputs of a row keep the ``n`` largest scores.
* :func:`wanda_scores`: ``|W| * ||X_j||``, the activation-aware score of Sun et al. (2023).
* :func:`obs_update`: given a fixed mask, update the remaining weights of each row to minimise
  ``||X W^T - X W_0^T||^2`` column by column with the inverse Hessian (the OBS/SparseGPT update,
  Frantar & Alistarh 2023).
* :func:`lstsq_refit`: refit a layer on a subset of its inputs (channel pruning) from accumulated
  Gram matrices, one damped solve for all rows.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "damped_inverse_cholesky",
    "global_thresholds",
    "lstsq_refit",
    "magnitude_mask",
    "nm_mask",
    "obs_update",
    "wanda_scores",
]


def magnitude_mask(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep all but the ``round(sparsity * size)`` smallest scores (ties broken by position)."""
    flat = np.asarray(scores).reshape(-1)
    n_prune = round(sparsity * flat.size)
    mask = np.ones(flat.size, bool)
    if n_prune > 0:
        order = np.argsort(flat, kind="stable")
        mask[order[:n_prune]] = False
    return mask.reshape(np.shape(scores))


def global_thresholds(score_list: list[np.ndarray], sparsity: float, max_layer_sparsity: float = 1.0) -> list[float]:
    """Per-tensor sparsities for one global ranking of scores, each capped at ``max_layer_sparsity``.

    The global ranking prunes the smallest ``sparsity`` fraction of all scores; a tensor that would pass
    the cap is held at the cap and the remainder is taken from the others (water filling).
    """
    sizes = np.array([s.size for s in score_list], np.int64)
    target = round(sparsity * int(sizes.sum()))
    caps = np.floor(sizes * max_layer_sparsity).astype(np.int64)
    if target > int(caps.sum()):
        raise ValueError(
            f"max_layer_sparsity: {max_layer_sparsity} caps pruning at {int(caps.sum())} weights, "
            f"fewer than the {target} that sparsity {sparsity} asks for; raise the cap or lower the sparsity"
        )
    sorted_scores = [np.sort(np.asarray(s, np.float64).reshape(-1)) for s in score_list]
    lo, hi = -1.0, max((float(s[-1]) for s in sorted_scores if s.size), default=0.0) + 1.0
    counts = np.zeros(len(score_list), np.int64)
    for _ in range(64):  # bisection on the threshold, counts capped per tensor
        mid = (lo + hi) / 2
        counts = np.array(
            [min(np.searchsorted(s, mid, side="left"), c) for s, c in zip(sorted_scores, caps, strict=True)]
        )
        if counts.sum() < target:
            lo = mid
        else:
            hi = mid
    counts = np.array([min(np.searchsorted(s, hi, side="left"), c) for s, c in zip(sorted_scores, caps, strict=True)])
    # fix the rounding so that exactly ``target`` weights are pruned
    excess = int(counts.sum()) - target
    for i in np.argsort(-counts):
        if excess <= 0:
            break
        take = min(excess, int(counts[i]))
        counts[i] -= take
        excess -= take
    return [float(c) / float(s) if s else 0.0 for c, s in zip(counts, sizes, strict=True)]


def nm_mask(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """N:M mask of a 2-D ``out x in`` score array: in each group of ``m`` inputs keep the ``n`` largest.

    Raises:
        ValueError: ``in`` is not a multiple of ``m``, or ``not 0 < n < m``.
    """
    s = np.asarray(scores)
    if not 0 < n < m:
        raise ValueError(f"pattern: N:M needs 0 < N < M, got {n}:{m}")
    if s.ndim != 2 or s.shape[1] % m:
        raise ValueError(f"pattern: {n}:{m} needs the reduction axis to be a multiple of {m}, got shape {s.shape}")
    groups = s.reshape(s.shape[0], -1, m)
    order = np.argsort(groups, axis=2, kind="stable")
    mask = np.ones(groups.shape, bool)
    np.put_along_axis(mask, order[:, :, : m - n], False, axis=2)
    return mask.reshape(s.shape)


def wanda_scores(weight: np.ndarray, input_sq_sum: np.ndarray) -> np.ndarray:
    """``|W_ij| * ||X_j||`` for ``out x in`` weights and the per-input sum of squared activations."""
    return np.abs(weight) * np.sqrt(np.maximum(np.asarray(input_sq_sum, np.float64), 0.0))[None, :]


def damped_inverse_cholesky(h: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1`` (dead inputs get a unit diagonal)."""
    h = np.array(h, np.float64)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    d = damp * float(np.mean(np.diag(h)))
    h[np.diag_indices_from(h)] += d
    for _ in range(6):
        try:
            hinv = np.linalg.inv(np.linalg.cholesky(h))
            hinv = hinv.T @ hinv
            return np.linalg.cholesky(hinv).T  # upper Cholesky factor of H^-1
        except np.linalg.LinAlgError:
            h[np.diag_indices_from(h)] += d * 10
            d *= 10
    raise np.linalg.LinAlgError("the calibration Hessian could not be made positive definite")


def obs_update(weight: np.ndarray, mask: np.ndarray, hessian: np.ndarray, *, damp: float = 0.01) -> np.ndarray:
    """Zero the masked-out weights and compensate with the remaining ones (OBS with a fixed mask).

    Args:
        weight: ``out x in`` weights.
        mask: ``out x in`` booleans, ``True`` where kept.
        hessian: ``in x in`` Gram matrix ``X^T X`` of the layer's inputs.
        damp: diagonal damping, as a fraction of the mean diagonal.

    Returns:
        New ``out x in`` float64 weights, exactly zero where ``mask`` is ``False``.
    """
    w = np.array(weight, np.float64)
    keep = np.asarray(mask, bool)
    u = damped_inverse_cholesky(hessian, damp)
    cols = w.shape[1]
    block = 128
    for b0 in range(0, cols, block):
        b1 = min(cols, b0 + block)
        wb = w[:, b0:b1].copy()
        errs = np.zeros_like(wb)
        ub = u[b0:b1, b0:b1]
        for j in range(b1 - b0):
            col = wb[:, j]
            q = np.where(keep[:, b0 + j], col, 0.0)
            err = (col - q) / ub[j, j]
            wb[:, j:] -= np.outer(err, ub[j, j:])
            wb[:, j] = q
            errs[:, j] = err
        w[:, b0:b1] = wb
        w[:, b1:] -= errs @ u[b0:b1, b1:]
    w[~keep] = 0.0
    return w


def lstsq_refit(
    gram: np.ndarray, cross: np.ndarray, *, damp: float = 1e-3, keep_bias_column: bool = False
) -> np.ndarray:
    """Solve ``min ||A W' - B||`` from ``gram = A^T A`` and ``cross = A^T B``, damped for stability.

    Args:
        gram: ``p x p``.
        cross: ``p x out``.
        damp: diagonal damping, a fraction of the mean diagonal of ``gram``.
        keep_bias_column: the last column of ``A`` is a constant (the bias); it is not damped.

    Returns:
        ``p x out`` float64 solution.
    """
    g = np.array(gram, np.float64)
    diag = np.diag(g).copy()
    lam = damp * float(np.mean(diag[:-1] if keep_bias_column and diag.size > 1 else diag))
    add = np.full(diag.shape, lam)
    if keep_bias_column:
        add[-1] = 0.0
    g[np.diag_indices_from(g)] += add + np.where(diag == 0, 1.0, 0.0)
    try:
        return np.asarray(np.linalg.solve(g, np.asarray(cross, np.float64)))
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.lstsq(g, np.asarray(cross, np.float64), rcond=None)[0])
