"""Is the sweep's batch (train.batch_size=16 sequences of 128 bytes) above the critical batch at the small budgets?
Trains family members at a few small budgets with several batch sizes and seeds (the fitted LR rule, cosine,
1 thread per run, 2 joblib workers), and writes results/bench/batch_size.json and batch_size.png: per (budget,
size, batch) the seeds' val_bpb, their mean, the change against the reference batch and the wall time.

    nice python benchmarks/batch_size.py [--sizes 24,32,40] [--budgets 2e11,5e11] [--batches 4,8,16]
        [--seeds 0,1] [--results results/bench/batch_size] [--out results/bench/batch_size.json]

Training goes through `harness-train -m` into --results and is resumable (rows already there are not retrained),
so a rerun only rewrites the summary. McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training"): a
batch above the critical batch spends tokens without lowering the loss; the critical batch grows as loss falls.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from harness.figures import colors, png_bytes
from harness.fsutil import atomic_write


def train(a: argparse.Namespace) -> None:
    """Every (size, budget, batch, seed) through one Hydra multirun (joblib, a thread per run)."""
    exe = Path(sys.executable).parent / "harness-train"
    cmd = [str(exe), "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={a.jobs}", "model=family",
           f"model.d_model={a.sizes}", f"budget={a.budgets}", f"train.batch_size={a.batches}", "train.lr=rule",
           "train.threads=1", f"seed={a.seeds}", f"results_dir={a.results}", "train.progress=false"]
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def summary(rows: pd.DataFrame, ref_batch: int) -> list[dict[str, Any]]:
    """One entry per (budget, size, batch): the seeds' val_bpb and mean, the mean's change vs ref_batch."""
    out = []
    for (budget, d), g in rows.groupby(["budget_flops", "d_model"]):
        ref = g[g.batch_size == ref_batch].val_bpb.mean()
        for b, gb in g.groupby("batch_size"):
            vals = [float(v) for v in gb.sort_values("seed").val_bpb]
            mean = statistics.fmean(vals)
            out.append({"budget": float(budget), "d_model": int(d), "batch_size": int(b), "steps": int(gb.steps.iloc[0]),
                        "tokens": int(gb.tokens.iloc[0]), "val_bpb": vals, "mean": mean,
                        "seed_spread": max(vals) - min(vals), "rel_vs_ref": mean / ref - 1 if ref == ref else None,
                        "wall_s": float(gb.wall_seconds.mean())})
    return out


def plot(points: list[dict[str, Any]], path: Path) -> None:
    """val_bpb (seeds as dots, mean as a line) against the batch, one line per (budget, size)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    keys = sorted({(p["budget"], p["d_model"]) for p in points})
    for c, key in zip(colors(len(keys)), keys):
        pts = sorted((p for p in points if (p["budget"], p["d_model"]) == key), key=lambda p: p["batch_size"])
        ax.plot([p["batch_size"] for p in pts], [p["mean"] for p in pts], "-", color=c,
                label=f"d{key[1]} at {key[0]:.2g}")
        for p in pts:
            ax.plot([p["batch_size"]] * len(p["val_bpb"]), p["val_bpb"], "o", color=c, ms=3)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch (sequences of 128 tokens)")
    ax.set_ylabel("val_bpb")
    ax.set_title("Same FLOPs, smaller batches (dots: seeds)")
    ax.legend(fontsize=7)
    atomic_write(path, [png_bytes(fig)])
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="24,32,40")
    p.add_argument("--budgets", default="2e11,5e11")
    p.add_argument("--batches", default="4,8,16")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--ref-batch", type=int, default=16)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--results", type=Path, default=Path("results/bench/batch_size"))
    p.add_argument("--out", type=Path, default=Path("results/bench/batch_size.json"))
    a = p.parse_args()
    train(a)
    rows = pd.read_csv(a.results / "results.csv")
    rows = rows[rows.status == "ok"]
    points = summary(rows, a.ref_batch)
    by_batch = {b: [q["rel_vs_ref"] for q in points if q["batch_size"] == b] for b in sorted({q["batch_size"] for q in points})}
    doc = {"machine": "2-core Xeon (AVX-512 bf16), no GPU", "command": " ".join(sys.argv),
           "settings": {"lr": "rule", "schedule": "cosine", "threads_per_run": 1, "ref_batch": a.ref_batch},
           "mean_rel_vs_ref": {str(b): statistics.fmean(v) for b, v in by_batch.items()},
           "mean_seed_spread": {str(b): statistics.fmean(q["seed_spread"] for q in points if q["batch_size"] == b)
                                for b in by_batch},
           "points": points}
    atomic_write(a.out, [json.dumps(doc, indent=1).encode()])
    plot(points, a.out.with_suffix(".png"))
    for q in points:
        rel = "" if q["rel_vs_ref"] is None or math.isnan(q["rel_vs_ref"]) else f"{100 * q['rel_vs_ref']:+.1f}%"
        print(f"{q['budget']:8.2g} d{q['d_model']:<3} batch {q['batch_size']:>3}: {q['mean']:.3f} "
              f"(seeds {', '.join(f'{v:.3f}' for v in q['val_bpb'])}) {rel:>7} {q['wall_s']:.1f}s")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
