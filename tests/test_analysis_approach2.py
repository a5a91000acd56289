"""Approach 2 stage by stage: budgets with too few sizes, IsoFLOP parabolas, power laws, the per-budget table."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import canonicalize, select_fit_rows
from harness.analysis.approach2 import (
    approach2_samples,
    budget_table,
    fit_approach2,
    fit_isoflop,
    isoflop_rows,
    summarize_approach2,
)
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.estimate import Estimate
from harness.analysis.isoflop import fit_parabolas
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.errors import HarnessError

LAW = Law()


def used(**kw):
    kw.setdefault("budgets", (1e18, 1e19, 1e20, 1e21))
    return select_fit_rows(canonicalize(isoflop_sweep(LAW, sizes_per_budget=7, span=12, noise=0.0, **kw))).used


def test_point_fit_recovers_the_law_and_builds_the_table() -> None:
    diag = Diagnostics()
    iso = fit_isoflop(used(), Settings(), diag)
    laws = fit_approach2(iso, diag)
    block = summarize_approach2(iso, laws, {}, 0.95)
    assert iso.n_usable == 4 and diag.warnings == [] and diag.notes == []
    assert block["a"].value == pytest.approx(LAW.a, abs=0.02) and block["a"].n == 0 and block["a"].lo is None
    assert block["k_N"].value == pytest.approx(np.exp(block["ln_k_N"]))
    table = budget_table(iso, {}, 0.95, diag)
    assert [b["status"] for b in table] == ["ok"] * 4 and all(isinstance(b["N_opt"], Estimate) for b in table)


def test_resampled_parabolas_give_samples_and_intervals() -> None:
    rows = used(seed=1)
    iso = fit_isoflop(rows, Settings(), Diagnostics())
    W = np.random.default_rng(0).integers(0, 3, size=(50, len(rows))).astype(np.int32)
    samples = approach2_samples(iso, fit_parabolas(iso.layout, W))
    assert samples["approach2"].shape == (50, 4) and samples["budget_lnN"].shape == (50, 4)
    block = summarize_approach2(iso, fit_approach2(iso, Diagnostics()), samples, 0.95)
    assert block["a"].has_interval and 0 < block["a"].n <= 50



def test_the_table_says_why_resamples_lost_a_budget() -> None:
    """Hand-made resamples: budget 0 keeps 2 of its 7 sizes in 3 of 4 rows (too_few_sizes), the others keep
    every run; the table counts each budget's statuses and a note names the cause for budget 0 only."""
    rows = used(seed=1)
    iso = fit_isoflop(rows, Settings(), Diagnostics())
    W = np.ones((4, len(rows)), dtype=np.int32)
    first = iso.layout.index[0][iso.layout.mask[0]]  # budget 0's runs, smallest size first
    W[:3, first[2:]] = 0
    samples = approach2_samples(iso, fit_parabolas(iso.layout, W))
    diag = Diagnostics()
    table = budget_table(iso, samples, 0.95, diag)
    assert table[0]["resamples"] == {"ok": 1, "too_few_sizes": 3}
    assert [t["resamples"] for t in table[1:]] == [{"ok": 4}] * 3
    assert [n for n in diag.notes if "bootstrap resamples" in n] == [
        f"budget {table[0]['budget']:.3g}: usable in 1 of 4 bootstrap resamples; lost to too_few_sizes 3 "
        "(fewer than 3 distinct sizes drawn)"]
    assert "resamples" not in budget_table(iso, {}, 0.95, Diagnostics())[0]  # no bootstrap, no counts

def test_too_few_sizes_refused_or_dropped() -> None:
    rows = used()
    small = rows[~((rows["budget"] == 1e18) & (rows["params"] > rows["params"].min() * 1.5))]
    with pytest.raises(HarnessError, match="fewer than 3 distinct model sizes"):
        isoflop_rows(small, Settings(), Diagnostics())
    diag = Diagnostics()
    kept = isoflop_rows(small, Settings(drop_small_budgets=True), diag)
    assert 1e18 not in set(kept["budget"]) and "left out of Approach 2" in diag.warnings[0]


def test_two_budgets_get_a_note() -> None:
    diag = Diagnostics()
    fit_approach2(fit_isoflop(used(budgets=(1e18, 1e19)), Settings(), diag), diag)
    assert any("exactly 2 budgets" in n for n in diag.notes)


def test_budgets_of_exactly_three_single_runs_are_flagged_as_exact_fits() -> None:
    rows = select_fit_rows(canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20), sizes_per_budget=3, span=6,
                                                      noise=0.01))).used
    diag = Diagnostics()
    isoflop_rows(rows, Settings(), diag)
    assert len(diag.warnings) == 1 and "exactly 3 sizes" in diag.warnings[0] and "1e+18, 1e+19, 1e+20" in diag.warnings[0]
    # what the warning is about: Bayesian weights cannot move a parabola through 3 points
    fits = fit_parabolas(fit_isoflop(rows, Settings(), Diagnostics()).layout, np.random.default_rng(0).dirichlet(
        np.ones(len(rows)), size=20) * len(rows))
    assert np.ptp(fits.lnN_opt, axis=0).max() < 1e-9
    repeated = select_fit_rows(canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19), sizes_per_budget=3, seeds=2))).used
    seeds = Diagnostics()
    isoflop_rows(repeated, Settings(), seeds)  # repeats: the seeds' spread moves each point's mean
    five = Diagnostics()
    isoflop_rows(used(), Settings(), five)
    assert not seeds.warnings and not five.warnings
