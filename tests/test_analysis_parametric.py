"""Approach 3 (Besiroglu et al. 2024): objective, gradient, recovery, warm refits, compute-optimal formula."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from harness.analysis.parametric import (
    _Problem,
    bootstrap_parametric,
    compute_optimal,
    fit_parametric,
    init_grid,
    predict_log_loss,
    refit,
)
from harness.analysis.synthetic import Law, isoflop_sweep

LAW = Law()


def data(noise: float, seed: int = 0):
    df = isoflop_sweep(LAW, budgets=tuple(np.logspace(18, 21, 5)), sizes_per_budget=7, span=10, noise=noise,
                       seed=seed)
    return np.log(df["params_total"].to_numpy()), np.log(df["tokens"].to_numpy()), np.log(df["val_bpb"].to_numpy())


def test_grid_is_hoffmanns() -> None:
    g = init_grid()
    assert g.shape == (4500, 5)
    assert set(np.unique(g[:, 3])) == {0.0, 0.5, 1.0, 1.5, 2.0} and g[:, 0].max() == 25.0


def test_gradient_matches_finite_differences() -> None:
    lnN, lnD, lnL = data(0.01)
    prob = _Problem(lnN, lnD, lnL, np.arange(lnN.size) % 3 + 1.0, 1e-3)
    t = prob.to_centred(np.array([6.0, 6.2, 0.5, 0.3, 0.3]))
    f, g = prob.value_grad(t)
    num = np.zeros(5)
    for i in range(5):
        h = np.zeros(5)
        h[i] = 1e-7
        num[i] = (prob.value_grad(t + h)[0] - prob.value_grad(t - h)[0]) / 2e-7
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-8)
    assert f > 0


def test_noise_free_recovery_is_exact() -> None:
    fit = fit_parametric(*data(0.0), starts=16)
    th = fit.theta
    np.testing.assert_allclose([fit.E, fit.A, fit.B, fit.alpha, fit.beta],
                               [LAW.E, LAW.A, LAW.B, LAW.alpha, LAW.beta], rtol=1e-4)
    np.testing.assert_allclose(np.exp(predict_log_loss(th, np.log(1e9), np.log(2e10))), LAW.loss(1e9, 2e10),
                               rtol=1e-6)


def test_noisy_recovery_of_a() -> None:
    fit = fit_parametric(*data(0.005, seed=3), starts=16)
    assert abs(fit.beta / (fit.alpha + fit.beta) - LAW.a) < 0.03


def test_warm_refit_with_unit_weights_stays_at_optimum() -> None:
    lnN, lnD, lnL = data(0.01, seed=1)
    fit = fit_parametric(lnN, lnD, lnL, starts=8)
    again = refit(lnN, lnD, lnL, np.ones(lnN.size), fit.theta)
    np.testing.assert_allclose(again, fit.theta, rtol=1e-4, atol=1e-6)
    W = np.ones((4, lnN.size))
    W[1, :5] = 0
    boot = bootstrap_parametric(lnN, lnD, lnL, W, fit.theta)
    assert boot.shape == (4, 5) and np.all(np.isfinite(boot))
    assert not np.allclose(boot[1], boot[0])  # dropping runs changes the refit


def test_compute_optimal_matches_numerical_minimum() -> None:
    theta = np.array([np.log(LAW.A), np.log(LAW.B), np.log(LAW.E), LAW.alpha, LAW.beta])
    C, kappa = 3e21, 6.0
    N, D, L = compute_optimal(theta, C, kappa)
    res = minimize_scalar(lambda ln: LAW.loss(np.exp(ln), C / (kappa * np.exp(ln))), bounds=(10, 30),
                          method="bounded", options={"xatol": 1e-10})
    np.testing.assert_allclose(np.log(N), res.x, atol=1e-4)
    np.testing.assert_allclose(N * D * kappa, C, rtol=1e-12)
    np.testing.assert_allclose(L, LAW.frontier(C), rtol=1e-10)
    Ns, _, _ = compute_optimal(np.stack([theta, theta])[:, None, :], np.array([[1e20, 1e21]]), kappa)
    assert Ns.shape == (2, 2) and Ns[0, 1] > Ns[0, 0]
