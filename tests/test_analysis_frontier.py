"""Frontier stage: free E with enough budgets, E from Approach 3 with few, and the search-bound warning."""

from __future__ import annotations

import pytest

from harness.analysis import canonicalize, select_fit_rows
from harness.analysis.approach2 import fit_isoflop
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.frontier import (
    E_AT_BOUND,
    E_FROM_APPROACH3,
    FREE,
    fit_frontier_stage,
    k_at_bound,
    summarize_frontier,
)
from harness.analysis.powerlaw import K_BOUNDS
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


def test_free_E_at_its_bound_is_replaced_by_approach3s() -> None:
    """A surface with no irreducible loss (E = 0): the free fit puts E on its bound, which identifies nothing,
    so E is fixed to Approach 3's value (Marin's remedy) and the note says why."""
    flat = Law(E=1e-12)
    raw = isoflop_sweep(flat, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=7, span=12, noise=0.0)
    fit, diag = fit_isoflop(select_fit_rows(canonicalize(raw)).used, Settings(), Diagnostics()), Diagnostics()
    stage = fit_frontier_stage(fit, Settings(), approach3_E=0.25)
    block = summarize_frontier(stage, fit.n_usable, {}, 0.95, diag)
    assert stage.method == E_AT_BOUND and block["E"].value == 0.25 and block["dof"] == 2
    assert any("bound 0" in n for n in diag.notes)
    # with an identifiable E (the default law) the free fit stays free
    assert fit_frontier_stage(iso((1e18, 1e19, 1e20, 1e21)), Settings(), approach3_E=0.25).method == FREE


def test_k_at_bound() -> None:
    assert k_at_bound(K_BOUNDS[0]) and k_at_bound(K_BOUNDS[1]) and not k_at_bound(0.3)
    assert not k_at_bound(0.0052) and k_at_bound(0.00505) and k_at_bound(2.995)
