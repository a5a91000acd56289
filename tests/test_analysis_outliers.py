"""The gross-outlier screen around Approach 3: it finds runs from another regime, leaves a clean table alone, and
refuses to call a broad misfit a few outliers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.analysis import canonicalize, fit_all
from harness.analysis.approach3 import RunArrays
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.outliers import MIN_RUNS, fit_screened, outlier_lines, robust_z, screen_runs
from harness.analysis.synthetic import Law, isoflop_sweep, runs_table
from harness.analysis.tables import fit_table
from harness.errors import HarnessError

LAW = Law()


def scattered(n: int = 120, noise: float = 0.01, seed: int = 1, bad: int = 0) -> pd.DataFrame:
    """n runs scattered over N 1e7-1e10, D 1e9-1e12 on the Chinchilla law, plus `bad` large models trained on
    fewer tokens than parameters whose losses sit 10-30% above the law (runs stopped early: another regime)."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    parts = [runs_table(N, D, noise=noise, seed=seed)]
    if bad:
        Nb, Db = np.geomspace(2e9, 7e9, bad), np.geomspace(8e8, 2e8, bad)
        loss = LAW.loss(Nb, Db) * np.linspace(1.3, 1.1, bad)
        parts.append(runs_table(Nb, Db, noise=0.0, loss=loss).assign(run_id=[f"bad{i}" for i in range(bad)]))
    return pd.concat(parts, ignore_index=True)


def test_leverage_outliers_are_found_and_left_out() -> None:
    df = canonicalize(scattered(bad=5))
    screened = fit_table(df, Settings(bootstrap=0)).approach3
    kept = fit_table(df, Settings(bootstrap=0, outliers="keep")).approach3
    block = screened["outliers"]
    assert sorted(r["run_id"] for r in block["runs"]) == [f"bad{i}" for i in range(5)]
    assert all(r["z"] > 8 for r in block["runs"])
    # Huber alone lets the five tilt a by ~0.06; without them it lands within noise of the truth
    assert abs(screened["a"].value - LAW.a) < 0.025 < abs(kept["a"].value - LAW.a)
    assert screened["n_runs"] == 120 and kept["n_runs"] == 125
    assert kept["outliers"]["runs"] == block["runs"]  # keep names the same runs, and gives a both ways
    assert kept["outliers"]["a_without"] == pytest.approx(screened["a"].value)
    assert block["a_with"] == pytest.approx(kept["a"].value)


def test_the_warning_names_the_runs_and_what_they_do_to_a() -> None:
    df = canonicalize(scattered(bad=3))
    runs = RunArrays.from_frame(df)
    diag = Diagnostics()
    screen = fit_screened(runs, df["run_id"].tolist(), Settings(bootstrap=0), diag)
    assert screen.flagged.sum() == 3
    (text,) = [w for w in diag.warnings if "robust sd" in w]
    assert "left out 3 of 123 runs" in text and "bad0" in text and "parametric.outliers=keep" in text
    assert "D/N 0.029 to 0.4" in text  # where they sit, so a reader sees the regime they come from


@pytest.mark.parametrize("seed", range(4))
def test_a_clean_table_loses_nothing(seed: int) -> None:
    tf = fit_table(canonicalize(scattered(noise=0.02, seed=seed)), Settings(bootstrap=0))
    assert tf.approach3["outliers"]["n"] == 0 and tf.approach3["n_runs"] == 120


def test_a_broad_misfit_is_not_called_a_few_outliers() -> None:
    raw = scattered(n=100)
    raw.loc[raw.index[::5], ["val_bpb", "val_loss"]] *= 1.3  # every fifth run 30% off: 20%, more than MAX_SHARE
    tf = fit_table(canonicalize(raw), Settings(bootstrap=0))
    assert tf.approach3["outliers"]["n"] == 0 and tf.approach3["n_runs"] == 100
    assert any("misfits them broadly" in n for n in tf.notes)


def test_small_tables_and_a_zero_limit_are_not_screened() -> None:
    small = canonicalize(scattered(n=MIN_RUNS - 4, bad=3))
    tf = fit_table(small, Settings(bootstrap=0))
    assert tf.approach3["outliers"]["n"] == 0 and any("fewer than" in n for n in tf.notes)
    off = fit_table(canonicalize(scattered(bad=5)), Settings(bootstrap=0, outlier_sd=0)).approach3
    assert off["outliers"]["n"] == 0 and off["n_runs"] == 125
    assert outlier_lines(off) == ["", "Gross outliers: not screened (parametric.outlier_sd=0)."]


def test_isoflop_sweep_with_a_diverged_run() -> None:
    raw = isoflop_sweep(LAW, budgets=(1e18, 3e18, 1e19, 3e19, 1e20), sizes_per_budget=7, span=12, noise=0.005)
    bad = raw.index[raw["run_id"] == "c1e+19-n6"]
    raw.loc[bad, ["val_bpb", "val_loss"]] *= 1.4
    fits = fit_all(canonicalize(raw), settings=Settings(bootstrap=50))
    block = fits.approach3["outliers"]
    assert [r["run_id"] for r in block["runs"]] == ["c1e+19-n6"]
    assert fits.approach3["n_runs"] == 34
    assert np.isfinite(fits.samples["approach3"]).all()  # the bootstrap refits the 34 kept runs
    lines = "\n".join(outlier_lines(fits.approach3))
    assert "| c1e+19-n6 |" in lines and "left out of the fit" in lines


def test_a_refit_that_fails_without_the_flagged_runs_keeps_them() -> None:
    runs = RunArrays.from_frame(canonicalize(scattered(bad=5)))
    first = fit_screened(runs, [f"r{i}" for i in range(125)], Settings(bootstrap=0, outliers="keep"), Diagnostics())

    def refit(_: RunArrays):
        raise HarnessError("Approach 3 found no finite fit from any start")

    screen = screen_runs(runs, first.fit, refit, 8.0, "exclude")
    assert not screen.flagged.any() and screen.fit is first.fit and "no finite fit" in screen.note


def test_robust_z_uses_the_kept_runs_only() -> None:
    r = np.array([0.0, 0.01, -0.01, 0.02, -0.02, 5.0])
    kept = np.array([True] * 5 + [False])
    z = robust_z(r, kept)
    assert z[-1] > 100 and np.all(np.abs(z[:5]) <= 1.5)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("outliers", "drop", "use parametric.outliers=exclude"),
    ("outlier_sd", -1.0, "parametric.outlier_sd=-1.0 is negative"),
])
def test_bad_settings_are_refused(key: str, value: object, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        Settings.from_cfg({"parametric": {key: value}})
