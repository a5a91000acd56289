"""The joint bootstrap: every fit on the same seeded resamples, and the valid-resample counts and warnings."""

from __future__ import annotations

import numpy as np

from harness.analysis import canonicalize, select_fit_rows
from harness.analysis.approach2 import fit_isoflop
from harness.analysis.approach3 import RunArrays, fit_approach3
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.frontier import fit_frontier_stage
from harness.analysis.resample import bootstrap_fits, valid_counts
from harness.analysis.synthetic import Law, isoflop_sweep


def stages(settings: Settings):
    raw = isoflop_sweep(Law(), budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6, noise=0.01, seed=2)
    used = select_fit_rows(canonicalize(raw)).used
    iso, runs = fit_isoflop(used, settings, Diagnostics()), RunArrays.from_frame(used)
    point = fit_approach3(runs, settings, Diagnostics())
    return used, iso, runs, point, fit_frontier_stage(iso, settings, float(np.exp(point.theta[2])))


def test_samples_are_seeded_and_complete() -> None:
    s = Settings(bootstrap=20, seed=3, starts=4)
    args = stages(s)
    a, b = bootstrap_fits(*args, s), bootstrap_fits(*args, s)
    assert list(a) == ["approach2", "frontier", "approach3", "budget_lnN", "budget_lnD", "budget_L", "budget_c2",
                       "budget_status"]
    assert a["budget_c2"].shape == (20, 4) and np.nanmin(a["budget_c2"]) > 0  # usable parabolas open upward
    assert a["approach3"].shape == (20, 6) and a["frontier"].shape == (20, 4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert bootstrap_fits(*args, Settings(bootstrap=0)) == {}


def test_valid_counts_warn_and_note() -> None:
    diag = Diagnostics()
    nan = np.full((10, 6), np.nan)
    samples = {"approach2": np.ones((10, 4)), "frontier": np.ones((10, 3)), "approach3": nan}
    assert valid_counts(samples, 10, diag) == {"approach2": 10, "frontier": 10, "approach3": 0}
    assert len(diag.warnings) == 1 and diag.warnings[0].startswith("approach3: only 0 of 10")
    assert valid_counts({}, 0, diag) == {} and diag.notes == ["bootstrap=0: no intervals were computed"]
