"""Learned rounding of int8 weights (AdaRound and an exact sequential equivalent) on a layer's input statistics.

A linear layer (Conv as im2col, Gemm, MatMul) computes ``Y = X W^T`` with input rows ``X`` ``[S, K]`` and
weight rows ``W`` ``[R, K]`` (one per output channel; see :func:`to_rows` for the layouts). Symmetric
per-channel int8 stores ``W_q = s * Q`` with integer codes ``Q``. Round-to-nearest (RTN) minimises
``|W - W_q|`` element by element, which is not what matters: the layer's output error is::

    ||X W^T - X W_q^T||_F^2 = sum_r (w_r - s_r q_r) H (w_r - s_r q_r)^T,    H = X^T X  [K, K]

a sum of independent per-row quadratics that couple the weights of a row through ``H``. Keeping each code
in ``{floor(w/s), ceil(w/s)}`` (AdaRound's search space, Nagel et al. 2020) leaves one binary choice per
weight. In code units (``x = w / s``, ``e = x - q``, ``H~ = H / mean(diag H)``) row ``r`` minimises
``f(q) = e H~ e^T``; its true error is ``s_r^2 mean(diag H) f``. Only ``H`` is needed from the data.

Two optimisers of that objective:

* ``adaround``: AdaRound's relaxation. ``q = floor(x) + h(V)`` with the rectified sigmoid
  ``h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)`` (``zeta = 1.1``, ``gamma = -0.1``), ``V``
  started where ``h`` equals the fractional part, minimising ``f + lambda sum(1 - |2h - 1|^beta)`` with
  Adam (full-batch gradient ``-2 e H~``), no regulariser for the first 20 % of iterations, then ``beta``
  annealed linearly from 20 to 2; the codes are ``floor(x) + [h >= 0.5]``. ``lambda`` is relative to
  ``f`` in code units, so it does not depend on the layer's weight or activation scale. Each iteration costs
  ``R K^2`` multiply-adds.
* ``sequential`` (default): GPTQ/OBQ's column-by-column rounding restricted to floor/ceil: column ``j``
  takes the candidate nearest to its error-compensated value, and its rounding error is spread over the
  columns not yet rounded through the Cholesky factor of ``(H~ + 0.01 I)^-1`` (see
  :mod:`~tensorslim.algorithms.gptq`), in three column orders (the weight's own, by decreasing ``H_jj`` as
  GPTQ's act-order, and reversed; more orders add seeded random permutations). ``R K^2`` per order. On the
  bundled digits CNN (64 calibration samples) it ends lower than AdaRound at 1000 iterations on all 3x3 Convs
  (0.026-0.057 of RTN's error against 0.041-0.070), the depthwise Conv (0.43 / 0.44) and both Gemms
  (0.007 / 0.013-0.018), 2.5 % higher on the 1x1 Conv (0.285 / 0.278; 11 orders close that), in about a
  tenth of the time (``benchmarks/adaround_compare.py --quick``).

Every candidate (RTN, and the optimiser's result) is then polished by exact coordinate descent: flipping
code ``j`` of a row by ``d = +-1`` changes ``f`` by ``-2 d g_j + H~_jj`` with ``g = e H~``, so each
sweep visits every weight, flips it when that lowers ``f``, and updates ``g`` (rank-one in a block, one
matrix product per block of columns). Descent never increases ``f``, and each row keeps its best
candidate, so the result is never worse than RTN on the statistics it was given. Everything is
deterministic (no random numbers), works on rows in chunks (memory ``chunk x K`` plus ``H``), and the
iteration and sweep counts are capped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from tensorslim.algorithms.gptq import compensated_rounding

__all__ = [
    "METHODS", "RoundingResult", "WeightLayout", "from_rows", "learned_rounding", "output_error", "to_rows",
]  # fmt: skip

METHODS = ("sequential", "adaround")
_ZETA, _GAMMA = 1.1, -0.1
_CHUNK_VALUES = 1 << 22  # rows per chunk: at most this many values per [chunk, K] matrix


class WeightLayout(StrEnum):
    """How an ONNX weight maps to rows ``[output channel, K]``.

    ``conv``: Conv ``[Cout, Cin / groups, kh, kw]`` (``K = Cin / groups * kh * kw``, im2col's column order);
    ``out_in``: Gemm with ``transB=1``, ``[N, K]``; ``in_out``: MatMul and Gemm with ``transB=0``, ``[K, N]``.
    """

    CONV = "conv"
    OUT_IN = "out_in"
    IN_OUT = "in_out"


def to_rows(w: np.ndarray, layout: WeightLayout | str) -> np.ndarray:
    """The weight as rows ``[Cout, K]``, one per output channel (a view or a copy)."""
    layout = WeightLayout(layout)
    if layout is WeightLayout.CONV:
        if w.ndim < 3:
            raise ValueError(f"conv weight: expected [Cout, Cin/groups, *kernel], got shape {list(w.shape)}")
        return w.reshape(w.shape[0], -1)
    if w.ndim != 2:
        raise ValueError(f"{layout.value} weight: expected a matrix, got shape {list(w.shape)}")
    return w if layout is WeightLayout.OUT_IN else w.T


def from_rows(rows: np.ndarray, layout: WeightLayout | str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_rows`: rows ``[Cout, K]`` back in the weight's own ``shape``."""
    layout = WeightLayout(layout)
    if layout is WeightLayout.IN_OUT:
        return np.ascontiguousarray(rows.T).reshape(shape)
    return np.ascontiguousarray(rows).reshape(shape)


@dataclass(frozen=True)
class RoundingResult:
    """Chosen codes of one layer and what the choice did.

    Attributes:
        codes: int8 codes ``[R, K]``, each ``floor`` or ``ceil`` of ``w / s`` (clipped to the code range).
        flipped: codes that differ from round-to-nearest.
        error_rtn: ``sum_r (w_r - s_r rtn_r) H (w_r - s_r rtn_r)^T``, the output error of round-to-nearest.
        error: the same for :attr:`codes`; never above :attr:`error_rtn`.
    """

    codes: np.ndarray
    flipped: int
    error_rtn: float
    error: float


def output_error(w_rows: np.ndarray, scale: np.ndarray, codes: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """Per row, ``(w - s q) H (w - s q)^T`` (``H`` ``[K, K]`` shared by every row)."""
    e = np.asarray(w_rows, np.float64) - np.asarray(scale, np.float64).reshape(-1, 1) * codes
    return np.einsum("rk,rk->r", e @ np.asarray(hessian, np.float64), e)


def _row_error(e: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.einsum("rk,rk->r", e @ h, e)


def _damped_inverse(h: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(H + damp I)^-1`` (dead inputs given a unit diagonal) and its upper Cholesky factor, for the smallest
    damping of 1 %, 10 %, 100 % of the mean diagonal (1 here) that factors; ``None`` if none does."""
    hd = h.copy()
    dead = np.diag(hd) == 0
    hd[dead, dead] = 1.0
    for damp in (0.01, 0.1, 1.0):
        try:
            inv = np.linalg.inv(hd + damp * np.eye(h.shape[0]))
            return inv, np.linalg.cholesky(inv).T
        except np.linalg.LinAlgError:
            continue
    return None  # pragma: no cover - a damped PSD matrix always factors


def _sequential(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray, *, block: int = 128) -> np.ndarray:
    """GPTQ's error-compensated column order, each code restricted to ``[lo, hi]`` (``u``: the upper Cholesky
    factor of the damped inverse of ``H`` in the same column order)."""
    q = np.empty_like(x)

    def dequantize(col: int, w1: np.ndarray, i: int) -> np.ndarray:
        q[:, col] = np.clip(np.round(w1[:, i]), lo[:, col], hi[:, col])
        return q[:, col]

    compensated_rounding(x.copy(), u, dequantize, lazy=block)
    return q


def _adaround(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, h: np.ndarray, *, iterations: int, reg_weight: float, lr: float
) -> np.ndarray:
    """AdaRound's rectified-sigmoid relaxation optimised by Adam (see the module docstring)."""
    free = hi > lo
    frac = np.clip(x - lo, 0.0, 1.0)
    p = np.clip((frac - _GAMMA) / (_ZETA - _GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p / (1 - p))
    m1 = np.zeros_like(v)
    m2 = np.zeros_like(v)
    b1, b2, eps = 0.9, 0.999, 1e-8
    warm = int(0.2 * iterations)
    for t in range(iterations):
        sig = 1.0 / (1.0 + np.exp(-v))
        soft = sig * (_ZETA - _GAMMA) + _GAMMA
        hv = np.clip(soft, 0.0, 1.0)
        e = x - lo - hv * free
        grad = -2.0 * (e @ h)
        if t >= warm and reg_weight > 0:
            beta = 2.0 + 18.0 * max(0.0, 1.0 - (t - warm) / max(1, iterations - warm))
            u = 2.0 * hv - 1.0
            grad -= reg_weight * 2.0 * beta * np.abs(u) ** (beta - 1.0) * np.sign(u)
        grad *= sig * (1.0 - sig) * (_ZETA - _GAMMA) * ((soft > 0) & (soft < 1)) * free
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad * grad
        v -= lr * (m1 / (1 - b1 ** (t + 1))) / (np.sqrt(m2 / (1 - b2 ** (t + 1))) + eps)
    soft = 1.0 / (1.0 + np.exp(-v)) * (_ZETA - _GAMMA) + _GAMMA
    return np.where(free & (soft >= 0.5), hi, lo)


def _descend(
    x: np.ndarray, q: np.ndarray, lo: np.ndarray, hi: np.ndarray, h: np.ndarray, *, max_sweeps: int, block: int = 64
) -> np.ndarray:
    """Coordinate descent on ``(x - q) H (x - q)^T`` per row over codes in ``[lo, hi]`` (one step apart)."""
    q = q.copy()
    k = h.shape[0]
    diag = np.diag(h)
    tol = 1e-9 * (1.0 + diag)  # a flip must lower f by more than rounding noise: no cycling
    g = (x - q) @ h  # kept exact by rank-one and block updates as codes flip
    for _ in range(max_sweeps):
        flips = 0
        for b1 in range(0, k, block):
            b2 = min(b1 + block, k)
            gb = g[:, b1:b2].copy()
            d_blk = np.zeros_like(gb)
            # the step each code can take (+1 from floor, -1 from ceil, 0 when they coincide); column j's codes
            # change only when j is visited, so the block's steps can be read up front
            steps = (q[:, b1:b2] < hi[:, b1:b2]).astype(np.float64) - (q[:, b1:b2] > lo[:, b1:b2])
            for j in range(b1, b2):
                d = steps[:, j - b1]
                gain = -2.0 * d * gb[:, j - b1] + d * d * diag[j]
                rows = np.flatnonzero(gain < -tol[j])
                if rows.size:
                    dd = d[rows]
                    q[rows, j] += dd
                    d_blk[rows, j - b1] = dd
                    gb[rows] -= np.outer(dd, h[j, b1:b2])
                    flips += rows.size
            touched = np.flatnonzero(np.any(d_blk != 0, axis=1))
            if 2 * touched.size > g.shape[0]:  # most rows: one product, no gather and scatter
                g -= d_blk @ h[b1:b2]
            elif touched.size:
                g[touched] -= d_blk[touched] @ h[b1:b2]
        if not flips:
            break
    return q


def _orders(h: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """``n`` column orders for :func:`_sequential`: the weight's own, by decreasing input energy (GPTQ's
    act-order), reversed, then random permutations drawn from ``seed``; each row keeps whichever ends best."""
    k = h.shape[0]
    fixed = [np.arange(k), np.argsort(-np.diag(h), kind="stable"), np.arange(k)[::-1]]
    rng = np.random.default_rng(seed)
    return (fixed + [rng.permutation(k) for _ in range(max(0, n - len(fixed)))])[:n]


def _round_chunk(
    ratio: np.ndarray, x: np.ndarray, h: np.ndarray, qmin: int, qmax: int, method: str, iterations: int,
    reg_weight: float, lr: float, max_sweeps: int, orders: int, seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Codes, per-row ``f`` of RTN and of the codes, for rows sharing ``h`` (normalised): the candidates come
    from ``ratio`` (``w / s`` in float32, as :func:`~tensorslim.algorithms.quantize.quantize` rounds), the
    objective from ``x`` (the same in float64)."""
    lo = np.clip(np.floor(ratio), qmin, qmax).astype(np.float64)
    hi = np.clip(np.ceil(ratio), qmin, qmax).astype(np.float64)
    rtn = np.clip(np.round(ratio), qmin, qmax).astype(np.float64)
    starts = [rtn]
    inverse = _damped_inverse(h) if method == "sequential" else None
    if inverse is not None:
        hinv, u = inverse
        for i, perm in enumerate(_orders(h, orders, seed)):
            if i:  # the inverse of a permuted matrix is the permuted inverse; only its factor is new
                try:
                    u = np.linalg.cholesky(hinv[np.ix_(perm, perm)]).T
                except np.linalg.LinAlgError:  # pragma: no cover - a permuted SPD matrix factors as well
                    continue
            q = np.empty_like(x)
            q[:, perm] = _sequential(x[:, perm], lo[:, perm], hi[:, perm], u)
            starts.append(q)
    elif method == "adaround":
        starts.append(_adaround(x, lo, hi, h, iterations=iterations, reg_weight=reg_weight, lr=lr))
    f_rtn = _row_error(x - rtn, h)
    best, f_best = rtn, f_rtn
    for cand in starts:
        cand = _descend(x, cand, lo, hi, h, max_sweeps=max_sweeps) if max_sweeps > 0 else cand
        f = _row_error(x - cand, h)
        better = f < f_best
        best = np.where(better[:, None], cand, best)
        f_best = np.where(better, f, f_best)
    return best, f_rtn, f_best


def learned_rounding(
    w_rows: np.ndarray,
    scale: np.ndarray | float,
    hessian: np.ndarray,
    *,
    groups: int = 1,
    method: str = "sequential",
    iterations: int = 1000,
    reg_weight: float = 1.0,
    lr: float = 0.05,
    max_sweeps: int = 8,
    orders: int = 3,
    seed: int = 0,
    qmin: int = -127,
    qmax: int = 127,
) -> RoundingResult:
    """Choose floor or ceil for every weight of a layer to minimise its output error on the data of ``hessian``.

    Args:
        w_rows: float weight rows ``[R, K]`` (see :func:`to_rows`).
        scale: per-row scales ``[R]`` (or one for all), positive: codes are ``w / scale`` rounded.
        hessian: ``X^T X`` of the layer's input rows, ``[K, K]``; with ``groups > 1``, ``[groups, K, K]``, the
            rows cut into ``groups`` equal consecutive parts, part ``i`` reading ``hessian[i]`` (grouped Conv).
        groups: number of row groups (the Conv's ``group``).
        method: ``sequential`` or ``adaround`` (see the module docstring).
        iterations: Adam steps of ``adaround``.
        reg_weight: ``adaround``'s rounding regulariser weight (relative to the error in code units).
        lr: ``adaround``'s Adam learning rate.
        max_sweeps: coordinate-descent sweeps at most (0: none).
        orders: column orders of ``sequential`` (3: the weight's own, act-order, reversed; more add random
            permutations drawn from ``seed``), each costing one more pass.
        seed: seed of the extra orders.
        qmin: smallest code.
        qmax: largest code.

    Returns:
        The codes and their error against round-to-nearest (``np.round``, half to even, as
        :func:`~tensorslim.algorithms.quantize.quantize`).

    Raises:
        ValueError: shapes that do not match, non-finite values, scales that are not positive, an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if orders < 1:
        raise ValueError(f"orders: expected at least 1, got {orders}")
    w = np.asarray(w_rows, np.float32)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"w_rows: expected a non-empty matrix [R, K], got shape {list(w.shape)}")
    r, k = w.shape
    s = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (r,)) if np.size(scale) in (1, r) else None
    if s is None:
        raise ValueError(f"scale: expected {r} values (one per row) or one, got {np.size(scale)}")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError("scale: every scale must be positive and finite")
    if not np.all(np.isfinite(w)):
        raise ValueError("w_rows: NaN or infinite weights")
    hs = np.asarray(hessian, np.float64)
    if groups < 1 or r % groups:
        raise ValueError(f"groups: {groups} does not divide the {r} rows")
    hs = hs.reshape(1, *hs.shape) if hs.ndim == 2 and groups == 1 else hs
    if hs.shape != (groups, k, k) or not np.all(np.isfinite(hs)):
        raise ValueError(f"hessian: expected finite [{k}, {k}] (or [{groups}, {k}, {k}]), got {list(hs.shape)}")
    ratio = w / s[:, None]  # float32 division, exactly as quantize() computes RTN
    x = w.astype(np.float64) / s.astype(np.float64)[:, None]
    codes = np.empty((r, k), np.int8)
    err_rtn = np.zeros(r)
    err = np.zeros(r)
    per = r // groups
    chunk = max(1, _CHUNK_VALUES // k)
    for gi in range(groups):
        h = hs[gi]
        mean_diag = float(np.mean(np.diag(h)))
        for a in range(gi * per, (gi + 1) * per, chunk):
            b = min(a + chunk, (gi + 1) * per)
            if mean_diag <= 0:  # the layer never sees non-zero inputs: any code is exact
                codes[a:b] = np.clip(np.round(ratio[a:b]), qmin, qmax)
                continue
            q, f_rtn, f = _round_chunk(ratio[a:b], x[a:b], h / mean_diag, qmin, qmax, method, iterations,
                                       reg_weight, lr, max_sweeps, orders, seed)  # fmt: skip
            codes[a:b] = q
            unit = s[a:b].astype(np.float64) ** 2 * mean_diag
            err_rtn[a:b], err[a:b] = unit * f_rtn, unit * f
    rtn = np.clip(np.round(ratio), qmin, qmax)
    return RoundingResult(codes, int(np.count_nonzero(codes != rtn)), float(err_rtn.sum()), float(err.sum()))
