"""The loss frontier L_opt(C) = E + K C^-k (Hoffmann et al. 2022, eq. 2 along the compute-optimal path) through
the usable budgets' parabola minima (or lowest observed losses). With fewer than frontier.min_points_free
budgets E is fixed to Approach 3's irreducible loss and only K, k are fitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.analysis.approach2 import IsoflopFit
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.estimate import estimate
from harness.analysis.isoflop import ParabolaFits
from harness.analysis.powerlaw import K_BOUNDS, FrontierFit, fit_frontier

FREE = "free"
E_FROM_APPROACH3 = "E_from_approach3"
E_AT_BOUND = "E_from_approach3_free_E_at_bound"  # enough budgets, but the free fit drove E to its bound 0
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


def _points(parabolas: ParabolaFits, source: str) -> np.ndarray:
    """The frontier's data per budget: parabola minima or lowest observed losses."""
    return parabolas.L_opt if source == "minima" else parabolas.envelope


def fit_frontier_stage(iso: IsoflopFit, settings: Settings, approach3_E: float) -> FrontierStage:
    """Fit the frontier on the point parabolas; E is free with enough budgets, else Approach 3's E."""
    lnC_ref = float(np.mean(iso.lnC[iso.usable]))
    method = FREE if iso.n_usable >= settings.frontier_min_free else E_FROM_APPROACH3
    e_fixed = None if method == FREE else np.array([approach3_E])
    points = _points(iso.parabolas, settings.frontier_source)
    fit = fit_frontier(iso.lnC, points, iso.parabolas.usable, lnC_ref, e_fixed)
    if method == FREE and np.isfinite(fit.E[0]) and fit.E[0] <= E_BOUND_TOL:
        # E = 0 is no estimate of the irreducible loss but the edge of the search: the budgets do not identify it.
        # Fix it to Approach 3's E (as Marin does when the frontier cannot identify E), for point and bootstrap.
        method = E_AT_BOUND
        fit = fit_frontier(iso.lnC, points, iso.parabolas.usable, lnC_ref, np.array([approach3_E]))
    return FrontierStage(fit, method, settings.frontier_source, lnC_ref)


def frontier_samples(iso: IsoflopFit, stage: FrontierStage, parabolas: ParabolaFits,
                     approach3_E: np.ndarray) -> np.ndarray:
    """(B, 3) bootstrap samples (E, ln K_ref, k) refitted on resampled parabolas (E from Approach 3 if fixed)."""
    points = _points(parabolas, stage.source)
    e_fixed = None if stage.method == FREE else approach3_E
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
    dof = int(n_points - (3 if stage.method == FREE else 2))
    frontier = {
        "E": estimate(fit.E[0], None if no_boot else boot[:, 0], level),
        "K": estimate(K, None if no_boot else np.exp(boot[:, 1] + boot[:, 2] * lnC_ref), level),
        "k": estimate(fit.k[0], None if no_boot else boot[:, 2], level),
        "K_ref": estimate(np.exp(fit.lnK_ref[0]), None if no_boot else np.exp(boot[:, 1]), level),
        "C_ref": float(np.exp(lnC_ref)), "lnK_ref": float(fit.lnK_ref[0]),
        "method": stage.method, "source": stage.source, "n_points": n_points, "dof": dof,
        "rmse": float(np.sqrt(fit.sse[0] / n_points)) if np.isfinite(fit.sse[0]) else None,
    }
    if stage.method == E_AT_BOUND:
        diag.note(f"the free frontier fit put E at its bound 0 (the {n_points} budgets do not identify it), so E is "
                  f"fixed to Approach 3's E and only K, k are fitted ({dof} residual dof)")
    elif stage.method != FREE:
        diag.note(f"the frontier has {n_points} points for E, K, k; E is fixed to Approach 3's E and only K, k are "
                  f"fitted ({dof} residual dof)")
    elif n_points == 3:
        diag.note("the frontier has 3 points for 3 parameters: it interpolates them and its fit cannot be checked")
    k = frontier["k"].value
    if k is not None and k_at_bound(k):
        diag.warn(f"frontier exponent k={k:.3g} sits at its search bound; the frontier is not identified")
    return frontier
