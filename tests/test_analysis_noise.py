"""Seed noise: measured from repeats as the theory says, used by the bootstrap, wild seeds reported, and the
noise floor beside prediction errors."""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from harness.analysis import fit_all, predict_many
from harness.analysis.context import Diagnostics
from harness.analysis.estimate import Estimate
from harness.analysis.fits import Fits
from harness.analysis.load import canonicalize
from harness.analysis.noise import (
    against_target,
    hierarchical_dirichlet_weights,
    hierarchical_weights,
    noise_floor,
    point_codes,
    prediction_interval,
    seed_noise,
    within_noise,
)
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.report import render_markdown


def _used(df: pd.DataFrame) -> pd.DataFrame:
    return canonicalize(df)


def test_pooled_noise_recovers_the_injected_sd_and_its_interval_covers_95_percent() -> None:
    # loss = truth * exp(sigma z): the sd of ln(loss) across seeds is sigma exactly, so the chi-square interval
    # must cover sigma in ~95% of independent synthetic sweeps
    sigma, covered, n = 0.004, 0, 200
    for rep in range(n):
        df = isoflop_sweep(budgets=(1e18, 1e19), sizes_per_budget=3, noise=sigma, seeds=3, seed=rep)
        p = seed_noise(_used(df), Diagnostics())["pooled"]
        assert p["dof"] == 12 and p["points"] == 6
        covered += p["rel_sd_lo"] <= sigma <= p["rel_sd_hi"]
    assert 0.90 <= covered / n <= 0.99
    big = seed_noise(_used(isoflop_sweep(noise=sigma, seeds=8, seed=1)), Diagnostics())["pooled"]
    assert big["rel_sd"] == pytest.approx(sigma, rel=0.1)


def test_no_repeats_means_not_measured_and_the_plain_bootstrap() -> None:
    df = isoflop_sweep(budgets=(1e18, 3e18, 1e19), sizes_per_budget=5, noise=0.003)
    nz = seed_noise(_used(df), Diagnostics())
    assert nz["measured"] is False and "sweep.seeds" in nz["reason"]
    assert noise_floor(nz) is None and within_noise(0.001, None) is None
    fits = fit_all(df, {"bootstrap": 40})
    assert fits.bootstrap["stratified_by"] == "budget"


def test_a_floor_measured_elsewhere_judges_a_table_without_repeats_and_never_overrides_a_measured_one() -> None:
    """analysis noise.floor (the demo's: its sweep's seeds measured once, results/FINDINGS.md "The sweep's own seed
    noise"): without repeats, errors are judged against it and the report says where it came from; with repeats the
    table's own noise wins."""
    from harness.errors import HarnessError

    single = isoflop_sweep(budgets=(1e18, 3e18, 1e19), sizes_per_budget=5, noise=0.003)
    fits = fit_all(single, {"bootstrap": 0, "noise": {"floor": 0.0135, "source": "bench/seeds"}})
    nz = fits.noise
    assert nz["measured"] is False and nz["assumed"] == {"rel_sd": 0.0135, "source": "bench/seeds"}
    assert noise_floor(nz, 1e19) == 0.0135 and within_noise(0.02, noise_floor(nz)) is True
    text = render_markdown(fits)
    assert "judged against 1.35% from bench/seeds" in text and "measured elsewhere" in text
    repeated = isoflop_sweep(budgets=(1e18, 1e19), sizes_per_budget=3, noise=0.004, seeds=3, seed=1)
    measured = fit_all(repeated, {"bootstrap": 0, "noise": {"floor": 0.5}}).noise
    assert measured["measured"] and "assumed" not in measured
    assert noise_floor(measured) == pytest.approx(measured["pooled"]["rel_sd"])
    for bad in (-0.01, 1.5):
        with pytest.raises(HarnessError, match=r"noise\.floor"):
            fit_all(single, {"bootstrap": 0, "noise": {"floor": bad}})


def test_hierarchical_weights_draw_points_then_seeds() -> None:
    df = _used(isoflop_sweep(budgets=(1e18, 1e19), sizes_per_budget=4, seeds=3))
    points = point_codes(df)
    assert len(np.unique(points)) == 8 and np.bincount(points).tolist() == [3] * 8
    budgets = pd.factorize(df["budget"])[0]
    W = hierarchical_weights(budgets, points, 500, seed=0)
    for b in range(2):  # each budget keeps its run count: 4 points x 3 seeds
        assert (W[:, budgets == b].sum(axis=1) == 12).all()
    per_point = np.stack([W[:, points == p].sum(axis=1) for p in range(8)], axis=1)
    assert (per_point % 3 == 0).all()  # a drawn point brings as many seed draws as it has seeds
    within = W[:, points == 0][per_point[:, 0] == 3]  # resamples that drew point 0 once
    assert (within != 1).any()  # ... and its seeds were themselves resampled, not copied
    assert np.array_equal(W, hierarchical_weights(budgets, points, 500, seed=0))  # deterministic


def test_bayesian_two_stage_weights_keep_every_run() -> None:
    """Dirichlet over each budget's points, then over each point's seeds: all runs weighted, each budget's total
    kept, and a point's seeds do not share one weight (the second stage varies them)."""
    df = _used(isoflop_sweep(budgets=(1e18, 1e19), sizes_per_budget=4, seeds=3))
    points, budgets = point_codes(df), pd.factorize(df["budget"])[0]
    W = hierarchical_dirichlet_weights(budgets, points, 500, seed=0)
    assert np.all(W > 0)
    for b in range(2):
        np.testing.assert_allclose(W[:, budgets == b].sum(axis=1), 12)
    per_point = np.stack([W[:, points == p].sum(axis=1) for p in range(8)], axis=1)
    assert per_point.std() > 0.3 and W[:, points == 0].std(axis=1).mean() > 0.1
    np.testing.assert_array_equal(W, hierarchical_dirichlet_weights(budgets, points, 500, seed=0))


def test_fit_with_repeats_uses_the_two_stage_bootstrap_and_round_trips() -> None:
    df = isoflop_sweep(budgets=(1e18, 3e18, 1e19, 3e19), sizes_per_budget=5, noise=0.004, seeds=2, seed=3)
    fits = fit_all(df, {"bootstrap": 60})
    assert fits.bootstrap["stratified_by"] == "budget, then seed within point"
    assert fits.noise["measured"] and len(fits.noise["per_budget"]) == 4
    back = Fits.from_dict(json.loads(fits.to_json()))
    C = fits.noise["per_budget"][1]["budget"]
    assert noise_floor(back.noise, C) == pytest.approx(fits.noise["per_budget"][1]["rel_sd"])
    assert noise_floor(back.noise, 5e25) == pytest.approx(fits.noise["pooled"]["rel_sd"])
    text = render_markdown(fits)
    assert "## Seed noise" in text and "two-stage bootstrap" in text


def test_a_wild_seed_is_reported_and_kept_out_of_the_noise_figure() -> None:
    df = isoflop_sweep(budgets=(1e18, 1e19), sizes_per_budget=4, noise=0.003, seeds=2, seed=5)
    bad = df.index[(df["budget_flops"] == 1e19) & (df["seed"] == 1)][2]
    df.loc[bad, "val_bpb"] *= 1.15  # one seed went wrong
    diag = Diagnostics()
    nz = seed_noise(_used(df), diag)
    assert nz["wild_points"] == 1
    assert any("seeds disagree at budget 1e+19" in w for w in diag.warnings)
    assert nz["pooled"]["rel_sd"] < 0.01  # the 14% gap did not inflate the noise figure


def test_within_noise_uses_z_times_the_floor() -> None:
    assert within_noise(0.005, 0.003) is True
    assert within_noise(-0.007, 0.003) is False
    assert within_noise(None, 0.003) is None


def test_synthetic_law_intervals_cover_the_truth_under_seed_noise() -> None:
    # with seed noise in every point, the two-stage bootstrap's 95% interval for Approach 3's a covers the true
    # a in most independent sweeps (8 repeats: P(<6 inside | 95% coverage) < 1%)
    law, inside = Law(), 0
    for rep in range(8):
        df = isoflop_sweep(law, sizes_per_budget=5, noise=0.006, seeds=2, seed=100 + rep)
        inside += fit_all(df, {"bootstrap": 80}).approach3["a"].contains(law.a)
    assert inside >= 6


@pytest.mark.parametrize("law_sd, seed_sd", [(0.0005, 0.02), (0.02, 0.02), (0.03, 0.01)])
def test_prediction_interval_covers_a_new_noisy_run_at_the_nominal_rate(law_sd: float, seed_sd: float) -> None:
    # a law whose own estimate is off by N(0, law_sd) in ln(loss) and runs that scatter N(0, seed_sd) around the
    # truth: the law's 95% interval covers the truth 95% of the time, but a new run only when the seed noise is
    # small against it; widened by the seed noise in quadrature, it covers a new run 95% of the time
    rng = np.random.default_rng(0)
    n, z = 20000, 1.959964
    truth = 2.0
    law_err, run_err = rng.normal(0, law_sd, n), rng.normal(0, seed_sd, n)
    covered_law = covered_pi = 0
    for e, r in zip(law_err[:4000], run_err[:4000]):
        v = truth * np.exp(e)
        est = Estimate(v, v * np.exp(-z * law_sd), v * np.exp(z * law_sd), 1000)
        actual = truth * np.exp(r)
        pi = prediction_interval(est, seed_sd, 0.95)
        covered_law += bool(est.contains(actual))
        covered_pi += bool(pi.contains(actual))
    expected_law = 2 * NormalDist().cdf(z * law_sd / np.hypot(law_sd, seed_sd)) - 1
    assert covered_law / 4000 == pytest.approx(expected_law, abs=0.02)
    assert covered_pi / 4000 == pytest.approx(0.95, abs=0.012)


def test_prediction_interval_widens_each_side_in_quadrature_and_needs_its_inputs() -> None:
    est = Estimate(2.0, 1.9, 2.3, 500)
    pi = prediction_interval(est, 0.01, 0.95)
    zs = 1.959964 * 0.01
    assert pi.value == 2.0 and pi.n == 500
    assert pi.lo == pytest.approx(2.0 * np.exp(-np.hypot(np.log(2.0 / 1.9), zs)), rel=1e-6)
    assert pi.hi == pytest.approx(2.0 * np.exp(np.hypot(np.log(2.3 / 2.0), zs)), rel=1e-6)
    assert pi.lo < est.lo and pi.hi > est.hi
    still = prediction_interval(est, 0.0, 0.95)  # no seed noise: the law's own interval
    assert (still.lo, still.hi) == pytest.approx((1.9, 2.3))
    # a wider level widens it; no interval, no noise figure or no prediction: none
    assert prediction_interval(est, 0.01, 0.99).lo < pi.lo
    assert prediction_interval(Estimate(2.0), 0.01, 0.95) is None
    assert prediction_interval(est, None, 0.95) is None
    assert prediction_interval(Estimate(None, 1.0, 2.0), 0.01, 0.95) is None


def test_against_target_widens_each_side_by_the_targets_opposite_half() -> None:
    # a target above the prediction may truly sit as low as its lower end: that half widens the upper side
    p, t = Estimate(2.0, 1.9, 2.2, 100), Estimate(2.5, 2.3, 2.6, 100)
    w = against_target(p, t)
    assert w.hi == pytest.approx(2.0 * np.exp(np.hypot(np.log(2.2 / 2.0), np.log(2.5 / 2.3))))
    assert w.lo == pytest.approx(2.0 * np.exp(-np.hypot(np.log(2.0 / 1.9), np.log(2.6 / 2.5))))
    assert not p.contains(2.5) and not w.contains(2.5)  # 22% off is beyond both intervals together
    assert w.contains(2.24) and not p.contains(2.24)  # 11% off is not
    assert against_target(p, Estimate(2.5)) is None and against_target(Estimate(2.0), t) is None


def test_the_reports_predictions_say_where_one_run_should_land_when_the_seed_noise_is_known() -> None:
    single = isoflop_sweep(budgets=(1e18, 3e18, 1e19), sizes_per_budget=5, noise=0.003)
    fits = fit_all(single, {"bootstrap": 40, "noise": {"floor": 0.02, "source": "elsewhere"}})
    fits.predictions = predict_many(fits)
    text = render_markdown(fits)
    assert "| one run there |" in text and "`one run there`: the loss's interval widened" in text
    loss = fits.predictions[0]["approach3"]["loss"]
    wide = prediction_interval(loss, 0.02, 0.95)
    assert f"[{wide.lo:.4g}, {wide.hi:.4g}]" in text and wide.lo < loss.lo
    # no noise figure (one seed, no floor): the column is not claimed
    bare = fit_all(single, {"bootstrap": 40})
    bare.predictions = predict_many(bare)
    assert bare.predictions and "one run there" not in render_markdown(bare)
