"""Approach 2 on a published-table-like IsoFLOP design: wide, off-centre and truncated, many synthetic repeats.

Hoffmann et al. 2022-style grids sample 13 sizes over 64x per budget around a guessed optimum, and a lab's largest
and smallest models cut them off. This counts how often Approach 2's 95% interval for a (N_opt ~ C^a) holds the
true a of the harness's synthetic Chinchilla law, and the bias of its point estimate, with and without the cut.
Run: python benchmarks/coverage_wide_grid.py [--repeats 30] [--bootstrap 200]
Writes results/bench/coverage_wide_grid.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.analysis import canonicalize, fit_all
from harness.analysis.synthetic import Law

BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)
CUT = (4e7, 8e9)  # the smallest and largest model the lab trained
OUT = Path(__file__).resolve().parents[1] / "results" / "bench" / "coverage_wide_grid.json"


def table(law: Law, seed: int, cut: bool, noise: float) -> pd.DataFrame:
    """One synthetic table: per budget 13 sizes over 64x, centred 0.6x -> 1.1x the optimum (a prior exponent 0.1
    too high), loss times exp(noise * normal); sizes outside CUT dropped when cut."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in BUDGETS:
        centre = law.n_opt(C, 6.0) * 0.6 * (C / BUDGETS[0]) ** 0.1
        for N in centre * np.geomspace(1 / 8, 8, 13):
            if cut and not CUT[0] <= N <= CUT[1]:
                continue
            D = C / (6.0 * N)
            rows.append({"params_total": N, "tokens": D, "flops": 6.0 * N * D, "budget_flops": C,
                         "val_bpb": float(law.loss(N, D) * np.exp(noise * rng.standard_normal()))})
    return pd.DataFrame(rows)


def main() -> None:
    """Both cells (cut, uncut): coverage and bias of Approach 2's a; print one line each and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.005)
    args = ap.parse_args()
    law, cells = Law(), []
    for cut in (True, False):
        values, hits = [], 0
        for r in tqdm(range(args.repeats), desc=f"cut={cut}"):
            fits = fit_all(canonicalize(table(law, 100 + r, cut, args.noise)),
                           {"bootstrap": args.bootstrap, "seed": r, "parametric": {"starts": 8},
                            "backtest": {"enabled": False}})
            a = fits.approach2["a"]
            values.append(a.value)
            hits += int(a.lo is not None and a.hi is not None and a.lo <= law.a <= a.hi)
        cell = {"cut": cut, "repeats": args.repeats, "true_a": law.a, "a_mean": float(np.mean(values)),
                "a_sd": float(np.std(values)), "coverage": hits / args.repeats}
        print(json.dumps(cell))
        cells.append(cell)
    design = {"budgets": BUDGETS, "sizes_per_budget": 13, "span": 64, "cut": CUT, "noise": args.noise,
              "bootstrap": args.bootstrap, "law": vars(law)}
    OUT.write_text(json.dumps({"design": design, "cells": cells}, indent=1) + "\n")


if __name__ == "__main__":
    main()
