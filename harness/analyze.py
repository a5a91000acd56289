"""The analysis pipeline behind harness-analyze: load a results CSV, fit it (harness.analysis), add the
predictions and the leave-future-out backtest, draw the plots (harness.plots) and write fits.json and report.md
(harness.report). Trains nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.analysis import fit_all, predict_many
from harness.analysis.backtest import attach_backtest
from harness.analysis.context import Settings
from harness.analysis.load import cfg_get
from harness.analysis.units import load_table
from harness.errors import HarnessError
from harness.plots import BACKTEST_PLOT, PLOT_FILES, render_plots
from harness.report import backtest_lines, noise_line, write_report
from harness.results import check_results_dir
from harness.table_report import analyze_table, is_isoflop, isoflop_extras

OUTPUT_NAMES = ["report.md", "fits.json", "bootstrap_samples.npz", *PLOT_FILES, BACKTEST_PLOT[0]]


def default_out(results: str | Path) -> Path:
    """<directory of the results CSV>/analysis (or <results dir>/analysis when given a directory)."""
    p = Path(results).expanduser()
    return (p if p.is_dir() else p.parent) / "analysis"


def run_analysis(cfg: Any) -> dict[str, Any]:
    """Load results, fit everything, predict at settings.predict (default 10x and 100x the largest budget),
    backtest the fits (leave-future-out refits, harness.analysis.backtest) and write the report atomically;
    returns {out, files, fits, summary}."""
    results = cfg_get(cfg, "results")
    if results is None or str(results) in ("", "???"):
        raise HarnessError("no results file given; run harness-analyze results=PATH [out=DIR]")
    df = load_table(str(results), cfg)  # load_results with units.* applied
    out = Path(str(cfg_get(cfg, "out") or default_out(str(results)))).expanduser()
    check_results_dir(out, "out")  # a bad out= fails now, not after the fits and the backtest
    if not is_isoflop(df, Settings.from_cfg(cfg)):  # ladders, compute ladders, scattered runs
        return analyze_table(df, cfg, out)
    try:
        fits = fit_all(df, cfg)
    except HarnessError as e:  # IsoFLOP budgets that Approach 2 cannot use: fit what the table still supports
        return analyze_table(df, cfg, out, [{"fit": "Approach 2 (IsoFLOP parabolas) and its frontier", "reason": str(e)}])
    fits.predictions = predict_many(fits)
    attach_backtest(fits, df, cfg)
    extra, target_lines = isoflop_extras(fits, df, cfg)
    files = write_report(fits, render_plots(fits, df), out, extra)
    a2, a3 = fits.approach2, fits.approach3
    summary = {
        "a_approach2": a2["a"], "a_approach3": a3["a"], "b_approach2": a2["b"], "b_approach3": a3["b"],
        "frontier": {k: fits.frontier[k] for k in ("E", "K", "k")}, "n_used": fits.data["n_used"],
        "warnings": list(fits.warnings), "backtest": backtest_lines(fits), "noise": noise_line(fits),
        "targets": target_lines,
    }
    return {"out": str(out), "files": {k: str(v) for k, v in files.items()}, "fits": fits, "summary": summary}
