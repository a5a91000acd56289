"""Approach 3 (Besiroglu et al. 2024): objective, gradient, recovery, warm refits, compute-optimal formula, for
both forms (Chinchilla's and Kaplan et al. 2020's)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from harness.analysis.parametric import (
    E_OFF,
    FORMS,
    _Problem,
    as_theta6,
    bootstrap_parametric,
    compute_optimal,
    fit_parametric,
    form_of,
    init_grid,
    predict_log_loss,
    refit,
)
from harness.analysis.synthetic import Law, isoflop_sweep

LAW = Law()
LAW_THETA = np.array([np.log(LAW.A), np.log(LAW.B), np.log(LAW.E), LAW.alpha, LAW.beta, 1.0])
# Kaplan et al. 2020, Table 2: N_c = 8.8e13, D_c = 5.4e13, alpha_N = 0.076, alpha_D = 0.095, as theta.
KAPLAN = np.array([0.8 * np.log(8.8e13), np.log(5.4e13), E_OFF, 0.076 / 0.095, 1.0, 0.095])


def kaplan_data(noise: float, seed: int = 0):
    """The Chinchilla sweep's (N, D) grid with losses from Kaplan's law."""
    lnN, lnD, _ = data(0.0)
    rng = np.random.default_rng(seed)
    return lnN, lnD, predict_log_loss(KAPLAN, lnN, lnD) + noise * rng.standard_normal(lnN.size)


def data(noise: float, seed: int = 0):
    df = isoflop_sweep(LAW, budgets=tuple(np.logspace(18, 21, 5)), sizes_per_budget=7, span=10, noise=noise,
                       seed=seed)
    return np.log(df["params_total"].to_numpy()), np.log(df["tokens"].to_numpy()), np.log(df["val_bpb"].to_numpy())


def test_grid_is_hoffmanns() -> None:
    g = init_grid()
    assert g.shape == (4500, 6) and np.all(g[:, 5] == 1.0)
    assert set(np.unique(g[:, 3])) == {0.0, 0.5, 1.0, 1.5, 2.0} and g[:, 0].max() == 25.0
    k = init_grid(FORMS["kaplan"])
    assert np.all(k[:, 2] == E_OFF) and np.all(k[:, 4] == 1.0) and len(np.unique(k[:, 5])) > 3


@pytest.mark.parametrize("form,theta", [("chinchilla", [6.0, 6.2, 0.5, 0.3, 0.3, 1.0]),
                                        ("kaplan", [20.0, 25.0, E_OFF, 0.7, 1.0, 0.12])])
def test_gradient_matches_finite_differences(form: str, theta: list[float]) -> None:
    lnN, lnD, lnL = data(0.01)
    W = np.stack([np.arange(lnN.size) % 3 + 1.0, np.ones(lnN.size)])
    prob = _Problem(lnN, lnD, lnL, W, 1e-3, FORMS[form])
    t = prob.to_centred(np.array(theta))
    assert t.size == FORMS[form].n_params
    row = np.array([0])
    f, g = prob.value_grad(t[None, :], row)
    num = np.zeros(t.size)
    for i in range(t.size):
        h = np.zeros(t.size)
        h[i] = 1e-7
        num[i] = (prob.value_grad((t + h)[None, :], row)[0][0] - prob.value_grad((t - h)[None, :], row)[0][0]) / 2e-7
    np.testing.assert_allclose(g[0], num, rtol=1e-4, atol=1e-8)
    assert f[0] > 0
    # rows are independent: the same point under both weight rows at once gives each row's own value
    both = prob.value_grad(np.stack([t, t]), np.array([1, 0]))
    assert both[0][1] == f[0] and both[0][0] != f[0]


def test_kaplan_recovery_and_form_of() -> None:
    fit = fit_parametric(*kaplan_data(0.0), starts=16, form="kaplan")
    assert fit.form.name == "kaplan" and fit.E == 0.0 and fit.beta == 1.0
    np.testing.assert_allclose(fit.theta[[0, 1, 3, 5]], KAPLAN[[0, 1, 3, 5]], rtol=1e-3)
    assert form_of(LAW_THETA).name == "chinchilla" and form_of(LAW_THETA[:5]).name == "chinchilla"
    # a Kaplan surface refits in its own form: the fixed slots stay fixed
    lnN, lnD, lnL = kaplan_data(0.01, seed=2)
    again = refit(lnN, lnD, lnL, np.ones(lnN.size), fit.theta)
    assert again[2] == E_OFF and again[4] == 1.0 and np.isfinite(again).all()


def test_older_five_slot_theta_is_chinchilla() -> None:
    lnN, lnD = np.log([1e9, 1e10]), np.log([2e10, 3e11])
    np.testing.assert_array_equal(predict_log_loss(LAW_THETA[:5], lnN, lnD), predict_log_loss(LAW_THETA, lnN, lnD))
    assert as_theta6(np.zeros((3, 5))).shape == (3, 6)


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
    assert boot.shape == (4, 6) and np.all(np.isfinite(boot))
    assert not np.allclose(boot[1], boot[0])  # dropping runs changes the refit


def test_compute_optimal_matches_numerical_minimum() -> None:
    theta = LAW_THETA
    C, kappa = 3e21, 6.0
    N, D, L = compute_optimal(theta, C, kappa)
    res = minimize_scalar(lambda ln: LAW.loss(np.exp(ln), C / (kappa * np.exp(ln))), bounds=(10, 30),
                          method="bounded", options={"xatol": 1e-10})
    np.testing.assert_allclose(np.log(N), res.x, atol=1e-4)
    np.testing.assert_allclose(N * D * kappa, C, rtol=1e-12)
    np.testing.assert_allclose(L, LAW.frontier(C), rtol=1e-10)
    Ns, _, _ = compute_optimal(np.stack([theta, theta])[:, None, :], np.array([[1e20, 1e21]]), kappa)
    assert Ns.shape == (2, 2) and Ns[0, 1] > Ns[0, 0]


def test_kaplan_compute_optimal_matches_numerical_minimum() -> None:
    C, kappa = 3e21, 6.0
    N, _, L = compute_optimal(KAPLAN, C, kappa)
    res = minimize_scalar(lambda ln: predict_log_loss(KAPLAN, ln, np.log(C / kappa) - ln), bounds=(10, 40),
                          method="bounded", options={"xatol": 1e-10})
    np.testing.assert_allclose(np.log(N), res.x, atol=1e-4)
    np.testing.assert_allclose(np.log(L), res.fun, atol=1e-12)
    # Kaplan's a = alpha_D / (alpha_N + alpha_D): N_opt grows as C^a
    N2, _, _ = compute_optimal(KAPLAN, 10 * C, kappa)
    np.testing.assert_allclose(np.log10(N2 / N), 0.095 / (0.076 + 0.095), rtol=1e-9)
