"""Train one model to an exact FLOP budget and record the result (run(cfg) is the pure entry point).

The budget buys round(budget / (flops_per_token * seq_len)) sequences; they are split into steps of
train.batch_size sequences with a smaller last step, so achieved FLOPs match the budget to within one
sequence. Under torchrun each rank draws the same global batch and trains on its slice, so the loss
trajectory equals a single process with the same global batch (up to reduction order).
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from tqdm.auto import tqdm

from harness import __version__
from harness.counting import flops_per_token_6n, param_counts
from harness.data import Corpus, eval_windows, load_corpus, sample_batch
from harness.errors import HarnessError
from harness.model import GPT
from harness.plan import learning_rate, model_config, parse_budget, plan_steps, run_spec
from harness.results import (
    check_compatible,
    check_results_dir,
    find_ok,
    run_id,
    sync_csv,
    write_record,
)


def keep_freed_memory() -> None:
    """glibc: keep freed activations instead of returning them to the OS every step, which otherwise costs
    ~20k page faults per mini step (10-16% of it, scripts/bench.sh). A no-op where mallopt is missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: serve activations from the heap, not fresh mmaps
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not hand the heap top back after each step
    except (OSError, AttributeError):
        pass


def make_optimizer(model: torch.nn.Module, tc: DictConfig, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; fused (one kernel for all parameters) on CUDA and CPU."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(tc.weight_decay)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(float(tc.beta1), float(tc.beta2)), fused=True,
    )


def train_step(train_model: torch.nn.Module, model: torch.nn.Module, opt: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, x: torch.Tensor, y: torch.Tensor, lr: float, amp: Any,
               grad_clip: float) -> torch.Tensor:
    """One optimizer step at learning rate lr; returns the detached loss (no host sync)."""
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


def lr_at(step: int, steps: int, peak: float, warmup_frac: float, min_ratio: float) -> float:
    """Linear warmup then cosine decay to min_ratio * peak."""
    warmup = max(1, round(warmup_frac * steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"train.device={requested} but CUDA is not available; use train.device=cpu or auto")
    if not (requested == "cpu" or requested.startswith("cuda")):
        raise HarnessError(f"unknown train.device={requested!r}; use auto, cpu or cuda[:N]")
    return torch.device(requested)


def cpu_bf16_supported() -> bool:
    """True where the CPU runs bf16 matmuls natively (AVX-512 BF16 / AMX), so autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_dtype(requested: str, device: torch.device, d_model: int = 1 << 30, cpu_bf16_min_width: int = 0) -> torch.dtype:
    """auto: CUDA bf16 (fp16 where bf16 is absent); CPU bf16 where supported and the model is wide enough
    (d_model >= cpu_bf16_min_width) for bf16 matmuls to outrun autocast's casts, else fp32."""
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if requested != "auto":
        if requested not in table:
            raise HarnessError(f"unknown train.dtype={requested!r}; use auto, bf16, fp16 or fp32")
        return table[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16_supported() and d_model >= cpu_bf16_min_width else torch.float32


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when launched under torchrun (NCCL on CUDA, gloo on CPU)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


class _Preempted(Exception):
    pass


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: torch.Tensor, device: torch.device, amp: Any, batch: int) -> float:
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


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train cfg.model to cfg.budget FLOPs on cfg.data; write and return the result record.

    Raises HarnessError on bad input before anything is written. A run that diverges is recorded with
    status 'diverged' (returned, not raised); the CLI turns that into a non-zero exit."""
    t_start = time.time()
    budget = parse_budget(cfg.budget)
    results_dir = Path(str(cfg.results_dir)).expanduser()
    check_results_dir(results_dir)
    tc = cfg.train
    vocab_hint = int(cfg.data.vocab_size) if cfg.data.get("vocab_size") else 256
    name, gcfg = model_config(cfg.model, vocab_hint)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if int(tc.batch_size) % world:
        raise HarnessError(f"train.batch_size={tc.batch_size} must be divisible by the number of processes ({world})")
    plan = plan_steps(budget, gcfg, int(tc.batch_size), int(tc.min_steps), world)  # cheap checks before data
    device = pick_device(str(tc.device))
    dtype = pick_dtype(str(tc.dtype), device, gcfg.d_model, int(tc.get("cpu_bf16_min_width", 0)))
    peak_lr = learning_rate(tc, gcfg.d_model)
    corpus: Corpus = load_corpus(cfg.data, gcfg.seq_len)
    if corpus.vocab_size != gcfg.vocab_size:
        name, gcfg = model_config(cfg.model, corpus.vocab_size)
        plan = plan_steps(budget, gcfg, int(tc.batch_size), int(tc.min_steps), world)
    rid = run_id(run_spec(cfg, name, gcfg, corpus.fingerprint))
    check_compatible(results_dir, corpus.fingerprint)
    done = find_ok(results_dir, rid)
    if done is not None and not cfg.get("force", False):
        sync_csv(results_dir)  # a kill between the JSON write and the CSV rebuild left its row out
        print(f"[harness] run {rid} ({name} @ {budget:.3g} FLOPs) already has an ok row; skipping")
        return done

    ddp = _init_distributed(device)
    if ddp.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if int(tc.threads) > 0:
        torch.set_num_threads(int(tc.threads))
    B = int(tc.batch_size)
    use_amp = dtype != torch.float32

    def amp() -> Any:
        return torch.autocast(device.type, dtype=dtype) if use_amp else nullcontext()

    if device.type == "cpu":
        keep_freed_memory()
    torch.manual_seed(int(cfg.seed))
    model = GPT(gcfg).to(device)
    opt = make_optimizer(model, tc, peak_lr)
    scaler = torch.amp.GradScaler("cuda", enabled=(dtype == torch.float16 and device.type == "cuda"))
    gen = torch.Generator().manual_seed(int(cfg.seed) + 1)
    ckpt_path = results_dir / "checkpoints" / f"{rid}.pt"
    step, loss_sum, loss_n = 0, 0.0, 0
    resume_window = (0.0, 0)  # the unlogged loss sum and the step of the last log, restored on resume
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        step, loss_sum, loss_n = state["step"], state["loss_sum"], state["loss_n"]
        resume_window = (state.get("window_sum", 0.0), state.get("last_log", step))
        print(f"[harness] resuming run {rid} from checkpoint at step {step}/{plan.steps}")
    train_model = model
    if ddp.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if tc.compile:
        train_model = torch.compile(train_model)

    # Preemption: SIGTERM (scheduler, torchrun), SIGUSR1, SIGUSR2 (submitit's timeout/preemption signal) set a
    # flag; at the end of the step every rank agrees on it, rank 0 saves a checkpoint, and the handler that was
    # installed before (submitit's requeue, if any) is called; otherwise the process exits with 143.
    preempt: dict[str, Any] = {"signum": 0}

    def on_signal(signum: int, frame: Any) -> None:
        preempt["signum"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    stop_flag = torch.zeros(1, device=device)  # on the device: NCCL reduces only CUDA tensors

    def save_checkpoint() -> None:
        if not ddp.main:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "rng": torch.get_rng_state(), "step": step, "loss_sum": loss_sum, "loss_n": loss_n,
                    "window_sum": window_sum.detach().cpu().clone(), "last_log": last_log}, tmp)
        os.replace(tmp, ckpt_path)

    status, error = "ok", ""
    window_sum = torch.as_tensor(resume_window[0], dtype=torch.float32).clone().to(device)
    last_ckpt = time.time()
    bar = tqdm(total=plan.steps, initial=step, desc=f"{name} {budget:.2g}F", unit="step",
               disable=not (tc.progress and ddp.main), leave=False, dynamic_ncols=True)
    t_train = time.time()
    start_step, last_log = step, resume_window[1]
    log_every = max(1, int(tc.log_every))
    try:
        while step < plan.steps:
            n = plan.last_batch if step == plan.steps - 1 else B
            x, y = sample_batch(corpus.train, B, gcfg.seq_len, gen)  # same draw every step for determinism
            x, y = x[:n], y[:n]
            if ddp.world > 1:  # each rank trains on its slice of the global batch
                per = n // ddp.world
                x, y = x[ddp.rank * per : (ddp.rank + 1) * per], y[ddp.rank * per : (ddp.rank + 1) * per]
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr = lr_at(step, plan.steps, peak_lr, float(tc.warmup_frac), float(tc.min_lr_ratio))
            window_sum += train_step(train_model, model, opt, scaler, x, y, lr, amp, float(tc.grad_clip))
            step += 1
            if step % log_every == 0 or step == plan.steps:
                if ddp.world > 1:  # the loss of the global batch, not of rank 0's slice (slices are equal)
                    dist.all_reduce(window_sum)
                    window_sum /= ddp.world
                mean = float(window_sum) / (step - last_log)
                last_log = step
                window_sum.zero_()
                if not math.isfinite(mean):
                    status, error = "diverged", f"non-finite training loss at step {step}"
                    break
                loss_sum, loss_n = mean, 1
                bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.2e}")
            bar.update(1)
            if ddp.world > 1:  # all ranks stop at the same step, or the next collective would hang
                stop_flag.fill_(float(preempt["signum"] != 0))
                dist.all_reduce(stop_flag, op=dist.ReduceOp.MAX)
            if preempt["signum"] or stop_flag.item():
                save_checkpoint()
                raise _Preempted()
            if float(tc.checkpoint_every_s) > 0 and time.time() - last_ckpt > float(tc.checkpoint_every_s):
                save_checkpoint()
                last_ckpt = time.time()
    except _Preempted:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if ddp.main:
            print(f"[harness] preempted at step {step}/{plan.steps}; checkpoint saved to {ckpt_path}", flush=True)
        previous = old_handlers.get(preempt["signum"])
        if callable(previous):  # e.g. submitit's handler, which requeues the job
            previous(preempt["signum"], None)
        raise SystemExit(143) from None
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    train_seconds = time.time() - t_train

    val_loss = float("nan")
    if status == "ok":
        val_loss = evaluate(model, eval_windows(corpus.val, int(tc.eval_windows), gcfg.seq_len), device, amp, 64)
        if not math.isfinite(val_loss):
            status, error = "diverged", "non-finite validation loss"
    steps_done = step
    seqs_done = plan.sequences if steps_done == plan.steps else steps_done * B
    tokens = seqs_done * gcfg.seq_len
    record: dict[str, Any] = {
        "run_id": rid, "model": name, **{k: getattr(gcfg, k) for k in
                                         ("n_layer", "n_head", "d_model", "d_ff", "seq_len", "vocab_size")},
        **param_counts(gcfg), "flops_per_token": plan.flops_per_token, "flops_per_token_6n": flops_per_token_6n(gcfg),
        "budget_flops": budget, "flops": tokens * plan.flops_per_token, "tokens": tokens, "steps": steps_done,
        "batch_size": B, "lr": peak_lr, "train_loss": loss_sum if loss_n else float("nan"), "val_loss": val_loss,
        "val_bpb": val_loss / math.log(2) / corpus.bytes_per_token, "status": status, "role": str(cfg.role),
        "seed": int(cfg.seed), "data_fingerprint": corpus.fingerprint, "device": device.type,
        "dtype": str(dtype).removeprefix("torch."), "compile": bool(tc.compile), "threads": torch.get_num_threads(),
        "world_size": ddp.world, "wall_seconds": round(time.time() - t_start, 3),
        "tokens_per_second": round((steps_done - start_step) * B * gcfg.seq_len / max(train_seconds, 1e-9), 1),
        "harness_version": __version__, "error": error,
    }
    if ddp.main:
        write_record(results_dir, record)
        ckpt_path.unlink(missing_ok=True)
    if ddp.world > 1:
        dist.barrier()
    return record
