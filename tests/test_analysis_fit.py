"""fit_all on synthetic ground truth (Chinchilla's L(N, D), Hoffmann et al. 2022): recovery, predictions,
warnings and refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.analysis import canonicalize, fit_all, load_fits, predict_at_budget, predict_loss, predict_many
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.errors import HarnessError

LAW = Law()
BUDGETS = tuple(np.logspace(18, 21, 6))


def sweep(seed: int = 0, noise: float = 0.005, **kw) -> pd.DataFrame:
    kw.setdefault("budgets", BUDGETS)
    kw.setdefault("sizes_per_budget", 9)
    kw.setdefault("span", 16.0)
    return canonicalize(isoflop_sweep(LAW, noise=noise, seed=seed, **kw))


@pytest.fixture(scope="module")
def fitted():
    return fit_all(sweep(seed=0), {"bootstrap": 150, "seed": 0})


def test_both_approaches_recover_a_and_the_frontier(fitted) -> None:
    a2, a3 = fitted.approach2["a"].value, fitted.approach3["a"].value
    assert abs(a2 - LAW.a) < 0.03 and abs(a3 - LAW.a) < 0.03
    assert abs(fitted.approach2["b"].value - LAW.b) < 0.03 and abs(fitted.approach3["b"].value - LAW.b) < 0.03
    # Stated frontier tolerance: within 1% inside the fitted range and 2% at 10x the largest budget.
    for C, tol in ((1e19, 0.01), (1e22, 0.02)):
        p = predict_at_budget(fitted, C)
        assert abs(p["approach2"]["loss"].value / LAW.frontier(C) - 1) < tol
        assert abs(p["approach3"]["loss"].value / LAW.frontier(C) - 1) < tol
    assert fitted.warnings == []
    assert fitted.frontier["method"] == "free" and fitted.frontier["dof"] == 3


def test_second_seed_recovers_a_too() -> None:
    f = fit_all(sweep(seed=1), {"bootstrap": 0})
    assert abs(f.approach2["a"].value - LAW.a) < 0.03 and abs(f.approach3["a"].value - LAW.a) < 0.03


def test_predictions_have_ordered_intervals(fitted) -> None:
    p = predict_at_budget(fitted, 1e22)
    assert set(p) >= {"approach2", "approach3", "C", "extrapolation"}
    assert p["extrapolation"] == pytest.approx(10.0)
    for name in ("approach2", "approach3"):
        q = p[name]
        assert set(q) == {"N", "D", "loss"}
        for key in ("N", "D", "loss"):
            assert q[key].lo < q[key].value < q[key].hi and 0 < q[key].n <= 150
        assert q["N"].lo < LAW.n_opt(1e22) < q["N"].hi
    pl = predict_loss(fitted, 1e9, 2e10)
    assert pl.lo < pl.value < pl.hi
    assert abs(pl.value / LAW.loss(1e9, 2e10) - 1) < 0.01
    with pytest.raises(HarnessError):
        predict_at_budget(fitted, -1.0)


def test_fits_json_round_trip(fitted, tmp_path) -> None:
    fitted.predictions = predict_many(fitted)  # 10x and 100x the largest budget
    assert [p["C"] for p in fitted.predictions] == pytest.approx([1e22, 1e23])
    d = json.loads(fitted.to_json())
    assert d["schema_version"] == 2 and set(d["approach2"]["a"]) == {"value", "lo", "hi", "n"}
    assert set(d["predictions"][0]["approach2"]["loss"]) == {"value", "lo", "hi", "n"}
    assert d["approach2"]["a"]["lo"] < d["approach2"]["a"]["value"] < d["approach2"]["a"]["hi"]
    for key in ("E", "A", "B", "alpha", "beta", "a", "b"):
        assert d["approach3"][key]["lo"] is not None
    for key in ("E", "K", "k"):
        assert key in d["frontier"]
    for key in ("k_N", "k_D", "a", "b"):
        assert d["approach2"][key]["value"] > 0
    assert d["inputs"]["data_fingerprint"] == ["synthetic"] and len(d["predictions"]) == 2
    (tmp_path / "fits.json").write_text(fitted.to_json())
    fitted.save_samples(tmp_path / "bootstrap_samples.npz")
    back = load_fits(tmp_path)
    assert predict_at_budget(back, 1e22) == predict_at_budget(fitted, 1e22)
    assert back.as_dict() == fitted.as_dict() and back.predictions == fitted.predictions
    assert back.approach2["a"] == fitted.approach2["a"]  # Estimates come back as Estimates


def test_off_centre_grid_warns_and_excludes_edge_budgets() -> None:
    df = sweep(offset=1.0)
    # push the two largest budgets' grids far to the right of their optimum
    big = df["budget"] >= BUDGETS[-2]
    df.loc[big, "params"] *= 12.0
    df.loc[big, "tokens"] /= 12.0
    df.loc[big, "loss"] = LAW.loss(df.loc[big, "params"], df.loc[big, "tokens"])
    f = fit_all(df, {"bootstrap": 0})
    statuses = [b["status"] for b in f.budgets]
    assert statuses[:4] == ["ok"] * 4 and set(statuses[4:]) <= {"edge", "outside"}
    assert f.approach2["n_budgets"] == 4 and f.approach2["budgets_used"] == list(BUDGETS[:4])
    assert sum("excluded from the power-law fits" in w for w in f.warnings) == 2


def test_downward_parabola_warns() -> None:
    df = sweep(noise=0.0)
    first = df["budget"] == BUDGETS[0]
    x = np.log(df.loc[first, "params"])
    df.loc[first, "loss"] = 4.0 - 0.05 * (x - x.mean()) ** 2
    f = fit_all(df, {"bootstrap": 0})
    assert f.budgets[0]["status"] == "downward" and not f.budgets[0]["used"]
    assert any("opens downward" in w for w in f.warnings)
    assert f.approach2["n_budgets"] == 5


def test_nan_loss_excluded_with_warning() -> None:
    df = sweep()
    df.loc[3, "loss"] = np.nan
    f = fit_all(df, {"bootstrap": 0})
    assert f.data["excluded"] == {"nan_loss": 1} and f.data["n_used"] == len(df) - 1
    assert any("NaN" in w for w in f.warnings)


def test_too_few_sizes_and_budgets_refused() -> None:
    df = sweep(noise=0.0, budgets=BUDGETS[:3], sizes_per_budget=5)
    small = df[~((df["budget"] == BUDGETS[0]) & (df["params"] > df.loc[df["budget"] == BUDGETS[0], "params"].min() * 2))]
    with pytest.raises(HarnessError, match=r"fewer than 3 distinct model sizes.*drop_small_budgets"):
        fit_all(small, {"bootstrap": 0})
    f = fit_all(small, {"bootstrap": 0, "isoflop": {"drop_small_budgets": True}})
    assert f.approach2["n_budgets"] == 2 and any("left out of Approach 2" in w for w in f.warnings)
    with pytest.raises(HarnessError, match="Approach 2 needs >= 2 budgets"):
        fit_all(df[df["budget"] == BUDGETS[1]], {"bootstrap": 0})
    # two budgets, one with its optimum off the grid: fewer than 2 usable budgets
    two = df[df["budget"] <= BUDGETS[1]].copy()
    shift = two["budget"] == BUDGETS[1]
    two.loc[shift, "params"] *= 30.0
    two.loc[shift, "tokens"] /= 30.0
    two.loc[shift, "loss"] = LAW.loss(two.loc[shift, "params"], two.loc[shift, "tokens"])
    with pytest.raises(HarnessError, match="usable parabola minimum"):
        fit_all(two, {"bootstrap": 0})


def test_few_budgets_fix_frontier_E_honestly() -> None:
    f = fit_all(sweep(budgets=BUDGETS[:3]), {"bootstrap": 40})
    assert f.frontier["method"] == "E_from_approach3" and f.frontier["dof"] == 1
    assert f.frontier["E"].value == pytest.approx(f.approach3["E"].value)
    assert any("E is fixed to Approach 3" in n for n in f.notes)


def test_holdout_rows_are_never_fitted() -> None:
    df = sweep()
    base = fit_all(df, {"bootstrap": 0})
    extra = df.iloc[:1].copy()
    extra["role"], extra["loss"], extra["run_id"] = "holdout", 99.0, "holdout-1"
    f = fit_all(pd.concat([df, extra], ignore_index=True), {"bootstrap": 0})
    assert f.data["excluded"] == {"holdout": 1}
    assert f.approach3["theta"] == pytest.approx(base.approach3["theta"])


def test_bad_settings_refused() -> None:
    with pytest.raises(HarnessError, match=r"frontier\.source"):
        fit_all(sweep(), {"bootstrap": 0, "frontier": {"source": "magic"}})
    with pytest.raises(HarnessError, match="bootstrap"):
        fit_all(sweep(), {"bootstrap": -3})
    with pytest.raises(HarnessError, match="bootstrap_scheme='jackknife'; use bootstrap_scheme=runs"):
        fit_all(sweep(), {"bootstrap_scheme": "jackknife"})


def test_raw_results_table_is_canonicalised() -> None:
    raw = isoflop_sweep(LAW, budgets=BUDGETS[:4], sizes_per_budget=7, noise=0.0)
    f = fit_all(raw, {"bootstrap": 0, "params": "total"})
    assert abs(f.approach3["a"].value - LAW.a) < 1e-3 and f.data["n_used"] == len(raw)


def test_fit_all_leaves_predictions_to_the_caller(fitted) -> None:
    assert fit_all(sweep(seed=1), {"bootstrap": 0}).predictions == []
    targets = predict_many(fit_all(sweep(seed=1), {"bootstrap": 0, "predict": [3e21]}))
    assert [p["C"] for p in targets] == [3e21] and targets[0]["approach2"]["N"].n == 0


def test_schema_1_fits_file_is_refused(fitted, tmp_path) -> None:
    d = json.loads(fitted.to_json())
    d["schema_version"] = 1
    (tmp_path / "fits.json").write_text(json.dumps(d))
    with pytest.raises(HarnessError, match=r"schema 1.*regenerate it with harness-analyze"):
        load_fits(tmp_path)
