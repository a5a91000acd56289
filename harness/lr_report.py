"""LR-sweep results -> per-point optima, the fitted rule file (lr_rule.json), report.md and plots.

Nothing is trained here: harness.tune gathers each point's (LR, loss) pairs and this module fits
(harness.analysis.lr) and writes. An optimum at the edge of the LRs tried is flagged and left out of the rule.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from harness.analysis.estimate import format_cell
from harness.analysis.lr import LROptimum, LRRule, fit_lr_optimum, fit_lr_rule
from harness.errors import HarnessError
from harness.figures import bar_lengths, colors, png_bytes
from harness.fsutil import atomic_write
from harness.lr_rule import SCHEMA, convention_text


@dataclass
class TunePointData:
    """One (size, budget) point of the LR sweep: what was tried and what came out."""

    d_model: int
    name: str
    budget: float
    n_params: float  # under the rule's parameter convention
    tokens: float
    lrs: list[float]
    losses: list[float]  # val_bpb; inf for a diverged run


def fit_points(points: Sequence[TunePointData], noise_rel: float) -> list[LROptimum]:
    """The optimum of every point (seeded by its index, so reruns give the same intervals)."""
    return [fit_lr_optimum(np.array(p.lrs), np.array(p.losses), noise_rel, seed=i) for i, p in enumerate(points)]


def fit_rule(points: Sequence[TunePointData], optima: Sequence[LROptimum]) -> tuple[LRRule, list[int]]:
    """lr* = c N^p D^q over the points whose optimum is bracketed; refuses data that cannot identify it."""
    use = [i for i, o in enumerate(optima) if o.status == "ok"]
    budgets = {points[i].budget for i in use}
    if len(use) < 4 or len(budgets) < 2:
        raise HarnessError(
            f"only {len(use)} point(s) at {len(budgets)} budget(s) have a bracketed LR optimum; the rule needs >= 4 "
            "points at >= 2 budgets: widen sweep.lr_grid or raise sweep.max_rounds and rerun"
        )
    n = np.array([points[i].n_params for i in use], float)
    d = np.array([points[i].tokens for i in use], float)
    ln_lr = np.log([optima[i].lr.value for i in use])
    draws = np.stack([optima[i].draws for i in use], axis=1)
    return fit_lr_rule(n, d, ln_lr, draws), use


def rule_document(rule: LRRule, params: str, points: Sequence[TunePointData], optima: Sequence[LROptimum],
                  provenance: dict[str, Any]) -> dict[str, Any]:
    """The lr_rule.json content: coefficients with intervals, the convention, provenance and every point."""
    table = [{"d_model": p.d_model, "model": p.name, "budget": p.budget, "N": p.n_params, "D": p.tokens,
              "lr_opt": o.lr.to_dict(), "loss_at_opt": o.loss, "status": o.status,
              "tried": [{"lr": lr, "val_bpb": (loss if math.isfinite(loss) else None)}
                        for lr, loss in sorted(zip(p.lrs, p.losses))]}
             for p, o in zip(points, optima)]
    return {
        "schema": SCHEMA, "formula": "lr = c * N^p * D^q", "params": params,
        "rule": {"c": rule.c.to_dict(), "p": rule.p.to_dict(), "q": rule.q.to_dict()},
        "rmse_log": rule.rmse_log, "n_points": rule.n_points,
        "provenance": {**provenance, "fitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
        "points": table,
    }


def render_markdown(doc: dict[str, Any]) -> str:
    """report.md of the LR sweep: the rule, the per-point optima, and what was flagged."""
    r = doc["rule"]
    est = {k: f"{format_cell(r[k]['value'], '.4g')} [{format_cell(r[k]['lo'], '.4g')}, {format_cell(r[k]['hi'], '.4g')}]" for k in r}
    lines = [
        "# LR sweep", "",
        f"Fitted rule: **lr\\* = c N^p D^q** with N = {convention_text(doc['params'])}, D = tokens: c = {est['c']}, "
        f"p = {est['p']}, q = {est['q']} (95% intervals; {doc['n_points']} bracketed points, residual RMS "
        f"{doc['rmse_log']:.3f} in ln lr).", "",
        "| model | budget | N | D | LRs tried | optimal lr [95%] | val_bpb at opt | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in doc["points"]:
        o = p["lr_opt"]
        lines.append(f"| {p['model']} | {p['budget']:.3g} | {p['N']:,.0f} | {p['D']:,.0f} | {len(p['tried'])} | "
                     f"{format_cell(o['value'], '.3g')} [{format_cell(o['lo'], '.3g')}, {format_cell(o['hi'], '.3g')}] | {format_cell(p['loss_at_opt'], '.4f')} | "
                     f"{p['status']} |")
    flagged = [p for p in doc["points"] if p["status"] != "ok"]
    if flagged:
        lines += ["", "**Flagged, not used in the rule:** " + "; ".join(
            f"{p['model']} at {p['budget']:.3g} ({p['status']}: best tried lr {format_cell(p['lr_opt']['value'], '.3g')})"
            for p in flagged) + ". Widen sweep.lr_grid or raise sweep.max_rounds to bracket them."]
    lines += ["", "![loss vs LR](lr_curves.png)", "", "![optimal LR and the rule](lr_rule.png)", ""]
    return "\n".join(lines)


def plot_curves(points: Sequence[TunePointData], optima: Sequence[LROptimum]) -> Figure:
    """Loss vs LR per budget (one line per size), each fitted optimum with its interval."""
    budgets = sorted({p.budget for p in points})
    fig = Figure(figsize=(5 * len(budgets), 4), layout="constrained")
    axes = fig.subplots(1, len(budgets), squeeze=False)[0]
    sizes = sorted({p.d_model for p in points})
    by_size = dict(zip(sizes, colors(len(sizes))))
    for ax, b in zip(axes, budgets):
        for p, o in zip(points, optima):
            if p.budget != b:
                continue
            lr, loss = np.array(sorted(zip(p.lrs, p.losses))).T
            ax.plot(lr, np.where(np.isfinite(loss), loss, np.nan), "o-", color=by_size[p.d_model], label=p.name)
            if o.status == "ok" and o.lr.has_interval:
                ax.errorbar([o.lr.value], [o.loss], xerr=bar_lengths(o.lr.value, o.lr.lo, o.lr.hi),
                            fmt="*", ms=12, color=by_size[p.d_model], capsize=3)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones collide
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("val bits per byte")
        ax.set_title(f"{b:.3g} FLOPs")
        ax.legend(fontsize=7)
    return fig


def _plot_budget(ax: Any, sel: list[tuple[TunePointData, LROptimum]], rule: LRRule, color: Any, label: str) -> None:
    """One budget's optima (x where not bracketed) and the rule through its points' (N, D)."""
    ok = [(p.n_params, o.lr) for p, o in sel if o.status == "ok" and o.lr.has_interval]
    if ok:
        n, est = zip(*ok)
        v = np.array([e.value for e in est])
        err = bar_lengths(v, [e.lo for e in est], [e.hi for e in est])
        ax.errorbar(n, v, yerr=err, fmt="o", color=color, capsize=3, label=label)
    edge = [(p.n_params, o.lr.value) for p, o in sel if o.status != "ok" and o.lr.value]
    if edge:
        ax.plot(*zip(*edge), "x", color=color, ms=9)
    nd = sorted((p.n_params, p.tokens) for p, _ in sel)
    ax.plot([n for n, _ in nd], [rule(n, d) for n, d in nd], "-", color=color, alpha=0.7)


def plot_rule(points: Sequence[TunePointData], optima: Sequence[LROptimum], rule: LRRule) -> Figure:
    """Optimal LR vs N per budget, with the fitted rule at each point's (N, D)."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    budgets = sorted({p.budget for p in points})
    for b, color in zip(budgets, colors(len(budgets))):
        _plot_budget(ax, [(p, o) for p, o in zip(points, optima) if p.budget == b], rule, color, f"{b:.3g} FLOPs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("optimal peak LR")
    ax.set_title("optimal LR (x: not bracketed) and the fitted rule")
    ax.legend(fontsize=8)
    return fig


def write_lr_report(points: Sequence[TunePointData], out_dir: str | Path, params: str, noise_rel: float,
                    provenance: dict[str, Any]) -> dict[str, Any]:
    """Fit everything and write lr_curves.png, lr_rule.png, report.md and lr_rule.json (last: the completion
    mark), each atomically. Returns the rule document."""
    out = Path(out_dir).expanduser()
    optima = fit_points(points, noise_rel)
    rule, _ = fit_rule(points, optima)
    doc = rule_document(rule, params, points, optima, provenance)
    atomic_write(out / "lr_curves.png", [png_bytes(plot_curves(points, optima))])
    atomic_write(out / "lr_rule.png", [png_bytes(plot_rule(points, optima, rule))])
    atomic_write(out / "report.md", [render_markdown(doc).encode()])
    atomic_write(out / "lr_rule.json", [json.dumps(doc, indent=1, allow_nan=False).encode()])
    return doc
