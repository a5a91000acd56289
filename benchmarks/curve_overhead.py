"""What learning curves cost a run: one curve evaluation (train.curve_eval_windows windows) against one training
step of the same model, in one process, timed in alternating windows (robust to a drifting load on a shared box).

overhead = curve_points x eval time / (steps x step time) for the run's own plan (the train points are free: the
loss is read back at log_every anyway).

    python benchmarks/curve_overhead.py                          # demo sizes at their demo budgets
    python benchmarks/curve_overhead.py --out results/bench/curve_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.data import load_corpus
from harness.plan import RunContext
from harness.runtime import pick_device, pick_dtype
from harness.train import Trainer


def _trainer(d_model: int, budget: float, results: Path) -> Trainer:
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("run", overrides=["model=family", f"model.d_model={d_model}", f"budget={budget}",
                                        "train.threads=1", "train.progress=false", f"results_dir={results}"])
    corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
    ctx = RunContext.resolve(cfg).with_corpus(corpus.fingerprint, corpus.vocab_size)
    device = pick_device("cpu")
    dtype = pick_dtype("auto", device, ctx.gcfg.d_model, int(cfg.train.cpu_bf16_min_width))
    return Trainer(ctx, cfg.train, corpus, 0, device, dtype, resume=False)


def measure(d_model: int, budget: float, results: Path, rounds: int = 5, steps: int = 20) -> dict[str, float]:
    """Median step and curve-eval seconds over alternating windows, and the run's overhead."""
    tr = _trainer(d_model, budget, results)
    for _ in range(3):
        tr.step()
    tr.curve_eval()
    step_s, eval_s = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.step()
        step_s.append((time.perf_counter() - t0) / steps)
        t0 = time.perf_counter()
        tr.curve_eval()
        eval_s.append(time.perf_counter() - t0)
    plan, points = tr.ctx.plan, len(tr.curves.points)
    s, e = statistics.median(step_s), statistics.median(eval_s)
    return {"d_model": d_model, "budget": budget, "steps": plan.steps, "curve_points": points,
            "step_s": round(s, 5), "curve_eval_s": round(e, 4), "overhead": round(points * e / (plan.steps * s), 4)}


def main() -> None:
    """Measure the demo's smallest and largest sizes at its smallest and largest budgets."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="8:2e11,40:2e11,24:3e12,72:3e12", help="d_model:budget,...")
    ap.add_argument("--out", default="", help="write the rows as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for case in args.cases.split(","):
        d, b = case.split(":")
        row = measure(int(d), float(b), Path("/tmp/harness_curve_overhead"))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"machine": "see README 'Speed'", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
