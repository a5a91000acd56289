"""Power laws: log-log regression y = k x^a (Approach 2's N_opt and D_opt, Hoffmann et al. 2022) and the loss
frontier L_opt(C) = E + K C^-k (the irreducible-loss form of Hoffmann et al. 2022, eq. 2 along the
compute-optimal path; without E it is Kaplan et al. 2020's L(C)).

Every fit takes a batch: rows are bootstrap resamples, columns are budgets, and a mask says which budgets
each resample may use. The frontier uses variable projection: for a fixed exponent k the model is linear in
(E, K), so k is found by a grid search plus golden-section refinement, all vectorised over resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

K_BOUNDS = (0.005, 3.0)


@dataclass
class LogLogFit:
    """ln y = intercept + slope ln x per resample (NaN where fewer than 2 points)."""

    slope: np.ndarray
    intercept: np.ndarray
    r2: np.ndarray
    n: np.ndarray


def fit_loglog(lnx: np.ndarray, lny: np.ndarray, mask: np.ndarray | None = None) -> LogLogFit:
    """Least-squares line through (ln x, ln y), batched over leading axes; lnx broadcasts against lny."""
    lny = np.atleast_2d(lny)
    lnx = np.broadcast_to(lnx, lny.shape)
    m = np.isfinite(lny) & np.isfinite(lnx) if mask is None else (np.atleast_2d(mask) & np.isfinite(lny))
    w = m.astype(float)
    X = np.where(m, lnx, 0.0)
    Y = np.where(m, lny, 0.0)
    n = w.sum(-1)
    with np.errstate(all="ignore"):
        mx = X.sum(-1) / n
        my = Y.sum(-1) / n
        dx = np.where(m, X - mx[..., None], 0.0)
        dy = np.where(m, Y - my[..., None], 0.0)
        sxx = (dx * dx).sum(-1)
        sxy = (dx * dy).sum(-1)
        syy = (dy * dy).sum(-1)
        slope = np.where((n >= 2) & (sxx > 0), sxy / sxx, np.nan)
        intercept = my - slope * mx
        r2 = np.where(syy > 0, (sxy * sxy) / (sxx * syy), 1.0)
    return LogLogFit(slope, intercept, np.where(n >= 2, r2, np.nan), n)


@dataclass
class FrontierFit:
    """L_opt(C) = E + K_ref (C / C_ref)^-k per resample; K = K_ref C_ref^k in absolute units."""

    E: np.ndarray
    lnK_ref: np.ndarray
    k: np.ndarray
    sse: np.ndarray
    n: np.ndarray


@np.errstate(over="ignore")  # exponents at the grid's far end overflow to inf: a huge SSE, not an error
def _profile(lnc: np.ndarray, L: np.ndarray, m: np.ndarray, k: np.ndarray, E_fixed: np.ndarray | None):
    """Best (E, K) and SSE for exponents k (shape (B,) or (B, G)); lnc = ln(C/C_ref)."""
    if k.ndim == 2:
        z = np.exp(-k[..., None] * lnc[:, None, :])  # (B, G, J)
        L_, m_ = L[:, None, :], m[:, None, :]
    else:
        z = np.exp(-k[:, None] * lnc)  # (B, J)
        L_, m_ = L, m
    w = m_.astype(float)
    Lw = np.where(m_, L_, 0.0)
    szz = (w * z * z).sum(-1)
    if E_fixed is None:
        n = w.sum(-1)
        sz = (w * z).sum(-1)
        sl = Lw.sum(-1)
        szl = (z * Lw).sum(-1)
        with np.errstate(all="ignore"):
            det = n * szz - sz * sz
            E = (szz * sl - sz * szl) / det
            K = (n * szl - sz * sl) / det
            neg = ~(E >= 0)
            # E >= 0: an irreducible loss cannot be negative; on the boundary refit K alone
            K = np.where(neg, szl / szz, K)
            E = np.where(neg, 0.0, E)
    else:
        Ef = E_fixed[:, None] if k.ndim == 2 else E_fixed
        with np.errstate(all="ignore"):
            K = (z * (Lw - np.where(m_, Ef[..., None], 0.0))).sum(-1) / szz
        E = np.broadcast_to(Ef, K.shape)
    resid = np.where(m_, L_ - E[..., None] - K[..., None] * z, 0.0)
    return E, K, (resid * resid).sum(-1)


def fit_frontier(
    lnC: np.ndarray,
    L: np.ndarray,
    mask: np.ndarray,
    lnC_ref: float,
    E_fixed: np.ndarray | None = None,
    n_grid: int = 120,
    n_golden: int = 40,
) -> FrontierFit:
    """Fit L = E + K_ref (C/C_ref)^-k (E free and >= 0, or fixed per resample) to masked points, batched."""
    L = np.atleast_2d(L)
    B, J = L.shape
    m = np.atleast_2d(mask) & np.isfinite(L)
    if E_fixed is not None:
        E_fixed = np.broadcast_to(np.asarray(E_fixed, dtype=float), (B,))
        m = m & np.isfinite(E_fixed)[:, None]
    lnc = np.broadcast_to(lnC - lnC_ref, (B, J))
    lnc = np.where(m, lnc, 0.0)
    grid = np.exp(np.linspace(np.log(K_BOUNDS[0]), np.log(K_BOUNDS[1]), n_grid))
    kg = np.broadcast_to(grid, (B, n_grid))
    _, _, sse = _profile(lnc, L, m, kg, E_fixed)
    sse = np.where(np.isfinite(sse), sse, np.inf)
    best = np.argmin(sse, axis=1)
    lo = np.log(grid[np.maximum(best - 1, 0)])
    hi = np.log(grid[np.minimum(best + 1, n_grid - 1)])
    gr = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c = b - gr * (b - a)
    d = a + gr * (b - a)

    def f(logk: np.ndarray) -> np.ndarray:
        out = _profile(lnc, L, m, np.exp(logk), E_fixed)[2]
        return np.where(np.isfinite(out), out, np.inf)

    fc, fd = f(c), f(d)
    for _ in range(n_golden):
        left = fc < fd
        a, b = np.where(left, a, c), np.where(left, d, b)
        p = np.where(left, b - gr * (b - a), a + gr * (b - a))
        fp = f(p)
        c, fc, d, fd = (np.where(left, p, d), np.where(left, fp, fd),
                        np.where(left, c, p), np.where(left, fc, fp))
    k = np.exp((a + b) / 2.0)
    E, K, sse = _profile(lnc, L, m, k, E_fixed)
    n = m.sum(-1)
    need = 2 if E_fixed is not None else 3
    bad = n < need
    with np.errstate(all="ignore"):
        lnK = np.log(K)
    return FrontierFit(
        E=np.where(bad, np.nan, E), lnK_ref=np.where(bad | ~(K > 0), np.nan, lnK),
        k=np.where(bad, np.nan, k), sse=np.where(bad, np.nan, sse), n=n,
    )


@np.errstate(over="ignore")  # exponents at the grid's far end overflow to inf: a huge SSE, not an error
def frontier_value(E: np.ndarray, lnK_ref: np.ndarray, k: np.ndarray, lnC: np.ndarray, lnC_ref: float) -> np.ndarray:
    """Evaluate L_opt(C) = E + K_ref (C/C_ref)^-k; parameters broadcast against lnC."""
    return E + np.exp(lnK_ref - k * (lnC - lnC_ref))
