"""Approach 2 of Hoffmann et al. 2022 on one table: a robust parabola in log N per IsoFLOP budget, then the power
laws N_opt = k_N C^a and D_opt = k_D C^b through the usable parabola minima, and the per-budget table.

Budgets with too few sizes, several compute levels, or a minimum that is not bracketed (edge, outside,
downward) are flagged in the Diagnostics; budgets that cannot place a minimum are left out of the power laws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.context import Diagnostics, Settings
from harness.analysis.estimate import estimate
from harness.analysis.isoflop import (
    DOWNWARD,
    EDGE,
    OK,
    STATUS_NAMES,
    TOO_FEW,
    BudgetLayout,
    ParabolaFits,
    build_layout,
    fit_parabolas,
)
from harness.analysis.powerlaw import LogLogFit, fit_loglog
from harness.errors import HarnessError

# A budget's runs count as one IsoFLOP level when their FLOPs are within this ratio of each other.
MAX_FLOPS_SPREAD = 1.25
STATUS_TEXT = {
    "edge": "its optimum is nearest the smallest or largest sampled size (grid not centred on it)",
    "outside": "its optimum lies outside the sampled sizes (extrapolated)",
    "downward": "its parabola opens downward (no minimum)",
}
# A budget unusable in more than this share of bootstrap resamples gets a note with the causes.
LOST_SHARE_NOTE = 0.05
LOST_WHY = {"too_few_sizes": "fewer than 3 distinct sizes drawn", "downward": "parabola opens downward",
            "edge": "vertex nearest the smallest or largest size drawn", "outside": "vertex beyond the sizes drawn"}


@dataclass
class IsoflopFit:
    """The budgets Approach 2 fits (their runs and padded layout) and the point-estimate parabolas."""

    rows: pd.DataFrame
    layout: BudgetLayout
    parabolas: ParabolaFits

    @property
    def lnC(self) -> np.ndarray:
        """Log compute of each budget."""
        return np.log(self.layout.C)

    @property
    def status(self) -> np.ndarray:
        """Status code of each budget's point parabola (isoflop.OK, EDGE, ...)."""
        return self.parabolas.status[0]

    @property
    def usable(self) -> np.ndarray:
        """Which budgets' minima enter the power laws and the frontier."""
        return self.parabolas.usable[0]

    @property
    def n_usable(self) -> int:
        """Number of usable budgets."""
        return int(self.usable.sum())


@dataclass
class PowerLaws:
    """ln N_opt and ln D_opt regressed on ln C, one row per resample (row 0: the point estimate)."""

    n_opt: LogLogFit
    d_opt: LogLogFit


def isoflop_rows(used: pd.DataFrame, settings: Settings, diag: Diagnostics) -> pd.DataFrame:
    """The runs of budgets with >= min_sizes distinct sizes; refuses (or, if allowed, drops) the others."""
    sizes = used.groupby("budget")["params"].nunique()
    small = sizes[sizes < settings.min_sizes]
    if len(small):
        desc = ", ".join(f"{b:.3g} ({n} size{'s' if n != 1 else ''})" for b, n in small.items())
        if not settings.drop_small_budgets:
            raise HarnessError(
                f"budget(s) {desc} have fewer than {settings.min_sizes} distinct model sizes, too few for a parabola; "
                "add sizes to those budgets or drop them with isoflop.drop_small_budgets=true (budgets grouped from "
                "jittered FLOPs may join under a wider budget_tolerance, e.g. budget_tolerance=0.2)"
            )
        diag.warn(f"budget(s) {desc} have fewer than {settings.min_sizes} sizes and were left out of Approach 2")
    rows = used[~used["budget"].isin(small.index)]
    _warn_exact_parabolas(rows, diag)
    if rows["budget"].nunique() < 2:
        raise HarnessError(
            f"only {rows['budget'].nunique()} budget with >= {settings.min_sizes} sizes; Approach 2 needs >= 2 "
            "budgets: add a budget to the sweep (or map the budget column with columns.budget=<column>)"
        )
    return rows


def _warn_exact_parabolas(rows: pd.DataFrame, diag: Diagnostics) -> None:
    """Flag budgets of exactly 3 sizes and one run each: a parabola passes through 3 points exactly, so resampled
    weights cannot move it and the bootstrap intervals built on those budgets understate their uncertainty."""
    g = rows.groupby("budget")["params"]
    exact = [b for b, sizes, runs in zip(g.nunique().index, g.nunique(), g.size()) if sizes == 3 and runs == 3]
    if exact:
        diag.warn(f"budget(s) {', '.join(f'{b:.3g}' for b in exact)} have exactly 3 sizes and one run each: each "
                  "parabola passes through its 3 points exactly, so the bootstrap cannot move it and the intervals of "
                  "N*, L*, a and b understate the uncertainty; train >= 4 sizes per budget (5 or more preferred) "
                  "or repeat seeds")


def _warn_mixed_compute(rows: pd.DataFrame, layout: BudgetLayout, diag: Diagnostics) -> None:
    """Flag budgets whose runs' FLOPs differ by more than MAX_FLOPS_SPREAD (not one IsoFLOP level)."""
    for j in range(len(layout.C)):
        f = rows.loc[layout.index[j][layout.mask[j]], "flops"].to_numpy(float)
        if f.max() / f.min() > MAX_FLOPS_SPREAD:
            diag.warn(
                f"budget {layout.budgets[j]:.3g}: runs' FLOPs span {f.min():.3g}..{f.max():.3g}, not one IsoFLOP "
                "budget; the parabola mixes compute levels"
            )


def _check_minima(fit: IsoflopFit, settings: Settings, diag: Diagnostics) -> None:
    """Warn about every budget whose minimum is not bracketed; refuse fewer than 2 usable budgets."""
    status, usable = fit.status, fit.usable
    for j in np.flatnonzero(status != OK):
        what = STATUS_TEXT[STATUS_NAMES[int(status[j])]]
        action = "used anyway (isoflop.exclude_edge=false)" if usable[j] else "excluded from the power-law fits"
        diag.warn(f"budget {fit.layout.budgets[j]:.3g}: {what}; {action}")
    if fit.n_usable < 2:
        detail = ", ".join(f"{fit.layout.budgets[j]:.3g}: {STATUS_NAMES[int(status[j])]}"
                           for j in np.flatnonzero(~usable))
        raise HarnessError(
            f"only {fit.n_usable} of {len(usable)} budgets have a usable parabola minimum ({detail}); Approach 2 needs "
            ">= 2: re-centre each budget's sizes on its optimum and add sizes"
            + (", or accept edge optima with isoflop.exclude_edge=false (harness-analyze; in scripts/sweep.sh or "
               "harness-validate: +analysis.isoflop.exclude_edge=false)"
               if settings.exclude_edge and (status[~usable] == EDGE).any() else "")
        )


def fit_isoflop(used: pd.DataFrame, settings: Settings, diag: Diagnostics) -> IsoflopFit:
    """Robust (Huber-IRLS) parabola of loss vs log N for every budget with enough sizes, with its checks."""
    rows = isoflop_rows(used, settings, diag)
    layout = build_layout(rows)
    _warn_mixed_compute(rows, layout, diag)
    parabolas = fit_parabolas(layout, None, settings.huber_k, settings.irls_iters, settings.exclude_edge)
    fit = IsoflopFit(rows, layout, parabolas)
    _check_minima(fit, settings, diag)
    return fit


def fit_power_laws(iso: IsoflopFit, parabolas: ParabolaFits) -> PowerLaws:
    """N_opt = k_N C^a and D_opt = k_D C^b through the usable minima of each resample's parabolas."""
    return PowerLaws(fit_loglog(iso.lnC, parabolas.lnN_opt, parabolas.usable),
                     fit_loglog(iso.lnC, parabolas.lnD_opt, parabolas.usable))


def fit_approach2(iso: IsoflopFit, diag: Diagnostics) -> PowerLaws:
    """The point-estimate power laws; notes when only two budgets carry them."""
    if iso.n_usable == 2:
        diag.note("Approach 2 rests on exactly 2 budgets: its exponents are determined with no check of the "
                  "power law; add budgets")
    return fit_power_laws(iso, iso.parabolas)


def approach2_samples(iso: IsoflopFit, parabolas: ParabolaFits) -> dict[str, np.ndarray]:
    """Bootstrap samples from resampled parabolas: (a, ln k_N, b, ln k_D), each budget's optimum and its parabola's
    coefficient of (ln N)^2 (predict.isoflop_curvature)."""
    laws = fit_power_laws(iso, parabolas)
    return {
        "approach2": np.stack([laws.n_opt.slope, laws.n_opt.intercept, laws.d_opt.slope, laws.d_opt.intercept],
                              axis=1),
        "budget_lnN": np.where(parabolas.usable, parabolas.lnN_opt, np.nan),
        "budget_lnD": np.where(parabolas.usable, parabolas.lnD_opt, np.nan),
        "budget_L": np.where(parabolas.usable, parabolas.L_opt, np.nan),
        "budget_c2": np.where(parabolas.usable, parabolas.coef[..., 2], np.nan),
        "budget_status": np.where(parabolas.usable, OK, parabolas.status),  # why a resample lost a budget
    }


def summarize_approach2(iso: IsoflopFit, laws: PowerLaws, samples: dict[str, np.ndarray],
                        level: float) -> dict[str, Any]:
    """fits.json's approach2 block: a, b, k_N, k_D, a + b as Estimates, plus the fit's r^2 and budgets."""
    boot = samples.get("approach2")

    def column(i: int) -> np.ndarray | None:
        return None if boot is None else boot[:, i]

    a, ln_k_n = float(laws.n_opt.slope[0]), float(laws.n_opt.intercept[0])
    b, ln_k_d = float(laws.d_opt.slope[0]), float(laws.d_opt.intercept[0])
    return {
        "a": estimate(a, column(0), level),
        "k_N": estimate(np.exp(ln_k_n), None if boot is None else np.exp(boot[:, 1]), level),
        "b": estimate(b, column(2), level),
        "k_D": estimate(np.exp(ln_k_d), None if boot is None else np.exp(boot[:, 3]), level),
        "a_plus_b": estimate(a + b, None if boot is None else boot[:, 0] + boot[:, 2], level),
        "ln_k_N": ln_k_n, "ln_k_D": ln_k_d,
        "r2_N": float(laws.n_opt.r2[0]), "r2_D": float(laws.d_opt.r2[0]),
        "n_budgets": iso.n_usable,
        "budgets_used": [float(b) for b in iso.layout.budgets[iso.usable]],
    }


def _budget_row(iso: IsoflopFit, j: int, samples: dict[str, np.ndarray], level: float) -> dict[str, Any]:
    """One budget's line of the table: its sizes, status, optimum (N*, D*, L*) with intervals, parabola."""
    layout, pf = iso.layout, iso.parabolas
    m = layout.mask[j]
    rows = iso.rows.loc[layout.index[j][m]]
    has_minimum = int(iso.status[j]) not in (DOWNWARD, TOO_FEW)

    def point(x: float) -> float:
        return x if has_minimum else np.nan

    def optimum(key: str, value: float, transform: Any = None) -> Any:
        boot = samples.get(key)
        sub = None if boot is None else (transform(boot[:, j]) if transform else boot[:, j])
        return estimate(value, sub, level)

    weights = pf.robust_weight[0, j][m]
    down = [{"run_id": str(r), "weight": round(float(w), 3)} for r, w in zip(rows["run_id"], weights) if w < 0.5]
    return {
        "budget": float(layout.budgets[j]), "C": float(layout.C[j]), "n_runs": int(m.sum()),
        "n_sizes": int(layout.n_sizes[j]), "N_min": float(rows["params"].min()),
        "N_max": float(rows["params"].max()), "status": STATUS_NAMES[int(iso.status[j])],
        "used": bool(iso.usable[j]),
        "N_opt": optimum("budget_lnN", np.exp(point(pf.lnN_opt[0, j])), np.exp),
        "D_opt": optimum("budget_lnD", np.exp(point(pf.lnD_opt[0, j])), np.exp),
        "L_opt": optimum("budget_L", point(pf.L_opt[0, j])),
        "L_min_observed": float(rows["loss"].min()),
        "coef": [float(c) for c in pf.coef[0, j]], "center_lnN": float(layout.center[j]),
        "downweighted": down, **_resample_status(samples, j),
    }


def _resample_status(samples: dict[str, np.ndarray], j: int) -> dict[str, Any]:
    """{"resamples": {status: count}}: in how many bootstrap resamples budget j was usable, and why not."""
    status = samples.get("budget_status")
    if status is None:
        return {}
    codes, counts = np.unique(status[:, j].astype(int), return_counts=True)
    return {"resamples": {STATUS_NAMES[int(c)]: int(n) for c, n in zip(codes, counts)}}


def budget_table(iso: IsoflopFit, samples: dict[str, np.ndarray], level: float,
                 diag: Diagnostics) -> list[dict[str, Any]]:
    """One row per budget (used or not); notes the runs the robust parabola down-weighted."""
    table = []
    for j in range(len(iso.layout.C)):
        row = _budget_row(iso, j, samples, level)
        table.append(row)
        if row["downweighted"]:
            diag.note(f"budget {iso.layout.budgets[j]:.3g}: the robust parabola down-weighted "
                      + ", ".join(f"{d['run_id']} (weight {d['weight']})" for d in row["downweighted"]))
        _note_lost_resamples(row, diag)
    return table


def _note_lost_resamples(row: dict[str, Any], diag: Diagnostics) -> None:
    """Name why a budget was unusable in more than 5% of the bootstrap resamples (the failed resamples' causes)."""
    counts = row.get("resamples") or {}
    total, lost = sum(counts.values()), {k: n for k, n in counts.items() if k != STATUS_NAMES[OK]}
    if total and sum(lost.values()) > LOST_SHARE_NOTE * total:
        why = ", ".join(f"{k} {n} ({LOST_WHY[k]})" for k, n in sorted(lost.items(), key=lambda kv: -kv[1]))
        diag.note(f"budget {row['budget']:.3g}: usable in {counts.get(STATUS_NAMES[OK], 0)} of {total} bootstrap "
                  f"resamples; lost to {why}")
