"""The analysis on other labs' published IsoFLOP tables, against the exponents the labs published.

The tables are not shipped (their repositories carry no license). Clone them, then point this script at them:
  git clone https://github.com/Open-Athena/scaling-law-analysis           # data/isoflops/extract/<source>/isoflops.csv
  git clone https://github.com/epoch-research/analyzing-chinchilla          # data/svg_extracted_data.csv (optional)
  python benchmarks/published_tables.py --tables scaling-law-analysis [--epoch analyzing-chinchilla] [--bootstrap 200]
Each source's table is split by its `experiment` column (Marin's three datasets, Llama 3's two loss conditions)
and fitted as `harness-analyze` would, backtest included. Writes results/bench/published_tables.json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from tqdm import tqdm

from harness.analysis import fit_all, load_results
from harness.analysis.backtest import run_backtest
from harness.analysis.context import Settings
from harness.analysis.estimate import Estimate
from harness.analysis.fits import to_jsonable
from harness.analysis.tables import fit_table
from harness.errors import HarnessError
from harness.figures import png_bytes

OUT = Path(__file__).resolve().parents[1] / "results" / "bench" / "published_tables.json"
# What each lab published for a (N_opt ~ C^a), and where.
PUBLISHED = {
    "epochai_chinchilla": (0.49, "Hoffmann et al. 2022, Table 2, Approach 2 (their IsoFLOP profiles)"),
    "ml_scalefit": (0.49, "Hoffmann et al. 2022, Table 2, Approach 2 (their IsoFLOP profiles)"),
    "llama_3": (0.47, "Dubey et al. 2024, sec. 3.2.1: D_opt ~ C^0.53, so a = 1 - 0.53"),
}
EPOCH = {"E": 1.82, "alpha": 0.3478, "beta": 0.3658, "source": "Besiroglu et al. 2024 (their 5 highest losses dropped)"}


def _est(e: Estimate) -> list[float | None]:
    return [e.value, e.lo, e.hi]


def fit_isoflop(path: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """fit_all and the backtest on one experiment of one table: the exponents, E, outliers and backtest errors."""
    df = load_results(path, cfg)
    fits = fit_all(df, cfg)
    backtest = run_backtest(df, fits, cfg)
    summary = {f"{s['approach']} {s['quantity']}": s["mean_abs_rel_error"] for s in backtest.get("summary", [])}
    # each usable budget's parabola minimum against its best run (report.md's `L* vs best run`)
    gaps = [b["L_opt"].value / b["L_min_observed"] - 1 for b in fits.budgets if b["used"] and b["L_opt"].value]
    return {"runs": fits.data["n_used"], "budgets_used": fits.approach2["n_budgets"],
            "a_approach2": _est(fits.approach2["a"]), "a_approach3": _est(fits.approach3["a"]),
            "approach3_form": fits.approach3["form"], "frontier_E": _est(fits.frontier["E"]),
            "outliers": fits.approach3["outliers"]["n"], "backtest_mean_abs_error": summary, "vertex_gap": gaps,
            "warnings": len(fits.warnings)}


def experiments(path: Path) -> list[str]:
    """The table's experiments (one per value of its `experiment` column; [''] without one)."""
    raw = pd.read_csv(path)
    return sorted(raw["experiment"].astype(str).unique()) if "experiment" in raw.columns else [""]


def main() -> None:
    """Fit every table found, print one line per experiment, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=Path, required=True, help="a checkout of Open-Athena/scaling-law-analysis")
    ap.add_argument("--epoch", type=Path, help="a checkout of epoch-research/analyzing-chinchilla")
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    paths = sorted((args.tables / "data" / "isoflops" / "extract").glob("*/isoflops.csv"))
    if not paths:
        raise SystemExit(f"error: no data/isoflops/extract/*/isoflops.csv under {args.tables}; clone "
                         "https://github.com/Open-Athena/scaling-law-analysis and pass its directory as --tables")
    rows, t0 = [], time.perf_counter()
    jobs = [(p, e) for p in paths for e in experiments(p)]
    for path, exp in tqdm(jobs, desc="tables"):
        cfg: dict[str, Any] = {"bootstrap": args.bootstrap, "backtest": {"bootstrap": min(args.bootstrap, 200)}}
        if exp:
            cfg.update({"columns": {"fingerprint": "experiment"}, "fingerprint": exp})
        source = path.parent.name
        row: dict[str, Any] = {"source": source, "experiment": exp}
        try:
            row.update(fit_isoflop(path, cfg))
        except HarnessError as e:
            row["error"] = str(e)
        if source in PUBLISHED:
            row["published_a"], row["published_by"] = PUBLISHED[source]
        rows.append(row)
    out: dict[str, Any] = {"bootstrap": args.bootstrap, "isoflop_tables": rows}
    if args.epoch:
        out["epoch_chinchilla_approach3"] = epoch_check(args.epoch / "data" / "svg_extracted_data.csv", args.bootstrap)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(to_jsonable(out), indent=1) + "\n")
    args.out.with_suffix(".png").write_bytes(png_bytes(plot(rows)))
    for r in rows:
        if "error" in r:
            print(f"{r['source']:20s} {r['experiment']:36s} error: {r['error'][:100]}")
            continue
        pub = f"  published {r['published_a']}" if "published_a" in r else ""
        print(f"{r['source']:20s} {r['experiment']:36s} runs {r['runs']:4d}  a: A2 {r['a_approach2'][0]:.3f} "
              f"A3 {r['a_approach3'][0]:.3f} ({r['approach3_form']}){pub}  outliers {r['outliers']}")
    print(f"-> {args.out} ({out['seconds']} s)")


def plot(rows: list[dict[str, Any]]) -> Figure:
    """a with its interval per experiment, both approaches, and the lab's published a where there is one."""
    ok = [r for r in rows if "error" not in r]
    fig = Figure(figsize=(8, 0.45 * len(ok) + 1.2))
    ax = fig.add_subplot()
    for i, r in enumerate(ok):
        for key, dy, col, label in (("a_approach2", -0.12, "C0", "Approach 2"), ("a_approach3", 0.12, "C3", "Approach 3")):
            v, lo, hi = r[key]
            ax.errorbar([v], [i + dy], xerr=[[v - (lo if lo is not None else v)], [(hi if hi is not None else v) - v]],
                        fmt="o", color=col, ms=4, capsize=2, label=label if i == 0 else None)
        if "published_a" in r:
            ax.plot([r["published_a"]], [i], "k*", ms=9, label="published" if i == 0 else None)
    ax.set_yticks(range(len(ok)), [r["experiment"] or r["source"] for r in ok], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("a (N_opt ~ C^a), 95% bootstrap interval")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def epoch_check(path: Path, bootstrap: int) -> dict[str, Any]:
    """Approach 3 on Epoch's 245 digitized Chinchilla runs, screened (the default) and not, against Besiroglu et al."""
    out: dict[str, Any] = {"published": EPOCH}
    for action in ("exclude", "keep"):
        cfg = {"bootstrap": bootstrap, "columns": {"params": "Model Size", "flops": "Training FLOP"},
               "parametric": {"outliers": action}}
        a3 = fit_table(load_results(path, cfg), Settings.from_cfg(cfg)).approach3
        out[action] = {k: _est(a3[k]) for k in ("E", "A", "B", "alpha", "beta", "a")}
        out[action]["runs"], out[action]["outliers"] = a3["n_runs"], a3["outliers"]["n"]
    return out


if __name__ == "__main__":
    main()
