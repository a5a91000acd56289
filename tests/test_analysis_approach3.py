"""Approach 3 stage: run arrays, the parametric point fit, derived quantities and its summary."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import canonicalize, select_fit_rows
from harness.analysis.approach3 import RunArrays, derived, fit_approach3, summarize_approach3
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.synthetic import Law, isoflop_sweep

LAW = Law()


def runs(kappa: float = 6.0) -> RunArrays:
    raw = isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=7, span=12, noise=0.0, kappa=kappa)
    return RunArrays.from_frame(select_fit_rows(canonicalize(raw)).used)


def test_point_fit_recovers_the_law() -> None:
    r, diag = runs(), Diagnostics()
    fit = fit_approach3(r, Settings(starts=8), diag)
    block = summarize_approach3(r, fit, {}, Settings(starts=8), diag)
    assert r.kappa == pytest.approx(6.0) and diag.warnings == []
    assert block["a"].value == pytest.approx(LAW.a, abs=1e-3) and block["alpha"].lo is None
    assert block["n_runs"] == 28 and block["rmse_log"] < 1e-3


def test_derived_exponents_follow_hoffmann_eq_4() -> None:
    theta = np.array([np.log(400.0), np.log(410.0), np.log(1.7), 0.34, 0.28])
    d = derived(theta)
    assert d["a"] == pytest.approx(0.28 / 0.62) and d["b"] == pytest.approx(0.34 / 0.62)
    assert d["E"] == pytest.approx(1.7) and derived(np.stack([theta, theta]))["a"].shape == (2,)
