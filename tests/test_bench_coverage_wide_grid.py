"""benchmarks/coverage_wide_grid.py: its tables have the published-table shape it claims (13 sizes over 64x per
budget, the cut applied), and Approach 2 on a noiseless uncut one recovers the law's a."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import canonicalize, fit_all
from harness.analysis.synthetic import Law


@pytest.fixture(scope="module")
def wide(load_benchmark):
    return load_benchmark("coverage_wide_grid")


def test_tables_have_the_design_and_the_cut(wide) -> None:
    law = Law()
    full, cut = wide.table(law, 0, cut=False, noise=0.0), wide.table(law, 0, cut=True, noise=0.0)
    assert len(full) == 13 * len(wide.BUDGETS)
    for _, g in full.groupby("budget_flops"):
        assert g["params_total"].max() / g["params_total"].min() == pytest.approx(64)
    assert cut["params_total"].between(*wide.CUT).all() and len(cut) < len(full)
    np.testing.assert_allclose(full["val_bpb"], law.loss(full["params_total"], full["tokens"]))
    fits = fit_all(canonicalize(full), {"bootstrap": 0, "backtest": {"enabled": False}})
    assert fits.approach2["a"].value == pytest.approx(law.a, abs=0.01)
