"""The batched L-BFGS (harness.analysis.lbfgs_batch): exact minima of known problems, rows that do not interact,
non-finite starts, and, on the Approach-3 bootstrap it serves, end points at least as low as scipy's L-BFGS-B."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from harness.analysis.lbfgs_batch import _Memory, minimize_batch
from harness.analysis.parametric import FORMS, HUBER_DELTA, _Problem, fit_parametric
from harness.analysis.synthetic import Law, isoflop_sweep


def quadratics(scales: np.ndarray, centres: np.ndarray):
    """Row i: sum_j scales[i, j] (x_j - centres[i, j])^2, an ill-conditioned bowl per row."""
    def fg(X: np.ndarray, rows: np.ndarray):
        d = X - centres[rows]
        return np.sum(scales[rows] * d * d, axis=1), 2 * scales[rows] * d
    return fg


def rosenbrock(X: np.ndarray, rows: np.ndarray):
    x, y = X[:, 0], X[:, 1]
    f = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    g = np.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)], axis=1)
    return f, g


def test_each_row_reaches_its_own_minimum() -> None:
    rng = np.random.default_rng(0)
    scales, centres = 10.0 ** rng.uniform(-2, 3, (50, 5)), rng.normal(0, 3, (50, 5))
    res = minimize_batch(quadratics(scales, centres), np.zeros((50, 5)))
    assert res.converged.all()
    np.testing.assert_allclose(res.x, centres, atol=1e-6)
    rb = minimize_batch(rosenbrock, np.array([[-1.2, 1.0], [0.0, 0.0], [2.0, 3.0]]))
    assert rb.converged.all()
    np.testing.assert_allclose(rb.x, 1.0, atol=1e-5)


def test_rows_do_not_interact_and_bad_starts_give_nan() -> None:
    rng = np.random.default_rng(1)
    scales, centres = 10.0 ** rng.uniform(-2, 3, (8, 4)), rng.normal(0, 3, (8, 4))
    fg = quadratics(scales, centres)
    x0 = rng.normal(0, 1, (8, 4))
    together = minimize_batch(fg, x0)
    for i in (0, 5):  # a row alone ends exactly where it ended among the others (forked chunks agree)
        alone = minimize_batch(lambda X, rows, i=i: fg(X, np.full(len(rows), i)), x0[i:i + 1])
        np.testing.assert_array_equal(alone.x[0], together.x[i])
        assert alone.nit[0] == together.nit[i]
    x0[3] = np.nan
    res = minimize_batch(fg, x0)
    assert np.isnan(res.fun[3]) and not res.converged[3]
    assert np.isfinite(np.delete(res.fun, 3)).all() and np.delete(res.converged, 3).all()


def test_bootstrap_refits_end_no_higher_than_scipys() -> None:
    """On Approach 3's Huber objective (near-L1, flat valleys), warm-started resample refits end at or below
    scipy's L-BFGS-B end points in the objective, up to rare different local minima."""
    df = isoflop_sweep(Law(), budgets=(1e18, 1e19, 1e20), sizes_per_budget=5, span=10, noise=0.01, seed=4)
    lnN, lnD, lnL = (np.log(df[c].to_numpy()) for c in ("params_total", "tokens", "val_bpb"))
    fit = fit_parametric(lnN, lnD, lnL, starts=8, form="kaplan")
    W = np.random.default_rng(2).dirichlet(np.ones(lnN.size), 40) * lnN.size
    prob = _Problem(lnN, lnD, lnL, W, HUBER_DELTA, FORMS["kaplan"])
    t0 = prob.to_centred(fit.theta)
    ours = prob.run(np.tile(t0, (len(W), 1)))
    theirs = np.array([minimize(lambda t, i=i: tuple(v[0] for v in prob.value_grad(t[None, :], np.array([i]))), t0,
                                jac=True, method="L-BFGS-B", options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9,
                                                                       "maxcor": 20}).fun for i in range(len(W))])
    assert ours.converged.all()
    rel = (ours.fun - theirs) / theirs
    assert np.mean(rel <= 1e-9) >= 0.9 and rel.max() < 0.01


def test_large_tables_fall_back_to_scipy_row_by_row_with_the_same_optima(monkeypatch) -> None:
    """Where a chunk would hold fewer than MIN_BATCH_ROWS rows (tables over ~4000 runs), each row runs through
    scipy's L-BFGS-B; both paths reach the same warm-started optima."""
    import harness.analysis.parametric as parametric

    df = isoflop_sweep(Law(), budgets=(1e18, 1e19, 1e20), sizes_per_budget=5, span=10, noise=0.01, seed=5)
    lnN, lnD, lnL = (np.log(df[c].to_numpy()) for c in ("params_total", "tokens", "val_bpb"))
    fit = fit_parametric(lnN, lnD, lnL, starts=8)
    W = np.random.default_rng(3).dirichlet(np.ones(lnN.size), 6) * lnN.size
    prob = _Problem(lnN, lnD, lnL, W, HUBER_DELTA, FORMS["chinchilla"])
    T0 = np.tile(prob.to_centred(fit.theta), (len(W), 1))
    batched = prob.run(T0)
    monkeypatch.setattr(parametric, "BATCH_ELEMENTS", lnN.size)  # one row per chunk: below MIN_BATCH_ROWS
    each = prob.run(T0)
    assert batched.converged.all() and each.converged.all()
    np.testing.assert_allclose(each.fun, batched.fun, rtol=1e-6)
    np.testing.assert_allclose(each.x, batched.x, rtol=1e-3, atol=1e-4)


def test_direction_skips_only_empty_memory_slots() -> None:
    """The two-loop recursion over the filled slots only gives, bit for bit, the recursion over all m slots (the
    textbook loop, written out here) for rows whose memories hold different numbers of pairs, full ones included."""
    rng = np.random.default_rng(3)
    m, p, counts = 5, 4, [0, 1, 3, 5, 7]
    mem = _Memory(len(counts), p, m)
    for i, k in enumerate(counts):
        for _ in range(k):
            s = rng.normal(size=(1, p))
            mem.push(np.array([i]), s, s * rng.uniform(0.5, 2.0, size=(1, p)))  # s.y > 0: every pair enters
    assert mem.count.tolist() == [min(k, m) for k in counts]
    rows, g = np.arange(len(counts)), rng.normal(size=(len(counts), p))

    S, Y, rho = mem.S, mem.Y, mem.rho
    q, alpha = g.copy(), np.zeros(rho.shape)
    for j in range(m - 1, -1, -1):
        alpha[:, j] = rho[:, j] * np.einsum("bp,bp->b", S[:, j], q)
        q -= alpha[:, j, None] * Y[:, j]
    last = np.maximum(mem.count - 1, 0)
    s_last, y_last = S[rows, last], Y[rows, last]
    yy = np.einsum("bp,bp->b", y_last, y_last)
    gamma = np.where(mem.count > 0, np.einsum("bp,bp->b", s_last, y_last) / np.where(yy > 0, yy, 1.0), 1.0)
    r = gamma[:, None] * q
    for j in range(m):
        r += (alpha[:, j] - rho[:, j] * np.einsum("bp,bp->b", Y[:, j], r))[:, None] * S[:, j]
    np.testing.assert_array_equal(mem.direction(rows, g), -r)
    np.testing.assert_array_equal(mem.direction(rows[:2], g[:2]), -r[:2])  # rows with 0 and 1 pairs alone
    np.testing.assert_array_equal(mem.direction(rows[:1], g[:1]), -g[:1])  # no pairs: steepest descent
