"""Plots of a Fits object (PNG): IsoFLOP parabolas, N_opt and D_opt vs C, the loss frontier (with the held-out
runs), Approach 3's residuals and L(N, D) contours, the backtest's errors and the held-out ladder. Nothing is
fitted here: the plots evaluate the fitted formulas (Hoffmann et al. 2022 Approaches 2 and 3 as fitted by
harness.analysis) and their bootstrap samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis import Fits, select_fit_rows
from harness.analysis.bootstrap import interval
from harness.analysis.estimate import format_number as fmt
from harness.analysis.outliers import flagged_ids
from harness.analysis.parametric import predict_log_loss
from harness.analysis.predict import approach2_curves, approach3_curves
from harness.figures import bar_lengths, colors, png_bytes

# key -> (file name, caption in report.md)
PLOTS = {
    "isoflop": ("isoflop.png", "IsoFLOP curves with fitted parabolas and optima"),
    "optimal": ("optimal_nd.png", "N_opt and D_opt vs C with fits and bands"),
    "frontier": ("frontier.png", "Loss frontier vs C with extrapolation band"),
    "approach3": ("approach3.png", "Approach 3 residuals and L(N, D) contours"),
}
PLOT_FILES = [name for name, _ in PLOTS.values()]
# Drawn only when there is something to show: the backtest (when one ran or was skipped) and the held-out ladder.
BACKTEST_PLOT = ("backtest.png", "Backtest: signed error of leave-future-out predictions vs extrapolation factor")
HOLDOUT_PLOT = ("holdout.png", "Held-out runs: predicted (with intervals; pale bars add one run's seed noise) and "
                "actual loss vs extrapolation factor")
# (approach, target) -> (colour, marker, x offset) in the backtest plot
STYLE = {("frontier", "loss"): ("C0", "o", 0.96), ("approach3", "loss"): ("C3", "s", 1.04),
         ("approach2", "N_opt"): ("C0", "^", 0.96), ("approach3", "N_opt"): ("C3", "v", 1.04)}
Holdouts = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


@dataclass(frozen=True)
class Plot:
    """A rendered plot: its file name, its caption and its PNG bytes."""

    name: str
    caption: str
    png: bytes


def _save(fig: Figure, path: Path | None) -> Figure:
    """Attach a canvas and, when a path is given, write the PNG there."""
    FigureCanvasAgg(fig)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _budget_rows(fits: Fits, df: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    used = select_fit_rows(df).used
    per = [used[np.isclose(used["budget"].astype(float), b["budget"], rtol=1e-9)] for b in fits.budgets]
    return used, per


def plot_isoflop(fits: Fits, df: pd.DataFrame, path: Path | None = None) -> Figure:
    """Loss vs N per budget with the fitted robust parabolas and their optima (excluded budgets hollow)."""
    _, per = _budget_rows(fits, df)
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    for b, rows, col in zip(fits.budgets, per, colors(len(fits.budgets))):
        N = rows["params"].to_numpy(float)
        down = set(d["run_id"] for d in b.get("downweighted", []))
        bad = rows["run_id"].astype(str).isin(down).to_numpy()
        ax.scatter(N[~bad], rows["loss"].to_numpy(float)[~bad], color=col, s=18, zorder=3)
        if bad.any():
            ax.scatter(N[bad], rows["loss"].to_numpy(float)[bad], color=col, marker="x", s=40, zorder=3)
        lnN = np.linspace(np.log(b["N_min"]) - 0.3, np.log(b["N_max"]) + 0.3, 100)
        x = lnN - b["center_lnN"]
        c0, c1, c2 = b["coef"]
        label = f"C={b['C']:.2g}" + ("" if b["status"] == "ok" else f" ({b['status']}{', excluded' if not b['used'] else ''})")
        ax.plot(np.exp(lnN), c0 + c1 * x + c2 * x * x, color=col, lw=1.2, ls="-" if b["used"] else "--", label=label)
        n_opt, l_opt = b["N_opt"].value, b["L_opt"].value
        if n_opt is not None and l_opt is not None:
            ax.plot([n_opt], [l_opt], marker="*", ms=12, color=col if b["used"] else "white", mec=col, zorder=4)
    bigram = fits.data.get("bigram")
    if bigram:  # the level a model reaches by learning only which token follows which (harness.ngram)
        ax.axhline(bigram["reference"], color="0.5", ls=":", lw=1, label=f"bigram model {bigram['reference']:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    ax.set_title("IsoFLOP curves: robust parabolas in log N (stars: optima; x: down-weighted runs)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _holdout_list(holdout: Holdouts) -> list[Mapping[str, Any]]:
    """The held-out runs as a list (one mapping, a list of them, or None)."""
    if not holdout:
        return []
    return [holdout] if isinstance(holdout, Mapping) else list(holdout)


def _c_grid(fits: Fits, holdout: Holdouts, factor: float = 100.0) -> np.ndarray:
    cs = [b["C"] for b in fits.budgets]
    hi = max(cs) * factor
    for h in _holdout_list(holdout):
        if h.get("flops"):
            hi = max(hi, float(h["flops"]) * 2.0)
    return np.exp(np.linspace(np.log(min(cs) / 2.0), np.log(hi), 120))


def _band(ax: Any, C: np.ndarray, cur: dict[str, np.ndarray], key: str, color: Any, label: str, ls: str,
          level: float) -> None:
    ax.plot(C, cur[key], color=color, ls=ls, label=label)
    if f"{key}_samples" in cur:
        lo, hi = interval(cur[f"{key}_samples"], level)
        if np.any(np.isfinite(lo)):
            ax.fill_between(C, lo, hi, color=color, alpha=0.2, lw=0)


def _budget_optima(ax: Any, fits: Fits, key: str, error_bars: bool) -> None:
    """Each budget's fitted optimum (key N_opt, D_opt or L_opt): filled if used, hollow if excluded."""
    for b in fits.budgets:
        e = b[key]
        if e.value is None:
            continue
        yerr = None
        if error_bars and e.has_interval:
            yerr = bar_lengths(e.value, e.lo, e.hi)
        ax.errorbar([b["C"]], [e.value], yerr=yerr, fmt="o", color="k" if b["used"] else "0.6",
                    mfc="k" if b["used"] else "white", ms=5, capsize=2, zorder=4)
    ax.axvline(max(b["C"] for b in fits.budgets), color="0.7", lw=0.8, ls=":")


def plot_optimal(fits: Fits, path: Path | None = None, holdout: Holdouts = None) -> Figure:
    """N_opt and D_opt vs C: per-budget optima, Approach 2 power laws and Approach 3, with 95% bands."""
    C = _c_grid(fits, holdout)
    level = float(fits.bootstrap.get("level", 0.95))
    a2, a3 = approach2_curves(fits, C), approach3_curves(fits, C)
    fig = Figure(figsize=(11, 4.5))
    for i, (key, exponent, name) in enumerate((("N", "a", "N_opt (parameters)"), ("D", "b", "D_opt (tokens)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        _band(ax, C, a2, key, "C0", f"Approach 2: {key} = k C^{fits.approach2[exponent].value:.3f}", "-", level)
        _band(ax, C, a3, key, "C3", f"Approach 3: exponent {fits.approach3[exponent].value:.3f}", "--", level)
        _budget_optima(ax, fits, f"{key}_opt", error_bars=True)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    fig.suptitle(f"Compute-optimal allocation ({int(level * 100)}% bootstrap bands; hollow: excluded budgets)")
    return _save(fig, path)


def _draw_holdout(ax: Any, holdout: Mapping[str, Any], x: float | None = None, label: str | None = "") -> None:
    """One held-out run at x (default its FLOPs): a star for the actual loss beside each approach's predicted loss
    with its interval (squares) and, where the seed noise is known, its prediction interval (pale bars: where the
    run itself should land); label=None leaves it out of the legend, "" uses the run's own label."""
    hc, hl = float(holdout["flops"]) if x is None else x, holdout.get("loss")
    predicted, wide = holdout.get("predicted") or {}, holdout.get("prediction_interval") or {}
    for name, col, dx in (("approach2", "C0", 0.96), ("approach3", "C3", 1.04)):
        _draw_prediction(ax, hc * dx, predicted.get(name), wide.get(name), col, None if label is None else name)
    if hl is not None:
        star = None if label is None else (label or holdout.get("label", "held-out run"))
        ax.plot([hc], [float(hl)], marker="*", ms=14, color="C1", mec="k", zorder=6, label=star)


def _draw_prediction(ax: Any, x: float, p: Any, wide: Any, col: str, name: str | None) -> None:
    """One approach's prediction for a held-out run: a square with the law's interval and, where known, a pale bar
    for the prediction interval (where the run itself should land); name=None keeps both out of the legend."""
    if p is None or p.value is None:
        return
    lo = p.value if p.lo is None else p.lo
    hi = p.value if p.hi is None else p.hi
    ax.errorbar([x], [p.value], yerr=bar_lengths(p.value, lo, hi), fmt="s", color=col, mfc="white", capsize=3,
                zorder=5, label=None if name is None else f"{name} prediction")
    if wide is not None and wide.has_interval:
        ax.errorbar([x], [p.value], yerr=bar_lengths(p.value, wide.lo, wide.hi), fmt="none", ecolor=col,
                    elinewidth=7, alpha=0.25, zorder=4, label=None if name is None else f"{name}, with one run's seed noise")


def _draw_holdouts(ax: Any, holdout: Holdouts, xs: Sequence[float] | None = None) -> None:
    """Every held-out run; the legend names one run by its label, a ladder once as 'held-out runs'."""
    runs = _holdout_list(holdout)
    for i, h in enumerate(runs):
        label = None if i else ("" if len(runs) == 1 else f"held-out runs ({len(runs)})")
        _draw_holdout(ax, h, None if xs is None else xs[i], label)


def plot_frontier(fits: Fits, df: pd.DataFrame, path: Path | None = None, holdout: Holdouts = None) -> Figure:
    """Loss frontier vs C with the extrapolation band; optional held-out runs with their predicted intervals."""
    used, _ = _budget_rows(fits, df)
    C = _c_grid(fits, holdout)
    level = float(fits.bootstrap.get("level", 0.95))
    a2, a3 = approach2_curves(fits, C), approach3_curves(fits, C)
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    ax.scatter(used["flops"], used["loss"], s=6, color="0.75", label="runs", zorder=2)
    _band(ax, C, a2, "loss", "C0", f"frontier E + K C^-k (k={fmt(fits.frontier['k'].value, 3)})", "-", level)
    _band(ax, C, a3, "loss", "C3", "Approach 3 at its optimum", "--", level)
    _budget_optima(ax, fits, "L_opt", error_bars=False)
    _draw_holdouts(ax, holdout)
    ax.set_xscale("log")
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("loss")
    ax.set_title(f"Loss frontier with {int(level * 100)}% bootstrap band (dotted: largest fitted budget)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_approach3(fits: Fits, df: pd.DataFrame, path: Path | None = None) -> Figure:
    """Approach-3 log-residuals vs N per budget, and contours of L(N, D) with the IsoFLOP lines and optimum."""
    used, per = _budget_rows(fits, df)
    theta = np.asarray(fits.approach3["theta"], float)
    kappa = float(fits.approach3["kappa"])
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot(1, 2, 1)
    cols = colors(len(fits.budgets))
    for b, rows, col in zip(fits.budgets, per, cols):
        lnN = np.log(rows["params"].to_numpy(float))
        res = np.log(rows["loss"].to_numpy(float)) - predict_log_loss(theta, lnN, np.log(rows["tokens"].to_numpy(float)))
        ax.scatter(np.exp(lnN), res, color=col, s=14, label=f"C={b['C']:.2g}")
        out = rows["run_id"].astype(str).isin(flagged_ids(fits.approach3)).to_numpy()
        if out.any():
            ax.scatter(np.exp(lnN[out]), res[out], marker="x", color="C3", s=40)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("log L - log L_hat")
    ax.set_title(f"Approach 3 residuals (rmse {fmt(fits.approach3['rmse_log'], 3)} in log loss)")
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    N = used["params"].to_numpy(float)
    D = used["tokens"].to_numpy(float)
    gN = np.exp(np.linspace(np.log(N.min()) - 1, np.log(N.max()) + 1, 80))
    gD = np.exp(np.linspace(np.log(D.min()) - 1, np.log(D.max()) + 1, 80))
    LN, LD = np.meshgrid(np.log(gN), np.log(gD))
    with np.errstate(over="ignore"):  # a wild fit (a corrupted table) can overflow far from the data
        Z = np.ma.masked_invalid(np.exp(predict_log_loss(theta, LN, LD)))
    if Z.count() > 1 and np.ptp(Z.compressed()) > 0:  # contour only what is finite and not flat
        cs = ax2.contour(gN, gD, Z, levels=12, cmap="viridis", linewidths=0.8)
        ax2.clabel(cs, fontsize=6, fmt="%.3g")
    for b, col in zip(fits.budgets, cols):
        ax2.plot(gN, b["C"] / (kappa * gN), color=col, lw=0.8, ls=":")
    cur = approach3_curves(fits, np.array([b["C"] for b in fits.budgets]))
    ax2.plot(cur["N"], cur["D"], "r-", lw=1.2, label="Approach 3 optimum")
    ax2.scatter(N, D, s=6, color="k", zorder=3)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlim(gN.min(), gN.max())
    ax2.set_ylim(gD.min(), gD.max())
    ax2.set_xlabel("parameters N")
    ax2.set_ylabel("tokens D")
    ax2.set_title("L(N, D) contours, IsoFLOP lines (dotted)")
    ax2.legend(fontsize=7)
    return _save(fig, path)


def _backtest_series(ax: Any, rows: list[dict[str, Any]], key: tuple[str, str]) -> None:
    """One (approach, target) series: error vs extrapolation, the interval as a bar, hollow when outside it."""
    col, marker, dx = STYLE[key]
    for r in rows:
        actual, p = r["actual"], r["predicted"]
        y = 100.0 * r["rel_error"]
        yerr = None
        if p.has_interval:  # the prediction's interval in error units: covered iff the bar crosses 0
            lo, hi = 100.0 * (actual - p.hi) / actual, 100.0 * (actual - p.lo) / actual
            yerr = bar_lengths(y, lo, hi)
        ax.errorbar([r["extrapolation"] * dx], [y], yerr=yerr, fmt=marker, color=col, ms=6, capsize=2, alpha=0.8,
                    mfc=col if r["inside"] else "white")
    ax.plot([], [], marker, color=col, label=f"{key[0]} {key[1]}")  # the legend shows the filled marker


def _factor_axis(ax: Any, ticks: Sequence[float] = ()) -> None:
    """Log x axis of extrapolation factors, ticks written as 3x, 10x (at `ticks` only, when given)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}x" if f"{x:g}"[0] in "235" else ""))
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(ticks))))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("extrapolation factor (C / largest fitted C)")


def plot_backtest(fits: Fits, path: Path | None = None) -> Figure:
    """Backtest errors (actual - predicted) / actual vs extrapolation factor (log x), loss targets left and N_opt
    right; one colour and marker per approach, filled inside the interval, hollow outside (Bhagia et al. 2024)."""
    bt = fits.backtest
    rows = [r for r in bt.get("rows") or [] if r["rel_error"] is not None]
    fig = Figure(figsize=(11, 4.5))
    if not rows:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, f"backtest: {bt.get('skipped') or 'no comparisons could be made'}", ha="center",
                va="center", wrap=True)
        return _save(fig, path)
    for i, (target, unit) in enumerate((("loss", "loss"), ("N_opt", "N_opt (parameters)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for key in STYLE:
            sel = [r for r in rows if (r["approach"], r["quantity"]) == key and key[1] == target]
            if sel:
                _backtest_series(ax, sel, key)
        ax.axhline(0, color="k", lw=0.8)
        _factor_axis(ax)
        ax.set_ylabel(f"error in {unit}, % of actual")
        if ax.get_legend_handles_labels()[0]:
            ax.plot([], [], "o", color="0.4", mfc="white", label="hollow: outside the interval")
            ax.legend(fontsize=7)
    level = round(100 * float(bt.get("level", 0.95)))
    fig.suptitle(f"Backtest: refit on the smallest budgets, predict the larger ones; error = (actual - predicted) / "
                 f"actual, bars: {level}% intervals")
    return _save(fig, path)


def plot_holdout(fits: Fits, holdout: Holdouts, path: Path | None = None) -> Figure:
    """The held-out ladder: each run's actual loss (star) and each approach's predicted loss with its interval,
    against the extrapolation factor (held-out C / largest fitted C), log x."""
    runs = _holdout_list(holdout)
    largest = max(b["C"] for b in fits.budgets)
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    factors = [float(h["flops"]) / largest for h in runs]
    _draw_holdouts(ax, runs, factors)
    _factor_axis(ax, factors)
    ax.set_ylabel("loss")
    ax.set_title(f"Held-out runs: predicted vs actual ({len(runs)} run{'s' if len(runs) != 1 else ''})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _save(fig, path)


def render_plots(fits: Fits, df: pd.DataFrame, holdout: Holdouts = None) -> list[Plot]:
    """The four report plots in memory, plus backtest.png when fits.backtest is set and holdout.png with held-out
    runs (holdout: one or a list of {flops, loss, label, predicted: {approach: Estimate}})."""
    runs = _holdout_list(holdout)
    figures = {
        PLOTS["isoflop"]: plot_isoflop(fits, df),
        PLOTS["optimal"]: plot_optimal(fits, None, runs),
        PLOTS["frontier"]: plot_frontier(fits, df, None, runs),
        PLOTS["approach3"]: plot_approach3(fits, df),
    }
    if fits.backtest:
        figures[BACKTEST_PLOT] = plot_backtest(fits)
    if runs:
        figures[HOLDOUT_PLOT] = plot_holdout(fits, runs)
    plots = []
    for (name, caption), fig in figures.items():
        held = " and the held-out run" + ("s" if len(runs) > 1 else "")
        plots.append(Plot(name, caption + (held if name == PLOTS["frontier"][0] and runs else ""), png_bytes(fig)))
    return plots


def plot_lifetime(life: Mapping[str, Any], path: Path | None = None) -> Figure:
    """Total (training + inference) compute vs N along the iso-loss curve, marking the compute-optimal and the
    lifetime-optimal models (Sardana et al. 2024); `life` is harness.analysis.allocation.lifetime_plan's dict."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    cur = {k: np.asarray(v, float) for k, v in life["curve"].items()}
    ax.plot(cur["N"], cur["total_flops"], "k-", label="training + inference")
    ax.plot(cur["N"], cur["train_flops"], "C0--", label="training kappa N D")
    ax.plot(cur["N"], cur["inference_flops"], "C2:", label="inference 2 N I")
    for key, style, name in (("compute_optimal", "C3o", "compute-optimal"), ("lifetime_optimal", "C1*",
                                                                              "lifetime-optimal")):
        m = life[key]
        ax.plot([m["N"]], [m["total_flops"]], style, ms=10, label=f"{name}: N={fmt(m['N'], 3)}, "
                f"total={fmt(m['total_flops'], 3)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo = min(life["compute_optimal"]["total_flops"], life["lifetime_optimal"]["total_flops"])
    ax.set_ylim(lo / 20, lo * 20)
    ax.set_xlabel("parameters N")
    ax.set_ylabel("FLOPs")
    ax.set_title(f"iso-loss L(N, D) = {life['target_loss']:.4g}, {fmt(life['inference_tokens'], 3)} inference tokens")
    ax.legend(fontsize=8)
    return _save(fig, path)
