"""Train one model to an exact FLOP budget and record the result (run(cfg) is the pure entry point).

The budget buys round(budget / (flops_per_token * seq_len)) sequences; they are split into steps of
train.batch_size sequences with a smaller last step, so achieved FLOPs match the budget to within one
sequence. Under torchrun each rank draws the same global batch and trains on its slice, so the loss
trajectory equals a single process with the same global batch (up to reduction order).

Read it like nanoGPT's train.py: run() resolves the run (harness.plan.RunContext), skips it if it is done,
and hands it to a Trainer, whose methods are the phases of the script: 1. setup (and resume), 2. step,
3. the loop with preemption and checkpoints, 4. evaluate, 5. record.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from tqdm.auto import tqdm

from harness import __version__
from harness.counting import flops_per_token_6n, param_counts
from harness.curves import LIVE_VIEW, curve_log
from harness.data import Corpus, eval_windows, load_corpus, sample_batch
from harness.fsutil import atomic_write, say
from harness.model import GPT
from harness.ngram import bigram_loss, bigram_row
from harness.plan import RunContext
from harness.results import check_compatible, check_results_dir, find_ok, run_lock, sync_csv, write_record
from harness.runtime import (
    Preemption,
    all_ranks_mean,
    autocast,
    env_world_size,
    init_distributed,
    keep_freed_memory,
    pick_device,
    pick_dtype,
)
from harness.schedule import COSINE, Schedule, schedule_of
from harness.trackers import check_tracker


def make_optimizer(model: torch.nn.Module, tc: DictConfig, lr: float,
                   decay_mask: list[bool] | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (or where `decay_mask`, one flag per parameter, says so: an
    EnsembleGPT's stacked parameters have one dimension more); fused (one kernel for all parameters)."""
    params = list(model.parameters())
    mask = decay_mask if decay_mask is not None else [p.dim() >= 2 for p in params]
    decay = [p for p, d in zip(params, mask) if d]
    no_decay = [p for p, d in zip(params, mask) if not d]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(tc.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(float(tc.beta1), float(tc.beta2)), fused=True,
    )


def train_step(train_model: torch.nn.Module, model: torch.nn.Module, opt: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, x: torch.Tensor, y: torch.Tensor, lr: float, amp: Any,
               grad_clip: float) -> torch.Tensor:
    """One optimizer step at learning rate lr; returns the detached loss (no host sync). GradScaler's calls are
    made only when it scales (fp16 on CUDA); clipping is clip_grad_norm_ with foreach kernels (same numbers)."""
    for g in opt.param_groups:
        g["lr"] = lr
    with amp():
        _, loss = train_model(x, y)
    scaling = scaler.is_enabled()
    (scaler.scale(loss) if scaling else loss).backward()
    if grad_clip > 0:
        if scaling:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
    if scaling:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def lr_at(step: int, steps: int, peak: float, warmup_frac: float, min_ratio: float,
          sched: Schedule = COSINE) -> float:
    """The LR of one step: linear warmup, then cosine decay to min_ratio * peak; or WSD (Hägele et al. 2024): the
    peak held until the cooldown's start, then `1-sqrt` (1 - sqrt(p)) or linear (1 - p) decay with p rising to 1
    at the last step, so the last update uses min_ratio * peak."""
    warmup = sched.warmup(steps, warmup_frac)
    if step < warmup:
        return peak * (step + 1) / warmup
    if sched.wsd:
        start = sched.cooldown_start(steps)
        if step < start:
            return peak
        p = min(1.0, (step - start + 1) / (steps - start))
        return peak * (min_ratio + (1 - min_ratio) * (1 - (math.sqrt(p) if sched.shape == "1-sqrt" else p)))
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def mean_loss(model: torch.nn.Module, windows: torch.Tensor, device: torch.device, amp: Any, batch: int) -> float:
    """Mean next-token loss (nats) over the fixed held-out windows."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i : i + batch].to(device)
        with amp():
            _, loss = model(w[:, :-1], w[:, 1:])
        total += float(loss) * len(w)
        count += len(w)
    model.train()
    return total / count


class Trainer:
    """One run's model, optimizer and progress: build it, train(), then record()."""

    # ------------------------------------------------------------------------------------- 1. setup
    def __init__(self, ctx: RunContext, tc: DictConfig, corpus: Corpus, seed: int, device: torch.device,
                 dtype: torch.dtype, resume: bool = True) -> None:
        """Join torchrun, set threads, seed, build model/optimizer/scaler/sampler, then resume if checkpointed."""
        self.ctx, self.tc, self.corpus, self.seed, self.dtype = ctx, tc, corpus, seed, dtype
        self.batch_size = int(tc.batch_size)
        self.log_every = max(1, int(tc.log_every))
        self.sched = schedule_of(tc)
        self.ddp, self.device = init_distributed(device)
        if int(tc.threads) > 0:
            torch.set_num_threads(int(tc.threads))
        self.amp = autocast(self.device, dtype)
        if self.device.type == "cpu":
            keep_freed_memory()
        torch.manual_seed(seed)  # the model's init draws from the global RNG
        self.model = GPT(ctx.gcfg).to(self.device)
        self.opt = make_optimizer(self.model, tc, ctx.peak_lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(dtype == torch.float16 and self.device.type == "cuda"))
        self.gen = torch.Generator().manual_seed(seed + 1)  # the batch sampler's own stream
        # progress, all of it in the checkpoint
        self.step_n = 0
        self.train_loss = float("nan")  # mean loss of the last log window (what the record reports)
        self.window_sum = torch.zeros((), dtype=torch.float32, device=self.device)  # loss summed since last_log
        self.last_log = 0
        if resume and ctx.checkpoint_path.exists():
            self.resume()
        self.start_step = self.step_n
        self.train_model = self._wrap(self.model)
        self.lr = ctx.peak_lr
        self.status, self.error = "ok", ""
        self.val_loss = float("nan")
        self.eval_bpt = corpus.bytes_per_token  # exact mean bytes of the eval tokens, set by evaluate()
        self.bigram: float | None = None  # a bigram model's loss on the same windows, set by evaluate()
        self.train_seconds = 0.0
        self.curves = curve_log(ctx, tc, self.start_step, self.ddp.main, self.curve_eval)  # harness.curves

    def curve_eval(self) -> tuple[float, float]:
        """(val loss, val bpb) on the learning curve's small fixed slice (train.curve_eval_windows)."""
        windows = eval_windows(self.corpus.val, int(self.tc.get("curve_eval_windows", 32)), self.ctx.gcfg.seq_len)
        loss = mean_loss(self.model, windows, self.device, self.amp, 64)
        return loss, loss / math.log(2) / self.corpus.eval_bytes_per_token(windows)

    def resume(self) -> None:
        """Continue from this run's checkpoint: weights, optimizer, both RNG streams and the open log window.
        weights_only: a results dir may sit on a shared filesystem, so loading must not run code."""
        state = torch.load(self.ctx.checkpoint_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])  # moves the moments to the parameters' device
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        self.step_n = int(state["step"])
        if "train_loss" in state:
            self.train_loss = float(state["train_loss"])
        elif state.get("loss_n"):  # a checkpoint of harness <= 0.1.0 named it loss_sum
            self.train_loss = float(state["loss_sum"])
        self.window_sum = torch.as_tensor(state.get("window_sum", 0.0), dtype=torch.float32).clone().to(self.device)
        self.last_log = int(state.get("last_log", self.step_n))
        say(f"[harness] resuming run {self.ctx.run_id} from checkpoint at step {self.step_n}/{self.ctx.plan.steps}")

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the steps call: DDP under torchrun, torch.compile'd if train.compile."""
        if self.ddp.world > 1:
            cuda = self.device.type == "cuda"
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[self.device] if cuda else None)
        return torch.compile(model) if self.tc.compile else model

    # ------------------------------------------------------------------------------------- 2. one step
    def step(self) -> torch.Tensor:
        """One optimizer step on the next batch; returns the detached loss. Every log_every steps (and at the
        last) the log window's mean loss over all ranks is read back: train_loss, or status 'diverged'."""
        plan, tc = self.ctx.plan, self.tc
        n = plan.last_batch if self.step_n == plan.steps - 1 else self.batch_size
        # the full global batch is drawn every step (same RNG use on every rank and step), then cut
        x, y = sample_batch(self.corpus.train, self.batch_size, self.ctx.gcfg.seq_len, self.gen)
        x, y = self._rank_slice(x[:n]), self._rank_slice(y[:n])
        self.lr = lr_at(self.step_n, plan.steps, self.ctx.peak_lr, float(tc.warmup_frac), float(tc.min_lr_ratio),
                        self.sched)
        loss = train_step(self.train_model, self.model, self.opt, self.scaler, x, y, self.lr, self.amp,
                          float(tc.grad_clip))
        self.window_sum += loss
        self.step_n += 1
        if self.step_n % self.log_every == 0 or self.step_n == plan.steps:
            self._close_window()
        return loss

    def _rank_slice(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's equal share of a global batch, on the device."""
        if self.ddp.world > 1:
            per = len(t) // self.ddp.world
            t = t[self.ddp.rank * per : (self.ddp.rank + 1) * per]
        return t.to(self.device, non_blocking=True)

    def _close_window(self) -> None:
        """Read the log window's mean loss (of the global batch, not rank 0's slice) and start a new window."""
        mean = float(all_ranks_mean(self.window_sum, self.ddp)) / (self.step_n - self.last_log)
        self.last_log = self.step_n
        self.window_sum.zero_()
        if math.isfinite(mean):
            self.train_loss = mean
        elif self.status == "ok":
            self.status, self.error = "diverged", f"non-finite training loss at step {self.step_n}"

    # ------------------------------------------------------------------------------------- 3. the loop
    def train(self) -> Trainer:
        """Step to the end of the plan (or until it diverges), checkpointing every train.checkpoint_every_s,
        then evaluate. On SIGTERM/SIGUSR1/SIGUSR2 all ranks stop at the same step, rank 0 checkpoints, and the
        signal goes on to the handler installed before (submitit's requeue), else the process exits 143."""
        c = self.ctx
        bar = tqdm(total=c.plan.steps, initial=self.step_n, desc=f"{c.name} {c.budget:.2g}F", unit="step",
                   disable=not (self.tc.progress and self.ddp.main) or LIVE_VIEW in os.environ,  # harness.live
                   leave=False, dynamic_ncols=True)
        t0 = time.time()
        with Preemption(self.ddp, self.device) as preemption, bar:  # handlers restored and bar closed on any exit
            preempted = self._loop(preemption, bar)
        self.train_seconds = time.time() - t0
        if preempted:
            if self.ddp.main:
                print(f"[harness] preempted at step {self.step_n}/{c.plan.steps}; checkpoint saved to "
                      f"{c.checkpoint_path}", flush=True)
            preemption.hand_on()
        if self.status == "ok":
            self.evaluate()
        return self

    def _loop(self, preemption: Preemption, bar: tqdm) -> bool:
        """Steps until the plan is done or the loss diverges (False), or a preemption is agreed (True, after
        a checkpoint)."""
        every = float(self.tc.checkpoint_every_s)
        last_ckpt = time.time()
        while self.step_n < self.ctx.plan.steps:
            self.step()
            if self.status != "ok":
                break
            if self.last_log == self.step_n:
                bar.set_postfix(loss=f"{self.train_loss:.3f}", lr=f"{self.lr:.2e}")
            self.curves.after_step(self.step_n, self.last_log == self.step_n, self.train_loss, self.lr)
            bar.update(1)
            if preemption.requested():
                self.checkpoint()
                return True
            if every > 0 and time.time() - last_ckpt > every:
                self.checkpoint()
                last_ckpt = time.time()
        return False

    def checkpoint(self, path: Path | None = None) -> None:
        """Save what resume() needs (rank 0), atomically: a kill mid-save leaves the previous checkpoint (to this
        run's checkpoint_path, or to `path`: a WSD chain's branch point, harness.chain)."""
        if not self.ddp.main:
            return
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
                 "rng": torch.get_rng_state(), "step": self.step_n, "train_loss": self.train_loss,
                 "window_sum": self.window_sum.detach().cpu().clone(), "last_log": self.last_log}
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(path or self.ctx.checkpoint_path, [buf.getbuffer()])

    # ------------------------------------------------------------------------------------- 4. evaluate
    def evaluate(self) -> float:
        """Mean loss on the fixed held-out windows (the same for every run); non-finite marks it diverged."""
        windows = eval_windows(self.corpus.val, int(self.tc.eval_windows), self.ctx.gcfg.seq_len)
        self.val_loss = mean_loss(self.model, windows, self.device, self.amp, 64)
        self.eval_bpt = self.corpus.eval_bytes_per_token(windows)
        key = (self.corpus.fingerprint, int(self.tc.eval_windows), self.ctx.gcfg.seq_len)
        self.bigram = bigram_loss(self.corpus.train, windows.numpy(), self.corpus.vocab_size, key)
        if not math.isfinite(self.val_loss):
            self.status, self.error = "diverged", "non-finite validation loss"
        return self.val_loss

    # ------------------------------------------------------------------------------------- 5. record
    def record(self, role: str, started: float) -> dict[str, Any]:
        """The result row (harness.results.COLUMNS): what was trained, what it cost, how well it did."""
        c, g, tc = self.ctx, self.ctx.gcfg, self.tc
        seqs = c.plan.sequences if self.step_n == c.plan.steps else self.step_n * self.batch_size
        tokens = seqs * g.seq_len
        trained = (self.step_n - self.start_step) * self.batch_size * g.seq_len
        return {
            "run_id": c.run_id, "model": c.name,
            **{k: getattr(g, k) for k in ("n_layer", "n_head", "d_model", "d_ff", "seq_len", "vocab_size")},
            **param_counts(g), "flops_per_token": c.plan.flops_per_token, "flops_per_token_6n": flops_per_token_6n(g),
            "budget_flops": c.budget, "flops": tokens * c.plan.flops_per_token, "tokens": tokens,
            "steps": self.step_n, "batch_size": self.batch_size, "lr": c.peak_lr, "train_loss": self.train_loss,
            "val_loss": self.val_loss, "val_bpb": self.val_loss / math.log(2) / self.eval_bpt,
            "status": self.status, "role": role, "seed": self.seed, "data_fingerprint": self.corpus.fingerprint,
            "device": self.device.type, "dtype": str(self.dtype).removeprefix("torch."), "compile": bool(tc.compile),
            "threads": torch.get_num_threads(), "world_size": self.ddp.world,
            "wall_seconds": round(time.time() - started, 3),
            "tokens_per_second": round(trained / max(self.train_seconds, 1e-9), 1),
            "harness_version": __version__, "error": self.error, "lr_rule": c.lr_source, **self.corpus.row(tokens),
            **self.sched.row(), "warmup_steps": self.sched.warmup(c.plan.steps, float(tc.warmup_frac)),
            **bigram_row(self.bigram, self.eval_bpt),
        }


_WARNED: set[str] = set()  # the warnings this process has printed (prepare)


def prepare(cfg: DictConfig, world: int) -> tuple[RunContext, Corpus, torch.device, torch.dtype]:
    """What a run resolves and checks before it trains (harness.pack does the same for a pack): its context
    (cheap checks before data), results dir, tracker, device and precision, the corpus, and that the results
    dir holds this corpus' results only; warnings go to stderr."""
    ctx = RunContext.resolve(cfg, world)
    check_results_dir(ctx.results_dir)
    tc = cfg.train
    check_tracker(str(tc.get("tracker", "none")))
    device = pick_device(str(tc.device))
    dtype = pick_dtype(str(tc.dtype), device, ctx.gcfg.d_model, int(tc.get("cpu_bf16_min_width", 0)))
    corpus = load_corpus(cfg.data, ctx.gcfg.seq_len)
    ctx = ctx.with_corpus(corpus.fingerprint, corpus.vocab_size)
    for w in ctx.warnings:
        if w not in _WARNED:  # once per process: a sweep's jobs share joblib's workers, and a rule's mismatch
            _WARNED.add(w)    # (corpus, schedule) is the same for every run of the sweep
            say(f"warning: {w}", sys.stderr)
    check_compatible(ctx.results_dir, ctx.fingerprint)
    return ctx, corpus, device, dtype


def run(cfg: DictConfig, make: Callable[..., Trainer] = Trainer, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train cfg.model to cfg.budget FLOPs on cfg.data; write and return the result record.

    Raises HarnessError on bad input before anything is written. A run that diverges is recorded with
    status 'diverged' (returned, not raised); the CLI turns that into a non-zero exit. harness.chain passes a
    Trainer subclass (`make`, saving branch points) and `extra` columns (flops_spent, branch_step)."""
    started = time.time()
    ctx, corpus, device, dtype = prepare(cfg, env_world_size())
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 holds the run's lock for all ranks
        return _run(cfg, make, extra, (ctx, corpus, device, dtype), started)
    with run_lock(ctx.results_dir, ctx.run_id):
        return _run(cfg, make, extra, (ctx, corpus, device, dtype), started)


def _run(cfg: DictConfig, make: Callable[..., Trainer], extra: dict[str, Any] | None, prepared: tuple,
         started: float) -> dict[str, Any]:
    """run()'s body once the run is prepared (and, on rank 0, locked)."""
    ctx, corpus, device, dtype = prepared
    tc = cfg.train
    done = find_ok(ctx.results_dir, ctx.run_id)
    if done is not None and not cfg.get("force", False):
        sync_csv(ctx.results_dir)  # a kill between the JSON write and the CSV rebuild left its row out
        ctx.checkpoint_path.unlink(missing_ok=True)  # a kill between the record and this unlink left it behind
        say(f"[harness] run {ctx.run_id} ({ctx.name} @ {ctx.budget:.3g} FLOPs) already has an ok row; skipping")
        return done
    trainer = make(ctx, tc, corpus, int(cfg.seed), device, dtype).train()
    record = {**trainer.record(str(cfg.role), started), **(extra or {})}
    if trainer.ddp.main:
        write_record(ctx.results_dir, record)
        ctx.checkpoint_path.unlink(missing_ok=True)
        trainer.curves.close(record)
    if trainer.ddp.world > 1:
        dist.barrier()
    return record
