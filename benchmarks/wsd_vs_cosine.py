"""WSD cooldown-branch chains vs independent cosine runs on one sweep grid (default: the demo): FLOPs, per-point
val_bpb and the fitted scaling laws. Writes results/bench/wsd_vs_cosine.json.

    nice python benchmarks/wsd_vs_cosine.py [--sweep demo] [--cosine results/bench/demo_grid_cosine/results.csv]
        [--wsd-dir results/bench/demo_grid_wsd] [--holdout results/demo/results.csv]
        [--alone PATH] [--jobs 2]
        [--set train.lr=auto ...] [--train-cosine] [--out results/bench/wsd_vs_cosine.json]

--set overrides go to both sides (e.g. train.lr=auto: an LR that does not depend on the run's length, so a chain
shares each branch's own LR exactly and the comparison isolates the schedule); --train-cosine trains the cosine
grid into --cosine's directory first when its rows are missing (resumable like any sweep).

The WSD side trains the grid with `harness-sweep --multirun train.schedule=wsd` (one job per chain, resumable:
rerunning skips finished runs). The cosine side is read from --cosine, a results.csv of the same grid trained with
the cosine schedule (--train-cosine trains it): every planned cosine run_id must be in it,
which proves the config (model, data, LR rule, batch, seed, ...) is the same, since run_ids hash all of it;
otherwise the benchmark refuses and says to train the cosine sweep first (scripts/sweep.sh sweep=NAME).
--alone (optional) holds WSD runs of some grid points trained on their own (e.g. `harness-train -m
model=family model.d_model=40,32 budget=1.2e12 train.lr=rule train.schedule=wsd results_dir=results/bench/wsd_alone`),
to tell the schedule's effect from that of the chain's shared LR. Both fits are scored on the held-out runs of
--holdout (the default demo's 2x and 10x WSD runs), so the two schedules' laws face the same larger runs.
Hägele et al. 2024 find WSD with a 20% 1-sqrt cooldown matches cosine at each length; this checks it here.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.analysis import fit_all, load_results, predict_at_budget, predict_loss
from harness.chain import plan_chains
from harness.data import load_corpus
from harness.figures import colors, png_bytes
from harness.fsutil import atomic_write
from harness.plan import plan_sweep
from harness.sweep import planned_ids


def compose_sweep(name: str, *extra: str) -> Any:
    """The sweep config harness-sweep composes for sweep=name with these overrides."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=[f"sweep={name}", *extra])


def rows_by_id(path: Path) -> dict[str, dict[str, str]]:
    """A results.csv's rows keyed by run_id."""
    with open(path) as fh:
        return {r["run_id"]: r for r in csv.DictReader(fh)}


def train_sweep(sweep: str, out_dir: Path, jobs: int, n_jobs: int, *extra: str) -> None:
    """Run a sweep's jobs (WSD: one per chain) through Hydra's joblib launcher (skips runs already done). No
    timing is recorded: a resumed invocation times only what was left, and this machine is shared."""
    exe = Path(sys.executable).parent / "harness-sweep"
    cmd = [str(exe), "--multirun", f"sweep={sweep}", *extra, f"results_dir={out_dir}",
           f"hydra.launcher.n_jobs={jobs}", f"plan_index=range(0,{n_jobs})"]
    print("[bench]", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONUNBUFFERED="1", HARNESS_SWEEP_START=str(int(time.time()))))


def point_diffs(cos: list[dict[str, str]], wsd: list[dict[str, str]]) -> dict[str, Any]:
    """Per (model, budget): val_bpb of both and (wsd - cosine) / cosine; max |.| and mean over the grid."""
    by_key = {(r["model"], float(r["budget_flops"])): r for r in cos}
    points = []
    for w in sorted(wsd, key=lambda r: (float(r["budget_flops"]), int(r["d_model"]))):
        c = by_key[(w["model"], float(w["budget_flops"]))]
        cb, wb = float(c["val_bpb"]), float(w["val_bpb"])
        points.append({"model": w["model"], "budget": float(w["budget_flops"]), "tokens": int(w["tokens"]),
                       "cosine_lr": float(c["lr"]), "wsd_lr": float(w["lr"]), "cosine_val_bpb": cb, "wsd_val_bpb": wb,
                       "params": int(w["params_total"]), "rel_diff": (wb - cb) / cb, "branch_step": int(w["branch_step"]), "steps": int(w["steps"])})
    rel = [p["rel_diff"] for p in points]
    return {"points": points, "max_abs_rel_diff": max(abs(x) for x in rel), "mean_rel_diff": sum(rel) / len(rel),
            "mean_abs_rel_diff": sum(abs(x) for x in rel) / len(rel),
            "wsd_better": sum(x < 0 for x in rel), "cosine_better": sum(x > 0 for x in rel)}


def alone_points(path: Path | None, cos: list[dict[str, str]], wsd: list[dict[str, str]]) -> list[dict[str, Any]]:
    """WSD runs trained on their own (each with its own rule LR and warmup, `harness-train train.schedule=wsd`) at
    some grid points: they split a chain's difference from cosine into schedule (alone vs cosine) and the
    chain's shared LR and warmup (chain vs alone)."""
    if path is None or not path.exists():
        return []
    by_key = {(r["model"], float(r["budget_flops"])): r for r in cos}
    chain = {(r["model"], float(r["budget_flops"])): r for r in wsd}
    out = []
    for r in rows_by_id(path).values():
        key = (r["model"], float(r["budget_flops"]))
        if r["status"] != "ok" or key not in by_key:
            continue
        a, c, w = float(r["val_bpb"]), float(by_key[key]["val_bpb"]), float(chain[key]["val_bpb"])
        out.append({"model": key[0], "budget": key[1], "lr": float(r["lr"]), "warmup_steps": int(r["warmup_steps"]),
                    "chain_lr": float(chain[key]["lr"]), "chain_warmup_steps": int(chain[key]["warmup_steps"]), "val_bpb": a,
                    "rel_diff_vs_cosine": (a - c) / c, "chain_rel_diff_vs_alone": (w - a) / a})
    return out


def fit_summary(path: Path, holdouts: list[dict[str, str]], bootstrap: int) -> dict[str, Any]:
    """Approach 2 and 3 exponents a (N* ~ C^a), b (D* ~ C^b) of one table, and their error on each held-out run."""
    cfg = {"bootstrap": bootstrap, "seed": 0, "params": "total", "metric": "val_bpb"}
    fits = fit_all(load_results(str(path), cfg), cfg)
    out: dict[str, Any] = {}
    for name in ("approach2", "approach3"):
        f = getattr(fits, name)
        out[name] = {k: f[k].to_dict() for k in ("a", "b")}
    out["holdout"] = []
    for holdout in holdouts:
        actual = float(holdout["val_bpb"])
        pred2 = predict_at_budget(fits, float(holdout["budget_flops"]))["approach2"]["loss"].value
        pred3 = predict_loss(fits, float(holdout["params_total"]), float(holdout["tokens"])).value
        out["holdout"].append({"model": holdout["model"], "budget": float(holdout["budget_flops"]),
                               "schedule": holdout.get("schedule"), "actual": actual,
                               **{f"{a}_predicted": p for a, p in (("approach2", pred2), ("approach3", pred3))},
                               **{f"{a}_rel_error": None if p is None else (actual - p) / actual
                                  for a, p in (("approach2", pred2), ("approach3", pred3))}})
    out["warnings"] = list(fits.warnings)
    return out


def plot(points: list[dict[str, Any]], path: Path) -> None:
    """IsoFLOP curves of both schedules: val_bpb against parameters, one colour per budget (cosine solid, WSD
    dashed), written atomically as a PNG beside the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({p["budget"] for p in points})
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for color, c in zip(colors(len(budgets)), budgets):
        pts = sorted((p for p in points if p["budget"] == c), key=lambda p: p["params"])
        n = [p["params"] for p in pts]
        ax.plot(n, [p["cosine_val_bpb"] for p in pts], "o-", color=color, label=f"{c:.2g} FLOPs cosine")
        ax.plot(n, [p["wsd_val_bpb"] for p in pts], "s--", color=color, label=f"{c:.2g} FLOPs WSD chain")
    ax.set(xscale="log", xlabel="parameters (total)", ylabel="val bits per byte",
           title="WSD cooldown branches vs independent cosine runs")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    atomic_write(path, [png_bytes(fig)])
    plt.close(fig)


def planned_ratio(sweep: str, *extra: str) -> float:
    """The FLOPs ratio a grid's WSD chains plan (arithmetic only, nothing trained)."""
    cfg = compose_sweep(sweep, "train.schedule=wsd", *extra)
    chains = plan_chains(cfg, plan_sweep(cfg)[0])
    return sum(c.flops_spent for c in chains) / sum(c.flops_independent for c in chains)


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="demo")
    ap.add_argument("--cosine", type=Path, default=Path("results/bench/demo_grid_cosine/results.csv"))
    ap.add_argument("--wsd-dir", type=Path, default=Path("results/bench/demo_grid_wsd"))
    ap.add_argument("--holdout", type=Path, default=Path("results/demo/results.csv"),
                    help="a results.csv whose ok held-out rows both fits are scored on")
    ap.add_argument("--alone", type=Path, default=None,
                    help="WSD runs of some grid points trained alone, e.g. results/bench/wsd_alone/results.csv")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], help="a Hydra override for both sides, e.g. train.lr=auto")
    ap.add_argument("--train-cosine", action="store_true", help="train the cosine grid into --cosine's directory")
    ap.add_argument("--out", type=Path, default=Path("results/bench/wsd_vs_cosine.json"))
    return ap.parse_args()


def main() -> None:
    """Train (or resume) the WSD chains, compare them with the cosine table, fit both, write the JSON."""
    args = parse_args()
    if not args.holdout.exists():
        raise SystemExit(f"error: --holdout {args.holdout} does not exist; give a results.csv with held-out rows "
                         "(the default is the demo's, results/demo/results.csv)")

    cos_cfg = compose_sweep(args.sweep, *args.set, "train.schedule=cosine", f"results_dir={args.cosine.parent}")
    wsd_cfg = compose_sweep(args.sweep, *args.set, "train.schedule=wsd", f"results_dir={args.wsd_dir}")
    corpus = load_corpus(cos_cfg.data, int(cos_cfg.model.seq_len))
    runs, _ = plan_sweep(cos_cfg)
    if args.train_cosine:
        train_sweep(args.sweep, args.cosine.parent, args.jobs, len(runs), *args.set, "train.schedule=cosine")
    cos_rows = rows_by_id(args.cosine)
    cos_ids = planned_ids(cos_cfg, runs, corpus.fingerprint, corpus.vocab_size)
    missing = [rid for rid in cos_ids if rid not in cos_rows]
    if missing:
        raise SystemExit(f"error: {len(missing)} of {len(cos_ids)} cosine runs of sweep={args.sweep} are not in "
                         f"{args.cosine} (another config); train them with scripts/sweep.sh sweep={args.sweep}")
    chains = plan_chains(wsd_cfg, plan_sweep(wsd_cfg)[0])
    train_sweep(args.sweep, args.wsd_dir, args.jobs, len(chains), *args.set, "train.schedule=wsd")
    wsd_rows = rows_by_id(args.wsd_dir / "results.csv")
    wsd_ids = planned_ids(wsd_cfg, runs, corpus.fingerprint, corpus.vocab_size)
    wsd = [wsd_rows[rid] for rid in wsd_ids]
    cos = [cos_rows[rid] for rid in cos_ids]
    holdouts = [r for r in rows_by_id(args.holdout).values() if r["role"] == "holdout" and r["status"] == "ok"]
    spent = sum(float(r["flops_spent"]) for r in wsd)
    indep = sum(float(r["flops"]) for r in cos)
    doc = {
        "command": "nice python benchmarks/wsd_vs_cosine.py " + " ".join(sys.argv[1:]),
        "machine": "2-core CPU (AVX-512 bf16), shared with other jobs", "sweep": args.sweep,
        "grid": {"runs": len(runs), "chains": len(chains), "budgets": sorted({pr.budget for pr in runs})},
        "cosine_source": f"{args.cosine}: all {len(cos_ids)} planned cosine run_ids present (run_ids hash model, data "
                         "fingerprint, LR rule, batch, seed and schedule settings: the same config)",
        "wsd_settings": {"cooldown_frac": float(wsd_cfg.train.cooldown_frac),
                         "cooldown_shape": str(wsd_cfg.train.cooldown_shape),
                         "warmup": "per chain: warmup_frac of the geometric mean of its branches' steps (at most "
                                   "half the shortest branch's stable phase)",
                         "lr": (f"rule at the geometric mean of the chain's token counts; chains split so every branch "
                                f"is within x{float(wsd_cfg.train.chain_lr_tolerance):g} of its own rule LR")
                         if str(wsd_cfg.train.lr) == "rule" else f"train.lr={wsd_cfg.train.lr}: each branch's own LR",
                         "overrides": list(args.set)},
        "flops_ratio": spent / indep, "flops_spent_wsd": spent, "flops_independent_cosine": indep,
        "flops_ratio_planned": {"measured grid": planned_ratio(args.sweep, *args.set),
                                "demo_cosine (4 budgets)": planned_ratio("demo_cosine"),
                                "demo_wsd (7 budgets)": planned_ratio("demo_wsd"), "cpu": planned_ratio("cpu")},
        "val_bpb": point_diffs(cos, wsd),
        "wsd_alone": alone_points(args.alone, cos, wsd),
        "fits": {"cosine": fit_summary(args.cosine, holdouts, args.bootstrap),
                 "wsd": fit_summary(args.wsd_dir / "results.csv", holdouts, args.bootstrap)},
        "reference": "seed noise at this scale: val_bpb std 0.6-0.75% (README 'Learning rate', warmup and beta2 "
                     f"checks); both fits are scored on the held-out runs of {args.holdout}",
    }
    text = json.dumps(doc, indent=1, default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else x)
    atomic_write(args.out, [text.encode() + b"\n"])
    plot(doc["val_bpb"]["points"], args.out.with_suffix(".png"))
    v = doc["val_bpb"]
    print(f"flops_ratio {doc['flops_ratio']:.3f}; val_bpb WSD vs cosine: max |rel| {v['max_abs_rel_diff']:.2%}, "
          f"mean {v['mean_rel_diff']:+.2%}; -> {args.out}")


if __name__ == "__main__":
    main()
