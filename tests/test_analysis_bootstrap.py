"""Bootstrap: seeded, stratified by budget (both schemes), and its 95% intervals cover the truth in most seeds."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import canonicalize, fit_all, predict_at_budget
from harness.analysis.bootstrap import counts_from_weights, dirichlet_weights, interval, stratified_weights
from harness.analysis.synthetic import Law, isoflop_sweep

LAW = Law()


def test_weights_are_seeded_and_stratified() -> None:
    groups = np.repeat([0, 1, 2], [5, 7, 4])
    W = stratified_weights(groups, 300, seed=7)
    assert W.shape == (300, 16)
    np.testing.assert_array_equal(W, stratified_weights(groups, 300, seed=7))
    assert not np.array_equal(W, stratified_weights(groups, 300, seed=8))
    for g, n in ((0, 5), (1, 7), (2, 4)):
        assert np.all(W[:, groups == g].sum(axis=1) == n)  # each budget keeps its run count
    assert 0.28 < (W == 0).mean() < 0.38  # a run is left out of a resample with probability (1 - 1/n)^n


def test_bayesian_weights_keep_every_run_and_each_budgets_total() -> None:
    """Rubin 1981: Dirichlet(1, ..., 1) weights inside each budget, scaled to its run count; no run drops out, and a
    run's weight has mean 1 and variance (n - 1) / (n + 1)."""
    groups = np.repeat([0, 1, 2], [5, 7, 4])
    W = dirichlet_weights(groups, 4000, seed=7)
    np.testing.assert_array_equal(W, dirichlet_weights(groups, 4000, seed=7))
    assert W.shape == (4000, 16) and np.all(W > 0)
    for g, n in ((0, 5), (1, 7), (2, 4)):
        np.testing.assert_allclose(W[:, groups == g].sum(axis=1), n)
        assert W[:, groups == g].var() == pytest.approx((n - 1) / (n + 1), rel=0.08)


def test_interval() -> None:
    s = np.concatenate([np.linspace(0, 1, 1001), [np.nan] * 5])
    lo, hi = interval(s)
    assert abs(lo - 0.025) < 1e-9 and abs(hi - 0.975) < 1e-9
    assert np.isnan(interval(np.array([1.0, 2.0]))[0])  # too few samples for an interval


def test_same_seed_same_numbers() -> None:
    df = canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6, noise=0.01, seed=2))
    f1 = fit_all(df, {"bootstrap": 30, "seed": 5})
    f2 = fit_all(df, {"bootstrap": 30, "seed": 5})
    f3 = fit_all(df, {"bootstrap": 30, "seed": 6})
    assert f1.approach2["a"] == f2.approach2["a"] and f1.approach3["a"] == f2.approach3["a"]
    assert f1.approach3["a"].lo != f3.approach3["a"].lo
    assert f1.samples["approach3"].shape == (30, 6) and f1.samples["approach2"].shape == (30, 4)


@pytest.mark.parametrize("scheme", ["runs", "bayesian"])
def test_intervals_cover_the_truth_in_most_seeds(scheme: str) -> None:
    """10 independent noisy sweeps; the 95% intervals of a (both approaches) and of the frontier loss at 10x the
    largest budget must contain the truth in at least 7 of them, under either resampling scheme."""
    covered = np.zeros(4, int)
    C = 1e22
    for seed in range(10):
        df = canonicalize(isoflop_sweep(LAW, budgets=tuple(np.logspace(18, 21, 5)), sizes_per_budget=7, span=10,
                                        noise=0.01, seed=100 + seed))
        f = fit_all(df, {"bootstrap": 100, "seed": seed, "bootstrap_scheme": scheme, "parametric": {"starts": 8}})
        p = predict_at_budget(f, C)
        a2, a3 = f.approach2["a"], f.approach3["a"]
        covered += [
            a2.lo <= LAW.a <= a2.hi,
            a3.lo <= LAW.a <= a3.hi,
            p["approach2"]["loss"].lo <= LAW.frontier(C) <= p["approach2"]["loss"].hi,
            p["approach3"]["loss"].lo <= LAW.frontier(C) <= p["approach3"]["loss"].hi,
        ]
    assert np.all(covered >= 7), covered


def test_parallel_bootstrap_equals_serial() -> None:
    df = canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20), sizes_per_budget=5, noise=0.01, seed=3))
    serial = fit_all(df, {"bootstrap": 12, "jobs": 1, "parametric": {"starts": 4}})
    forked = fit_all(df, {"bootstrap": 12, "jobs": 2, "parametric": {"starts": 4}})
    np.testing.assert_allclose(forked.samples["approach3"], serial.samples["approach3"], rtol=1e-12)


def test_counts_drawn_from_weights_keep_each_budgets_size_and_follow_the_weights() -> None:
    groups = np.array([0, 0, 0, 1, 1, 1, 1])
    counts = stratified_weights(groups, 50, seed=3)
    assert np.array_equal(counts_from_weights(groups, counts, seed=0), counts)  # counts already: unchanged
    W = dirichlet_weights(groups, 4000, seed=3)
    drawn = counts_from_weights(groups, W, seed=0)
    assert drawn.dtype.kind == "i" and np.array_equal(drawn, counts_from_weights(groups, W, seed=0))
    assert (drawn[:, :3].sum(axis=1) == 3).all() and (drawn[:, 3:].sum(axis=1) == 4).all()
    assert (drawn == 0).any(axis=1).mean() > 0.5  # unlike the weights, draws leave runs out
    # a run's expected count is its weight's share of the group times the group's size
    share = W[:, :3] / W[:, :3].sum(axis=1, keepdims=True) * 3
    assert drawn[:, :3].mean(axis=0) == pytest.approx(share.mean(axis=0), abs=0.05)
    heavy = W[:, 0] > 2.0  # a run holding most of its budget's weight is drawn more than once on average
    assert drawn[heavy, 0].mean() > 1.8


def test_an_envelope_frontier_gets_intervals_under_either_scheme() -> None:
    # a budget's lowest loss never moves under Dirichlet weights, which keep every run; drawn runs move it
    df = canonicalize(isoflop_sweep(Law(), sizes_per_budget=5, noise=0.01, seed=2))
    for scheme in ("bayesian", "runs"):
        f = fit_all(df, {"bootstrap": 200, "bootstrap_scheme": scheme, "frontier": {"source": "envelope"}})
        k = f.frontier["k"]
        assert k.lo < k.value < k.hi, scheme
        loss = predict_at_budget(f, 1e21)["approach2"]["loss"]
        assert loss.lo < loss.value < loss.hi, scheme
