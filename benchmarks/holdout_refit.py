"""Judge a results directory's held-out rows against the fits of its sweep rows, with no training.

harness-validate trains the family member nearest each held-out budget's predicted N*. After the sweep changes
(more budgets, another grid), that member can change too, and the held-out runs already trained would not be
reused. This script asks the other question, with no training: how well do the sweep's fits predict the held-out
rows that are already there, each at its own trained (N, D)? Approach 2 is judged as harness-validate judges it
(the frontier raised along the IsoFLOP parabola to the trained N), and Approach 3 at its L(N, D).

It is a diagnosis. Held-out rows are never fitted, here or anywhere. It prints a markdown table and writes JSON
(results/FINDINGS.md "Budgets spread 25x").

    python benchmarks/holdout_refit.py results/bench/demo_wide_budgets --out results/bench/demo_wide_budgets/holdout_refit.json

With several directories it also counts, over all their held-out rows (each once), how many fell inside each
approach's interval and inside its prediction interval (widened by one run's seed noise; --floor gives it for
tables without repeats): results/FINDINGS.md "Prediction intervals".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from harness.analysis import approach2_loss_at, fit_all, load_results, predict_loss
from harness.analysis.backtest import compare
from harness.analysis.estimate import Estimate
from harness.analysis.noise import noise_floor, prediction_interval
from harness.errors import HarnessError
from harness.validate import analysis_config


def _entry(est: Estimate, actual: float, floor: float | None, level: float) -> dict[str, Any]:
    """A prediction with its interval, the signed error (actual - predicted) / actual as harness-validate reports
    it, whether the interval covers it, and the prediction interval (widened by one run's seed noise) and whether
    that covers it."""
    c = compare(actual, est)
    pi = prediction_interval(est, floor, level)
    return {"predicted": est.value, "lo": est.lo, "hi": est.hi, "error": c["rel_error"], "inside": c["inside"],
            "pi_lo": pi and pi.lo, "pi_hi": pi and pi.hi, "inside_pi": pi and pi.contains(actual)}


def refit(results: Path, overrides: dict[str, Any] | None = None, min_steps: int = 0,
          max_loss: float | None = None) -> dict[str, Any]:
    """Fit the sweep rows of results/results.csv (those with at least min_steps optimizer steps, and a loss below
    max_loss when given) and compare every held-out row with both approaches."""
    # harness-validate's analysis settings (conf/analyze.yaml with a sweep's `analysis` overrides) for this dir
    cfg = analysis_config(OmegaConf.create({"results_dir": str(results), "analysis": overrides or {}}))
    rows = pd.read_csv(results / "results.csv")
    table = load_results(cfg.results, cfg)
    if min_steps > 0:  # a diagnosis of the grid's step-limited corner: its short runs are left out of the fits
        if "steps" not in rows:
            raise SystemExit(f"{results / 'results.csv'} has no steps column; --min-steps needs one")
        short = set(rows.loc[(rows["role"] == "sweep") & (rows["steps"] < min_steps), "run_id"])
        table = table[~table["run_id"].isin(short)].reset_index(drop=True)
    if max_loss is not None:  # a diagnosis of the runs stuck near the bigram level (FINDINGS "The bigram plateau")
        table = table[(table["role"] == "holdout") | (table["loss"] < max_loss)].reset_index(drop=True)
    fits = fit_all(table, cfg)
    held = rows[(rows["role"] == "holdout") & (rows["status"] == "ok")].sort_values(["budget_flops", "seed"])
    if held.empty:
        raise SystemExit(f"{results / 'results.csv'} has no ok held-out rows (role=holdout) to judge")
    sweep_budgets = sorted(float(b["budget"]) for b in fits.budgets)
    out, level = [], float(cfg.level)
    for _, r in held.iterrows():
        C, N, D, actual = float(r["budget_flops"]), float(r[f"params_{cfg.params}"]), float(r["tokens"]), float(r[cfg.metric])
        floor = noise_floor(fits.noise, C)  # one row is one seed: its own noise, not that of a mean
        out.append({"model": str(r.get("model", r.get("run_id", "?"))), "seed": int(r.get("seed", 0)), "budget": C, "multiple_of_largest": C / sweep_budgets[-1],
                    "N": N, "D": D, "actual": actual, "seed_noise": floor,
                    "approach2": _entry(approach2_loss_at(fits, C, N), actual, floor, level),
                    "approach3": _entry(predict_loss(fits, N, D), actual, floor, level)})
    fd = fits.as_dict()
    return {"results": str(results), "n_fitted": int(fits.data["n_used"]), "sweep_budgets": sweep_budgets, "approach2_a": fd["approach2"]["a"],
            "approach3_a": fd["approach3"]["a"], "frontier_E": fd["frontier"]["E"],
            "frontier_rmse": fd["frontier"].get("rmse"), "holdouts": out}


def markdown(report: dict[str, Any]) -> str:
    """One row per held-out run: actual, each approach's prediction [interval] and error."""
    lines = ["| budget | x largest | model | actual | Approach 2 | error | with seed noise | Approach 3 | error | "
             "with seed noise |", "|---|---|---|---|---|---|---|---|---|---|"]
    for h in report["holdouts"]:
        cells = [f"{h['budget']:.3g}", f"{h['multiple_of_largest']:.2g}x", h["model"], f"{h['actual']:.4f}"]
        for a in ("approach2", "approach3"):
            e = h[a]
            wide = "-" if e["pi_lo"] is None else f"[{e['pi_lo']:.4f}, {e['pi_hi']:.4f}] {'in' if e['inside_pi'] else 'OUT'}"
            cells += [f"{e['predicted']:.4f} [{e['lo']:.4f}, {e['hi']:.4f}]", f"{100 * e['error']:+.2f}%", wide]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def coverage(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Interval coverage over the held-out rows of several tables, each row counted once (tables copied from one
    another share a sweep and its held-out runs): per approach, how many fell inside the law's interval and how
    many inside the prediction interval."""
    seen, rows = set(), []
    for rep in reports:
        for h in rep["holdouts"]:
            key = (tuple(rep["sweep_budgets"]), round(rep["approach2_a"]["value"], 6), h["model"], h["budget"],
                   h["seed"], round(h["actual"], 6))
            if key not in seen:
                seen.add(key)
                rows.append({"results": rep["results"], **h})
    out: dict[str, Any] = {"n_rows": len(rows), "rows": rows}
    for a in ("approach2", "approach3"):
        law = [h[a]["inside"] for h in rows if h[a]["inside"] is not None]
        wide = [h[a]["inside_pi"] for h in rows if h[a]["inside_pi"] is not None]
        err = np.array([h[a]["error"] for h in rows if h[a]["error"] is not None], float)
        out[a] = {"law_interval": [int(sum(law)), len(law)], "prediction_interval": [int(sum(wide)), len(wide)],
                  "mean_error": float(err.mean()), "mean_abs_error": float(np.abs(err).mean()),
                  "median_abs_error": float(np.median(np.abs(err)))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+", help="results directories holding sweep and held-out rows "
                    "(several: also the interval coverage over all their held-out rows)")
    ap.add_argument("--floor", type=float, help="seed noise (sd of ln loss) of one run, for tables without repeats "
                    "(analysis.noise.floor; the demo measured 0.0135)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="analysis overrides as in conf/analyze.yaml, e.g. frontier.source=envelope")
    ap.add_argument("--min-steps", type=int, default=0, help="leave sweep runs with fewer optimizer steps out")
    ap.add_argument("--max-loss", type=float, help="leave sweep runs whose loss is this high or higher out")
    ap.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = ap.parse_args()
    malformed = [item for item in args.set if "=" not in item or not item.split("=", 1)[0].strip()]
    if malformed:
        ap.error(f"--set takes KEY=VALUE items (e.g. frontier.source=envelope); got {', '.join(malformed)}")
    overrides = OmegaConf.to_container(OmegaConf.from_dotlist(args.set))
    if args.floor is not None:
        overrides["noise"] = {"floor": args.floor, "source": "--floor"}
    reports = []
    for results in args.results:
        try:
            report = refit(results, overrides, args.min_steps, args.max_loss)
        except HarnessError as e:  # a bad override or table: one line, not a traceback
            raise SystemExit(f"error: {results}: {e}") from None
        a2, a3, E = report["approach2_a"], report["approach3_a"], report["frontier_E"]
        print(f"{results}: sweep budgets {report['sweep_budgets'][0]:.3g}-{report['sweep_budgets'][-1]:.3g} "
              f"({len(report['sweep_budgets'])}); a = {a2['value']:.3f} / {a3['value']:.3f}; frontier E = "
              f"{E['value']:.3g} [{E['lo']:.3g}, {E['hi']:.3g}], rmse {report['frontier_rmse']:.4f}")
        print(markdown(report))
        reports.append(report)
    doc: Any = reports[0]
    if len(reports) > 1:
        doc = {"tables": reports, "coverage": coverage(reports)}
        cov = doc["coverage"]
        print(f"\n{cov['n_rows']} distinct held-out rows; inside the law's interval / the prediction interval; "
              "mean error, mean and median |error|:")
        for a in ("approach2", "approach3"):
            (k, n), (kw, nw) = cov[a]["law_interval"], cov[a]["prediction_interval"]
            print(f"  {a}: {k} of {n} / {kw} of {nw}; {cov[a]['mean_error']:+.2%}, {cov[a]['mean_abs_error']:.2%}, "
                  f"{cov[a]['median_abs_error']:.2%}")
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
