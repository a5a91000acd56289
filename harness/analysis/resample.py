"""The joint bootstrap (Efron 1979; for scaling laws Besiroglu et al. 2024): one set of stratified resamples of
runs, and every fit (parabolas, Approach 2 power laws, Approach 3, frontier) redone on each, so the intervals
of all quantities and of predictions made from them are jointly consistent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.approach2 import IsoflopFit, approach2_samples
from harness.analysis.approach3 import RunArrays, approach3_samples
from harness.analysis.bootstrap import counts_from_weights, group_weights
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.frontier import FrontierStage, frontier_samples
from harness.analysis.isoflop import fit_parabolas, lowest_observed
from harness.analysis.noise import has_repeats, hierarchical_dirichlet_weights, hierarchical_weights
from harness.analysis.parametric import ParametricFit

# A fit whose estimate survives in fewer than this share of resamples gets a warning.
MIN_VALID_SHARE = 0.95


def bootstrap_fits(used: pd.DataFrame, iso: IsoflopFit, runs: RunArrays, point3: ParametricFit,
                   frontier: FrontierStage, settings: Settings,
                   points: np.ndarray | None = None, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Bootstrap samples of every fit on settings.bootstrap resamples of runs within each budget ({} if 0), by
    settings.bootstrap_scheme; where `points` (harness.analysis.noise.point_codes) shows seed repeats, points
    then seeds are resampled. point3 is Approach 3's point fit (its form, and under auto every candidate form),
    refitted on the runs in `keep` (all when None: harness.analysis.outliers leaves gross outliers out)."""
    if settings.bootstrap <= 0:
        return {}
    codes = pd.factorize(used["budget"])[0]
    if points is not None and has_repeats(points):
        two_stage = hierarchical_dirichlet_weights if settings.bootstrap_scheme == "bayesian" else hierarchical_weights
        weights = two_stage(codes, points, settings.bootstrap, settings.seed)
    else:
        weights = group_weights(codes, settings.bootstrap, settings.seed, settings.bootstrap_scheme)
    parabolas = fit_parabolas(iso.layout, weights, settings.huber_k, settings.irls_iters, settings.exclude_edge)
    if settings.frontier_source == "envelope":  # a budget's lowest loss varies only with which runs are drawn
        parabolas.envelope = lowest_observed(iso.layout, counts_from_weights(codes, weights, settings.seed))
    per_budget = approach2_samples(iso, parabolas)
    kept = np.ones(weights.shape[1], bool) if keep is None else keep
    approach3 = approach3_samples(runs.subset(kept), weights[:, kept], point3, settings)
    return {
        "approach2": per_budget.pop("approach2"),
        "frontier": frontier_samples(iso, frontier, parabolas, np.exp(approach3[:, 2]), settings),
        "approach3": approach3,
        **per_budget,
    }


def valid_counts(samples: dict[str, np.ndarray], n_resamples: int, diag: Diagnostics) -> dict[str, int]:
    """How many resamples gave each fit an estimate; warns when a fit lost more than 5% of them."""
    if n_resamples <= 0:
        diag.note("bootstrap=0: no intervals were computed")
        return {}
    valid = {
        "approach2": int(np.isfinite(samples["approach2"][:, 0]).sum()),
        "frontier": int(np.isfinite(samples["frontier"][:, 2]).sum()),
        "approach3": int(np.all(np.isfinite(samples["approach3"]), axis=1).sum()),
    }
    for name, n in valid.items():
        if n < MIN_VALID_SHARE * n_resamples:
            diag.warn(
                f"{name}: only {n} of {n_resamples} bootstrap resamples gave an estimate (the others lost budgets to "
                "the size, edge or downward-parabola rules); its interval is conditional on those; add sizes per budget"
            )
    return valid
