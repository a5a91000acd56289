"""Seed noise: how much the loss of one (N, D) point moves when only the seed changes, measured from repeats.

A point is a set of usable runs with the same budget, N and D (the sweep's `sweep.seeds` repeats, or any table's
duplicated rows). The spread is measured on ln(loss), so it reads as a relative error and compares directly with
prediction errors. Pooled over points, s^2 = sum (n_i - 1) s_i^2 / sum (n_i - 1), with a chi-square interval
(the textbook pooled variance; e.g. Montgomery, "Design and Analysis of Experiments"). With repeats present the
bootstrap resamples in two stages, points within a budget and then seeds within each drawn point (the
hierarchical bootstrap of Davison & Hinkley 1997, section 3.8), so intervals carry seed noise as well as the
choice of sizes; without repeats it is the plain stratified bootstrap.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.bootstrap import dirichlet_weights
from harness.analysis.context import Diagnostics
from harness.analysis.estimate import Estimate
from harness.analysis.load import point_codes as point_codes  # it keys the loader's repeat check too

# Seeds of one point that differ by more than this relative spread (or WILD_FACTOR x the other points' pooled
# noise, whichever is larger) are reported as disagreeing: a diverged or broken run, not seed noise.
WILD_SPREAD = 0.04
WILD_FACTOR = 8.0
# An error within this many seed standard deviations of zero is reported as within the noise (95% two-sided).
NOISE_Z = 1.96
METHOD = ("sd of ln(loss) across seeds of one (budget, N, D) point, pooled over points with their degrees of "
          "freedom; chi-square 95% interval")


def hierarchical_weights(budgets: np.ndarray, points: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_runs) multiplicities: draw each budget's points with replacement, then, for every drawn
    point, as many of its seeds as it has, with replacement (Davison & Hinkley 1997's two-stage bootstrap)."""
    rng = np.random.default_rng(seed)
    W = np.zeros((n_resamples, points.size), dtype=np.int32)
    members = {p: np.flatnonzero(points == p) for p in np.unique(points)}
    for b in np.unique(budgets):
        pts = np.unique(points[budgets == b])
        picks = rng.integers(0, pts.size, size=(n_resamples, pts.size))
        for j, p in enumerate(pts):
            rows = members[p]
            times = (picks == j).sum(axis=1)  # how often each resample drew point p
            for r in np.flatnonzero(times):
                draws = rng.integers(0, rows.size, size=times[r] * rows.size)
                W[r, rows] += np.bincount(draws, minlength=rows.size).astype(np.int32)
    return W


def hierarchical_dirichlet_weights(budgets: np.ndarray, points: np.ndarray, n_resamples: int,
                                   seed: int) -> np.ndarray:
    """The Bayesian bootstrap's two stages: Dirichlet weights over each budget's points (scaled to their count),
    times Dirichlet weights over each point's seeds (scaled to theirs), so every run keeps a positive weight."""
    first_seed, second_seed = np.random.SeedSequence(seed).spawn(2)
    _, first_row, point_of_run = np.unique(points, return_index=True, return_inverse=True)
    per_point = dirichlet_weights(budgets[first_row], n_resamples, first_seed)  # (n_resamples, n_points)
    return per_point[:, point_of_run] * dirichlet_weights(points, n_resamples, second_seed)


def has_repeats(points: np.ndarray) -> bool:
    """Whether any point has more than one run (seed repeats to measure noise from)."""
    return points.size > 0 and np.bincount(points).max() > 1


def _pooled(sd: np.ndarray, n: np.ndarray) -> dict[str, Any] | None:
    """Pooled sd of ln(loss) with its chi-square interval over points of sizes n (None without repeats)."""
    from scipy import stats  # lazy: importing scipy.stats costs ~1 s
    dof = int((n - 1).sum())
    if dof <= 0:
        return None
    s = math.sqrt(float(((n - 1) * sd**2).sum()) / dof)
    lo, hi = (s * math.sqrt(dof / stats.chi2.ppf(q, dof)) for q in (0.975, 0.025))
    return {"rel_sd": s, "rel_sd_lo": lo, "rel_sd_hi": hi, "dof": dof, "points": int((n > 1).sum())}


def _point_table(used: pd.DataFrame, points: np.ndarray) -> pd.DataFrame:
    """Per repeated point: budget, N, D, seeds, mean loss, sd and range of ln(loss)."""
    lg = pd.DataFrame({"p": points, "C": used["budget"].astype(float), "N": used["params"].astype(float),
                       "D": used["tokens"].astype(float), "L": used["loss"].astype(float),
                       "lnL": np.log(used["loss"].astype(float))})
    g = lg.groupby("p")
    t = pd.DataFrame({"budget": g["C"].first(), "N": g["N"].first(), "D": g["D"].first(), "n": g.size(),
                      "mean_loss": g["L"].mean(), "rel_sd": g["lnL"].std(ddof=1),
                      "rel_range": g["lnL"].max() - g["lnL"].min()})
    return t[t["n"] > 1].sort_values(["budget", "N"])


def wild_limit(pooled_sd: float | None) -> float:
    """The ln(loss) range beyond which one point's seeds disagree wildly: WILD_SPREAD, or WILD_FACTOR x the
    pooled seed noise of other points where that is measured and larger."""
    return max(WILD_SPREAD, WILD_FACTOR * pooled_sd) if pooled_sd else WILD_SPREAD


def _wild(points: pd.DataFrame) -> pd.Series:
    """Points whose seeds disagree far beyond the other points' noise (a diverged or broken seed)."""
    out = []
    for p, row in points.iterrows():
        others = points.drop(index=p)
        pooled = _pooled(others["rel_sd"].to_numpy(), others["n"].to_numpy()) if len(others) else None
        out.append(row["rel_range"] > wild_limit(pooled["rel_sd"] if pooled else None))
    return pd.Series(out, index=points.index, dtype=bool)


def seed_noise(used: pd.DataFrame, diag: Diagnostics, floor: float = 0.0, source: str = "") -> dict[str, Any]:
    """The seed-noise block of fits.json: pooled and per-budget sd of ln(loss) and every repeated point; points
    whose seeds disagree wildly are warned about by name (they stay in the fit: the table shows them). A table
    without repeats can be given a floor measured elsewhere (analysis noise.floor, noise.source): errors are then
    judged against it, and fits.json keeps it apart as `assumed`."""
    points = point_codes(used)
    if not has_repeats(points):
        out = {"measured": False, "method": METHOD,
               "reason": "one run per (budget, N, D) point: train repeats (sweep.seeds=[0,1]) to measure it"}
        if floor > 0:
            out["assumed"] = {"rel_sd": float(floor), "source": source or "analysis noise.floor"}
        return out
    table = _point_table(used, points)
    wild = _wild(table)
    for _, row in table[wild].iterrows():
        diag.warn(f"seeds disagree at budget {row['budget']:.3g}, N={row['N']:,.0f}: ln(loss) range "
                  f"{row['rel_range']:.2%} over {int(row['n'])} seeds, far beyond the seed noise elsewhere; "
                  "check those runs (a diverged or broken seed); they are kept in the fit")
    calm = table[~wild]
    per_budget = []
    for C, grp in calm.groupby("budget"):
        pooled = _pooled(grp["rel_sd"].to_numpy(), grp["n"].to_numpy())
        if pooled:
            per_budget.append({"budget": float(C), **pooled})
    return {"measured": True, "method": METHOD, "pooled": _pooled(calm["rel_sd"].to_numpy(), calm["n"].to_numpy()),
            "per_budget": per_budget, "wild_points": int(wild.sum()),
            "points": [{k: (int(v) if k == "n" else float(v)) for k, v in r.items()} for _, r in table.iterrows()]}


def noise_floor(noise: dict[str, Any] | None, budget: float | None = None) -> float | None:
    """The relative seed sd to judge an error at `budget` against: that budget's own when measured, else the
    pooled one (seed noise is roughly constant in ln(loss) across these small budgets); unmeasured, the floor
    assumed from elsewhere, else None."""
    if not noise:
        return None
    if not noise.get("measured"):
        assumed = noise.get("assumed")
        return float(assumed["rel_sd"]) if assumed else None
    own = [b for b in noise.get("per_budget", []) if budget is not None and math.isclose(b["budget"], budget, rel_tol=1e-6)]
    pooled = own[0] if own else noise.get("pooled")
    return float(pooled["rel_sd"]) if pooled else None


def within_noise(rel_error: float | None, floor: float | None) -> bool | None:
    """Whether a relative error is within NOISE_Z seed standard deviations of zero (None when either is missing)."""
    if rel_error is None or floor is None or not math.isfinite(rel_error):
        return None
    return abs(rel_error) <= NOISE_Z * floor


def widen_interval(predicted: Estimate, below: float, above: float) -> Estimate | None:
    """The prediction's interval widened, in ln units, by `below` on its lower side and `above` on its upper side,
    each in quadrature with the side's own half-width: the interval of a difference between two independent
    estimates (normal approximation). None without a positive prediction and a positive interval."""
    v = predicted.value
    if v is None or not predicted.has_interval or v <= 0 or predicted.lo <= 0:
        return None
    if not (math.isfinite(below) and math.isfinite(above)):
        return None
    lo = v * math.exp(-math.hypot(max(0.0, math.log(v / predicted.lo)), below))
    hi = v * math.exp(math.hypot(max(0.0, math.log(predicted.hi / v)), above))
    return Estimate(v, lo, hi, predicted.n)


def prediction_interval(predicted: Estimate, rel_sd: float | None, level: float) -> Estimate | None:
    """Where one new run's loss should land: the law's interval (for the mean loss at that (N, D)) widened on each
    side, in ln(loss), by the run's own seed noise at the same level, the two added in quadrature as independent
    errors (a regression's prediction interval against its confidence interval; e.g. Montgomery, Peck & Vining,
    "Introduction to Linear Regression Analysis", 2.4.2). None without a prediction, a law interval or a noise
    figure."""
    if rel_sd is None:
        return None
    zs = NormalDist().inv_cdf(0.5 + level / 2.0) * rel_sd
    return widen_interval(predicted, zs, zs)


def against_target(predicted: Estimate, target: Estimate) -> Estimate | None:
    """The prediction's interval widened by a target that is itself an estimate (a held-back budget's parabola
    minimum, with its bootstrap interval): the target lying below the prediction may truly sit as high as its upper
    end, so its upper half-width widens the lower side, and its lower half-width the upper side. The target lies
    inside it when the two estimates agree at the level of their intervals. None without both intervals."""
    t = target.value
    if t is None or not target.has_interval or t <= 0 or target.lo <= 0:
        return None
    return widen_interval(predicted, max(0.0, math.log(target.hi / t)), max(0.0, math.log(t / target.lo)))
