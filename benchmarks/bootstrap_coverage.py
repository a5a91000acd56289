"""Interval coverage of the two bootstrap schemes on the demo's design: 4 budgets x 5 sizes (1.6-2.5x apart),
Chinchilla's L(N, D) (Hoffmann et al. 2022) with log-normal noise, many independent synthetic sweeps.

For each scheme ("runs": runs drawn with replacement within a budget; "bayesian": Dirichlet weights, Rubin 1981)
and noise level it counts how often the 95% intervals contain the truth: a (Approach 2 and 3), and the loss
predicted at 4x and 10x the largest budget (the frontier's, and Approach 3's at 10x). It also reports the
resamples that gave Approach 2 an estimate and the median width of Approach 2's a interval.
Run: python benchmarks/bootstrap_coverage.py [--repeats 40] [--noise 0.01 0.02] [--bootstrap 200]
Writes results/bench/bootstrap_coverage.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from harness.analysis import canonicalize, fit_all, predict_at_budget
from harness.analysis.synthetic import Law, isoflop_sweep

BUDGETS = (1e18, 2.5e18, 6e18, 1.5e19)  # the demo's spacing (2e11, 5e11, 1.2e12, 3e12), on Chinchilla's scale
OUT = Path(__file__).resolve().parents[1] / "results" / "bench" / "bootstrap_coverage.json"


def inside(est, truth: float) -> bool:
    """Whether an Estimate's interval exists and contains truth."""
    return est.lo is not None and est.hi is not None and est.lo <= truth <= est.hi


def one_cell(law: Law, scheme: str, noise: float, repeats: int, bootstrap: int) -> dict:
    """Coverage counts over `repeats` independent sweeps for one (scheme, noise)."""
    keys = ["a_approach2", "a_approach3", "loss_4x_frontier", "loss_10x_frontier", "loss_10x_approach3"]
    hits, valid, widths = dict.fromkeys(keys, 0), [], []
    C4, C10 = 4 * BUDGETS[-1], 10 * BUDGETS[-1]
    for r in tqdm(range(repeats), desc=f"{scheme} noise={noise}", leave=False):
        df = canonicalize(isoflop_sweep(law, budgets=BUDGETS, sizes_per_budget=5, span=8, noise=noise, seed=500 + r))
        f = fit_all(df, {"bootstrap": bootstrap, "seed": r, "bootstrap_scheme": scheme, "parametric": {"starts": 8}})
        p4, p10 = predict_at_budget(f, C4), predict_at_budget(f, C10)
        a2 = f.approach2["a"]
        for key, ok in zip(keys, [inside(a2, law.a), inside(f.approach3["a"], law.a),
                                  inside(p4["approach2"]["loss"], law.frontier(C4)),
                                  inside(p10["approach2"]["loss"], law.frontier(C10)),
                                  inside(p10["approach3"]["loss"], law.frontier(C10))]):
            hits[key] += int(ok)
        valid.append(f.bootstrap["valid"]["approach2"])
        widths.append(a2.hi - a2.lo if a2.lo is not None else np.nan)
    return {"scheme": scheme, "noise": noise, "repeats": repeats, "bootstrap": bootstrap,
            "coverage": {k: hits[k] / repeats for k in keys},
            "approach2_valid_mean": float(np.mean(valid)), "approach2_a_width_median": float(np.nanmedian(widths))}


def main() -> None:
    """Run every (scheme, noise) cell, print one line each and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.01, 0.02])
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    cells = []
    for noise in args.noise:
        for scheme in ("runs", "bayesian"):
            cell = one_cell(Law(), scheme, noise, args.repeats, args.bootstrap)
            cells.append(cell)
            cov = " ".join(f"{k} {v:.2f}" for k, v in cell["coverage"].items())
            print(f"noise {noise} {scheme}: {cov}; A2 valid {cell['approach2_valid_mean']:.0f}/{args.bootstrap}; "
                  f"A2 a width {cell['approach2_a_width_median']:.3f}", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"design": {"budgets": BUDGETS, "sizes_per_budget": 5, "span": 8}, "cells": cells},
                              indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
