"""Gross outliers of Approach 3: runs whose loss lies so far from the fitted L(N, D) that they are not the law's
noise but another regime (a run stopped early, one that diverged, a digitizing slip).

Huber's loss on the log residuals (Besiroglu et al. 2024) bounds what a bad loss can pull, but not a bad point
with leverage: a few runs far out in (N, D), such as large models trained on fewer tokens than parameters, still
tilt the fit. The screen is the classical iterated one (Hampel et al. 1986, ch. 1.4): fit, flag runs beyond
`outlier_sd` robust standard deviations (1.4826 x the MAD of the kept runs' log residuals), refit without them,
repeat until the flagged set stops changing. On Epoch AI's digitized Chinchilla table it finds the runs Besiroglu
et al. 2024 left out by hand (README "Gross outliers"). parametric.outliers=exclude (the default) fits without
them; keep fits every run. Either way the report names them and gives a both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.analysis.approach3 import RunArrays, derived, fit_approach3
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.parametric import ParametricFit, predict_log_loss
from harness.errors import HarnessError

OUTLIER_ACTIONS = ("exclude", "keep")
MIN_RUNS = 15  # fewer runs: a MAD over the residuals of a 5-parameter fit says too little to screen with
MAX_SHARE = 0.1  # more flagged than this share: the law misfits broadly, which is not a few outliers
MAX_ROUNDS = 6
MAD_TO_SD = 1.4826  # the MAD of a normal sample times this estimates its sd
SHOWN = 5  # runs named in the warning


@dataclass
class Screen:
    """The screen's verdict: which runs lie beyond the limit (flagged), their robust z, and the fits with and
    without them; `fit` is the one the analysis reports (without them under exclude)."""

    flagged: np.ndarray
    z: np.ndarray
    limit: float
    action: str
    fit: ParametricFit
    other: ParametricFit | None  # the fit the analysis does not report (None: nothing flagged)
    note: str = ""  # why nothing was screened, when nothing was

    @property
    def keep(self) -> np.ndarray:
        """Runs the reported fit uses."""
        return ~self.flagged if self.action == "exclude" else np.ones_like(self.flagged)


def robust_z(resid: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Residuals in robust sd units: (r - median) / (1.4826 MAD), both over the kept runs only; NaN when the kept
    runs' residuals have no spread (an exact fit)."""
    centre = np.median(resid[kept])
    scale = MAD_TO_SD * np.median(np.abs(resid[kept] - centre))
    return (resid - centre) / scale if scale > 0 else np.full_like(resid, np.nan)


def screen_runs(runs: RunArrays, fit_all: ParametricFit, refit: Callable[[RunArrays], ParametricFit],
                limit: float, action: str) -> Screen:
    """Iterate fit -> flag |z| > limit -> refit without the flagged runs, from the fit on every run; refit fits a
    subset of the runs the way fit_all was fitted."""
    n = runs.lnN.size
    flagged = np.zeros(n, bool)
    unscreened = Screen(flagged, np.zeros(n), limit, action, fit_all, None)
    if limit <= 0:
        return unscreened
    if n < MIN_RUNS:
        unscreened.note = f"not screened for outliers: {n} runs, fewer than {MIN_RUNS}"
        return unscreened
    fit, z = fit_all, np.zeros(n)
    for _ in range(MAX_ROUNDS):
        z = robust_z(runs.lnL - predict_log_loss(fit.theta, runs.lnN, runs.lnD), ~flagged)
        new = np.abs(np.nan_to_num(z)) > limit
        if new.sum() > MAX_SHARE * n:
            unscreened.z, unscreened.note = z, (
                f"{int(new.sum())} of {n} runs lie beyond {limit:g} robust sd of the law: more than "
                f"{MAX_SHARE:.0%}, so the law misfits them broadly rather than a few runs being outliers; "
                "nothing was left out")
            return unscreened
        if np.array_equal(new, flagged):
            break
        flagged = new
        try:
            fit = refit(runs.subset(~flagged)) if flagged.any() else fit_all
        except HarnessError as e:  # the law cannot be fitted without them: keep every run, and say why
            unscreened.z, unscreened.note = z, f"{int(new.sum())} runs lie beyond {limit:g} robust sd, but {e}"
            return unscreened
    if not flagged.any():
        return Screen(flagged, z, limit, action, fit_all, None)
    chosen, other = (fit, fit_all) if action == "exclude" else (fit_all, fit)
    return Screen(flagged, z, limit, action, chosen, other)


def _run_text(runs: RunArrays, ids: list[str], i: int, z: float) -> str:
    N, D, L = np.exp(runs.lnN[i]), np.exp(runs.lnD[i]), np.exp(runs.lnL[i])
    return f"{ids[i]} (N {N:.3g}, D {D:.3g}, loss {L:.4g}, {z:+.0f} sd)"


def screen_block(screen: Screen, runs: RunArrays, ids: list[str]) -> dict[str, Any]:
    """fits.json's approach3.outliers: the rule, every flagged run and a with and without them."""
    idx = np.flatnonzero(screen.flagged)
    block: dict[str, Any] = {"limit_sd": screen.limit, "action": screen.action, "n": int(idx.size),
                             "note": screen.note or None, "runs": [
        {"run_id": ids[i], "N": float(np.exp(runs.lnN[i])), "D": float(np.exp(runs.lnD[i])),
         "loss": float(np.exp(runs.lnL[i])), "z": float(screen.z[i])} for i in idx]}
    if screen.other is not None:
        a_fit, a_other = derived(screen.fit.theta)["a"], derived(screen.other.theta)["a"]
        with_, without = (a_other, a_fit) if screen.action == "exclude" else (a_fit, a_other)
        block.update({"a_with": float(with_), "a_without": float(without)})
    return block


def screen_warning(screen: Screen, runs: RunArrays, ids: list[str], diag: Diagnostics) -> None:
    """One warning naming the flagged runs, where they sit in D/N, and what they do to a."""
    if screen.note:
        diag.note(f"Approach 3: {screen.note}")
    idx = np.flatnonzero(screen.flagged)
    if not idx.size or screen.other is None:
        return
    order = idx[np.argsort(-np.abs(screen.z[idx]))]
    named = "; ".join(_run_text(runs, ids, i, screen.z[i]) for i in order[:SHOWN])
    more = f"; and {idx.size - SHOWN} more (fits.json approach3.outliers)" if idx.size > SHOWN else ""
    ratio = np.exp(runs.lnD[idx] - runs.lnN[idx])
    where = f"D/N {ratio.min():.2g} to {ratio.max():.2g}" if idx.size > 1 else f"D/N {ratio[0]:.2g}"
    block = screen_block(screen, runs, ids)
    head = (f"Approach 3 left out {idx.size} of {idx.size + int((~screen.flagged).sum())} runs"
            if screen.action == "exclude" else f"Approach 3 fits {idx.size} runs")
    verdict = (f"with them a would be {block['a_with']:.3g} instead of {block['a_without']:.3g}; keep them with "
               "parametric.outliers=keep" if screen.action == "exclude" else
               f"without them a would be {block['a_without']:.3g} instead of {block['a_with']:.3g}; leave them out "
               "with parametric.outliers=exclude")
    diag.warn(f"{head} whose loss lies more than {screen.limit:g} robust sd from its law ({where}): {named}{more}; "
              f"{verdict} (the limit is parametric.outlier_sd)")


def fit_screened(runs: RunArrays, ids: list[str], settings: Settings, diag: Diagnostics) -> Screen:
    """Approach 3's point fit (harness.analysis.approach3.fit_approach3) with the outlier screen around it; diag
    gets the reported fit's own warnings and the screen's."""
    logs: dict[int, Diagnostics] = {}

    def fit(r: RunArrays) -> ParametricFit:
        own = Diagnostics()
        f = fit_approach3(r, settings, own)
        logs[id(f)] = own
        return f

    screen = screen_runs(runs, fit(runs), fit, settings.outlier_sd, settings.outliers)
    own = logs[id(screen.fit)]
    diag.warnings.extend(own.warnings)
    diag.notes.extend(own.notes)
    screen_warning(screen, runs, ids, diag)
    return screen


def flagged_ids(approach3: dict[str, Any]) -> set[str]:
    """run_ids of the runs fits.json's approach3.outliers flags (empty for fits from before the screen)."""
    return {r["run_id"] for r in (approach3.get("outliers") or {}).get("runs", [])}


def outlier_lines(approach3: dict[str, Any]) -> list[str]:
    """report.md's lines on the screen: the rule, and a table of the flagged runs when there are any."""
    block = approach3.get("outliers")
    if not block:
        return []
    if block.get("limit_sd", 0) <= 0:
        return ["", "Gross outliers: not screened (parametric.outlier_sd=0)."]
    head = f"Gross outliers (runs beyond {block['limit_sd']:g} robust sd of the log residuals, screened iteratively): "
    if not block["runs"]:
        return ["", head + (block.get("note") or "none") + "."]
    done = "left out of the fit" if block["action"] == "exclude" else "kept in the fit (parametric.outliers=keep)"
    rows = [f"| {r['run_id']} | {r['N']:.4g} | {r['D']:.4g} | {r['D'] / r['N']:.3g} | {r['loss']:.4g} | {r['z']:+.1f} |"
            for r in sorted(block["runs"], key=lambda r: -abs(r["z"]))]
    return ["", head + f"{block['n']}, {done}; a = {block['a_without']:.4f} without them, {block['a_with']:.4f} with "
            "them.", "", "| run | N | D | D/N | loss | z (robust sd) |", "|---|---|---|---|---|---|", *rows]
