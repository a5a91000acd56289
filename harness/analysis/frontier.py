"""The loss frontier L_opt(C) = E + K C^-k (Hoffmann et al. 2022, eq. 2 along the compute-optimal path) through
the usable budgets' parabola minima (or lowest observed losses). With fewer than frontier.min_points_free
budgets E is fixed to Approach 3's irreducible loss and only K, k are fitted. With enough budgets but a free E
at its bound 0, Approach 3's E is taken only where the frontier's own points do not reject it (an F-test of the
fixed-E fit against the free one): a floor the points contradict bends every far prediction upward. Every
bootstrap resample goes through the same rule (select_frontier), so the interval is that of the whole procedure.
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
E_AT_BOUND_KEPT = "free_E_at_bound"  # E at its bound 0, and the points reject Approach 3's E: a pure power law
FREE_METHODS = (FREE, E_AT_BOUND_KEPT)  # the methods that fit E (three parameters)
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


METHODS = (FREE, E_FROM_APPROACH3, E_AT_BOUND, E_AT_BOUND_KEPT)  # codes 0-3 in the bootstrap's 4th column


def e_test_arrays(free: FrontierFit, fixed: FrontierFit) -> tuple[np.ndarray, np.ndarray]:
    """F-test of the frontier with E fixed to Approach 3's value against the free fit (nested: one parameter
    fewer), per row: F and p, the chance of a fit as much worse if that E were true (Gaussian residuals).
    No worse fit: F = 0, p = 1; an exact free fit: F = inf, p = 0."""
    from scipy import stats  # lazy: importing scipy.stats costs ~1 s
    dof = free.n - 3.0
    with np.errstate(all="ignore"):
        F = np.where(fixed.sse <= free.sse, 0.0, (fixed.sse - free.sse) / (free.sse / dof))
        F = np.where((fixed.sse > free.sse) & (free.sse <= 0.0), np.inf, F)
        p = np.where(np.isfinite(F), stats.f.sf(F, 1, np.maximum(dof, 1.0)), 0.0)
    return F, np.where(dof >= 1, p, np.nan)


@dataclass
class FrontierChoice:
    """select_frontier's result per row: the chosen fit, its method code (index into METHODS), the F-test of
    Approach 3's E against the free fit (F, p), and both candidate fits."""

    fit: FrontierFit
    code: np.ndarray
    F: np.ndarray
    p: np.ndarray
    free: FrontierFit
    fixed: FrontierFit


def select_frontier(lnC: np.ndarray, points: np.ndarray, mask: np.ndarray, lnC_ref: float, approach3_E: np.ndarray,
                    settings: Settings) -> FrontierChoice:
    """The frontier by one rule, per row (the point fit or a resample): E free with settings.frontier_min_free
    usable budgets, else Approach 3's E; a free E at its bound 0 takes Approach 3's E unless the points reject it
    at the analysis level (Marin fixes E to Approach 3's where the frontier cannot identify it)."""
    free = fit_frontier(lnC, points, mask, lnC_ref, None)
    fixed = fit_frontier(lnC, points, mask, lnC_ref, approach3_E)
    F, p = e_test_arrays(free, fixed)
    few = free.n < settings.frontier_min_free
    at_bound = ~few & np.isfinite(free.E) & (free.E <= E_BOUND_TOL)
    kept = at_bound & (p < 1.0 - settings.level)
    code = np.select([few, kept, at_bound], [METHODS.index(m) for m in (E_FROM_APPROACH3, E_AT_BOUND_KEPT, E_AT_BOUND)],
                     METHODS.index(FREE))
    use_fixed = ~np.isin(code, [METHODS.index(m) for m in FREE_METHODS])
    fields = ("E", "lnK_ref", "k", "sse", "n")
    chosen = FrontierFit(*(np.where(use_fixed, getattr(fixed, f), getattr(free, f)) for f in fields))
    return FrontierChoice(chosen, code, F, p, free, fixed)


def fit_frontier_stage(iso: IsoflopFit, settings: Settings, approach3_E: float) -> FrontierStage:
    """Fit the frontier on the point parabolas by select_frontier's rule; records the test of Approach 3's E
    where the free fit put E at its bound."""
    lnC_ref = float(np.mean(iso.lnC[iso.usable]))
    points = _points(iso.parabolas, settings.frontier_source)
    c = select_frontier(iso.lnC, points, iso.parabolas.usable, lnC_ref, np.array([approach3_E]), settings)
    method, test = METHODS[int(c.code[0])], None
    if method in (E_AT_BOUND, E_AT_BOUND_KEPT):
        n = int(c.free.n[0])
        test = {"approach3_E": approach3_E, "F": float(c.F[0]) if np.isfinite(c.F[0]) else None, "p": float(c.p[0]),
                "dof": n - 3, "rmse_free": float(np.sqrt(c.free.sse[0] / n)),
                "rmse_fixed": float(np.sqrt(c.fixed.sse[0] / n))}
    return FrontierStage(c.fit, method, settings.frontier_source, lnC_ref, test)


def frontier_samples(iso: IsoflopFit, stage: FrontierStage, parabolas: ParabolaFits, approach3_E: np.ndarray,
                     settings: Settings) -> np.ndarray:
    """(B, 4) bootstrap samples (E, ln K_ref, k, method code) refitted on resampled parabolas by the point fit's
    own rule, so a resample that loses budgets takes Approach 3's E (its own) as the point fit would have."""
    points = _points(parabolas, stage.source)
    c = select_frontier(iso.lnC, points, parabolas.usable, stage.lnC_ref, approach3_E, settings)
    return np.stack([c.fit.E, c.fit.lnK_ref, c.fit.k, c.code.astype(float)], axis=1)


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
    if not no_boot and boot.shape[1] > 3:
        codes = boot[np.isfinite(boot[:, 2]), 3].astype(int)
        frontier["bootstrap_methods"] = {m: int((codes == i).sum()) for i, m in enumerate(METHODS) if (codes == i).any()}
    if stage.e_test is not None:
        frontier["approach3_E_test"] = stage.e_test
    _note_method(stage, n_points, dof, diag)
    k = frontier["k"].value
    if k is not None and k_at_bound(k):
        diag.warn(f"frontier exponent k={k:.3g} sits at its search bound; the frontier is not identified")
    return frontier


def _note_method(stage: FrontierStage, n_points: int, dof: int, diag: Diagnostics) -> None:
    """Say how E was obtained where it is not a free fit on enough points."""
    if stage.e_test is not None:
        _note_e_test(stage, dof, diag)
    elif stage.method != FREE:
        diag.note(f"the frontier has {n_points} points for E, K, k; E is fixed to Approach 3's E and only K, k are "
                  f"fitted ({dof} residual dof)")
    elif n_points == 3:
        diag.note("the frontier has 3 points for 3 parameters: it interpolates them and its fit cannot be checked")


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
