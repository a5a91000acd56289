"""Frontier stage: free E with enough budgets, E from Approach 3 with few or where a free E at its bound allows it
(an F-test), and the search-bound warning."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import canonicalize, select_fit_rows
from harness.analysis.approach2 import fit_isoflop
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.frontier import (
    E_AT_BOUND,
    E_AT_BOUND_KEPT,
    E_FROM_APPROACH3,
    FREE,
    METHODS,
    e_test_arrays,
    fit_frontier_stage,
    frontier_samples,
    k_at_bound,
    select_frontier,
    summarize_frontier,
)
from harness.analysis.powerlaw import K_BOUNDS, FrontierFit
from harness.analysis.synthetic import Law, isoflop_sweep

LAW = Law()


def iso(budgets):
    raw = isoflop_sweep(LAW, budgets=budgets, sizes_per_budget=7, span=12, noise=0.0)
    return fit_isoflop(select_fit_rows(canonicalize(raw)).used, Settings(), Diagnostics())


def test_free_frontier_matches_the_law() -> None:
    fit, diag = iso((1e18, 1e19, 1e20, 1e21)), Diagnostics()
    stage = fit_frontier_stage(fit, Settings(), approach3_E=99.0)
    block = summarize_frontier(stage, fit.n_usable, {}, 0.95, diag)
    assert stage.method == FREE and block["dof"] == 1 and diag.warnings == []
    assert block["E"].value == pytest.approx(LAW.E, rel=0.05)


def test_few_budgets_fix_E_to_approach3() -> None:
    fit, diag = iso((1e18, 1e19, 1e20)), Diagnostics()
    stage = fit_frontier_stage(fit, Settings(), approach3_E=1.5)
    block = summarize_frontier(stage, fit.n_usable, {}, 0.95, diag)
    assert stage.method == E_FROM_APPROACH3 and block["E"].value == 1.5 and block["dof"] == 1
    assert any("E is fixed to Approach 3" in n for n in diag.notes)


def test_free_E_at_its_bound_keeps_the_power_law_when_the_points_reject_approach3s_E() -> None:
    """A surface with no irreducible loss (E = 0): the free fit puts E on its bound, and Approach 3's E=0.25 bends
    the frontier away from its exact points, so the frontier stays a pure power law and says so."""
    flat = Law(E=1e-12)
    raw = isoflop_sweep(flat, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=7, span=12, noise=0.0)
    fit, diag = fit_isoflop(select_fit_rows(canonicalize(raw)).used, Settings(), Diagnostics()), Diagnostics()
    stage = fit_frontier_stage(fit, Settings(), approach3_E=0.25)
    block = summarize_frontier(stage, fit.n_usable, {}, 0.95, diag)
    assert stage.method == E_AT_BOUND_KEPT and block["E"].value < 1e-6 and block["dof"] == 1
    assert block["approach3_E_test"]["p"] < 0.05 and block["approach3_E_test"]["approach3_E"] == 0.25
    assert block["k"].value == pytest.approx(flat.alpha * flat.beta / (flat.alpha + flat.beta), rel=0.02)
    assert any("pure power law" in w for w in diag.warnings)
    # with an identifiable E (the default law) the free fit stays free and no test is made
    stage = fit_frontier_stage(iso((1e18, 1e19, 1e20, 1e21)), Settings(), approach3_E=0.25)
    assert stage.method == FREE and stage.e_test is None


def test_free_E_at_its_bound_takes_approach3s_E_only_where_the_points_allow_it() -> None:
    """Noisy E = 0 surface over 7 budgets (seed 6 puts the free E on its bound): an Approach 3 E of 0.05 is
    within the points' noise (Marin's remedy applies), 0.3 is not (the power law stays)."""
    raw = isoflop_sweep(Law(E=1e-12), budgets=(1e18, 3e18, 1e19, 3e19, 1e20, 3e20, 1e21), sizes_per_budget=7,
                        span=12, noise=0.01, seed=6)
    fit = fit_isoflop(select_fit_rows(canonicalize(raw)).used, Settings(), Diagnostics())
    diag = Diagnostics()
    near = fit_frontier_stage(fit, Settings(), approach3_E=0.05)
    block = summarize_frontier(near, fit.n_usable, {}, 0.95, diag)
    assert near.method == E_AT_BOUND and block["E"].value == 0.05 and block["dof"] == 5
    assert block["approach3_E_test"]["p"] > 0.05 and any("do not reject" in n for n in diag.notes)
    far = fit_frontier_stage(fit, Settings(), approach3_E=0.3)
    assert far.method == E_AT_BOUND_KEPT and far.fit.E[0] < 1e-6 and far.e_test["p"] < 0.05
    # a stricter level (99.9%) accepts what 95% rejected
    assert fit_frontier_stage(fit, Settings(level=0.999), approach3_E=0.3).method == E_AT_BOUND
    # the bootstrap refits E wherever the stage kept the free fit
    samples = frontier_samples(fit, far, fit.parabolas, np.full(1, 0.3), Settings())
    assert samples[0, 0] < 1e-6 and samples[0, 2] == pytest.approx(far.fit.k[0])
    assert METHODS[int(samples[0, 3])] == E_AT_BOUND_KEPT


def test_e_test_edge_cases() -> None:
    def fit(*sse: float) -> FrontierFit:
        one = np.ones(len(sse))
        return FrontierFit(E=0 * one, lnK_ref=one, k=one, sse=np.array(sse), n=5 * one)

    F, p = e_test_arrays(fit(1.0, 0.0, 1.0), fit(0.5, 0.5, 3.0))
    assert F[0] == 0.0 and p[0] == 1.0  # the fixed fit is no worse
    assert np.isinf(F[1]) and p[1] == 0.0  # an exact free fit rejects anything worse
    assert F[2] == pytest.approx(4.0) and p[2] == pytest.approx(0.1835, abs=1e-3)  # F(1, 2) = 4


def test_every_resample_goes_through_the_point_fits_rule() -> None:
    """Resampled rows by the same rule: 4 usable budgets fit E, 3 take Approach 3's E (as a 3-budget point fit
    would), 2 as well, 1 gives nothing; the summary counts the methods."""
    fit = iso((1e18, 1e19, 1e20, 1e21))
    L = np.repeat(fit.parabolas.L_opt[:1], 4, axis=0)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], bool)
    c = select_frontier(fit.lnC, L, mask, float(fit.lnC.mean()), np.full(4, 1.5), Settings())
    assert [METHODS[i] for i in c.code] == [FREE, E_FROM_APPROACH3, E_FROM_APPROACH3, E_FROM_APPROACH3]
    assert c.fit.E[0] == pytest.approx(LAW.E, rel=0.05) and c.fit.E[1] == c.fit.E[2] == 1.5
    assert np.isfinite(c.fit.k[:3]).all() and np.isnan(c.fit.k[3])
    stage = fit_frontier_stage(fit, Settings(), approach3_E=1.5)
    boot = np.stack([c.fit.E, c.fit.lnK_ref, c.fit.k, c.code.astype(float)], axis=1)
    block = summarize_frontier(stage, fit.n_usable, {"frontier": boot}, 0.95, Diagnostics())
    assert block["bootstrap_methods"] == {FREE: 1, E_FROM_APPROACH3: 2}


def test_k_at_bound() -> None:
    assert k_at_bound(K_BOUNDS[0]) and k_at_bound(K_BOUNDS[1]) and not k_at_bound(0.3)
    assert not k_at_bound(0.0052) and k_at_bound(0.00505) and k_at_bound(2.995)
