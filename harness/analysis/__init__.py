"""Analysis stage: pure functions from a results table to scaling-law fits with bootstrap intervals.

    df = load_results("results/results.csv", cfg)   # canonical columns, validated
    fits = fit_all(df, cfg)                           # Approach 2, frontier, Approach 3 (Hoffmann et al. 2022;
                                                      # Besiroglu et al. 2024), bootstrap intervals
    fits.predictions = predict_many(fits)             # 10x and 100x the largest budget (or settings.predict)
    predict_at_budget(fits, 1e21); predict_loss(fits, N=1e8, D=2e9)   # Estimates (value, lo, hi, n)
    approach2_loss_at(fits, C=1e21, N=1e8)            # Approach 2's loss for a size off its optimum
    attach_backtest(fits, df, cfg)                    # fits.backtest: refit on the smallest budgets, predict the
                                                      # larger ones (leave-future-out)

This package imports nothing above it (harness.report, harness.budget, harness.train, ...): only harness.errors,
harness.fsutil and its own modules.
"""

from harness.analysis.backtest import attach_backtest, run_backtest
from harness.analysis.context import Settings
from harness.analysis.estimate import Estimate
from harness.analysis.fits import Fits, fit_all, load_fits
from harness.analysis.load import canonicalize, load_results, select_fit_rows
from harness.analysis.predict import (
    approach2_loss_at,
    predict_at_budget,
    predict_loss,
    predict_many,
    prediction_targets,
)

__all__ = [
    "Estimate", "Fits", "Settings", "approach2_loss_at", "attach_backtest", "canonicalize", "fit_all", "load_fits",
    "load_results", "predict_at_budget", "predict_loss", "predict_many", "prediction_targets", "run_backtest", "select_fit_rows",
]
