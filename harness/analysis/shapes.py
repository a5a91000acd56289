"""What a results table can support: detect its shape (IsoFLOP grid, size ladder at fixed D or fixed tokens per
parameter, data ladder at fixed N, compute ladder, scattered (N, D) points) and which fits that shape identifies.

Values count as "the same" N, D or D/N when they lie within SAME_TOL (relative) of their group's first value, so
tables whose token counts were rounded or whose steps were rounded still group. The fits each shape identifies:
Approach 2 (Hoffmann et al. 2022) needs IsoFLOP budgets; L(N) (Kaplan et al. 2020) a size ladder; L(D) a data
ladder; L(C) compute levels; Approach 3 enough distinct (N, D) points with N and D varied independently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError

SAME_TOL = 0.02  # relative: N, D or D/N within 2% of a group's first value are one value
MIN_LADDER = 3  # distinct values a ladder needs (a power law with one residual dof)
MIN_SPAN = 2.0  # and the varied quantity must span at least this factor
# A ladder of only MIN_LADDER values must hold this share of the runs (else it is a coincidence among scattered runs).
MIN_SHARE = 0.25
MIN_LEVELS = 3  # compute levels L(C) needs
# Approach 3 has 5 parameters (E, A, B, alpha, beta): it needs at least 6 distinct (N, D) points, 3 distinct N and
# 3 distinct D, and D not a fixed power of N (else the N and D terms cannot be told apart).
MIN_APPROACH3_POINTS = 6
MIN_APPROACH3_AXIS = 3
MIN_ND_SPREAD = 1.25  # ln D must scatter around its trend in ln N by more than this ratio end to end


def cluster(values: np.ndarray, tol: float = SAME_TOL) -> np.ndarray:
    """Integer group label per value (in increasing order): sorted values start a new group whenever one exceeds
    its group's first value by more than `tol` (relative)."""
    v = np.asarray(values, float)
    labels = np.zeros(v.size, dtype=int)
    if v.size == 0:
        return labels
    order = np.argsort(v)
    logs = np.log(v[order])
    start, label = 0, 0
    for i in range(1, v.size):
        if logs[i] - logs[start] > math.log1p(tol):
            label += 1
            start = i
        labels[order[i]] = label
    return labels


@dataclass
class Ladder:
    """Rows that vary one quantity with another held fixed: `varies` N or D, `fixed` names what is held."""

    varies: str  # "N" or "D"
    fixed: str  # "D", "D/N" or "N"
    value: float  # the fixed quantity's geometric mean
    rows: np.ndarray  # row indices into the used table
    n_distinct: int

    def describe(self) -> str:
        """'4 sizes at D = 1e+09' and the like."""
        what = "sizes" if self.varies == "N" else "token counts"
        return f"{self.n_distinct} {what} at {self.fixed} = {self.value:.3g}"

    def as_dict(self) -> dict[str, Any]:
        """JSON form (rows as a count)."""
        return {"varies": self.varies, "fixed": self.fixed, "value": self.value, "n_rows": int(self.rows.size),
                "n_distinct": self.n_distinct}


@dataclass
class Shape:
    """The table's structure: labels (most specific first) and what each fit can use."""

    labels: list[str]
    n_runs: int
    n_points: int  # distinct (N, D) pairs
    n_N: int
    n_D: int
    n_levels: int  # compute levels (budgets)
    isoflop_budgets: int  # budgets with >= min_sizes distinct sizes
    size_ladders: list[Ladder] = field(default_factory=list)
    data_ladders: list[Ladder] = field(default_factory=list)
    approach3_reason: str | None = None  # None: Approach 3 is identifiable

    @property
    def isoflop(self) -> bool:
        """At least two IsoFLOP budgets: Approach 2 and its frontier apply."""
        return self.isoflop_budgets >= 2

    def as_dict(self) -> dict[str, Any]:
        """JSON form for fits.json."""
        return {"labels": self.labels, "n_runs": self.n_runs, "n_points": self.n_points, "n_N": self.n_N,
                "n_D": self.n_D, "n_levels": self.n_levels, "isoflop_budgets": self.isoflop_budgets,
                "size_ladders": [ld.as_dict() for ld in self.size_ladders],
                "data_ladders": [ld.as_dict() for ld in self.data_ladders],
                "approach3": "identifiable" if self.approach3_reason is None else self.approach3_reason}


def _ladders(held: np.ndarray, varied: np.ndarray, held_values: np.ndarray, varied_values: np.ndarray, varies: str,
             fixed: str) -> list[Ladder]:
    """One ladder per group of `held` labels with >= MIN_LADDER distinct `varied` labels spanning >= MIN_SPAN
    (varied_values in log; a ladder of exactly MIN_LADDER values must hold MIN_SHARE of the runs), largest first."""
    out = []
    for g in np.unique(held):
        rows = np.flatnonzero(held == g)
        n = int(np.unique(varied[rows]).size)
        big = n > MIN_LADDER or rows.size >= MIN_SHARE * held.size
        if n >= MIN_LADDER and big and np.ptp(varied_values[rows]) >= math.log(MIN_SPAN):
            value = float(np.exp(np.mean(np.log(held_values[rows]))))
            out.append(Ladder(varies, fixed, value, rows, n))
    return sorted(out, key=lambda ld: (-ld.n_distinct, -ld.value))


def approach3_reason(lnN: np.ndarray, lnD: np.ndarray, n_points: int, n_N: int, n_D: int) -> str | None:
    """Why Approach 3 cannot separate the N and D terms here (None when it can)."""
    if n_points < MIN_APPROACH3_POINTS:
        return f"needs >= {MIN_APPROACH3_POINTS} distinct (N, D) points for its 5 parameters, the table has {n_points}"
    if n_N < MIN_APPROACH3_AXIS or n_D < MIN_APPROACH3_AXIS:
        return (f"needs >= {MIN_APPROACH3_AXIS} distinct N and >= {MIN_APPROACH3_AXIS} distinct D, the table has "
                f"{n_N} and {n_D}")
    slope, intercept = np.polyfit(lnN, lnD, 1)
    resid = lnD - (slope * lnN + intercept)
    if np.ptp(resid) <= math.log(MIN_ND_SPREAD):
        return (f"D is a fixed power of N across the table (D ~ N^{slope:.2f} within {MIN_ND_SPREAD - 1:.0%}): the N "
                "and D terms cannot be told apart; vary D at a fixed N")
    return None


def _labels(shape: Shape, one_per_level: bool) -> list[str]:
    """Human-readable shape labels, most specific first."""
    labels = []
    if shape.isoflop:
        labels.append(f"IsoFLOP grid ({shape.isoflop_budgets} budgets with several sizes)")
    if one_per_level and shape.n_levels >= MIN_LEVELS:
        labels.append(f"compute ladder ({shape.n_levels} compute levels, about one run each)")
    labels += [f"size ladder ({ld.describe()})" for ld in shape.size_ladders]
    labels += [f"data ladder ({ld.describe()})" for ld in shape.data_ladders]
    in_ladders = sum(ld.rows.size for ld in shape.size_ladders + shape.data_ladders)
    if not labels or (len(labels) == len(shape.size_ladders) + len(shape.data_ladders)
                      and in_ladders < 0.5 * shape.n_runs):
        labels.append(f"scattered (N, D) points ({shape.n_points} distinct)")
    return labels


def _isoflop_budgets(budgets: np.ndarray, levels: np.ndarray, sizes: np.ndarray, min_sizes: int) -> int:
    """Budgets with >= min_sizes distinct sizes, counted only when they hold at least half of the runs: scattered
    runs whose C happen to fall close together form a few such budgets by chance, an IsoFLOP grid is made of them."""
    grid = levels[sizes >= min_sizes]
    return int(grid.size) if np.isin(budgets, grid).mean() >= 0.5 else 0


def detect_shape(used: pd.DataFrame, min_sizes: int = 3) -> Shape:
    """The shape of the usable rows (canonical columns params, tokens, loss, budget); HarnessError when nothing
    in the table varies enough for any fit."""
    N, D = used["params"].to_numpy(float), used["tokens"].to_numpy(float)
    n_lab, d_lab, r_lab = cluster(N), cluster(D), cluster(D / N)
    points = np.unique(np.stack([n_lab, d_lab], axis=1), axis=0).shape[0]
    budgets = used["budget"].to_numpy(float)
    levels = np.unique(budgets)
    sizes_per_budget = np.array([np.unique(n_lab[budgets == b]).size for b in levels])
    refuse_unidentifiable(len(used), points)
    shape = Shape(labels=[], n_runs=len(used), n_points=points, n_N=int(np.unique(n_lab).size),
                  n_D=int(np.unique(d_lab).size), n_levels=int(levels.size),
                  isoflop_budgets=_isoflop_budgets(budgets, levels, sizes_per_budget, min_sizes))
    shape.size_ladders = (_ladders(d_lab, n_lab, D, np.log(N), "N", "D")
                          + _ladders(r_lab, n_lab, D / N, np.log(N), "N", "D/N"))
    shape.data_ladders = _ladders(n_lab, d_lab, N, np.log(D), "D", "N")
    shape.approach3_reason = approach3_reason(np.log(N), np.log(D), points, shape.n_N, shape.n_D)
    shape.labels = _labels(shape, bool(np.mean(sizes_per_budget <= 1) >= 0.5) and grown_together(used))
    return shape


def grown_together(used: pd.DataFrame) -> bool:
    """Whether N and D both grow with compute (neither held fixed, neither falling by more than SAME_TOL from one
    compute level to the next): a compute ladder rather than scattered points."""
    rows = used.sort_values("flops")
    lnN, lnD = np.log(rows["params"].to_numpy(float)), np.log(rows["tokens"].to_numpy(float))
    slack = math.log1p(SAME_TOL)
    varied = np.ptp(lnN) > slack and np.ptp(lnD) > slack
    return bool(varied and np.all(np.diff(lnN) >= -slack) and np.all(np.diff(lnD) >= -slack))


def refuse_unidentifiable(n_runs: int, n_points: int) -> None:
    """One error line when no fit is possible: a single run, or every run at the same N and D."""
    if n_runs < 2:
        raise HarnessError("the table has 1 usable run: every scaling law needs runs that differ in N, D or C; add "
                           f"at least {MIN_LADDER} runs of different sizes, token counts or budgets")
    if n_points < 2:
        raise HarnessError(f"all {n_runs} usable runs have the same N and D (only seeds differ): nothing to fit a law "
                           f"to; add at least {MIN_LADDER} runs that differ in N (a size ladder) or D (a data ladder)")
