"""Analysis and report for a table analysed by harness.analysis.tables (size, data and compute ladders, scattered points):
report.md with the table's shape, every fitted law with its interval, the fits that could not run and why, the
predictions at the user's targets; fits.json; one plot per law (Kaplan et al. 2020's log-log loss plots with the
irreducible-term fit beside the pure power law). Also the target sections an IsoFLOP report gets as extras, and
analyze_table, the pipeline harness.analyze hands such tables to.
Nothing is fitted here; files are replaced atomically and fits.json, the completion mark, comes last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.analysis import Fits, select_fit_rows
from harness.analysis.approach3 import form_choice_text, formula_of
from harness.analysis.bootstrap import interval
from harness.analysis.context import Settings
from harness.analysis.estimate import format_estimate, format_number, markdown_table
from harness.analysis.laws import FORMS, IRREDUCIBLE, KAPLAN
from harness.analysis.outliers import flagged_ids, outlier_lines
from harness.analysis.parametric import predict_log_loss
from harness.analysis.shapes import detect_shape
from harness.analysis.tables import TableFits, fit_table
from harness.analysis.targets import Targets, isoflop_model_target, predict_targets
from harness.figures import colors, png_bytes, stale_outputs
from harness.fsutil import publish

AXIS = {"N": "parameters N", "D": "training tokens D", "C": "training compute C (FLOPs)"}
COLUMN = {"N": "params", "D": "tokens", "C": "flops"}

SHAPES_SHOWN = 4  # shape labels on the terminal line (report.md lists them all)


@dataclass(frozen=True)
class TablePlot:
    """A rendered plot: file name, caption, PNG bytes."""

    name: str
    caption: str
    png: bytes


fmt_est, _table = format_estimate, markdown_table


def _target_x(tf: TableFits, variable: str) -> float | None:
    """Where the model/compute targets put this law's x (for the plot's extrapolation range)."""
    t = tf.targets or {}
    model = t.get("model") or {}
    xs = [model.get(variable)] + ([c["C"] for c in t.get("C", [])] if variable == "C" else [])
    xs = [float(x) for x in xs if x]
    return max(xs) if xs else None


def plot_law(tf: TableFits, name: str) -> Figure:
    """Loss vs x (log-log) with both fitted forms, their bootstrap bands and the targets' x."""
    variable = name[2]
    pts = tf.points[name]
    x, loss = pts[COLUMN[variable]].to_numpy(float), pts["loss"].to_numpy(float)
    hi = max(float(x.max()) * 3.0, _target_x(tf, variable) or 0.0)
    xs = np.exp(np.linspace(np.log(x.min() / 1.5), np.log(hi * 1.2), 150))
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    ax.scatter(x, loss, color="k", s=22, zorder=3, label="runs fitted")
    level = float(tf.settings["level"])
    for form, col in zip((IRREDUCIBLE, KAPLAN), colors(2)):
        law = tf.fitted.get(f"{name} {form}")
        if law is None:
            continue
        point, boot = law.curve(xs)
        alpha = tf.laws[name][form]["alpha"]
        ax.plot(xs, point, color=col, label=f"{tf.laws[name][form]['formula']}: alpha = {fmt_est(alpha, 3)}")
        if boot is not None:
            lo, up = interval(boot, level)
            if np.any(np.isfinite(lo)):
                ax.fill_between(xs, lo, up, color=col, alpha=0.2, lw=0)
    model = (tf.targets or {}).get("model") or {}
    if model.get("actual") is not None and model.get(variable):
        ax.scatter([model[variable]], [model["actual"]], marker="*", s=160, color="C3", zorder=4,
                   label=f"held-out run (actual {model['actual']:.4g})")
    target = _target_x(tf, variable)
    if target:
        ax.axvline(target, color="C3", ls=":", label=f"target {variable} = {target:.3g}")
    ax.axvspan(x.max(), xs[-1], color="0.9", zorder=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(AXIS[variable])
    ax.set_ylabel("loss")
    ax.set_title(f"{name} over {tf.laws[name]['points']} (grey: extrapolation)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_approach3(tf: TableFits, used: Any) -> Figure:
    """Approach 3: fitted vs measured loss per run (points on the diagonal fit)."""
    theta = np.asarray(tf.approach3["theta"], float)
    lnN, lnD = np.log(used["params"].to_numpy(float)), np.log(used["tokens"].to_numpy(float))
    fitted, loss = np.exp(predict_log_loss(theta, lnN, lnD)), used["loss"].to_numpy(float)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    sc = ax.scatter(fitted, loss, c=lnN, s=20, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="ln N")
    out = used["run_id"].astype(str).isin(flagged_ids(tf.approach3)).to_numpy()
    if out.any():
        ax.scatter(fitted[out], loss[out], marker="x", color="C3", s=40, label="gross outliers (report.md)")
        ax.legend(fontsize=7)
    lim = [min(fitted.min(), loss.min()), max(fitted.max(), loss.max())]
    ax.plot(lim, lim, color="0.5", ls="--")
    ax.set_xlabel("Approach 3 fitted loss")
    ax.set_ylabel("measured loss")
    ax.set_title(f"Approach 3: rmse of log residuals {format_number(tf.approach3['rmse_log'], 3)}", fontsize=9)
    return fig


def render_plots(tf: TableFits, used: Any) -> list[TablePlot]:
    """One plot per fitted law, and Approach 3's fit when it ran."""
    out = []
    for name in tf.laws:
        v = name[2]
        out.append(TablePlot(f"law_{v}.png", f"{name}: loss vs {AXIS[v]} with both fitted forms",
                             png_bytes(plot_law(tf, name))))
    if tf.approach3:
        out.append(TablePlot("approach3.png", "Approach 3: fitted vs measured loss", png_bytes(plot_approach3(tf, used))))
    return out


def _law_rows(tf: TableFits) -> list[list[str]]:
    rows = []
    for name, block in tf.laws.items():
        for form in FORMS:
            b = block.get(form)
            if b is None:
                continue
            scale = f"E = {fmt_est(b['E'])}, A = {fmt_est(b['A'])}" if form == IRREDUCIBLE else \
                f"{name[2]}_c = {fmt_est(b['x_c'])}"
            rows.append([name, b["formula"], fmt_est(b["alpha"]), scale, f"{b['n_points']} ({b['dof']} dof)",
                         format_number(b["rmse"], 3), block["points"]])
    return rows


def _approach3_lines(tf: TableFits) -> list[str]:
    a3 = tf.approach3
    if not a3:
        return []
    return ["", f"## Approach 3: L(N, D) = {formula_of(a3)}", "",
            _table(["E", "A", "B", "alpha", "beta", "gamma", "a (N_opt ~ C^a)", "b (D_opt ~ C^b)"],
                   [[fmt_est(a3[k]) if k in a3 else "1" for k in ("E", "A", "B", "alpha", "beta", "gamma", "a", "b")]]),
            f"\nFitted to {a3['n_runs']} runs as Besiroglu et al. 2024 (Huber delta {a3['huber_delta']:g}, L-BFGS "
            f"from {a3['n_starts']} starts); rmse of log residuals {format_number(a3['rmse_log'], 3)}. "
            f"Form: {form_choice_text(a3)}.", *outlier_lines(a3)]


def _prediction_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[r["law"], fmt_est(r["loss"]),
             "-" if r.get("extrapolation") is None else f"{format_number(r['extrapolation'], 3)}x", r["note"]]
            for r in rows]


def _recommendation_line(c: dict[str, Any]) -> str:
    rec = c.get("recommendation")
    if not rec:
        return f"- C = {format_number(c['C'], 3)}: no recommendation (needs Approach 2/3 or >= 2 sizes along L(C))."
    tpp = (rec["D"].value / rec["N"].value) if rec["N"].value and rec["D"].value else None
    return (f"- C = {format_number(c['C'], 3)}: N = {fmt_est(rec['N'], 3)}, D = {fmt_est(rec['D'], 3)} "
            f"({format_number(tpp, 3)} tokens/param), from {rec['source']}.")


def targets_lines(targets: dict[str, Any]) -> list[str]:
    """Markdown of the predictions at the user's targets (model and compute), or nothing without targets."""
    if not targets or (not targets.get("C") and not targets.get("model")):
        return []
    out = ["", "## Predictions at your targets", ""]
    model = targets.get("model")
    if model:
        what = ", ".join(f"{k} = {format_number(model[k], 3)}" for k in ("N", "D", "C") if model.get(k))
        out += [f"Model {what}" + (f" ({format_number(model['tokens_per_param'], 3)} tokens/param)"
                                   if model.get("tokens_per_param") else "") + ":", ""]
        out += [_table(["law", "loss", "beyond fitted range", "how"], _prediction_rows(model["predictions"]))
                if model["predictions"] else "No fitted law applies to this model."]
        skipped = [f"- {r['law']} does not apply: {r['reason']}" for r in model["not_applicable"]]
        out += ["", *skipped] if skipped else []
    for c in targets.get("C", []):
        out += ["", f"Compute C = {format_number(c['C'], 3)} FLOPs:", ""]
        out += [_table(["law", "loss", "beyond fitted range", "how"], _prediction_rows(c["predictions"]))
                if c["predictions"] else NO_COMPUTE_LAW]
    recs = [_recommendation_line(c) for c in targets.get("C", [])]
    return out + (["", "Recommended N and D:", "", *recs] if recs else [])


def render_markdown(tf: TableFits, plots: Sequence[TablePlot], units: str | None) -> str:
    """report.md text for a table analysis."""
    d, boot = tf.data, tf.settings
    excl = ", ".join(f"{k}: {v}" for k, v in d["excluded"].items()) or "none"
    out = ["# Scaling-law analysis", "", f"Source: `{tf.inputs.get('source') or 'DataFrame'}`.",
           f"Rows: {d['n_rows']} in the table, {d['n_used']} fitted; excluded: {excl}.",
           f"Units: {units or 'FLOPs, parameters and tokens as given'}.",
           f"Intervals are {round(100 * boot['level'])}% case-bootstrap percentile intervals over {boot['bootstrap']} "
           f"resamples (seed {boot['seed']}).", "", "## Shape", ""]
    out += [f"- {label}" for label in tf.shape["labels"]]
    out += ["", "## Fitted laws", "", _table(["law", "form", "alpha", "scale", "points", "rmse", "fitted to"],
                                             _law_rows(tf)) if tf.laws else "No one-variable law fitted."]
    out += _approach3_lines(tf)
    out += ["", "## Not fitted", ""] + ([f"- {r['fit']}: {r['reason']}" for r in tf.not_fitted] or ["- none"])
    out += ["", "## Warnings", ""] + ([f"- {w}" for w in tf.warnings] or ["- none"])
    out += ["", "Notes:", "", *[f"- {n}" for n in tf.notes]] if tf.notes else []
    out += targets_lines(tf.targets)
    out += ["", "## Plots", "", *[f"![{p.caption}]({p.name})\n" for p in plots]]
    out += ["## Limitations", "", "- Intervals cover run-to-run noise only (resampling points), not a wrong law.",
            "- L(N) holds at its ladder's D (or tokens/param), L(D) at its ladder's N, and L(C) along the table's own "
            "allocation path; none of them says what a different allocation would reach (Approach 3 does).",
            "- Kaplan et al. 2020's pure power law has no floor: far out it predicts lower losses than the "
            "irreducible-term form; the gap between the two is a measure of extrapolation risk."]
    return "\n".join(out) + "\n"


def write_table_report(tf: TableFits, plots: Sequence[TablePlot], out_dir: str | Path,
                       units: str | None = None, extra: Sequence[str] = ()) -> dict[str, Path]:
    """Write the plots, report.md (with `extra` markdown sections) and fits.json (last) into out_dir."""
    files = {p.name: p.png for p in plots}
    files["report.md"] = (render_markdown(tf, plots, units) + "".join(f"\n{e.rstrip()}\n" for e in extra)).encode()
    files["fits.json"] = tf.to_json().encode()
    return publish(Path(out_dir).expanduser(), files, last="fits.json", stale=stale_outputs(files))


def summary_lines(tf: TableFits) -> list[str]:
    """Terminal lines: the shape, each law's exponent, what was not fitted, the target predictions."""
    labels = tf.shape["labels"]
    more = f"; and {len(labels) - SHAPES_SHOWN} more (report.md)" if len(labels) > SHAPES_SHOWN else ""
    out = [f"shape: {'; '.join(labels[:SHAPES_SHOWN])}{more}"]
    for name, block in tf.laws.items():
        parts = [f"{block[f]['formula']}: alpha {fmt_est(block[f]['alpha'])}" for f in FORMS if f in block]
        out.append(f"{name}: " + "; ".join(parts))
    if tf.approach3:
        out.append(f"approach 3: alpha {fmt_est(tf.approach3['alpha'])}, beta {fmt_est(tf.approach3['beta'])}")
    out += [f"not fitted: {r['fit']} ({r['reason']})" for r in tf.not_fitted]
    return out + target_summary(tf.targets)


NO_COMPUTE_LAW = ("no fitted law predicts a loss at a compute budget: that needs L(C) (runs that grow N and D "
                  "together), Approach 2 or Approach 3; this table's shape does not identify one (see 'not fitted')")


def target_summary(targets: dict[str, Any]) -> list[str]:
    """Terminal lines for the predictions at the user's targets."""
    out = []
    model = (targets or {}).get("model")
    if model:
        head = ", ".join(f"{k}={format_number(model[k], 3)}" for k in ("N", "D") if model.get(k))
        out += [f"predicted loss at {head}: {r['law']} {fmt_est(r['loss'])}" for r in model["predictions"]]
        out += [f"  {r['law']} does not apply: {r['reason']}" for r in model["not_applicable"]]
    for c in (targets or {}).get("C", []):
        out += [f"predicted loss at C={format_number(c['C'], 3)}: {r['law']} {fmt_est(r['loss'])}"
                for r in c["predictions"]] or [f"C={format_number(c['C'], 3)}: {NO_COMPUTE_LAW}"]
        out += [_recommendation_line(c)[2:]] if c.get("recommendation") is not None else []
    return out


def is_isoflop(df: pd.DataFrame, settings: Settings) -> bool:
    """Whether the table's usable rows hold >= 2 IsoFLOP budgets (the existing Approach 2 pipeline applies);
    raises HarnessError when nothing in the table can be fitted at all."""
    return detect_shape(select_fit_rows(df).used, settings.min_sizes).isoflop


def analyze_table(df: pd.DataFrame, cfg: Any, out: Path, skipped: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Fit every law the table's shape identifies, predict the targets, write the report; the run_analysis
    result shape ({out, files, fits, summary}) with summary["lines"] for the terminal."""
    tf = fit_table(df, Settings.from_cfg(cfg), skipped)
    tf.inputs["units"] = df.attrs.get("units")
    tf.targets = predict_targets(tf, Targets.from_cfg(cfg))
    files = write_table_report(tf, render_plots(tf, select_fit_rows(df).used), out, df.attrs.get("units"))
    summary = {"n_used": tf.data["n_used"], "warnings": list(tf.warnings), "lines": summary_lines(tf)}
    return {"out": str(out), "files": {k: str(v) for k, v in files.items()}, "fits": tf, "summary": summary}


def isoflop_extras(fits: Fits, df: pd.DataFrame, cfg: Any) -> tuple[list[str], list[str]]:
    """For an IsoFLOP analysis: (extra report sections, terminal lines) for units and a predict.N/D model target;
    both empty when neither was given, so the report stays as it was."""
    sections, lines = [], []
    units = df.attrs.get("units")
    if units:
        fits.inputs["units"] = units
        sections.append(f"## Units\n\n{units}.")
    targets = Targets.from_cfg(cfg)
    if targets.model:
        fits.targets = {"C": [], "model": isoflop_model_target(fits, targets.N, targets.D)}
        sections.append("\n".join(targets_lines(fits.targets)).strip())
        lines += target_summary(fits.targets)
    return sections, lines
