"""harness.analysis.backtest: leave-future-out refits on synthetic sweeps with a known law (errors small, coverage
near nominal, and a wrong law caught), too few budgets, failing cut-offs, foreign tables, fits.json and report."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.analysis import Estimate, Fits, canonicalize, fit_all, load_fits, load_results
from harness.analysis.backtest import (
    BacktestSettings,
    attach_backtest,
    choose_cutoffs,
    favoured_loss,
    run_backtest,
    sign_bias,
    summarize,
)
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.analyze import run_analysis
from harness.errors import HarnessError
from harness.report import backtest_lines, favoured_text, render_markdown

LAW = Law()
BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)
REPEATS = 3
# Pass marks: 95% intervals should cover most (cut-off, held-back) pairs; the targets are themselves noisy
# parabola fits, so the band is loose. Losses extrapolate to well under 1% here, N_opt to ~20% (its reference
# is a parabola vertex, noisy at 0.5% loss noise); a wrong prediction misses both marks.
MIN_COVERAGE = 0.70
MAX_LOSS_ERROR = 0.01
MAX_N_ERROR = 0.35


def _bend(C: np.ndarray) -> np.ndarray:
    """Losses that fall ever faster than LAW as C grows (by 2% x log10(C/1e18)^2): a form that bends the wrong way."""
    return 1 - 0.02 * np.log10(C / 1e18) ** 2


def _backtest_rows(shift: float, bend: bool = False, bootstrap: int = 50, repeats: int = REPEATS) -> list[dict]:
    """Backtest rows over `repeats` noisy sweeps of LAW; shift multiplies the losses of budgets above 3e18
    (a regime change the small budgets cannot see, so the backtest must catch it); bend applies _bend;
    bootstrap resamples per refit give the intervals (0: point predictions only, for checks on the errors)."""
    rows = []
    for seed in range(repeats):
        raw = isoflop_sweep(LAW, budgets=BUDGETS, sizes_per_budget=7, noise=0.005, seed=seed)
        raw.loc[raw["budget_flops"] > 3e18, "val_bpb"] *= shift
        if bend:
            raw["val_bpb"] *= _bend(raw["budget_flops"].to_numpy(float))
        df = canonicalize(raw)
        rows += run_backtest(df, fit_all(df, {"bootstrap": 0}), {"bootstrap": bootstrap})["rows"]
    return rows


def _holds(rows: list[dict]) -> bool:
    """The backtest's verdict on a law: interval coverage and mean |error| of losses and of N_opt within bounds."""
    judged = [r["inside"] for r in rows if r["inside"] is not None]
    loss = np.mean([abs(r["rel_error"]) for r in rows if r["quantity"] == "loss"])
    n_opt = np.mean([abs(r["rel_error"]) for r in rows if r["quantity"] == "N_opt"])
    return bool(np.mean(judged) >= MIN_COVERAGE and loss < MAX_LOSS_ERROR and n_opt < MAX_N_ERROR)


def test_known_law_backtests_with_small_errors_and_nominal_coverage() -> None:
    """The true law: small errors, intervals near nominal, no bias; the same rows with a 5% miss fail the marks."""
    good_rows = _backtest_rows(1.0)
    # 5 budgets: cut-offs k = 2, 3, 4 predict 3 + 2 + 1 held-back budgets, 4 targets each, per repeat
    assert len(good_rows) == REPEATS * 6 * 4
    assert {(r["approach"], r["quantity"]) for r in good_rows} == {
        ("frontier", "loss"), ("approach3", "loss"), ("approach2", "N_opt"), ("approach3", "N_opt")}
    assert all(r["reference"] in ("parabola L_opt", "parabola N_opt") for r in good_rows)
    assert max(r["extrapolation"] for r in good_rows) == pytest.approx(1e20 / 3e18)
    assert all(isinstance(r["predicted"], Estimate) and r["predicted"].has_interval for r in good_rows)
    r = good_rows[0]
    assert r["rel_error"] == pytest.approx((r["actual"] - r["predicted"].value) / r["actual"])
    assert _holds(good_rows)
    # the true law misses by noise, both ways: no bias verdict (test_a_law_that_misses_one_way... sees one)
    good = {(s["approach"], s["quantity"]): s for s in summarize(good_rows)}
    for series in (("frontier", "loss"), ("approach3", "loss")):
        assert good[series]["bias"] is None and abs(good[series]["mean_rel_error"]) < 0.005
    assert not _holds([dict(r, rel_error=r["rel_error"] + 0.05, inside=False) for r in good_rows])


def test_targets_own_intervals_are_added_where_the_main_fit_has_them() -> None:
    """With the main fit's bootstrap, each held-back budget's parabola L_opt and N_opt carry intervals: a prediction
    that misses the target's value but not its interval counts as agreeing (`inside_with_target`), never the
    reverse, and the true law's predictions then agree with their targets at about the nominal rate."""
    rows = []
    for seed in range(2):
        df = canonicalize(isoflop_sweep(LAW, budgets=BUDGETS, sizes_per_budget=7, noise=0.005, seed=seed))
        rows += run_backtest(df, fit_all(df, {"bootstrap": 60}), {"bootstrap": 40})["rows"]
    assert all(r["inside_with_target"] is not None and r["target_interval"].has_interval for r in rows)
    assert all(r["inside_with_target"] for r in rows if r["inside"])  # the widened interval holds the plain one
    assert any(r["inside_with_target"] and not r["inside"] for r in rows)  # misses the value, not its interval
    assert np.mean([r["inside_with_target"] for r in rows]) >= 0.9
    s = {(x["approach"], x["quantity"]): x for x in summarize(rows)}[("approach3", "N_opt")]
    assert s["n_with_target"] == 12 and s["inside_with_target"] >= s["inside"]
    # without the main fit's intervals there is nothing to add: the rows say so rather than guess
    df = canonicalize(isoflop_sweep(LAW, budgets=BUDGETS, sizes_per_budget=7, noise=0.005, seed=0))
    bare = run_backtest(df, fit_all(df, {"bootstrap": 0}), {"bootstrap": 20})["rows"]
    assert all(r["inside_with_target"] is None for r in bare)
    assert summarize(bare)[0]["n_with_target"] == 0 and "with the target" not in " ".join(
        backtest_lines(SimpleNamespace(backtest={"summary": summarize(bare)})))


def test_an_envelope_frontier_is_backtested_against_lowest_losses() -> None:
    # the frontier through each budget's lowest observed loss is judged against the held-back budgets' lowest
    # losses, not their parabola minima, which lie below them by the grid's spacing
    df = canonicalize(isoflop_sweep(LAW, budgets=BUDGETS, sizes_per_budget=5, noise=0.005, seed=0))
    settings = {"bootstrap": 20, "frontier": {"source": "envelope"}}
    fits = fit_all(df, settings)
    rows = run_backtest(df, fits, {**settings, "backtest": {"bootstrap": 20}})["rows"]
    loss = [r for r in rows if r["quantity"] == "loss"]
    lowest = {b["budget"]: b["L_min_observed"] for b in fits.budgets}
    assert loss and all(r["reference"] == "lowest observed loss" for r in loss)
    assert all(r["actual"] == pytest.approx(lowest[r["budget"]]) for r in loss)
    minima = run_backtest(df, fit_all(df, {"bootstrap": 20}), {"bootstrap": 20})["rows"]
    assert all(r["reference"] == "parabola L_opt" for r in minima if r["quantity"] == "loss")


def test_a_wrong_law_fails_the_same_marks() -> None:
    """The assertions above can fail: losses 5% above the law past 3e18 FLOPs are caught (one sweep and 20
    resamples per refit suffice: a 5% miss is 5x the loss mark, and the rows still carry intervals)."""
    shifted_rows = _backtest_rows(1.05, bootstrap=20, repeats=1)
    assert all(r["inside"] is not None for r in shifted_rows) and not _holds(shifted_rows)
    assert np.mean([abs(r["rel_error"]) for r in shifted_rows if r["quantity"] == "loss"]) > 3 * MAX_LOSS_ERROR


def test_a_law_that_misses_one_way_is_reported_as_biased() -> None:
    # the bias verdict reads the signs of the errors, not the intervals: point predictions suffice
    bad = {(s["approach"], s["quantity"]): s for s in summarize(_backtest_rows(1.0, bend=True, bootstrap=0))}
    # under the bend every larger budget sits below every prediction
    for series in (("frontier", "loss"), ("approach3", "loss")):
        assert bad[series]["bias"] == "over-predicts" and bad[series]["below"] == bad[series]["n"] == 18
        assert bad[series]["sign_p"] < 1e-4 and bad[series]["mean_rel_error"] < -0.015
    # the sign test itself: 6 of 6 below is p = 2/64; 5 of 6 is not enough
    assert sign_bias(-np.ones(6)) == {"below": 6, "sign_p": pytest.approx(2 / 64), "bias": "over-predicts"}
    assert sign_bias(np.array([-1, -1, -1, -1, -1, 1.0]))["bias"] is None
    assert sign_bias(np.array([]))["bias"] is None
    # the analysis says so among its warnings, and report.md's summary table carries the verdict
    raw = isoflop_sweep(LAW, budgets=BUDGETS, sizes_per_budget=7, noise=0.005, seed=0)
    raw["val_bpb"] *= _bend(raw["budget_flops"].to_numpy(float))
    df = canonicalize(raw)
    fits = attach_backtest(fit_all(df, {"bootstrap": 0}), df, {"bootstrap": 0})
    assert any(w.startswith("backtest: frontier over-predicts loss: 6 of 6 held-back budgets came out below")
               for w in fits.warnings), fits.warnings
    assert "| over-predicts (p=0.031) |" in render_markdown(fits)


def test_the_backtest_favours_the_loss_prediction_with_the_smaller_error() -> None:
    def series(approach: str, err: float, n: int = 5, bias: str | None = None) -> dict:
        return {"approach": approach, "quantity": "loss", "n": n, "mean_abs_rel_error": err, "bias": bias}

    f = favoured_loss([series("frontier", 0.049, 15, "over-predicts"), series("approach3", 0.087, 15, "over-predicts"),
                       {**series("approach2", 0.01), "quantity": "N_opt"}])  # N_opt series are not loss predictions
    assert (f["approach"], f["other"], f["n"]) == ("frontier", "approach3", 15)
    assert favoured_text(f) == "frontier (4.90% mean |error|, over-predicts) over approach3 (8.70%, over-predicts)"
    f = favoured_loss([series("frontier", 0.10), series("approach3", 0.02)])
    assert favoured_text(f) == "approach3 (2.00% mean |error|) over frontier (10.00%)"
    assert favoured_loss([series("frontier", 0.10), series("approach3", 0.02, n=2)]) is None  # too few to choose
    assert favoured_text(None) == ""


def test_one_far_miss_of_n_opt_does_not_hide_the_typical_error() -> None:
    """N_opt's relative error is unbounded above: a 2-budget cut-off extrapolated 300x (Chinchilla's table) can miss
    by 200x and carry the mean. The median says what a typical prediction missed by, and the line shows it."""
    rows = [{"approach": "approach2", "quantity": "N_opt", "rel_error": e, "inside": False, "extrapolation": 3.0}
            for e in (-0.1, 0.2, -0.3, -0.15, -214.9)]
    (s,) = summarize(rows)
    assert s["mean_abs_rel_error"] == pytest.approx(43.13) and s["median_abs_rel_error"] == pytest.approx(0.2)
    fits = Fits(inputs={}, settings={}, data={}, budgets=[], approach2={}, frontier={}, approach3={}, bootstrap={},
                predictions=[], warnings=[], notes=[], backtest={"summary": [s]})
    assert "mean |error| 4313.00% (median 20.00%)" in backtest_lines(fits)[0]


def test_too_few_budgets_skip_with_a_note() -> None:
    df = canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19), sizes_per_budget=5, noise=0.0))
    fits = attach_backtest(fit_all(df, {"bootstrap": 0}), df, {"bootstrap": 0})
    assert "needs >= 3 budgets" in fits.backtest["skipped"] and fits.backtest["rows"] == []
    assert any(n.startswith("backtest skipped: 2 budget(s)") for n in fits.notes)
    assert "Skipped: 2 budget(s)" in render_markdown(fits)
    assert backtest_lines(fits) == [f"backtest: skipped, {fits.backtest['skipped']}"]
    off = run_backtest(df, fits, {"backtest": {"enabled": False}})
    assert off["skipped"] == "disabled (backtest.enabled=false)"


def test_a_cutoff_whose_refit_fails_is_skipped_with_its_reason() -> None:
    """The smallest budget's grid misses its optimum and the largest's too: k=2 has one usable parabola
    (HarnessError, skipped); the largest budget is scored against its lowest observed loss, without N_opt."""
    parts = [isoflop_sweep(LAW, budgets=(1e18,), sizes_per_budget=6, offset=5.0, noise=0.0),
             isoflop_sweep(LAW, budgets=(1e19, 1e20, 1e21), sizes_per_budget=6, noise=0.0),
             isoflop_sweep(LAW, budgets=(1e22,), sizes_per_budget=6, offset=5.0, noise=0.0)]
    df = canonicalize(pd.concat(parts, ignore_index=True))
    fits = attach_backtest(fit_all(df, {"bootstrap": 0}), df, {"bootstrap": 0})
    cut = {c["k"]: c for c in fits.backtest["cutoffs"]}
    assert cut[2]["status"] == "skipped" and "usable parabola" in cut[2]["reason"]
    assert cut[3]["status"] == cut[4]["status"] == "ok"
    assert any(n.startswith("backtest cut-off k=2") for n in fits.notes)
    last = [r for r in fits.backtest["rows"] if r["budget"] == 1e22]
    assert last and {r["quantity"] for r in last} == {"loss"}
    assert {r["reference"] for r in last} == {"lowest observed loss"}
    assert all(r["inside"] is None for r in fits.backtest["rows"])  # bootstrap=0: no intervals, no verdicts
    md = render_markdown(fits)
    assert "(lowest observed)" in md and "Skipped cut-offs:" in md


def test_foreign_tables_chinchilla_and_llama3_style(tmp_path: Path) -> None:
    raw = isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6, noise=0.003, seed=1)
    chinchilla = tmp_path / "chinchilla.csv"  # no budget and no tokens column: budgets grouped from FLOPs
    pd.DataFrame({"Model Size": raw["params_total"], "Training FLOP": raw["flops"] * 1.01,
                  "loss": raw["val_bpb"]}).to_csv(chinchilla, index=False)
    llama = tmp_path / "llama3.csv"  # an IsoFLOP table with its own compute-budget column and tokens
    pd.DataFrame({"params": raw["params_total"], "train_tokens": raw["tokens"], "compute": raw["flops"],
                  "budget": raw["budget_flops"], "val_loss": raw["val_loss"]}).to_csv(llama, index=False)
    for path, columns in ((chinchilla, {"params": "Model Size", "flops": "Training FLOP", "loss": "loss"}),
                          (llama, {"params": "params", "tokens": "train_tokens", "flops": "compute",
                                   "budget": "budget", "loss": "val_loss"})):
        cfg = {"bootstrap": 30, "columns": columns}
        df = load_results(path, cfg)
        bt = run_backtest(df, fit_all(df, {"bootstrap": 0}), cfg)
        assert "skipped" not in bt and [c["k"] for c in bt["cutoffs"]] == [2, 3]
        assert all(c["status"] == "ok" for c in bt["cutoffs"]) and len(bt["rows"]) == 3 * 4
        losses = [abs(r["rel_error"]) for r in bt["rows"] if r["quantity"] == "loss"]
        assert max(losses) < 0.03 and bt["bootstrap"] == 30


def test_run_analysis_writes_backtest_to_fits_json_report_and_plot(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6, noise=0.005, seed=4).to_csv(path,
                                                                                                          index=False)
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("analyze", overrides=[f"results={path}", f"out={tmp_path / 'out'}", "bootstrap=40",
                                            "backtest.bootstrap=20"])
    res = run_analysis(cfg)
    out = tmp_path / "out"
    d = json.loads((out / "fits.json").read_text())
    bt = d["backtest"]
    assert bt["bootstrap"] == 20 and [c["k"] for c in bt["cutoffs"]] == [2, 3]
    assert set(bt["rows"][0]["predicted"]) == {"value", "lo", "hi", "n"} and bt["summary"]
    report = (out / "report.md").read_text()
    assert "## Backtest (leave-future-out)" in report and "| frontier | loss |" in report
    assert "](backtest.png)" in report and (out / "backtest.png").read_bytes()[:4] == b"\x89PNG"
    assert res["summary"]["backtest"][0].startswith("backtest frontier loss: mean |error|")
    favoured = bt["favoured_loss"]
    assert favoured["approach"] in ("frontier", "approach3") and favoured["n"] == 3
    assert res["summary"]["backtest"][-1] == f"backtest favours for loss: {favoured_text(favoured)}"
    assert f"**Loss predictions the backtest favours on this table:** {favoured_text(favoured)}" in report
    back = load_fits(out)  # fits.json reads back with Estimates
    assert isinstance(back.backtest["rows"][0]["predicted"], Estimate) and back.validation == []


def test_settings_cutoffs_and_older_fits_files() -> None:
    assert choose_cutoffs(4, BacktestSettings()) == [2, 3]
    thinned = choose_cutoffs(25, BacktestSettings())
    assert len(thinned) == 8 and thinned[0] == 2 and thinned[-1] == 24
    assert choose_cutoffs(2, BacktestSettings()) == [] and choose_cutoffs(5, BacktestSettings(min_budgets=3)) == [3, 4]
    with pytest.raises(HarnessError, match="min_budgets>=2"):
        BacktestSettings.from_cfg({"backtest": {"min_budgets": 1}})
    with pytest.raises(HarnessError, match=r"backtest\.bootstrap=.many. is not a valid int"):
        BacktestSettings.from_cfg({"backtest": {"bootstrap": "many"}})
    df = canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20), sizes_per_budget=5, noise=0.0))
    old = fit_all(df, {"bootstrap": 0}).as_dict()  # a fits.json as written before the backtest and the ladder
    old.pop("backtest")
    old["validation"] = {"run_id": "abc", "comparison": {}}
    fits = Fits.from_dict(old)
    assert fits.validation == [{"run_id": "abc", "comparison": {}}] and fits.backtest == {}
