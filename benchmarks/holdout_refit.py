"""Judge a results directory's held-out rows against the fits of its sweep rows, with no training.

harness-validate trains the family member nearest each held-out budget's predicted N*. After the sweep changes
(more budgets, another grid), that member can change too, and the held-out runs already trained would not be
reused. This script asks the other question, with no training: how well do the sweep's fits predict the held-out
rows that are already there, each at its own trained (N, D)? Approach 2 is judged as harness-validate judges it
(the frontier raised along the IsoFLOP parabola to the trained N), and Approach 3 at its L(N, D).

It is a diagnosis. Held-out rows are never fitted, here or anywhere. It prints a markdown table and writes JSON
(results/FINDINGS.md "Budgets spread 25x").

    python benchmarks/holdout_refit.py results/bench/demo_wide_budgets --out results/bench/demo_wide_budgets/holdout_refit.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from harness.analysis import approach2_loss_at, fit_all, load_results, predict_loss
from harness.analysis.backtest import compare
from harness.analysis.estimate import Estimate
from harness.validate import analysis_config


def _entry(est: Estimate, actual: float) -> dict[str, Any]:
    """A prediction with its interval, the signed error (actual - predicted) / actual as harness-validate reports
    it, and whether the interval covers it."""
    c = compare(actual, est)
    return {"predicted": est.value, "lo": est.lo, "hi": est.hi, "error": c["rel_error"], "inside": c["inside"]}


def refit(results: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit the sweep rows of results/results.csv and compare every held-out row with both approaches."""
    # harness-validate's analysis settings (conf/analyze.yaml with a sweep's `analysis` overrides) for this dir
    cfg = analysis_config(OmegaConf.create({"results_dir": str(results), "analysis": overrides or {}}))
    fits = fit_all(load_results(cfg.results, cfg), cfg)
    rows = pd.read_csv(results / "results.csv")
    held = rows[(rows["role"] == "holdout") & (rows["status"] == "ok")].sort_values(["budget_flops", "seed"])
    if held.empty:
        raise SystemExit(f"{results / 'results.csv'} has no ok held-out rows (role=holdout) to judge")
    sweep_budgets = sorted(float(b["budget"]) for b in fits.budgets)
    out = []
    for _, r in held.iterrows():
        C, N, D, actual = float(r["budget_flops"]), float(r[f"params_{cfg.params}"]), float(r["tokens"]), float(r[cfg.metric])
        out.append({"model": str(r.get("model", r.get("run_id", "?"))), "seed": int(r.get("seed", 0)), "budget": C, "multiple_of_largest": C / sweep_budgets[-1],
                    "N": N, "D": D, "actual": actual, "approach2": _entry(approach2_loss_at(fits, C, N), actual),
                    "approach3": _entry(predict_loss(fits, N, D), actual)})
    fd = fits.as_dict()
    return {"results": str(results), "sweep_budgets": sweep_budgets, "approach2_a": fd["approach2"]["a"],
            "approach3_a": fd["approach3"]["a"], "frontier_E": fd["frontier"]["E"],
            "frontier_rmse": fd["frontier"].get("rmse"), "holdouts": out}


def markdown(report: dict[str, Any]) -> str:
    """One row per held-out run: actual, each approach's prediction [interval] and error."""
    lines = ["| budget | x largest | model | actual | Approach 2 | error | Approach 3 | error |", "|---|---|---|---|---|---|---|---|"]
    for h in report["holdouts"]:
        cells = [f"{h['budget']:.3g}", f"{h['multiple_of_largest']:.2g}x", h["model"], f"{h['actual']:.4f}"]
        for a in ("approach2", "approach3"):
            e = h[a]
            cells += [f"{e['predicted']:.4f} [{e['lo']:.4f}, {e['hi']:.4f}]", f"{100 * e['error']:+.2f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a results directory holding sweep and held-out rows")
    ap.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = ap.parse_args()
    report = refit(args.results)
    a2, a3, E = report["approach2_a"], report["approach3_a"], report["frontier_E"]
    print(f"sweep budgets {report['sweep_budgets'][0]:.3g}-{report['sweep_budgets'][-1]:.3g} "
          f"({len(report['sweep_budgets'])}); a = {a2['value']:.3f} / {a3['value']:.3f}; frontier E = {E['value']:.3g} "
          f"[{E['lo']:.3g}, {E['hi']:.3g}], rmse {report['frontier_rmse']:.4f}")
    print(markdown(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
