"""The loss frontier L_opt(C) = E + K C^-k (Hoffmann et al. 2022, eq. 2 along the compute-optimal path) through
the usable budgets' parabola minima (or lowest observed losses). With fewer than frontier.min_points_free
budgets E is fixed to Approach 3's irreducible loss and only K, k are fitted. With enough budgets but a free E
at its bound 0, Approach 3's E is taken only where the frontier's own points do not reject it (an F-test of the
fixed-E fit against the free one): a floor the points contradict bends every far prediction upward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from harness.analysis.approach2 import IsoflopFit
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.estimate import estimate
from harness.analysis.isoflop import ParabolaFits
from harness.analysis.powerlaw import K_BOUNDS, FrontierFit, fit_frontier

FREE = "free"
E_FROM_APPROACH3 = "E_from_approach3"
E_AT_BOUND = "E_from_approach3_free_E_at_bound"  # enough budgets, but the free fit drove E to its bound 0
E_AT_BOUND_KEPT = "free_E_at_bound"  # E at its bound 0, and the points reject Approach 3's E: a pure power law
FREE_METHODS = (FREE, E_AT_BOUND_KEPT)  # the methods whose bootstrap refits E too
E_BOUND_TOL = 1e-6  # a free E at or below this (in loss units) sits at the bound
# k within this relative distance of a search bound counts as "at the bound" (the fit did not find a minimum)
K_BOUND_RTOL = (0.02, 1.0 / 300.0)


@dataclass
class FrontierStage:
    """The point-estimate frontier and how it was fitted (method, source, reference compute)."""

    fit: FrontierFit
    method: str
    source: str
    lnC_ref: float
    e_test: dict[str, float | None] | None = None  # the F-test of Approach 3's E, where the free E sat at its bound


def _points(parabolas: ParabolaFits, source: str) -> np.ndarray:
    """The frontier's data per budget: parabola minima or lowest observed losses."""
    return parabolas.L_opt if source == "minima" else parabolas.envelope


def approach3_E_test(free: FrontierFit, fixed: FrontierFit, n_points: int,
                     approach3_E: float) -> dict[str, float | None]:
    """F-test of the frontier with E fixed to Approach 3's value against the free fit (nested: one parameter
    fewer); p is the chance of a worse fit than the fixed one's if that E were true (Gaussian residuals)."""
    sse_free, sse_fixed, dof = float(free.sse[0]), float(fixed.sse[0]), n_points - 3
    if sse_fixed <= sse_free:
        F, p = 0.0, 1.0
    elif sse_free <= 0.0:
        F, p = None, 0.0  # the free fit is exact: any worse fit is rejected (F is infinite; JSON has no inf)
    else:
        F = (sse_fixed - sse_free) / (sse_free / dof)
        p = float(stats.f.sf(F, 1, dof))
    return {"approach3_E": approach3_E, "F": F, "p": p, "dof": dof,
            "rmse_free": float(np.sqrt(sse_free / n_points)), "rmse_fixed": float(np.sqrt(sse_fixed / n_points))}


def fit_frontier_stage(iso: IsoflopFit, settings: Settings, approach3_E: float) -> FrontierStage:
    """Fit the frontier on the point parabolas; E is free with enough budgets, else Approach 3's E."""
    lnC_ref = float(np.mean(iso.lnC[iso.usable]))
    method = FREE if iso.n_usable >= settings.frontier_min_free else E_FROM_APPROACH3
    e_fixed = None if method == FREE else np.array([approach3_E])
    points = _points(iso.parabolas, settings.frontier_source)
    fit = fit_frontier(iso.lnC, points, iso.parabolas.usable, lnC_ref, e_fixed)
    if method != FREE or not (np.isfinite(fit.E[0]) and fit.E[0] <= E_BOUND_TOL):
        return FrontierStage(fit, method, settings.frontier_source, lnC_ref)
    # E = 0 is the edge of the search, not an estimate: the budgets barely identify E. Marin's remedy fixes it to
    # Approach 3's E; taken only where the frontier's points do not reject that E at the analysis level.
    fixed = fit_frontier(iso.lnC, points, iso.parabolas.usable, lnC_ref, np.array([approach3_E]))
    test = approach3_E_test(fit, fixed, iso.n_usable, approach3_E)
    if test["p"] < 1.0 - settings.level:
        return FrontierStage(fit, E_AT_BOUND_KEPT, settings.frontier_source, lnC_ref, test)
    return FrontierStage(fixed, E_AT_BOUND, settings.frontier_source, lnC_ref, test)


def frontier_samples(iso: IsoflopFit, stage: FrontierStage, parabolas: ParabolaFits,
                     approach3_E: np.ndarray) -> np.ndarray:
    """(B, 3) bootstrap samples (E, ln K_ref, k) refitted on resampled parabolas (E from Approach 3 if fixed)."""
    points = _points(parabolas, stage.source)
    e_fixed = None if stage.method in FREE_METHODS else approach3_E
    fit = fit_frontier(iso.lnC, points, parabolas.usable, stage.lnC_ref, e_fixed)
    return np.stack([fit.E, fit.lnK_ref, fit.k], axis=1)


def k_at_bound(k: float) -> bool:
    """Whether the exponent k sits at (or next to) the edge of powerlaw.K_BOUNDS."""
    return not K_BOUNDS[0] * (1 + K_BOUND_RTOL[0]) < k < K_BOUNDS[1] * (1 - K_BOUND_RTOL[1])


def summarize_frontier(stage: FrontierStage, n_points: int, samples: dict[str, np.ndarray], level: float,
                       diag: Diagnostics) -> dict[str, Any]:
    """fits.json's frontier block: E, K, k, K_ref as Estimates, the method and the fit's dof and rmse."""
    fit, lnC_ref, boot = stage.fit, stage.lnC_ref, samples.get("frontier")
    no_boot = boot is None
    K = np.exp(fit.lnK_ref[0] + fit.k[0] * lnC_ref)
    dof = int(n_points - (3 if stage.method in FREE_METHODS else 2))
    frontier = {
        "E": estimate(fit.E[0], None if no_boot else boot[:, 0], level),
        "K": estimate(K, None if no_boot else np.exp(boot[:, 1] + boot[:, 2] * lnC_ref), level),
        "k": estimate(fit.k[0], None if no_boot else boot[:, 2], level),
        "K_ref": estimate(np.exp(fit.lnK_ref[0]), None if no_boot else np.exp(boot[:, 1]), level),
        "C_ref": float(np.exp(lnC_ref)), "lnK_ref": float(fit.lnK_ref[0]),
        "method": stage.method, "source": stage.source, "n_points": n_points, "dof": dof,
        "rmse": float(np.sqrt(fit.sse[0] / n_points)) if np.isfinite(fit.sse[0]) else None,
    }
    if stage.e_test is not None:
        frontier["approach3_E_test"] = stage.e_test
        _note_e_test(stage, dof, diag)
    elif stage.method != FREE:
        diag.note(f"the frontier has {n_points} points for E, K, k; E is fixed to Approach 3's E and only K, k are "
                  f"fitted ({dof} residual dof)")
    elif n_points == 3:
        diag.note("the frontier has 3 points for 3 parameters: it interpolates them and its fit cannot be checked")
    k = frontier["k"].value
    if k is not None and k_at_bound(k):
        diag.warn(f"frontier exponent k={k:.3g} sits at its search bound; the frontier is not identified")
    return frontier


def _note_e_test(stage: FrontierStage, dof: int, diag: Diagnostics) -> None:
    """Say why E is what it is when the free fit put it at its bound 0."""
    t = stage.e_test or {}
    F = "inf" if t["F"] is None else format(t["F"], ".3g")
    test = (f"Approach 3's E={t['approach3_E']:.3g} (rmse {t['rmse_fixed']:.3g} with it vs {t['rmse_free']:.3g} "
            f"free; F={F}, p={t['p']:.2g})")
    if stage.method == E_AT_BOUND_KEPT:
        diag.warn(f"the free frontier fit put E at its bound 0 and the frontier's points reject {test}, so the "
                  f"frontier stays a pure power law (E=0, {dof} residual dof): its far predictions are the lowest "
                  "losses the form allows, too low if a floor exists that the budgets cannot see")
    else:
        diag.note(f"the free frontier fit put E at its bound 0 (the budgets do not identify it) and the frontier's "
                  f"points do not reject {test}, so E is fixed to Approach 3's and only K, k are fitted "
                  f"({dof} residual dof)")
