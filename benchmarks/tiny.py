"""Trainer speed where sweeps live: tiny family members at one thread, `nano` at two (issue #14).

One process, one run, two measurements:
(a) ratio_vs_reference: harness.train.Trainer.step (sample_batch, LR, train_step, log window) against the plain
    nanoGPT-style loop of benchmarks/nanogpt_ref.py (same dims, batch, init, lr/betas/weight decay; its own
    AdamW setup and get_batch, see that file), timed in alternating windows (harness, reference, harness, ...),
    median seconds per step of each; ratio = reference s/step / harness s/step (> 1: the harness is faster).
(b) packed_speedup: harness.pack_run.PackTrainer.step with K seeds against K sequential runs, i.e. K x one Trainer
    step (startup and evaluation, the same either way, are left out), alternating windows again.
The box may be shared with other jobs: every window records the cores other processes kept busy (LoadMeter),
and the JSON says so. Writes results/bench/tiny.json and prints a markdown table (README "Tiny-model speed").

    scripts/bench.sh tiny                                  # the default: family d16..72 @1 thread, nano @2, K=4
    scripts/bench.sh tiny --device cuda --out results/bench/tiny_cuda.json   # the same on a GPU
    python benchmarks/tiny.py --sizes 24,48 --repeats 5 --out /tmp/t.json
    python benchmarks/tiny.py --profile 24                  # torch.profiler top ops of a d_model 24 step
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nanogpt_ref import RefLoop
from throughput import (
    LoadMeter,
    load_tokens,
    machine_info,
    make_trainer,
    preset_config,
    train_defaults,
    write_json,
)

from harness.counting import flops_per_token
from harness.data import Corpus
from harness.pack_run import PackTrainer
from harness.plan import RunContext
from harness.runtime import pick_device, pick_dtype

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("2-core CPU shared with other jobs (other helpers' tests and sweeps ran at the same time): figures are "
          "medians of alternating windows; other_cores is the load other processes put on the box meanwhile")


def window(step: Any, steps: int) -> dict[str, float | None]:
    """Seconds per step over `steps` calls of step(), and the other processes' load meanwhile (on CUDA the
    window ends when the device is done)."""
    meter = LoadMeter()
    meter.start()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return {"s_per_step": (time.perf_counter() - t) / steps, **meter.stop()}


def alternate(steps: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each callable warmed up, then timed in `repeats` rounds of alternating windows of about window_s."""
    n = {}
    for name, fn in steps.items():
        for _ in range(args.warmup):
            fn()
        n[name] = max(3, round(args.window_s / window(fn, 3)["s_per_step"]))
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            out[name].append(window(fn, n[name]))
    return {name: {"s_per_step": statistics.median(w["s_per_step"] for w in ws), "steps_per_window": n[name],
                   "other_cores": statistics.median(w["other_cores"] or 0.0 for w in ws), "windows": ws}
            for name, ws in out.items()}


def pack_trainer(gcfg: Any, tc: Any, device: torch.device, dtype: torch.dtype, B: int, tokens: np.ndarray,
                 k: int) -> PackTrainer:
    """A PackTrainer of k seeds on `tokens`, shaped like benchmarks/throughput.make_trainer's Trainer."""
    one = make_trainer(gcfg, tc, device, dtype, B, tokens)
    corpus = Corpus(tokens, tokens, gcfg.vocab_size, 1.0, "bench", "benchmark tokens")
    scratch = Path(tempfile.mkdtemp(prefix="tiny-bench-"))  # members' curve and live files go here, not into cwd
    ctxs = [RunContext(one.ctx.budget, scratch, gcfg.vocab_size, "bench", gcfg, one.ctx.plan, one.ctx.peak_lr,
                       run_id=f"bench{s}") for s in range(k)]
    tc = OmegaConf.merge(tc, {"batch_size": B, "compile": False})
    return PackTrainer(ctxs, tc, corpus, list(range(k)), device, dtype, scratch / "pack.pt")


def measure(preset: str, threads: int, args: argparse.Namespace, tokens: np.ndarray, vocab: int,
            device: torch.device) -> dict[str, Any]:
    """(a) harness vs reference and, for family members at one thread, (b) packed K vs K sequential."""
    torch.set_num_threads(threads)
    tc = train_defaults()
    name, gcfg = preset_config(preset, vocab, args.seq_len)
    dtype = pick_dtype("auto", device, gcfg.d_model, int(tc.get("cpu_bf16_min_width", 0)))
    B = args.batch_size
    tr = make_trainer(gcfg, tc, device, dtype, B, tokens)
    ref = RefLoop(gcfg, tokens, B, tr.ctx.peak_lr, tc, device, dtype, int(tc.log_every))
    steps = {"harness": tr.step, "reference": ref.step}
    packed = preset.startswith("family:") and threads == 1 and args.k > 1
    if packed:
        pk = pack_trainer(gcfg, tc, device, dtype, B, tokens, args.k)
        steps["packed"] = pk.step
    t = alternate(steps, args)
    row: dict[str, Any] = {
        "config": f"{name}@{threads}", "model": name, "d_model": gcfg.d_model, "n_layer": gcfg.n_layer,
        "threads": threads, "dtype": str(dtype).removeprefix("torch."), "batch": f"{B}x{gcfg.seq_len}",
        "harness_tok_s": B * gcfg.seq_len / t["harness"]["s_per_step"],
        "reference_tok_s": B * gcfg.seq_len / t["reference"]["s_per_step"],
        "ratio_vs_reference": t["reference"]["s_per_step"] / t["harness"]["s_per_step"],
        "harness_gflops": B * gcfg.seq_len * flops_per_token(gcfg) / t["harness"]["s_per_step"] / 1e9,
        "timings": t,
    }
    if packed:
        row["packed_speedup"] = args.k * t["harness"]["s_per_step"] / t["packed"]["s_per_step"]
        row["packed_tok_s"] = args.k * B * gcfg.seq_len / t["packed"]["s_per_step"]
    print(f"{row['config']:<20} harness {row['harness_tok_s']:>9,.0f} tok/s  reference {row['reference_tok_s']:>9,.0f}"
          f"  ratio {row['ratio_vs_reference']:.2f}" + (f"  packed x{args.k} speedup {row['packed_speedup']:.2f}"
                                                        if packed else "")
          + f"  (other cores busy ~{t['harness']['other_cores']:.1f})", flush=True)
    return row


def markdown(rows: list[dict[str, Any]], k: int) -> str:
    """The README table."""
    lines = [f"| config | threads | harness tok/s | reference tok/s | ratio vs reference | packed K={k} speedup |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ps = f"{r['packed_speedup']:.2f}x" if "packed_speedup" in r else "-"
        lines.append(f"| {r['model']} | {r['threads']} | {r['harness_tok_s']:,.0f} | {r['reference_tok_s']:,.0f} | "
                     f"{r['ratio_vs_reference']:.2f}x | {ps} |")
    return "\n".join(lines)


def profile(d_model: int, args: argparse.Namespace, tokens: np.ndarray, vocab: int, device: torch.device) -> None:
    """torch.profiler's top ops (self CPU time) over 20 harness steps of the family member of width d_model."""
    torch.set_num_threads(1)
    tc = train_defaults()
    _, gcfg = preset_config(f"family:{d_model}", vocab, args.seq_len)
    tr = make_trainer(gcfg, tc, device, torch.float32, args.batch_size, tokens)
    for _ in range(5):
        tr.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            tr.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="16,24,32,40,48,56,64,72", help="family d_model values (1 thread each)")
    p.add_argument("--nano-threads", type=int, default=2, help="threads of the nano row (0: no nano row)")
    p.add_argument("--k", type=int, default=4, help="seeds per pack (1: no packed measurement)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7, help="alternating rounds (median over them)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--window-s", type=float, default=0.4, help="about this many seconds per timed window")
    p.add_argument("--data", choices=["stdlib", "random"], default="stdlib")
    p.add_argument("--device", default="cpu", help="cpu | cuda (auto precision: fp32 on CPU below d_model 128, "
                   "bf16 autocast on CUDA)")
    p.add_argument("--profile", type=int, default=0, help="only profile a step of this family width")
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "tiny.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.seq_len = args.seq_len or 128
    device = pick_device(args.device)
    tokens, vocab, fingerprint = load_tokens(args)
    if args.profile:
        profile(args.profile, args, tokens, vocab, device)
        return {}
    configs = [(f"family:{d}", 1) for d in args.sizes.split(",") if d] + (
        [("nano", args.nano_threads)] if args.nano_threads else [])
    started = time.time()
    rows = [measure(p, t, args, tokens, vocab, device) for p, t in configs]
    result = {
        "what": "harness step vs a plain nanoGPT-style loop (benchmarks/nanogpt_ref.py); packed seeds vs sequential",
        "command": "python benchmarks/tiny.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {**machine_info(device, os.cpu_count() or 1), "shared": SHARED},
        "data": fingerprint, "seconds": round(time.time() - started, 1), "k": args.k,
        "ratio_vs_reference": {r["config"]: round(r["ratio_vs_reference"], 3) for r in rows},
        "packed_speedup": {r["model"]: round(r["packed_speedup"], 3) for r in rows if "packed_speedup" in r},
        "rows": rows,
    }
    out = Path(args.out)
    write_json(out, result)
    print(markdown(rows, args.k))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
