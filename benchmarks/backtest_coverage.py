"""How often the backtest's intervals cover their targets on synthetic sweeps of a known law, counted two ways:
`inside` (the prediction's interval holds the target's value) and `inside_with_target` (it holds it once the
target's own bootstrap interval is added: harness.analysis.noise.against_target). The targets are parabola
minima and vertices fitted to noisy runs, so the plain count reads low even for the true law.

Run: python benchmarks/backtest_coverage.py [--repeats 6] [--noise 0.005] [--bootstrap 100]
Writes results/bench/backtest_coverage.json (README, "Backtest, in every analysis").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from harness.analysis import canonicalize, fit_all
from harness.analysis.backtest import run_backtest
from harness.analysis.synthetic import Law, isoflop_sweep

BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)
OUT = Path(__file__).resolve().parents[1] / "results" / "bench" / "backtest_coverage.json"


def coverage(repeats: int, noise: float, bootstrap: int, sizes: int = 7) -> dict[str, Any]:
    """Backtest rows over `repeats` independent sweeps of Chinchilla's law (the main fit with `bootstrap`
    resamples, each refit with half as many), and per target quantity the share covered each way."""
    rows = []
    for seed in tqdm(range(repeats), desc=f"sweeps (noise {noise})", leave=False):
        df = canonicalize(isoflop_sweep(Law(), budgets=BUDGETS, sizes_per_budget=sizes, noise=noise, seed=seed))
        rows += run_backtest(df, fit_all(df, {"bootstrap": bootstrap}), {"bootstrap": max(1, bootstrap // 2)})["rows"]
    out: dict[str, Any] = {"repeats": repeats, "noise": noise, "bootstrap": bootstrap, "budgets": list(BUDGETS)}
    for q in ("loss", "N_opt"):
        sel = [r for r in rows if r["quantity"] == q and r["inside_with_target"] is not None]
        out[q] = {"n": len(sel), "inside": float(np.mean([r["inside"] for r in sel])),
                  "inside_with_target": float(np.mean([r["inside_with_target"] for r in sel]))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--noise", type=float, default=0.005)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    doc = coverage(args.repeats, args.noise, args.bootstrap)
    for q in ("loss", "N_opt"):
        c = doc[q]
        print(f"{q}: {c['n']} predictions; inside {c['inside']:.1%}, with the target's interval "
              f"{c['inside_with_target']:.1%}")
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
