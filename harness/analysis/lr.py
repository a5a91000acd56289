"""Learning-rate tuning fits: the optimum of each (size, budget) point and a power-law rule across points.

Per point, loss vs log LR near its minimum is a parabola (the usual bowl of LR sweeps; e.g. Wortsman et al.
2023, "Small-scale proxies for large-scale Transformer training instabilities"), whose vertex is the optimal
LR; its interval comes from a parametric bootstrap of the fitted bowl with a noise floor (seed noise, which a
single sweep cannot measure). Across points the optimum is fitted as lr* = c * N^p * D^q in log space (as
DeepSeek-AI 2024 and Porian et al. 2024 fit LR against scale), with intervals from refitting every bootstrap
draw of the per-point optima.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.analysis.estimate import Estimate

WINDOW = 2  # grid points each side of the observed minimum that the parabola uses
DRAWS = 2000


@dataclass
class LROptimum:
    """The fitted optimal LR of one (size, budget) point, with how it was found."""

    lr: Estimate  # optimal learning rate (value, lo, hi)
    loss: float  # parabola's loss at the vertex (observed minimum when no parabola)
    status: str  # ok | edge_low | edge_high | downward | too_few
    n_points: int  # finite points the parabola used
    draws: np.ndarray  # bootstrap draws of ln lr* (NaN where a draw had no minimum)


def _design(x: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(x), x, x * x], axis=-1)


def fit_lr_optimum(lrs: np.ndarray, losses: np.ndarray, noise_rel: float = 0.005, level: float = 0.95,
                   seed: int = 0) -> LROptimum:
    """Vertex of the parabola through the minimum and its WINDOW neighbours in log LR (diverged = inf loss).

    Status edge_low/edge_high: the lowest loss is at the smallest/largest LR tried, so the optimum is not
    bracketed; the observed best is returned with no interval and callers must not use it silently."""
    order = np.argsort(lrs)
    x_all, y_all = np.log(np.asarray(lrs, float)[order]), np.asarray(losses, float)[order]
    finite = np.isfinite(y_all)
    if finite.sum() == 0:
        return LROptimum(Estimate(None, None, None, 0), float("nan"), "too_few", 0, np.full(DRAWS, np.nan))
    m = int(np.nanargmin(np.where(finite, y_all, np.inf)))
    best = Estimate(float(np.exp(x_all[m])), None, None, 0)
    if m in (0, len(x_all) - 1):  # a diverged neighbour (inf) does bracket the minimum
        status = "edge_low" if m == 0 else "edge_high"
        return LROptimum(best, float(y_all[m]), status, int(finite.sum()), np.full(DRAWS, np.nan))
    window = np.arange(max(0, m - WINDOW), min(len(x_all), m + WINDOW + 1))
    window = window[finite[window]]
    x, y = x_all[window], y_all[window]
    if len(x) < 3:
        return LROptimum(best, float(y_all[m]), "too_few", len(x), np.full(DRAWS, np.nan))
    X = _design(x)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    if coef[2] <= 0:
        return LROptimum(best, float(y_all[m]), "downward", len(x), np.full(DRAWS, np.nan))
    # the vertex, like every draw below, is clipped to the LRs it was fitted on: beyond them the parabola
    # extrapolates, and an optimum outside its own interval would be reported
    vertex = float(np.clip(-coef[1] / (2 * coef[2]), x.min(), x.max()))
    resid = y - X @ coef
    dof = len(x) - 3
    sigma = max(float(np.sqrt(resid @ resid / dof)) if dof > 0 else 0.0, noise_rel * float(np.mean(y)))
    rng = np.random.default_rng(seed)
    ys = (X @ coef)[None, :] + rng.normal(0.0, sigma, size=(DRAWS, len(x)))
    cs = np.linalg.lstsq(X, ys.T, rcond=None)[0]  # (3, DRAWS)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = np.where(cs[2] > 0, -cs[1] / (2 * cs[2]), np.nan)
    # a draw's vertex beyond the sampled window is not supported by the data: clip it to the window's ends
    draws = np.clip(draws, x.min(), x.max())
    lr = Estimate.from_samples(float(np.exp(vertex)), np.exp(draws), level)
    loss = float(coef[0] + coef[1] * vertex + coef[2] * vertex * vertex)
    return LROptimum(lr, loss, "ok", len(x), draws)


@dataclass
class LRRule:
    """lr* = c * N^p * D^q fitted over the points; intervals from refitting the bootstrap draws."""

    c: Estimate
    p: Estimate
    q: Estimate
    n_points: int
    rmse_log: float  # residual RMS of ln lr* around the fitted rule

    def __call__(self, n: float, d: float) -> float:
        """The rule's learning rate for N parameters trained on D tokens."""
        return float(self.c.value * n ** self.p.value * d ** self.q.value)


def fit_lr_rule(n: np.ndarray, d: np.ndarray, ln_lr: np.ndarray, draws: np.ndarray,
                level: float = 0.95, seed: int = 0) -> LRRule:
    """Least squares of ln lr* on (1, ln N, ln D), weighted by each point's bootstrap variance. Intervals: each
    draw (rows of draws, points in columns) also resamples the points (a pairs bootstrap), so they carry both
    the noise of every optimum and the scatter of the points around the power law. Needs points at >= 2 budgets
    (else D is a function of N) and >= 4 points, so the three coefficients leave a residual to check."""
    X = np.stack([np.ones(len(n)), np.log(n), np.log(d)], axis=1)
    var = np.nanvar(draws, axis=0)
    sw = 1.0 / np.maximum(np.sqrt(np.where(np.isfinite(var), var, 0.0)), 0.05)  # floor: 5% in lr
    coef = np.linalg.lstsq(X * sw[:, None], ln_lr * sw, rcond=None)[0]
    resid = ln_lr - X @ coef
    boot = _pairs_bootstrap(X, sw, draws, seed)
    with np.errstate(over="ignore"):  # a degenerate resample's ln c past float range: an infinite bound, no warning
        c_draws = np.exp(boot[:, 0])
    return LRRule(
        c=Estimate.from_samples(float(np.exp(coef[0])), c_draws, level),
        p=Estimate.from_samples(float(coef[1]), boot[:, 1], level),
        q=Estimate.from_samples(float(coef[2]), boot[:, 2], level),
        n_points=len(n), rmse_log=float(np.sqrt(np.mean(resid**2))),
    )


def _pairs_bootstrap(X: np.ndarray, sw: np.ndarray, draws: np.ndarray, seed: int) -> np.ndarray:
    """(draws, 3) coefficients refitted on resampled points with their drawn optima; NaN where a resample
    cannot identify the rule (rank < 3) or a drawn optimum is missing."""
    rng = np.random.default_rng(seed)
    out = np.full((len(draws), 3), np.nan)
    for b, row in enumerate(draws):
        idx = rng.integers(0, len(X), len(X))
        if np.all(np.isfinite(row[idx])) and np.linalg.matrix_rank(X[idx]) == 3:
            out[b] = np.linalg.lstsq(X[idx] * sw[idx, None], row[idx] * sw[idx], rcond=None)[0]
    return out
