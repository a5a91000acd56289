"""Report stage: plots (PNG), report.md and fits.json from a Fits object. Nothing is fitted here: plots evaluate
the fitted formulas (Hoffmann et al. 2022 Approaches 2 and 3 as fitted by harness.analysis) and their
bootstrap samples. Outputs are written into a temporary directory and moved into place with fits.json last,
so an interrupted write never leaves a set of outputs that looks complete.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.analysis.bootstrap import interval
from harness.analysis.fits import Fits
from harness.analysis.load import select_fit_rows
from harness.analysis.parametric import predict_log_loss
from harness.analysis.predict import approach2_curves, approach3_curves

PLOTS = {
    "isoflop": "isoflop.png",
    "optimal": "optimal_nd.png",
    "frontier": "frontier.png",
    "approach3": "approach3.png",
}
OUTPUT_NAMES = ["report.md", "fits.json", "bootstrap_samples.npz", *PLOTS.values()]


# ----------------------------------------------------------------------------------------------- formatting
def fmt(x: Any, digits: int = 4) -> str:
    """A number with `digits` significant digits, scientific when large or small; '-' for missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    x = float(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}g}"


def fmt_est(e: Mapping[str, Any] | None, digits: int = 4) -> str:
    """'value [lo, hi]' for an estimate dict."""
    if not e:
        return "-"
    s = fmt(e.get("value"), digits)
    if e.get("lo") is not None and e.get("hi") is not None:
        s += f" [{fmt(e['lo'], digits)}, {fmt(e['hi'], digits)}]"
    return s


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- plots
def _save(fig: Figure, path: Path) -> Figure:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _budget_rows(fits: Fits, df: pd.DataFrame) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    used = select_fit_rows(df).used
    per = [used[np.isclose(used["budget"].astype(float), b["budget"], rtol=1e-9)] for b in fits.budgets]
    return used, per


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.8 * i / max(1, n - 1)) for i in range(n)]


def plot_isoflop(fits: Fits, df: pd.DataFrame, path: Path) -> Figure:
    """Loss vs N per budget with the fitted robust parabolas and their optima (excluded budgets hollow)."""
    _, per = _budget_rows(fits, df)
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    for b, rows, col in zip(fits.budgets, per, _colors(len(fits.budgets))):
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
        n_opt, l_opt = b["N_opt"]["value"], b["L_opt"]["value"]
        if n_opt is not None and l_opt is not None:
            ax.plot([n_opt], [l_opt], marker="*", ms=12, color=col if b["used"] else "white", mec=col, zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    ax.set_title("IsoFLOP curves: robust parabolas in log N (stars: optima; x: down-weighted runs)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _c_grid(fits: Fits, holdout: Mapping[str, Any] | None, factor: float = 100.0) -> np.ndarray:
    cs = [b["C"] for b in fits.budgets]
    hi = max(cs) * factor
    if holdout and holdout.get("flops"):
        hi = max(hi, float(holdout["flops"]) * 2.0)
    return np.exp(np.linspace(np.log(min(cs) / 2.0), np.log(hi), 120))


def _band(ax: Any, C: np.ndarray, cur: dict[str, np.ndarray], key: str, color: Any, label: str, ls: str,
          level: float) -> None:
    ax.plot(C, cur[key], color=color, ls=ls, label=label)
    if f"{key}_samples" in cur:
        lo, hi = interval(cur[f"{key}_samples"], level)
        if np.any(np.isfinite(lo)):
            ax.fill_between(C, lo, hi, color=color, alpha=0.2, lw=0)


def plot_optimal(fits: Fits, path: Path, holdout: Mapping[str, Any] | None = None) -> Figure:
    """N_opt and D_opt vs C: per-budget optima, Approach 2 power laws and Approach 3, with 95% bands."""
    C = _c_grid(fits, holdout)
    level = float(fits.bootstrap.get("level", 0.95))
    a2, a3 = approach2_curves(fits, C), approach3_curves(fits, C)
    fig = Figure(figsize=(11, 4.5))
    for i, (key, name) in enumerate((("N", "N_opt (parameters)"), ("D", "D_opt (tokens)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        _band(ax, C, a2, key, "C0", f"Approach 2: {key} = k C^{fits.approach2['a' if key == 'N' else 'b']['value']:.3f}",
              "-", level)
        _band(ax, C, a3, key, "C3", f"Approach 3: exponent {fits.approach3['a' if key == 'N' else 'b']['value']:.3f}",
              "--", level)
        for b in fits.budgets:
            e = b[f"{key}_opt"]
            if e["value"] is None:
                continue
            yerr = None
            if e["lo"] is not None and e["hi"] is not None:
                yerr = [[max(0.0, e["value"] - e["lo"])], [max(0.0, e["hi"] - e["value"])]]
            ax.errorbar([b["C"]], [e["value"]], yerr=yerr, fmt="o", color="k" if b["used"] else "0.6",
                        mfc="k" if b["used"] else "white", ms=5, capsize=2, zorder=4)
        ax.axvline(max(b["C"] for b in fits.budgets), color="0.7", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    fig.suptitle(f"Compute-optimal allocation ({int(level * 100)}% bootstrap bands; hollow: excluded budgets)")
    return _save(fig, path)


def plot_frontier(fits: Fits, df: pd.DataFrame, path: Path, holdout: Mapping[str, Any] | None = None) -> Figure:
    """Loss frontier vs C with the extrapolation band; an optional held-out run with its predicted bands."""
    used, _ = _budget_rows(fits, df)
    C = _c_grid(fits, holdout)
    level = float(fits.bootstrap.get("level", 0.95))
    a2, a3 = approach2_curves(fits, C), approach3_curves(fits, C)
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    ax.scatter(used["flops"], used["loss"], s=6, color="0.75", label="runs", zorder=2)
    fr = fits.frontier
    _band(ax, C, a2, "loss", "C0", f"frontier E + K C^-k (k={fmt(fr['k']['value'], 3)})", "-", level)
    _band(ax, C, a3, "loss", "C3", "Approach 3 at its optimum", "--", level)
    for b in fits.budgets:
        e = b["L_opt"]
        if e["value"] is not None:
            ax.plot([b["C"]], [e["value"]], "o", color="k" if b["used"] else "0.6",
                    mfc="k" if b["used"] else "white", ms=5, zorder=4)
    ax.axvline(max(b["C"] for b in fits.budgets), color="0.7", lw=0.8, ls=":")
    if holdout:
        hc, hl = float(holdout["flops"]), holdout.get("loss")
        for name, col, dx in (("approach2", "C0", 0.96), ("approach3", "C3", 1.04)):
            p = (holdout.get("predicted") or {}).get(name) or {}
            if p.get("loss") is not None:
                lo, hi = p.get("lo", p["loss"]), p.get("hi", p["loss"])
                lo = p["loss"] if lo is None else lo
                hi = p["loss"] if hi is None else hi
                ax.errorbar([hc * dx], [p["loss"]], yerr=[[p["loss"] - lo], [hi - p["loss"]]], fmt="s", color=col,
                            mfc="white", capsize=3, zorder=5, label=f"{name} prediction")
        if hl is not None:
            ax.plot([hc], [float(hl)], marker="*", ms=14, color="C1", mec="k", zorder=6,
                    label=holdout.get("label", "held-out run"))
    ax.set_xscale("log")
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("loss")
    ax.set_title(f"Loss frontier with {int(level * 100)}% bootstrap band (dotted: largest fitted budget)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_approach3(fits: Fits, df: pd.DataFrame, path: Path) -> Figure:
    """Approach-3 log-residuals vs N per budget, and contours of L(N, D) with the IsoFLOP lines and optimum."""
    used, per = _budget_rows(fits, df)
    theta = np.asarray(fits.approach3["theta"], float)
    kappa = float(fits.approach3["kappa"])
    fig = Figure(figsize=(11, 4.5))
    ax = fig.add_subplot(1, 2, 1)
    cols = _colors(len(fits.budgets))
    for b, rows, col in zip(fits.budgets, per, cols):
        lnN = np.log(rows["params"].to_numpy(float))
        res = np.log(rows["loss"].to_numpy(float)) - predict_log_loss(theta, lnN, np.log(rows["tokens"].to_numpy(float)))
        ax.scatter(np.exp(lnN), res, color=col, s=14, label=f"C={b['C']:.2g}")
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
    Z = np.exp(predict_log_loss(theta, LN, LD))
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


# --------------------------------------------------------------------------------------------------- report
def render_markdown(fits: Fits, extra: Sequence[str] = (), holdout: Mapping[str, Any] | None = None) -> str:
    """report.md text: inputs, assumptions, warnings, tables, plots, limitations, extra sections."""
    d, a2, fr, a3 = fits.data, fits.approach2, fits.frontier, fits.approach3
    inp = fits.inputs
    lvl = int(round(100 * float(fits.bootstrap.get("level", 0.95))))
    out = ["# Scaling-law analysis", ""]
    out.append(f"Source: `{inp.get('source') or 'DataFrame'}` (sha256 `{(inp.get('sha256') or '-')[:16]}`, "
               f"data fingerprint {', '.join(inp.get('data_fingerprint') or []) or '-'}, fitted rows hash "
               f"`{d['data_hash']}`).")
    excl = ", ".join(f"{k}: {v}" for k, v in d["excluded"].items()) or "none"
    out.append(f"Rows: {d['n_rows']} in the table, {d['n_used']} fitted; excluded: {excl}.")
    out.append(f"Intervals are {lvl}% bootstrap percentile intervals over {fits.bootstrap['n']} resamples of runs "
               f"(stratified by budget, seed {fits.bootstrap['seed']}).")
    out += ["", "## Assumptions", ""]
    cols = inp.get("columns") or {}
    out.append(f"- N = column `{cols.get('params', 'params')}`; D = "
               + ("C/(6N), **derived: the table has no tokens column**" if d["tokens_derived"]
                  else f"column `{cols.get('tokens', 'tokens')}`")
               + f"; C = column `{cols.get('flops', 'flops')}`; loss = column `{cols.get('loss', 'loss')}`.")
    tol = inp.get("budget_tolerance") or 0.1
    out.append("- Budgets: " + (f"grouped from C (runs within {tol:.0%} of a group's first run share a budget)"
                                if inp.get("budget_inferred") else f"column `{cols.get('budget', 'budget')}`")
               + "; a budget's C is the geometric mean of its runs' FLOPs.")
    out.append(f"- C = kappa N D with kappa = {fmt(d['kappa'])} (median over runs) converts Approach 3's optimum "
               "to a budget (Hoffmann et al. 2022 use 6).")
    out.append("- Approach 2 parabolas are Huber-IRLS fits of loss vs log N; a budget is used only if its optimum is "
               "bracketed (the sampled size nearest the vertex is neither the smallest nor the largest).")
    out.append(f"- Frontier L_opt(C) = E + K C^-k fitted to the parabola {'minima' if fr['source'] == 'minima' else 'lowest observed losses'}"
               f" of the usable budgets ({fr['method']}; {fr['dof']} residual dof).")
    out.append("- Approach 3: log L = LSE(a - alpha log N, b - beta log D, e), Huber delta "
               f"{a3['huber_delta']:g} summed, L-BFGS from the {a3['n_starts']} best points of the Hoffmann et al. "
               "2022 grid (Besiroglu et al. 2024).")
    out += ["", "## Warnings", ""]
    out += [f"- {w}" for w in fits.warnings] or ["- none"]
    if fits.notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in fits.notes]
    out += ["", "## Compute-optimal exponents", ""]
    out.append(_table(["quantity", "Approach 2 (IsoFLOP)", "Approach 3 (parametric)"], [
        ["a (N_opt ∝ C^a)", fmt_est(a2["a"]), fmt_est(a3["a"])],
        ["b (D_opt ∝ C^b)", fmt_est(a2["b"]), fmt_est(a3["b"])],
        ["k_N", fmt_est(a2["k_N"]), "-"], ["k_D", fmt_est(a2["k_D"]), "-"],
        ["budgets / runs used", str(a2["n_budgets"]), str(a3["n_runs"])],
    ]))
    out += ["", "## Loss frontier L_opt(C) = E + K C^-k", ""]
    out.append(_table(["E", "K", "k", f"K_ref at C_ref={fmt(fr['C_ref'])}", "rmse"],
                      [[fmt_est(fr["E"]), fmt_est(fr["K"]), fmt_est(fr["k"]), fmt_est(fr["K_ref"]), fmt(fr["rmse"])]]))
    out += ["", "## Approach 3: L(N, D) = E + A/N^alpha + B/D^beta", ""]
    out.append(_table(["E", "A", "B", "alpha", "beta", "G"],
                      [[fmt_est(a3[k]) for k in ("E", "A", "B", "alpha", "beta", "G")]]))
    out.append(f"\nObjective {fmt(a3['objective'])}, converged: {a3['converged']}, rmse of log residuals "
               f"{fmt(a3['rmse_log'], 3)}.")
    out += ["", "## Budgets", ""]
    out.append(_table(["budget", "C", "runs", "sizes", "N range", "status", "N*", "D*", "L*"], [[
        fmt(b["budget"], 3), fmt(b["C"], 3), str(b["n_runs"]), str(b["n_sizes"]),
        f"{fmt(b['N_min'], 3)}..{fmt(b['N_max'], 3)}", b["status"] + ("" if b["used"] else " (excluded)"),
        fmt_est(b["N_opt"], 3), fmt_est(b["D_opt"], 3), fmt_est(b["L_opt"], 4)] for b in fits.budgets]))
    out += ["", "## Predictions", ""]
    rows = []
    for p in fits.predictions:
        for name in ("approach2", "approach3"):
            q = p[name]
            rows.append([fmt(p["C"], 3), f"{fmt(p['extrapolation'], 3)}x", name,
                         f"{fmt(q['N'], 3)} [{fmt(q['N_lo'], 3)}, {fmt(q['N_hi'], 3)}]",
                         f"{fmt(q['D'], 3)} [{fmt(q['D_lo'], 3)}, {fmt(q['D_hi'], 3)}]",
                         f"{fmt(q['loss'])} [{fmt(q['loss_lo'])}, {fmt(q['loss_hi'])}]"])
    out.append(_table(["C", "beyond largest budget", "approach", "N*", "D*", "loss"], rows))
    out += ["", "## Plots", ""]
    caption = {
        "isoflop": "IsoFLOP curves with fitted parabolas and optima",
        "optimal": "N_opt and D_opt vs C with fits and bands",
        "frontier": "Loss frontier vs C with extrapolation band"
                    + (" and the held-out run" if holdout else ""),
        "approach3": "Approach 3 residuals and L(N, D) contours",
    }
    for key, name in PLOTS.items():
        out.append(f"![{caption[key]}]({name})\n")
    out += ["## Limitations", ""]
    out += [
        "- Intervals reflect run-to-run noise only (resampling runs); they do not cover a wrong functional form, "
        "hyperparameters that are off at some sizes, or a different corpus.",
        "- Parabola (Approach 2) optima are biased when the size grid is off-centre or narrow; compare with "
        "Approach 3, and prefer budgets whose optimum is well inside the sampled sizes.",
        "- Exponents depend on the parameter convention (total / non-embedding / scaling) and on how FLOPs are "
        "counted; compare laws only under the same conventions.",
        "- Extrapolations far beyond the largest budget widen quickly; check one with a held-out run.",
    ]
    for section in extra:
        out += ["", section.rstrip()]
    return "\n".join(out) + "\n"


def _extra(extra_sections: Sequence[Any] | None, tmp: Path) -> list[str]:
    texts: list[str] = []
    for i, sec in enumerate(extra_sections or []):
        if isinstance(sec, str):
            texts.append(sec)
            continue
        title = str(sec.get("title", f"Section {i + 1}"))
        body = str(sec.get("body", sec.get("markdown", "")))
        text = f"## {title}\n\n{body}".rstrip()
        image = sec.get("image", sec.get("figure"))
        if image is not None:
            slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or f"extra{i + 1}"
            if hasattr(image, "savefig"):
                name = f"{slug}.png"
                image.savefig(tmp / name, dpi=120, bbox_inches="tight")
            else:
                src = Path(image)
                name = src.name
                shutil.copyfile(src, tmp / name)
            text += f"\n\n![{title}]({name})"
        texts.append(text)
    return texts


def write_report(fits: Fits, df: pd.DataFrame, out_dir: str | Path, extra_sections: Sequence[Any] | None = None,
                 holdout: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write fits.json, bootstrap_samples.npz, report.md and the PNGs into out_dir, atomically.

    extra_sections: markdown strings, or mappings {title, body, image} where image is a matplotlib Figure or a
    PNG path (copied in). holdout: {flops, loss, predicted: {approach2: {loss, lo, hi}, approach3: {...}}},
    drawn on the frontier plot. Returns {name: path} of the files written.
    """
    out = Path(out_dir).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        plot_isoflop(fits, df, tmp / PLOTS["isoflop"])
        plot_optimal(fits, tmp / PLOTS["optimal"], holdout)
        plot_frontier(fits, df, tmp / PLOTS["frontier"], holdout)
        plot_approach3(fits, df, tmp / PLOTS["approach3"])
        extra = _extra(extra_sections, tmp)
        (tmp / "report.md").write_text(render_markdown(fits, extra, holdout))
        if fits.samples:
            fits.save_samples(tmp / "bootstrap_samples.npz")
        (tmp / "fits.json").write_text(fits.to_json())
        return _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, out: Path) -> dict[str, Path]:
    """Move finished files into out: the old fits.json goes first and the new one last (the completion mark)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "fits.json").unlink(missing_ok=True)
    stale = out / "bootstrap_samples.npz"
    if not (tmp / stale.name).exists():
        stale.unlink(missing_ok=True)
    names = sorted(p.name for p in tmp.iterdir() if p.name != "fits.json") + ["fits.json"]
    written = {}
    for name in names:
        src = tmp / name
        with open(src, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(src, out / name)
        written[name] = out / name
    return written
