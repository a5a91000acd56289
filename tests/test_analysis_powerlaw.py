"""Log-log regression and the frontier L_opt(C) = E + K C^-k."""

from __future__ import annotations

import numpy as np

from harness.analysis.powerlaw import fit_frontier, fit_loglog, frontier_value


def test_loglog_recovers_slope_and_respects_mask() -> None:
    lnC = np.log(np.array([1e18, 1e19, 1e20, 1e21]))
    lny = np.log(0.3) + 0.48 * lnC
    lny_bad = lny.copy()
    lny_bad[3] += 5.0
    fit = fit_loglog(lnC, np.stack([lny, lny_bad]), np.array([[True] * 4, [True, True, True, False]]))
    np.testing.assert_allclose(fit.slope, [0.48, 0.48], rtol=1e-10)
    np.testing.assert_allclose(np.exp(fit.intercept), [0.3, 0.3], rtol=1e-8)
    one = fit_loglog(lnC, lny[None], np.array([[True, False, False, False]]))
    assert np.isnan(one.slope[0])


def test_frontier_recovers_exact_parameters() -> None:
    C = np.logspace(17, 21, 6)
    lnC = np.log(C)
    ref = float(lnC.mean())
    E, K, k = 1.8, 900.0, 0.16
    L = E + K * C ** (-k)
    fit = fit_frontier(lnC, L[None], np.ones((1, 6), bool), ref)
    assert abs(fit.E[0] - E) < 1e-4 and abs(fit.k[0] - k) < 1e-4
    np.testing.assert_allclose(np.exp(fit.lnK_ref[0] + fit.k[0] * ref), K, rtol=1e-3)
    np.testing.assert_allclose(frontier_value(fit.E[0], fit.lnK_ref[0], fit.k[0], lnC, ref), L, rtol=1e-7)


def test_frontier_with_fixed_E_and_batch_rows_are_independent() -> None:
    C = np.logspace(18, 20, 3)
    lnC = np.log(C)
    L1 = 1.7 + 400.0 * C ** (-0.15)
    L2 = 2.0 + 50.0 * C ** (-0.1)
    fit = fit_frontier(lnC, np.stack([L1, L2]), np.ones((2, 3), bool), float(lnC.mean()), E_fixed=np.array([1.7, 2.0]))
    np.testing.assert_allclose(fit.k, [0.15, 0.1], atol=1e-5)
    np.testing.assert_allclose(fit.E, [1.7, 2.0])
    # with two points and E free there are fewer points than parameters: no estimate
    two = fit_frontier(lnC[:2], L1[None, :2], np.ones((1, 2), bool), float(lnC.mean()))
    assert np.isnan(two.k[0])


def test_frontier_keeps_E_non_negative() -> None:
    C = np.logspace(18, 21, 5)
    L = 5.0 * C ** (-0.05)  # a pure power law: the best free E would be <= 0
    fit = fit_frontier(np.log(C), L[None], np.ones((1, 5), bool), float(np.log(C).mean()))
    assert 0.0 <= fit.E[0] < 1e-6
    assert abs(fit.k[0] - 0.05) < 1e-4
