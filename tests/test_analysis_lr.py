"""LR-tuning fits: each point's optimum from a loss-vs-LR bowl, and the power-law rule across points."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.lr import fit_lr_optimum, fit_lr_rule


def _bowl(lrs: np.ndarray, lr_opt: float, floor: float = 2.5, curv: float = 0.08) -> np.ndarray:
    return floor + curv * np.log(lrs / lr_opt) ** 2


def test_optimum_of_a_bowl_is_its_vertex_with_an_interval_around_it() -> None:
    lrs = 3e-3 * 2.0 ** np.arange(6)
    o = fit_lr_optimum(lrs, _bowl(lrs, 1.7e-2))
    assert o.status == "ok"
    assert o.lr.value == pytest.approx(1.7e-2, rel=1e-6)
    assert o.lr.lo < 1.7e-2 < o.lr.hi
    assert o.loss == pytest.approx(2.5, abs=1e-9)
    assert o.lr.n > 1900


def test_minimum_at_the_edge_is_flagged_not_fitted() -> None:
    lrs = 3e-3 * 2.0 ** np.arange(5)
    low = fit_lr_optimum(lrs, _bowl(lrs, 1e-3))
    high = fit_lr_optimum(lrs, _bowl(lrs, 1.0))
    assert (low.status, high.status) == ("edge_low", "edge_high")
    assert low.lr.value == pytest.approx(3e-3) and not low.lr.has_interval
    assert high.lr.value == pytest.approx(lrs[-1])
    assert np.all(np.isnan(low.draws))


def test_diverged_neighbour_brackets_the_minimum() -> None:
    lrs = 3e-3 * 2.0 ** np.arange(5)
    losses = _bowl(lrs, 2.4e-2)
    losses[-1] = np.inf  # the largest LR diverged
    o = fit_lr_optimum(lrs, losses)
    assert o.status == "ok"
    assert o.lr.value == pytest.approx(2.4e-2, rel=1e-6)


def test_rule_recovers_a_known_power_law_from_noisy_bowls() -> None:
    """lr* = 0.9 N^-0.45 D^-0.12 planted in bowls at 4 sizes x 3 budgets, with 0.3% loss noise."""
    rng = np.random.default_rng(1)
    c, p, q = 0.9, -0.45, -0.12
    ns, ds, opts, draws = [], [], [], []
    for i, n in enumerate([5e3, 1.2e4, 3e4, 7e4]):
        for C in (1e11, 3e11, 1e12):
            d = C / (6 * n)
            lr_true = c * n**p * d**q
            lrs = lr_true * 2.0 ** np.arange(-2.3, 2.8, 0.5)
            loss = _bowl(lrs, lr_true) * (1 + 0.003 * rng.standard_normal(len(lrs)))
            o = fit_lr_optimum(lrs, loss, noise_rel=0.003, seed=i)
            assert o.status == "ok"
            ns.append(n), ds.append(d), opts.append(np.log(o.lr.value)), draws.append(o.draws)
    rule = fit_lr_rule(np.array(ns), np.array(ds), np.array(opts), np.stack(draws, axis=1))
    assert rule.p.value == pytest.approx(p, abs=0.05)
    assert rule.q.value == pytest.approx(q, abs=0.05)
    assert rule.p.lo < p < rule.p.hi and rule.q.lo < q < rule.q.hi
    assert rule(3e4, 1e12 / 1.8e5) == pytest.approx(c * 3e4**p * (1e12 / 1.8e5) ** q, rel=0.15)


def test_vertex_beyond_the_lrs_it_was_fitted_on_is_clipped_into_its_interval() -> None:
    """family-d96-L3 at 1e12 (WSD LR sweep): the best LR is interior, but the parabola through it and its
    neighbours opens its vertex below the smallest LR of the window; the optimum is clipped to that LR, as
    every bootstrap draw is, so the reported value lies inside its own interval."""
    lrs = np.array([0.0032, 0.003805, 0.004525, 0.005381, 0.0064, 0.009051, 0.0128])
    losses = np.array([3.4046, 3.4035, 3.3897, 3.4837, 3.4536, 3.7020, 3.7826])
    o = fit_lr_optimum(lrs, losses)
    assert o.status == "ok"
    assert o.lr.lo <= o.lr.value <= o.lr.hi
    assert o.lr.value == pytest.approx(0.0032)
