"""Backtest by leave-future-out refits: fit only the smallest k budgets (k = 2 .. K-1), predict every larger
budget of the same table, and score the predictions against what those budgets measured. No run is trained.

This is the time-series check of Marin's scaling-law validation and of the model ladders of Bhagia et al. 2024
("Establishing Task Scaling Laws via Compute-Efficient Model Ladders", OLMo): a law earns trust by predicting
budgets it never saw. Per held-back budget C the targets are
  - the frontier's loss L_opt(C) (Approach 2's loss) vs that budget's parabola minimum L_opt, or its lowest
    observed loss when the budget has no usable parabola or the frontier is fitted to lowest observed losses
    (frontier.source=envelope; the `reference` field says which);
  - Approach 2's N*(C) vs the budget's parabola N_opt;
  - Approach 3's compute-optimal N*(C) vs the parabola N_opt, and its compute-optimal loss vs the same loss
    reference as the frontier (not L(N, D) at each run: the backtest asks about the optimum, as the held-out run
    does, and the two loss predictions stay comparable).
Each row carries the extrapolation factor (held-back C / largest fitted C), the signed relative error
(actual - predicted) / actual, as in the held-out comparison, and whether the prediction's bootstrap interval
(backtest.bootstrap resamples, fewer than the main fit's) covers the actual value. The reference is itself a fit
with noise that interval does not include, so coverage of N_opt in particular reads low; `inside_with_target` also
widens the interval by the reference's own bootstrap interval (noise.against_target), the check of whether the two
estimates agree. The summary
also tests whether a series' errors lean one way (sign_bias): a form that bends the wrong way over-predicts (or
under-predicts) at every cut-off, and a held-out run further out will miss the same way.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.context import Settings, coerce
from harness.analysis.estimate import Estimate
from harness.analysis.fits import Fits, fit_all
from harness.analysis.load import cfg_get, select_fit_rows
from harness.analysis.noise import against_target
from harness.analysis.predict import predict_at_budget
from harness.analysis.workers import fork_map, worker_count
from harness.errors import HarnessError

METHOD = ("leave-future-out: refit on the smallest k budgets, predict each larger budget (Marin's scaling-law "
          "validation; Bhagia et al. 2024's model ladder)")
# (approach, quantity) of every backtest row, in table order
SERIES = (("frontier", "loss"), ("approach3", "loss"), ("approach2", "N_opt"), ("approach3", "N_opt"))
# A series whose errors fall on one side this consistently (two-sided sign test) is reported as biased.
BIAS_P = 0.05
# Errors a refit may raise on data it cannot fit: the cut-off is recorded as skipped, never a crash.
REFIT_ERRORS = (HarnessError, FloatingPointError, np.linalg.LinAlgError)


@dataclass
class BacktestSettings:
    """backtest.* config keys: on/off, bootstrap resamples per refit, the smallest cut-off, how many cut-offs."""

    enabled: bool = True
    bootstrap: int = 200
    min_budgets: int = 2
    max_cutoffs: int = 8

    @classmethod
    def from_cfg(cls, cfg: Any) -> BacktestSettings:
        """Read backtest.enabled, backtest.bootstrap, backtest.min_budgets, backtest.max_cutoffs (defaults above)."""
        s = cls()
        for f in dataclasses.fields(cls):
            v = cfg_get(cfg, f"backtest.{f.name}")
            if v is not None:
                setattr(s, f.name, coerce(f"backtest.{f.name}", v, type(getattr(s, f.name))))
        if s.bootstrap < 0 or s.min_budgets < 2 or s.max_cutoffs < 1:
            raise HarnessError(f"backtest settings {dataclasses.asdict(s)} are out of range; use backtest.bootstrap"
                               ">=0, backtest.min_budgets>=2 (Approach 2 needs 2 budgets), backtest.max_cutoffs>=1")
        return s


def compare(actual: float, predicted: Estimate) -> dict[str, Any]:
    """Predicted vs actual: absolute and relative error (actual - predicted), and whether the interval covers it."""
    p = predicted.value
    if p is None or actual is None or not math.isfinite(actual):
        return {"predicted": predicted, "actual": actual, "abs_error": None, "rel_error": None, "inside": None}
    return {"predicted": predicted, "actual": actual, "abs_error": actual - p, "rel_error": (actual - p) / actual,
            "inside": predicted.contains(actual)}


def choose_cutoffs(n_budgets: int, bt: BacktestSettings) -> list[int]:
    """Cut-offs k (fit the k smallest budgets): min_budgets .. K-1, thinned evenly to max_cutoffs, ends kept."""
    ks = list(range(bt.min_budgets, n_budgets))
    if len(ks) <= bt.max_cutoffs:
        return ks
    picks = np.unique(np.round(np.linspace(0, len(ks) - 1, bt.max_cutoffs)).astype(int))
    return [ks[i] for i in picks]


def _loss_reference(b: dict[str, Any], source: str) -> tuple[Estimate, str]:
    """A held-back budget's loss target, on the frontier's own terms: its parabola minimum (with its bootstrap
    interval) if usable and the frontier runs through minima, else its lowest observed loss (no interval)."""
    if source == "minima" and b["used"] and b["L_opt"].value is not None:
        return b["L_opt"], "parabola L_opt"
    return Estimate(float(b["L_min_observed"])), "lowest observed loss"


def _rows_for_budget(sub: Fits, b: dict[str, Any], cutoff: dict[str, Any]) -> list[dict[str, Any]]:
    """Every comparison at one held-back budget from one cut-off's refit (N_opt rows need a usable parabola)."""
    pred = predict_at_budget(sub, float(b["C"]))
    loss_est, loss_name = _loss_reference(b, str(sub.frontier.get("source", "minima")))
    n_est = b["N_opt"] if b["used"] else Estimate(None)
    targets = {
        ("frontier", "loss"): (pred["approach2"]["loss"], loss_est, loss_name),
        ("approach3", "loss"): (pred["approach3"]["loss"], loss_est, loss_name),
        ("approach2", "N_opt"): (pred["approach2"]["N"], n_est, "parabola N_opt"),
        ("approach3", "N_opt"): (pred["approach3"]["N"], n_est, "parabola N_opt"),
    }
    rows = []
    for (approach, quantity), (predicted, target, reference) in targets.items():
        if target.value is None:
            continue
        c = compare(float(target.value), predicted)
        wide = against_target(predicted, target)
        rows.append({"cutoff": cutoff["k"], "fitted_up_to": cutoff["largest_budget"], "budget": b["budget"],
                     "C": float(b["C"]), "extrapolation": pred["extrapolation"], "approach": approach,
                     "quantity": quantity, "reference": reference, **c, "target_interval": target,
                     "inside_with_target": None if wide is None or c["rel_error"] is None else wide.contains(c["actual"])})
    return rows


def _refit(used: pd.DataFrame, fitted: list[float], settings: Settings) -> Fits:
    """fit_all on the runs of the given budgets only (overflow in far-off bootstrap thetas stays quiet)."""
    keep = np.isclose(used["budget"].to_numpy(float)[:, None], np.asarray(fitted)[None, :], rtol=1e-9).any(axis=1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return fit_all(used[keep].reset_index(drop=True), settings=settings)


def _run_cutoff(used: pd.DataFrame, budgets: list[dict[str, Any]], k: int,
                settings: Settings) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Refit on the k smallest budgets and compare at every larger one; a refit error skips the cut-off."""
    fitted = [b["budget"] for b in budgets[:k]]
    cutoff: dict[str, Any] = {"k": k, "fitted_budgets": fitted, "largest_budget": fitted[-1], "status": "ok"}
    try:
        sub = _refit(used, fitted, settings)
    except REFIT_ERRORS as e:
        return {**cutoff, "status": "skipped", "reason": str(e)}, []
    cutoff.update({"frontier_method": sub.frontier["method"], "n_runs": sub.data["n_used"],
                   "approach2_budgets": sub.approach2["n_budgets"], "warnings": len(sub.warnings)})
    rows = []
    for b in budgets[k:]:
        try:
            rows += _rows_for_budget(sub, b, cutoff)
        except REFIT_ERRORS as e:  # a prediction the refit cannot make (e.g. a non-finite exponent)
            cutoff.setdefault("errors", []).append(f"budget {b['budget']:.3g}: {e}")
    return cutoff, rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (approach, quantity): pairs, mean, median and max |relative error| (the median, because a relative error
    of N_opt is unbounded above: one far cut-off's 200x miss outweighs every other), k of n intervals covering the
    actual, the signed mean error and its bias verdict (sign_bias)."""
    out = []
    for approach, quantity in SERIES:
        sel = [r for r in rows if r["approach"] == approach and r["quantity"] == quantity and r["rel_error"] is not None]
        if not sel:
            continue
        signed = np.array([r["rel_error"] for r in sel], float)
        err = np.abs(signed)
        judged = [r["inside"] for r in sel if r["inside"] is not None]
        wide = [r["inside_with_target"] for r in sel if r.get("inside_with_target") is not None]
        out.append({"approach": approach, "quantity": quantity, "n": len(sel), "mean_abs_rel_error": float(err.mean()),
                    "median_abs_rel_error": float(np.median(err)), "max_abs_rel_error": float(err.max()), "inside": int(sum(judged)), "n_intervals": len(judged),
                    "inside_with_target": int(sum(wide)), "n_with_target": len(wide),
                    "max_extrapolation": max(r["extrapolation"] for r in sel), "mean_rel_error": float(signed.mean()),
                    **sign_bias(signed)})
    return out


def sign_bias(errors: np.ndarray) -> dict[str, Any]:
    """Whether the errors lean one way: the count below zero (actual under the prediction), the two-sided sign
    test's p (Dixon & Mood 1946) and `bias` = over-predicts / under-predicts when p < BIAS_P, else None.
    A law that only misses by noise scatters both ways; one whose form bends the wrong way misses on one side at
    every cut-off. The cut-offs share held-back budgets, so their errors are correlated: p is a rough guide."""
    from scipy import stats  # lazy: importing scipy.stats costs ~1 s
    below, n = int(np.sum(errors < 0)), int(np.sum(errors != 0))
    p = float(stats.binomtest(max(below, n - below), n, 0.5).pvalue) if n else 1.0
    bias = None if p >= BIAS_P else ("over-predicts" if below > n - below else "under-predicts")
    return {"below": below, "sign_p": p, "bias": bias}


def favoured_loss(summary: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which loss prediction (the frontier's or Approach 3's) the backtest favours: the smaller mean |error| over
    the same held-back budgets (out-of-sample model choice, as in time-series cross-validation), with the other's
    error and bias; None unless both were scored at >= 3 points."""
    loss = {s["approach"]: s for s in summary if s["quantity"] == "loss" and s["n"] >= 3}
    if len(loss) < 2:
        return None
    best, other = sorted(loss.values(), key=lambda s: s["mean_abs_rel_error"])
    return {"approach": best["approach"], "mean_abs_rel_error": best["mean_abs_rel_error"], "bias": best.get("bias"),
            "other": other["approach"], "other_mean_abs_rel_error": other["mean_abs_rel_error"],
            "other_bias": other.get("bias"), "n": min(best["n"], other["n"])}


def bias_warnings(summary: list[dict[str, Any]]) -> list[str]:
    """One warning per backtest series with a sign bias: which way it misses and what that means further out."""
    out = []
    for s in (s for s in summary if s.get("bias")):
        below = s["bias"] == "over-predicts"
        k = s["below"] if below else s["n"] - s["below"]
        out.append(f"backtest: {s['approach']} {s['bias']} {s['quantity']}: {k} of {s['n']} held-back budgets came "
                   f"out {'below' if below else 'above'} its prediction (mean error {s['mean_rel_error']:+.1%}, sign "
                   f"test p={s['sign_p']:.2g}); predictions further out will likely miss the same way")
    return out


def run_backtest(df: pd.DataFrame, fits: Fits, cfg: Any = None) -> dict[str, Any]:
    """The backtest block of fits.json: cut-offs, one row per (cut-off, held-back budget, approach, quantity) and
    a summary; `skipped` (with the reason) when disabled or when the table has too few budgets."""
    t0 = time.perf_counter()
    bt = BacktestSettings.from_cfg(cfg)
    settings = dataclasses.replace(Settings.from_cfg(cfg), predict=())
    settings.bootstrap = min(bt.bootstrap, settings.bootstrap)
    block: dict[str, Any] = {"method": METHOD, "bootstrap": settings.bootstrap, "level": settings.level,
                             "cutoffs": [], "rows": [], "summary": []}
    budgets = sorted(fits.budgets, key=lambda b: b["budget"])
    cutoffs = choose_cutoffs(len(budgets), bt)
    if not bt.enabled:
        return {**block, "skipped": "disabled (backtest.enabled=false)"}
    if not cutoffs:
        return {**block, "skipped": f"{len(budgets)} budget(s): a backtest fits >= {bt.min_budgets} and predicts at "
                                    f"least one more, so it needs >= {bt.min_budgets + 1} budgets; add budgets"}
    used = select_fit_rows(df).used
    jobs = worker_count(settings.jobs)  # the cut-offs side by side, each bootstrap on its share of the cores
    inner = dataclasses.replace(settings, jobs=max(1, jobs // len(cutoffs)))
    for cutoff, rows in fork_map(lambda k: _run_cutoff(used, budgets, k, inner), cutoffs, jobs):
        block["cutoffs"].append(cutoff)
        block["rows"] += rows
    block["summary"] = summarize(block["rows"])
    block["favoured_loss"] = favoured_loss(block["summary"])
    block["seconds"] = round(time.perf_counter() - t0, 3)
    return block


def attach_backtest(fits: Fits, df: pd.DataFrame, cfg: Any = None) -> Fits:
    """Run the backtest into fits.backtest; a skipped backtest or cut-off also becomes a note of the fits."""
    fits.backtest = run_backtest(df, fits, cfg)
    fits.warnings.extend(bias_warnings(fits.backtest["summary"]))
    reason = fits.backtest.get("skipped")
    if reason and "disabled" not in reason:
        fits.notes.append(f"backtest skipped: {reason}")
    for c in fits.backtest["cutoffs"]:
        if c["status"] != "ok":
            fits.notes.append(f"backtest cut-off k={c['k']} (budgets <= {c['largest_budget']:.3g}) skipped: "
                              f"{c['reason']}")
    return fits
