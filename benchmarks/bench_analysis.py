"""Time fit_all on a large synthetic IsoFLOP sweep (default: 10,000 runs, 1000 bootstrap resamples), then the
leave-future-out backtest that harness-analyze adds (default: its settings, 200 resamples per refit, 8 cut-offs).

Target: fit_all under 30 s on 2 CPU cores. Run: python benchmarks/bench_analysis.py [--runs 10000]
[--bootstrap 1000] [--budgets 25] [--jobs 0 (every core)] [--backtest-bootstrap 200] [--backtest-cutoffs 8] (0 cut-offs: no
backtest). The ground truth is Chinchilla's L(N, D) (Hoffmann et al. 2022) with 1% noise.
"""

from __future__ import annotations

import argparse
import time

from harness.analysis import canonicalize, fit_all
from harness.analysis.backtest import run_backtest
from harness.analysis.synthetic import Law, isoflop_sweep


def main() -> None:
    """Build the sweep, fit it once with the bootstrap, print timings and the recovered exponents."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--budgets", type=int, default=25)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=0)  # 0: every core, as harness-analyze
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backtest-bootstrap", type=int, default=200)
    ap.add_argument("--backtest-cutoffs", type=int, default=8)
    args = ap.parse_args()
    law = Law()
    budgets = tuple(1e18 * 10 ** (3.0 * i / max(1, args.budgets - 1)) for i in range(args.budgets))
    raw = isoflop_sweep(law, budgets=budgets, sizes_per_budget=args.runs // args.budgets, span=16.0, noise=0.01,
                        seed=args.seed)
    df = canonicalize(raw)
    t0 = time.perf_counter()
    fits = fit_all(df, {"bootstrap": args.bootstrap, "seed": args.seed, "jobs": args.jobs})
    wall = time.perf_counter() - t0
    a2, a3 = fits.approach2["a"], fits.approach3["a"]
    print(f"runs={len(df)} budgets={args.budgets} bootstrap={args.bootstrap} jobs={args.jobs}")
    print(f"fit_all wall time: {wall:.1f} s (bootstrap part {fits.bootstrap['seconds']:.1f} s)")
    print(f"a: truth {law.a:.4f}; approach2 {a2.value:.4f} [{a2.lo:.4f}, {a2.hi:.4f}]; "
          f"approach3 {a3.value:.4f} [{a3.lo:.4f}, {a3.hi:.4f}]")
    print(f"valid resamples: {fits.bootstrap['valid']}")
    if args.backtest_cutoffs > 0:
        cfg = {"bootstrap": args.bootstrap, "seed": args.seed, "jobs": args.jobs,
               "backtest": {"bootstrap": args.backtest_bootstrap, "max_cutoffs": args.backtest_cutoffs}}
        t0 = time.perf_counter()
        bt = run_backtest(df, fits, cfg)
        bt_wall = time.perf_counter() - t0
        print(f"backtest wall time: {bt_wall:.1f} s ({len(bt['cutoffs'])} cut-offs, {bt['bootstrap']} resamples "
              f"each, {len(bt['rows'])} predictions); fit_all + backtest {wall + bt_wall:.1f} s")
        for s in bt["summary"]:
            print(f"  backtest {s['approach']} {s['quantity']}: mean |error| {s['mean_abs_rel_error']:.2%}, "
                  f"{s['inside']} of {s['n_intervals']} inside, up to {s['max_extrapolation']:.3g}x")
    print("PASS" if wall < 30.0 else "SLOWER THAN THE 30 s TARGET")


if __name__ == "__main__":
    main()
