"""Approach 2 of Hoffmann et al. 2022 (Chinchilla): one parabola of loss vs log N per FLOP budget.

Each budget's parabola is fitted by iteratively reweighted least squares with Huber weights (Huber 1964;
k = 1.345 times a MAD scale), so one bad run cannot move the optimum far. All budgets and all bootstrap
resamples are fitted at once with numpy: a resample is a matrix of per-run multiplicities.
A budget is usable only if it has >= 3 distinct sizes, the parabola opens upward, and the sampled size
nearest its vertex is not the smallest or largest one ("edge"; a vertex beyond the sampled range is
"outside"). Parabola fits are biased when the grid is off-centre or narrow (see DESIGN.md), hence the flags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

OK, EDGE, OUTSIDE, DOWNWARD, TOO_FEW = 0, 1, 2, 3, 4
SCALE_UPDATES = 4  # IRLS iterations that re-estimate the robust scale; later ones keep it
STATUS_NAMES = {OK: "ok", EDGE: "edge", OUTSIDE: "outside", DOWNWARD: "downward", TOO_FEW: "too_few_sizes"}


@dataclass
class BudgetLayout:
    """Runs grouped by budget and padded to a rectangle (J budgets x n_max runs), sorted by size."""

    budgets: np.ndarray  # (J,) budget keys
    C: np.ndarray  # (J,) compute of the budget: geometric mean of its runs' FLOPs
    index: np.ndarray  # (J, n_max) row in the used DataFrame, -1 for padding
    mask: np.ndarray  # (J, n_max) real entry
    center: np.ndarray  # (J,) mean of the distinct log N of the budget
    x: np.ndarray  # (J, n_max) log N - center (0 on padding)
    y: np.ndarray  # (J, n_max) loss (0 on padding)
    lnD: np.ndarray  # (J, n_max) log D (0 on padding)
    slot_x: np.ndarray  # (J, S_max) distinct x values, NaN padding
    slot_start: np.ndarray  # (J, S_max) first column of each distinct size
    slot_end: np.ndarray  # (J, S_max) last column of each distinct size
    n_sizes: np.ndarray  # (J,) distinct sizes


def build_layout(used: pd.DataFrame) -> BudgetLayout:
    """Group the usable runs by `budget` into padded arrays for the vectorised fits."""
    groups = [g.sort_values("params", kind="stable") for _, g in used.groupby("budget", sort=True)]
    J = len(groups)
    n_max = max(len(g) for g in groups)
    s_max = max(g["params"].nunique() for g in groups)
    index = np.full((J, n_max), -1, dtype=np.int64)
    mask = np.zeros((J, n_max), dtype=bool)
    x = np.zeros((J, n_max))
    y = np.zeros((J, n_max))
    lnD = np.zeros((J, n_max))
    slot_x = np.full((J, s_max), np.nan)
    slot_start = np.zeros((J, s_max), dtype=np.int64)
    slot_end = np.zeros((J, s_max), dtype=np.int64)
    center = np.zeros(J)
    C = np.zeros(J)
    budgets = np.zeros(J)
    n_sizes = np.zeros(J, dtype=np.int64)
    for j, g in enumerate(groups):
        m = len(g)
        lnN = np.log(g["params"].to_numpy(dtype=float))
        distinct, starts = np.unique(lnN, return_index=True)
        ends = np.append(starts[1:], m) - 1
        center[j] = distinct.mean()
        index[j, :m] = g.index.to_numpy()
        mask[j, :m] = True
        x[j, :m] = lnN - center[j]
        y[j, :m] = g["loss"].to_numpy(dtype=float)
        lnD[j, :m] = np.log(g["tokens"].to_numpy(dtype=float))
        k = distinct.size
        slot_x[j, :k] = distinct - center[j]
        slot_start[j, :k] = starts
        slot_end[j, :k] = ends
        slot_start[j, k:] = m - 1
        slot_end[j, k:] = m - 1
        n_sizes[j] = k
        C[j] = float(np.exp(np.mean(np.log(g["flops"].to_numpy(dtype=float)))))
        budgets[j] = float(g["budget"].iloc[0])
    return BudgetLayout(budgets, C, index, mask, center, x, y, lnD, slot_x, slot_start, slot_end, n_sizes)


@dataclass
class ParabolaFits:
    """Per (resample, budget) parabola loss = c0 + c1 x + c2 x^2 with x = log N - center, and its optimum."""

    coef: np.ndarray  # (B, J, 3)
    lnN_opt: np.ndarray  # (B, J)
    lnD_opt: np.ndarray  # (B, J)
    L_opt: np.ndarray  # (B, J)
    envelope: np.ndarray  # (B, J) lowest observed loss
    status: np.ndarray  # (B, J) int codes
    usable: np.ndarray  # (B, J) bool
    robust_weight: np.ndarray  # (B, J, n_max) final Huber weight of each run (1 = not down-weighted)


def lowest_observed(layout: BudgetLayout, weights: np.ndarray) -> np.ndarray:
    """(B, J) lowest loss among each budget's runs with a positive weight in each row of `weights` (B x n_runs)."""
    idx = np.where(layout.mask, layout.index, 0)
    present = layout.mask[None] & (weights[:, idx] > 0)
    with np.errstate(all="ignore"):
        return np.nanmin(np.where(present, layout.y[None], np.nan), axis=2)


def _solve3(S: np.ndarray, T: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Batched 3x3 solve; singular systems (good False) get the identity and are marked by the caller."""
    eye = np.eye(3)
    S = np.where(good[..., None, None], S, eye)
    return np.linalg.solve(S, T[..., None])[..., 0]


def _irls(x: np.ndarray, y: np.ndarray, W: np.ndarray, good: np.ndarray, huber_k: float, iters: int):
    """Huber IRLS for loss = c0 + c1 x + c2 x^2, batched: x, y (J, n); W, good (B, J, ...).
    Works in (J, B, n) order so each iteration's weighted sums are one batched matmul."""
    Wt = np.ascontiguousarray(W.transpose(1, 0, 2))  # (J, B, n)
    x2 = x * x
    P = np.stack([np.ones_like(x), x, x2, x2 * x, x2 * x2, y, x * y, x2 * y], axis=-1)  # (J, n, 8)
    X3 = np.stack([np.ones_like(x), x, x2], axis=1)  # (J, 3, n)
    g = good.T  # (J, B)
    floor = 1e-6 * np.maximum(1e-12, np.abs(y).max(axis=1))[:, None, None]
    w = Wt
    hub = np.ones_like(Wt)
    coef = np.zeros((*Wt.shape[:2], 3))
    inv = None
    for it in range(iters):
        M = np.matmul(w, P)  # (J, B, 8)
        S = np.stack([M[..., r:r + 3] for r in range(3)], axis=-2)
        coef = _solve3(S, M[..., 5:8], g)
        if it == iters - 1:
            break
        r = np.matmul(coef, X3)
        np.subtract(y[:, None, :], r, out=r)
        np.abs(r, out=r)
        if inv is None or it < SCALE_UPDATES:  # then the scale is held (the weights have settled by then)
            inv = 1.0 / (huber_k * np.maximum(_robust_sigma(r, Wt), floor))
        np.multiply(r, inv, out=r)  # u = |r| / (k * sigma)
        np.maximum(r, 1.0, out=r)
        hub = np.divide(1.0, r, out=r)  # Huber weight min(1, 1/u)
        w = Wt * hub
    return coef.transpose(1, 0, 2), hub.transpose(1, 0, 2)


def _robust_sigma(r: np.ndarray, Wt: np.ndarray) -> np.ndarray:
    """1.4826 x median |r| over runs counted with multiplicity (so a resample fits exactly like its duplicated
    rows), times sqrt(n / (n - 3)): the MAD of least-squares residuals understates sigma for 3 coefficients."""
    total = Wt.sum(axis=2, keepdims=True)
    order = np.argsort(np.where(Wt > 0, r, np.inf), axis=2)
    rs = np.take_along_axis(r, order, 2)
    cw = np.cumsum(np.take_along_axis(Wt, order, 2), axis=2)
    last = r.shape[2] - 1
    at_lo = np.minimum((cw <= np.maximum(total - 1, 0) // 2).sum(axis=2, keepdims=True), last)
    at_hi = np.minimum((cw <= total // 2).sum(axis=2, keepdims=True), last)
    mad = 0.5 * (np.take_along_axis(rs, at_lo, 2) + np.take_along_axis(rs, at_hi, 2))
    mad = np.where(np.isfinite(mad), mad, 0.0)
    return 1.4826 * mad * np.sqrt(total / np.maximum(total - 3, 1))


def fit_parabolas(
    layout: BudgetLayout,
    weights: np.ndarray | None = None,
    huber_k: float = 1.345,
    iters: int = 10,
    exclude_edge: bool = True,
    chunk_elems: int = 250_000,
) -> ParabolaFits:
    """Robust parabola per budget for each row of `weights` (B x n_runs multiplicities; None: all ones)."""
    J, n_max = layout.mask.shape
    n_runs = int(layout.index.max()) + 1
    if weights is None:
        weights = np.ones((1, n_runs))
    B = weights.shape[0]
    step = max(1, chunk_elems // max(1, J * n_max))
    parts = [_fit_chunk(layout, weights[s:s + step], huber_k, iters, exclude_edge) for s in range(0, B, step)]
    return ParabolaFits(*(np.concatenate([getattr(p, f) for p in parts]) for f in ParabolaFits.__dataclass_fields__))


def _fit_chunk(layout: BudgetLayout, weights: np.ndarray, huber_k: float, iters: int,
               exclude_edge: bool) -> ParabolaFits:
    x, y, mask = layout.x, layout.y, layout.mask
    idx = np.where(mask, layout.index, 0)
    W = np.where(mask, weights[:, idx], 0.0).astype(float)  # (B, J, n)
    # distinct sizes present in each resample (runs are sorted by size, so a size is a contiguous slice)
    csum = np.concatenate([np.zeros((*W.shape[:2], 1)), np.cumsum(W, axis=2)], axis=2)
    start = np.broadcast_to(layout.slot_start, W.shape[:2] + layout.slot_start.shape[1:])
    end = np.broadcast_to(layout.slot_end, start.shape)
    slot_w = np.take_along_axis(csum, end + 1, axis=2) - np.take_along_axis(csum, start, axis=2)
    slot_pos = (slot_w > 0) & np.isfinite(layout.slot_x)
    n_distinct = slot_pos.sum(axis=2)
    good = n_distinct >= 3

    coef, hub = _irls(x, y, W, good, huber_k, iters)

    c0, c1, c2 = coef[..., 0], coef[..., 1], coef[..., 2]
    downward = c2 <= 0
    with np.errstate(all="ignore"):
        x_opt = np.where(downward | ~good, np.nan, -c1 / (2.0 * c2))
        L_opt = c0 - c1 * c1 / (4.0 * c2)
    L_opt = np.where(downward | ~good, np.nan, L_opt)
    # edge / outside: position of the vertex relative to the sizes present in this resample
    sx = np.where(slot_pos, layout.slot_x[None], np.nan)
    with np.errstate(all="ignore"):
        lo = np.nanmin(np.where(slot_pos, sx, np.inf), axis=2)
        hi = np.nanmax(np.where(slot_pos, sx, -np.inf), axis=2)
        dist = np.abs(np.where(slot_pos, sx, np.nan) - x_opt[..., None])
    nearest = np.argmin(np.where(np.isnan(dist), np.inf, dist), axis=2)
    nearest_x = np.take_along_axis(np.nan_to_num(sx, nan=np.inf), nearest[..., None], axis=2)[..., 0]
    outside = (x_opt < lo) | (x_opt > hi)
    edge = (nearest_x == lo) | (nearest_x == hi)
    status = np.full(c0.shape, OK, dtype=np.int64)
    status[edge] = EDGE
    status[outside] = OUTSIDE
    status[downward] = DOWNWARD
    status[~good] = TOO_FEW
    usable = status == OK if exclude_edge else np.isin(status, (OK, EDGE))

    # D at the optimum: weighted straight line of log D on log N inside the budget (exact for D = C/(kN))
    sw = W.sum(axis=2)
    with np.errstate(all="ignore"):
        mx = np.einsum("bjn,jn->bj", W, x) / sw
        md = np.einsum("bjn,jn->bj", W, layout.lnD) / sw
        sxx = np.einsum("bjn,jn->bj", W, x * x) / sw - mx * mx
        sxd = np.einsum("bjn,jn->bj", W, x * layout.lnD) / sw - mx * md
        slope = np.where(sxx > 0, sxd / sxx, -1.0)
        lnD_opt = md + slope * (x_opt - mx)
    lnN_opt = x_opt + layout.center[None, :]
    return ParabolaFits(coef, lnN_opt, lnD_opt, L_opt, lowest_observed(layout, weights), status, usable, hub)
