"""Approach 3's two forms, Chinchilla's E + A/N^alpha + B/D^beta and Kaplan et al. 2020's (A/N^alpha + B/D)^gamma,
on every committed table with held-out runs and on synthetic surfaces of each form.

Tables: each form fitted to the sweep's runs (never the held-out ones) as harness-analyze fits it; AICc (the
parametric.form=auto rule), rmse of log residuals, the implied a, and the error of L(N, D) at every held-out run's
trained (N, D): (measured - predicted) / measured, as the reports write it.
Synthetic: independent IsoFLOP sweeps on Chinchilla's law (Hoffmann et al. 2022) and on Kaplan's (Table 2 of
Kaplan et al. 2020), at the demo's design (4 budgets x 5 sizes) and a larger one (5 x 7), with log-normal noise;
counts how often the auto rule picks the form that made the data.
Run: python benchmarks/approach3_forms.py [--repeats 10]. Writes results/bench/approach3_forms.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.analysis import canonicalize, select_fit_rows
from harness.analysis.approach3 import RunArrays, aicc, derived, fit_approach3
from harness.analysis.context import Diagnostics, Settings
from harness.analysis.parametric import E_OFF, FORMS, fit_parametric, predict_log_loss
from harness.analysis.synthetic import Law, isoflop_sweep

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench" / "approach3_forms.json"
# Kaplan et al. 2020, Table 2: N_c = 8.8e13, D_c = 5.4e13, alpha_N = 0.076, alpha_D = 0.095 (theta form)
KAPLAN = np.array([0.8 * np.log(8.8e13), np.log(5.4e13), E_OFF, 0.076 / 0.095, 1.0, 0.095])
DESIGNS = {"demo (4 budgets x 5 sizes)": ((1e18, 2.5e18, 6e18, 1.5e19), 5),
           "5 budgets x 7 sizes": ((1e18, 3e18, 1e19, 3e19, 1e20), 7)}


def table_row(results_dir: Path) -> dict | None:
    """Both forms on one committed table; None where it has no held-out run."""
    fits = json.loads((results_dir / "fits.json").read_text())
    held = [v for v in fits.get("validation") or [] if v.get("actual") is not None]
    if not held:
        return None
    df = pd.read_csv(results_dir / "results.csv")
    runs = df[(df["status"] == "ok") & (df["role"] != "holdout")]
    lnN, lnD = np.log(runs["params_total"].to_numpy(float)), np.log(runs["tokens"].to_numpy(float))
    lnL = np.log(runs["val_bpb"].to_numpy(float))
    hN, hD = np.log([v["N"] for v in held]), np.log([v["D"] for v in held])
    actual = np.array([v["actual"] for v in held])
    forms = {}
    for name, form in FORMS.items():
        fit = fit_parametric(lnN, lnD, lnL, form=name)
        resid = lnL - predict_log_loss(fit.theta, lnN, lnD)
        pred = np.exp(predict_log_loss(fit.theta, hN, hD))
        forms[name] = {"aicc": aicc(float(np.sum(resid**2)), resid.size, form.n_params),
                       "rmse_log": float(np.sqrt(np.mean(resid**2))), "a": float(derived(fit.theta)["a"]),
                       "E": float(np.exp(fit.theta[2])), "held_out_rel_error": [float(e) for e in 1 - pred / actual]}
    return {"table": str(results_dir.relative_to(ROOT)), "runs": len(runs),
            "held_out": [f"{v['model']} at {v['budget']:.3g}" for v in held],
            "approach2_a": (fits.get("approach2") or {}).get("a", {}).get("value"),
            "auto_picks": min(forms, key=lambda n: forms[n]["aicc"]), "forms": forms}


def synthetic(repeats: int, noises: tuple[float, ...]) -> list[dict]:
    """How often parametric.form=auto picks the form that generated each synthetic sweep."""
    out = []
    for design, (budgets, sizes) in DESIGNS.items():
        for truth in FORMS:
            for noise in noises:
                picks, margins = [], []
                for r in tqdm(range(repeats), desc=f"{truth} {design} noise={noise}", leave=False):
                    raw = isoflop_sweep(Law(), budgets=budgets, sizes_per_budget=sizes, span=8, noise=0.0, seed=r)
                    ar = RunArrays.from_frame(select_fit_rows(canonicalize(raw)).used)
                    lnL = ar.lnL if truth == "chinchilla" else predict_log_loss(KAPLAN, ar.lnN, ar.lnD)
                    lnL = lnL + noise * np.random.default_rng(1000 + r).standard_normal(lnL.size)
                    fit = fit_approach3(RunArrays(ar.lnN, ar.lnD, lnL, ar.lnC), Settings(), Diagnostics())
                    picks.append(fit.form.name)
                    other = next(n for n in FORMS if n != truth)
                    margins.append(fit.candidates[other]["aicc"] - fit.candidates[truth]["aicc"])
                out.append({"design": design, "truth": truth, "noise": noise, "repeats": repeats,
                            "picked_truth": picks.count(truth), "aicc_margin_median": float(np.median(margins)),
                            "aicc_margin_min": float(np.min(margins))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.005, 0.01, 0.02])
    args = ap.parse_args()
    t0 = time.perf_counter()
    dirs = [ROOT / "results" / "demo", ROOT / "results" / "demo_wsd",
            *sorted(p for p in (ROOT / "results" / "bench").iterdir() if (p / "fits.json").exists())]
    tables = [row for d in tqdm(dirs, desc="tables") if (row := table_row(d)) is not None]
    doc = {"command": "python benchmarks/approach3_forms.py" + (f" --repeats {args.repeats}" if args.repeats != 10
                                                                 else ""),
           "machine": f"{platform.machine()}, {platform.python_version()}",
           "rule": "parametric.form=auto: the lower AICc (Hurvich & Tsai 1989) of the log residuals",
           "error": "(measured - predicted) / measured of L(N, D) at each held-out run's trained (N, D)",
           "tables": tables, "synthetic": synthetic(args.repeats, tuple(args.noise)),
           "seconds": round(time.perf_counter() - t0, 1)}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    for t in tables:
        errs = {n: " ".join(f"{100 * e:+.2f}%" for e in f["held_out_rel_error"]) for n, f in t["forms"].items()}
        print(f"{t['table']}: auto picks {t['auto_picks']}; chinchilla {errs['chinchilla']}, kaplan {errs['kaplan']}")
    for s in doc["synthetic"]:
        print(f"{s['truth']:>10} surface, {s['design']}, noise {s['noise']}: picked {s['picked_truth']}/{s['repeats']}"
              f" (AICc margin median {s['aicc_margin_median']:.1f}, min {s['aicc_margin_min']:.1f})")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
