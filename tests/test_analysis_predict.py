"""harness.analysis.predict: Approach 2's loss off its optimum (the IsoFLOP curvature carried to a larger budget)
on synthetic sweeps of a known law, against the law's own loss at the same (N, C)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import approach2_loss_at, canonicalize, fit_all, predict_at_budget
from harness.analysis.predict import isoflop_curvature
from harness.analysis.synthetic import Law, isoflop_sweep

BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)
# With no irreducible term the curvature of ln L in ln N along an IsoFLOP curve is alpha * beta at every budget,
# so each parabola's c2 / L_opt is alpha * beta / 2.
PURE = Law(E=0.0)


def _fits(law: Law, noise: float, bootstrap: int, seed: int = 0):
    df = canonicalize(isoflop_sweep(law, budgets=BUDGETS, sizes_per_budget=7, noise=noise, seed=seed))
    return fit_all(df, {"bootstrap": bootstrap})


def test_curvature_of_a_pure_power_law_is_alpha_beta_over_two() -> None:
    point, samples = isoflop_curvature(_fits(PURE, 0.0, 0))
    assert samples is None
    assert point == pytest.approx(PURE.alpha * PURE.beta / 2, rel=0.1)


@pytest.mark.parametrize("law", [PURE, Law()], ids=["no E", "chinchilla"])
@pytest.mark.parametrize("noise", [0.0, 0.001])
def test_the_rise_off_the_optimum_at_10x_is_the_laws(law: Law, noise: float) -> None:
    fits = _fits(law, noise, 0)
    C = 10 * BUDGETS[-1]
    opt = predict_at_budget(fits, C)["approach2"]
    for step in (-0.4, 0.3):  # either side of the predicted N*
        N = opt["N"].value * np.exp(step)
        at_n = approach2_loss_at(fits, C, N).value
        true_rise = float(law.loss(N, C / (6 * N)) - law.frontier(C))
        assert at_n - opt["loss"].value == pytest.approx(true_rise, rel=0.1)
        if noise == 0.0:  # the frontier alone misses such a run by its rise; raised, it lands on the law
            truth = float(law.loss(N, C / (6 * N)))
            assert abs(opt["loss"].value / truth - 1) > 0.001 and abs(at_n / truth - 1) < 0.0005


def test_at_the_optimum_it_is_the_frontier_and_intervals_carry_the_resamples() -> None:
    fits = _fits(Law(), 0.005, 200)
    C = 10 * BUDGETS[-1]
    opt = predict_at_budget(fits, C)["approach2"]
    assert approach2_loss_at(fits, C, opt["N"].value).value == pytest.approx(opt["loss"].value, rel=1e-12)
    off = approach2_loss_at(fits, C, 3 * opt["N"].value)
    assert off.n == 200 and off.lo < off.value < off.hi
    point, samples = isoflop_curvature(fits)
    assert samples.shape == (200,) and np.isfinite(samples).all()
    assert np.quantile(samples, 0.025) < point < np.quantile(samples, 0.975)
    # a saved fit without curvature samples (an older bootstrap_samples.npz) falls back to the point curvature
    fits.samples.pop("budget_c2")
    old = approach2_loss_at(fits, C, 3 * opt["N"].value)
    assert old.value == pytest.approx(off.value) and old.n == 200
