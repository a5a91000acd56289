"""Is the sweep's batch (train.batch_size=16 sequences of 128 bytes) above the critical batch at the small budgets?
Trains family members at a few small budgets with several batch sizes and seeds (the fitted LR rule, cosine,
1 thread per run, 2 joblib workers), and writes results/bench/batch_size.json and batch_size.png: per (budget,
size, batch) the seeds' val_bpb, their mean, the change against the reference batch and the wall time; and,
given two LR sweeps at two batch sizes (--lr-sweeps), each sweep point's best loss under its own tuned LRs.

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


def tuned(ref: Path, other: Path) -> dict[str, Any]:
    """Each LR-sweep point's best val_bpb over the LRs tried, in two LR sweeps (rule files) run at two batch sizes:
    the batch compared with each side's LR tuned for it, not the reference batch's LR."""
    docs = [json.loads(Path(f).read_text()) for f in (ref, other)]
    best = [{(q["model"], q["budget"]): min(t["val_bpb"] for t in q["tried"]) for q in d["points"]} for d in docs]
    batch = [d["provenance"]["train"]["batch_size"] for d in docs]
    rows = [{"model": m, "budget": b, f"batch_{batch[0]}": best[0][m, b], f"batch_{batch[1]}": best[1][m, b],
             "rel": best[1][m, b] / best[0][m, b] - 1} for m, b in sorted(best[0]) if (m, b) in best[1]]
    return {"sweeps": [str(ref), str(other)], "batch_sizes": batch, "rmse_log_rule": [d["rmse_log"] for d in docs],
            "points": rows, "lower_at": sum(r["rel"] < 0 for r in rows), "n": len(rows),
            "mean_rel": statistics.fmean(r["rel"] for r in rows)}


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
    p.add_argument("--lr-sweeps", type=Path, nargs=2, metavar=("REF_RULE", "OTHER_RULE"),
                   default=(Path("results/lr/lr_rule.json"), Path("results/bench/lr_batch8/lr_rule.json")),
                   help="two LR sweeps' rule files at two batch sizes (scripts/sweep.sh sweep=lr train.batch_size=8 "
                        "results_dir=results/bench/lr_batch8): the batches compared with tuned LRs")
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
    if all(f.exists() for f in a.lr_sweeps):
        doc["tuned_lr"] = tuned(*a.lr_sweeps)
        t = doc["tuned_lr"]
        print(f"tuned LRs: batch {t['batch_sizes'][1]} lower than batch {t['batch_sizes'][0]} at {t['lower_at']} of "
              f"{t['n']} LR-sweep points, mean {100 * t['mean_rel']:+.1f}%")
    atomic_write(a.out, [json.dumps(doc, indent=1).encode()])
    plot(points, a.out.with_suffix(".png"))
    for q in points:
        rel = "" if q["rel_vs_ref"] is None or math.isnan(q["rel_vs_ref"]) else f"{100 * q['rel_vs_ref']:+.1f}%"
        print(f"{q['budget']:8.2g} d{q['d_model']:<3} batch {q['batch_size']:>3}: {q['mean']:.3f} "
              f"(seeds {', '.join(f'{v:.3f}' for v in q['val_bpb'])}) {rel:>7} {q['wall_s']:.1f}s")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
