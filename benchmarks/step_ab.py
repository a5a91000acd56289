"""Before/after of the issue-#14 step changes, in one process: the harness step as it was (GradScaler calls on
every step even when it does not scale, per-tensor clip_grad_norm_ on CPU, positions through an index op)
against harness.train's current step, on two Trainers of the same model timed in alternating windows.

    python benchmarks/step_ab.py --sizes 16,24,48 --repeats 9
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import load_tokens, make_trainer, preset_config, train_defaults

import harness.train as T


def old_train_step(train_model: Any, model: Any, opt: Any, scaler: Any, x: torch.Tensor, y: torch.Tensor,
                   lr: float, amp: Any, grad_clip: float) -> torch.Tensor:
    """harness.train.train_step before issue #14."""
    for g in opt.param_groups:
        g["lr"] = lr
    with amp():
        _, loss = train_model(x, y)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def old_forward(self: Any, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """harness.model.GPT.forward before issue #14 (positions looked up through wpe(arange(T)))."""
    pos = torch.arange(idx.shape[1], device=idx.device)
    x = self.wte(idx) + self.wpe(pos)
    for block in self.blocks:
        x = block(x)
    logits = self.lm_head(self.ln_f(x))
    return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def compare(preset: str, repeats: int, tokens: Any, vocab: int) -> float:
    """Median old s/step over median new s/step (> 1: the current step is faster)."""
    torch.set_num_threads(1)
    _, g = preset_config(preset, vocab, 128)
    old, new = (make_trainer(g, train_defaults(), torch.device("cpu"), torch.float32, 16, tokens) for _ in "ab")
    old.model.forward = types.MethodType(old_forward, old.model)
    current = T.train_step

    def step_old() -> None:
        T.train_step = old_train_step
        old.step()

    def step_new() -> None:
        T.train_step = current
        new.step()

    for f in (step_old, step_new):
        for _ in range(5):
            f()
    t0 = time.perf_counter()
    for _ in range(5):
        step_old()
    n = max(5, round(0.4 / ((time.perf_counter() - t0) / 5)))
    times: dict[Any, list[float]] = {step_old: [], step_new: []}
    for _ in range(repeats):
        for f in (step_old, step_new):
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            times[f].append((time.perf_counter() - t0) / n)
    T.train_step = current
    a, b = statistics.median(times[step_old]), statistics.median(times[step_new])
    print(f"{preset:<10} before {a * 1e3:6.2f} ms/step  after {b * 1e3:6.2f} ms/step  speedup {a / b:.3f}", flush=True)
    return a / b


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="16,24,48")
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args()
    tokens, vocab, _ = load_tokens(argparse.Namespace(data="stdlib", seq_len=128))
    for d in args.sizes.split(","):
        compare(f"family:{d}", args.repeats, tokens, vocab)


if __name__ == "__main__":
    main()
