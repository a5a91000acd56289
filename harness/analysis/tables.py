"""Analysis of any table that is not an IsoFLOP grid: detect its shape (harness.analysis.shapes), fit every law it
identifies (L(N) over a size ladder, L(D) over a data ladder, L(C) over the lowest loss per compute level, each in
the irreducible and Kaplan et al. 2020 forms, and Approach 3 of Hoffmann et al. 2022 where N and D vary
independently), list the fits it cannot run with the reason, and predict the user's targets (harness.analysis.
targets). The result, TableFits, serialises to fits.json like Fits does.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.approach3 import RunArrays, approach3_samples, summarize_approach3
from harness.analysis.bootstrap import group_weights
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.fits import SCHEMA_VERSION, to_jsonable
from harness.analysis.laws import FORMS, MIN_POINTS, LawFit, fit_law, law_warnings, summarize_law
from harness.analysis.load import derivation_warnings, select_fit_rows
from harness.analysis.outliers import fit_screened, screen_block
from harness.analysis.parametric import ParametricFit, single_blas_thread
from harness.analysis.shapes import MIN_LADDER, MIN_LEVELS, SAME_TOL, Ladder, Shape, detect_shape
from harness.errors import HarnessError


@dataclass
class TableFits:
    """Everything fitted to a non-IsoFLOP table; `fitted` and `approach3_fit` stay in memory (not in fits.json)."""

    inputs: dict[str, Any]
    settings: dict[str, Any]
    data: dict[str, Any]
    shape: dict[str, Any]
    laws: dict[str, dict[str, Any]]
    approach3: dict[str, Any]
    not_fitted: list[dict[str, str]]
    warnings: list[str]
    notes: list[str]
    targets: dict[str, Any] = field(default_factory=dict)
    fitted: dict[str, LawFit] = field(default_factory=dict, repr=False)
    points: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    approach3_samples: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict (Estimates as {value, lo, hi, n}); the in-memory fits and samples are left out."""
        skip = {"fitted", "points", "approach3_samples"}
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        return {"schema_version": SCHEMA_VERSION, "kind": "table", **to_jsonable(d)}

    def to_json(self, indent: int = 2) -> str:
        """fits.json text."""
        return json.dumps(self.as_dict(), indent=indent, allow_nan=False)


def law_name(variable: str) -> str:
    """'L(N)' for 'N'."""
    return f"L({variable})"


def compute_points(used: pd.DataFrame) -> pd.DataFrame:
    """The points L(C) is fitted to: the lowest-loss run of each compute level (budget), kept only where it beats
    every smaller level (the compute-efficient frontier, as Kaplan et al. 2020's L(C) is), ordered by compute."""
    best = used.loc[used.groupby("budget")["loss"].idxmin()].sort_values("flops")
    loss = best["loss"].to_numpy(float)
    running = np.minimum.accumulate(np.concatenate([[np.inf], loss[:-1]]))
    return best[loss < running].reset_index(drop=True)


def _ladder_points(used: pd.DataFrame, ladder: Ladder) -> pd.DataFrame:
    """The runs of one ladder (all of them: repeated seeds stay as separate points)."""
    return used.iloc[ladder.rows].sort_values("params" if ladder.varies == "N" else "tokens").reset_index(drop=True)


def _fit_variable(variable: str, pts: pd.DataFrame, where: str, settings: Settings, out: TableFits,
                  diag: Diagnostics, ladder: Ladder | None = None) -> None:
    """Fit both forms of L(variable) to pts (irreducible form only with enough distinct points)."""
    col = {"N": "params", "D": "tokens", "C": "flops"}[variable]
    x, loss = pts[col].to_numpy(float), pts["loss"].to_numpy(float)
    n_distinct = int(np.unique(np.round(np.log(x), 9)).size)
    name = law_name(variable)
    block: dict[str, Any] = {"points": where, "n_runs": len(pts), "ladder": None if ladder is None else ladder.as_dict()}
    for form in FORMS:
        if n_distinct < MIN_POINTS[form]:
            out.not_fitted.append({"fit": f"{name} {FORMS[form]}", "reason": f"needs >= {MIN_POINTS[form]} distinct "
                                   f"{variable} values (its parameters plus one residual dof), {where} has {n_distinct}"})
            continue
        law = fit_law(variable, x, loss, form, settings.bootstrap, settings.seed)
        block[form] = summarize_law(law, settings.level)
        out.fitted[f"{name} {form}"] = law
        for w in law_warnings(f"{name} {form}", law, settings.bootstrap):
            diag.warn(w)
    if any(form in block for form in FORMS):
        out.laws[name] = block
        out.points[name] = pts


def _fit_ladders(used: pd.DataFrame, shape: Shape, settings: Settings, out: TableFits, diag: Diagnostics) -> None:
    """L(N) over the largest size ladder and L(D) over the largest data ladder; the others are noted."""
    for variable, ladders, missing in (
        ("N", shape.size_ladders, f"no size ladder: needs >= {MIN_LADDER} distinct N at one D or one tokens/param"),
        ("D", shape.data_ladders, f"no data ladder: needs >= {MIN_LADDER} distinct D at one N"),
    ):
        if not ladders:
            out.not_fitted.append({"fit": law_name(variable), "reason": missing})
            continue
        ladder = ladders[0]
        _fit_variable(variable, _ladder_points(used, ladder), f"the ladder of {ladder.describe()}", settings, out,
                      diag, ladder)
        if len(ladders) > 1:
            diag.note(f"{law_name(variable)} uses the ladder of {ladder.describe()}; also present: "
                      + "; ".join(ld.describe() for ld in ladders[1:]))


def _fit_compute(used: pd.DataFrame, shape: Shape, settings: Settings, out: TableFits, diag: Diagnostics) -> None:
    """L(C) over the lowest loss of each compute level."""
    if shape.n_levels < MIN_LEVELS:
        out.not_fitted.append({"fit": "L(C)", "reason": f"needs >= {MIN_LEVELS} compute levels, the table has "
                               f"{shape.n_levels}"})
        return
    pts = compute_points(used)
    for col, held in (("tokens", "D"), ("params", "N")):
        if np.ptp(np.log(pts[col].to_numpy(float))) <= np.log1p(SAME_TOL):
            out.not_fitted.append({"fit": "L(C)", "reason": f"{held} is the same at every compute level, so L(C) "
                                   f"would repeat L({'N' if held == 'D' else 'D'}); vary N and D together"})
            return
    dropped = shape.n_levels - len(pts)
    if dropped:
        diag.note(f"L(C): {dropped} compute level(s) left out, their lowest loss is above a smaller level's "
                  "(off the compute-efficient frontier)")
    _fit_variable("C", pts, f"the frontier of lowest losses over {shape.n_levels} compute levels", settings, out,
                  diag)


def _fit_approach3(used: pd.DataFrame, shape: Shape, settings: Settings, out: TableFits,
                   diag: Diagnostics) -> None:
    """Approach 3 over every run, with a case bootstrap, when the shape identifies it."""
    if shape.approach3_reason is not None:
        out.not_fitted.append({"fit": "Approach 3 L(N, D)", "reason": shape.approach3_reason})
        return
    runs = RunArrays.from_frame(used)
    ids = used["run_id"].astype(str).tolist()
    try:
        screen = fit_screened(runs, ids, settings, diag)
    except HarnessError as e:
        out.not_fitted.append({"fit": "Approach 3 L(N, D)", "reason": str(e)})
        return
    point: ParametricFit = screen.fit
    kept = runs.subset(screen.keep)
    samples: dict[str, np.ndarray] = {}
    if settings.bootstrap > 0:
        weights = group_weights(np.zeros(len(used), int), settings.bootstrap, settings.seed, settings.bootstrap_scheme)
        samples["approach3"] = approach3_samples(kept, weights[:, screen.keep], point, settings)
        out.approach3_samples = samples["approach3"]
    out.approach3 = summarize_approach3(kept, point, samples, settings, diag)
    out.approach3["outliers"] = screen_block(screen, runs, ids)


def _data_summary(df: pd.DataFrame, used: pd.DataFrame, excluded: dict[str, int]) -> dict[str, Any]:
    """Row counts and ranges of the fitted runs; kappa = median C / (N D) converts (N, D) targets to compute."""
    kappa = float(np.exp(np.median(np.log(used["flops"] / (used["params"] * used["tokens"])))))
    return {"n_rows": len(df), "n_used": len(used), "excluded": excluded, "kappa": kappa,
            "tokens_derived": bool(used["tokens_derived"].any()),
            "flops_derived": bool(used["flops_derived"].any()),
            "N_range": [float(used["params"].min()), float(used["params"].max())],
            "D_range": [float(used["tokens"].min()), float(used["tokens"].max())],
            "C_range": [float(used["flops"].min()), float(used["flops"].max())],
            "loss_range": [float(used["loss"].min()), float(used["loss"].max())]}


def fit_table(df: pd.DataFrame, settings: Settings, skipped: list[dict[str, str]] | None = None) -> TableFits:
    """Every fit the table's shape identifies, with bootstrap intervals; `skipped` lists fits already refused
    (e.g. Approach 2 and why). Raises HarnessError naming what is missing when no fit is possible."""
    sel = select_fit_rows(df)
    used, diag = sel.used, Diagnostics(warnings=list(sel.warnings))
    shape = detect_shape(used, settings.min_sizes)
    out = TableFits(inputs={"source": df.attrs.get("source"), "sha256": df.attrs.get("sha256"),
                            "columns": df.attrs.get("columns")},
                    settings=dataclasses.asdict(settings), data=_data_summary(df, used, sel.excluded),
                    shape=shape.as_dict(), laws={}, approach3={}, not_fitted=list(skipped or []), warnings=[],
                    notes=[])
    if not skipped and not shape.isoflop:
        out.not_fitted.append({"fit": "Approach 2 (IsoFLOP parabolas) and its frontier",
                               "reason": f"needs >= 2 budgets with >= {settings.min_sizes} sizes each, the table has "
                                         f"{shape.isoflop_budgets}"})
    with single_blas_thread():
        _fit_ladders(used, shape, settings, out, diag)
        _fit_compute(used, shape, settings, out, diag)
        _fit_approach3(used, shape, settings, out, diag)
    if not out.laws and not out.approach3:
        reasons = "; ".join(f"{r['fit']}: {r['reason']}" for r in out.not_fitted)
        raise HarnessError(f"no scaling law can be fitted to this table ({reasons}); add runs that vary N, D or C")
    for w in derivation_warnings(used, "L(D) and Approach 3", "the laws in C"):
        diag.warn(w)
    out.warnings, out.notes = diag.warnings, diag.notes
    return out
