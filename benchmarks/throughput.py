"""Trainer speed: matmul peak per precision, then tokens/s, FLOP/s, MFU and peak memory of the real training step.

One process, one run:
1. the machine's matmul peak for each precision (square matmuls, median of timed repeats, best size wins),
   on the threads in use;
2. for each preset x precision (x thread count): harness.train.Trainer.step itself (the model, AdamW groups,
   autocast, grad clip, set_to_none, loss read back every log_every steps, a fresh sample_batch from the
   memmap every step), warmup then --repeats timed windows, median reported. Achieved FLOP/s uses the exact
   count harness.counting.flops_per_token; MFU = achieved / measured peak of that precision. Peak memory is
   the RSS high-water mark of the config (reset through /proc/self/clear_refs on Linux) or, on CUDA,
   torch.cuda.max_memory_allocated;
3. the data sampler's cost per step (sample_batch alone) relative to the step time;
4. torch.compile off/on for one preset, in a child process under a timeout (skipped with a note if it fails).

The load from other processes is sampled from /proc/stat during every timed window (cores busy outside this
process) and printed beside each number, since this box is shared; minor page faults per step are counted too.

Candidate changes to the step (VARIANTS below: attention in fp32 under CPU bf16 autocast, fused AdamW, ...) can
be measured without editing harness/: --variant applies one to the whole table, --ab times several side by side
in alternating windows (robust to a drifting load).

    scripts/bench.sh                                   # all presets, fp32 + bf16, all cores
    scripts/bench.sh --presets mini --dtypes bf16 --profile   # plus a torch.profiler top-ops table
    scripts/bench.sh --dtypes bf16 --ab base,attn_math,gelu_tanh@32
    python benchmarks/throughput.py --presets nano,family:96 --threads 1,2 --out results/bench/t.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

import harness
from harness.counting import flops_per_token, param_counts
from harness.data import Corpus, load_corpus, sample_batch
from harness.model import GPTConfig
from harness.plan import RunContext, RunPlan, learning_rate, model_config
from harness.runtime import cpu_bf16_supported, keep_freed_memory, pick_device, pick_dtype
from harness.train import Trainer

CONF_DIR = Path(getattr(harness, "CONF_DIR", Path(__file__).resolve().parents[1] / "conf"))
DEFAULT_PRESETS = "nano,micro,mini,small"


# ----------------------------------------------------------------------------------------------- machine state
class LoadMeter:
    """Cores kept busy by *other* processes over an interval: (all busy CPU time - this process's CPU time)
    / wall time, from /proc/stat (Linux). None where /proc/stat is missing."""

    def __init__(self) -> None:
        self.t0 = self.busy0 = self.self0 = None

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self.t0, self.busy0, self.self0 = time.perf_counter(), self._busy(), time.process_time()

    def stop(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self.t0
        busy1, self1 = self._busy(), time.process_time()
        own = (self1 - self.self0) / wall
        others = None if busy1 is None or self.busy0 is None else max(0.0, (busy1 - self.busy0) / wall - own)
        return {"own_cores": own, "other_cores": others}


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _trim_heap() -> None:
    """Give freed heap back to the OS so the next config's RSS high-water mark starts clean (glibc only)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rusage() -> tuple[int, float, float]:
    """(minor page faults, system CPU s, total CPU s) of this process so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_stime, r.ru_utime + r.ru_stime


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class MemMeter:
    """Peak memory of one config: CUDA max_memory_allocated, or the RSS high-water mark (VmHWM) reset at
    start through /proc/self/clear_refs; falls back to getrusage's ru_maxrss (process lifetime peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        _trim_heap()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            pass
        self.base = (_status_kb("VmRSS") or 0) * 1024

    def stop(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            return {"peak_mem_mb": peak / 2**20, "peak_mem_delta_mb": (peak - self.base) / 2**20,
                    "peak_mem_kind": "cuda_max_allocated"}
        hwm = _status_kb("VmHWM")
        if hwm is None:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            return {"peak_mem_mb": peak / 2**20, "peak_mem_delta_mb": None, "peak_mem_kind": "ru_maxrss_process"}
        return {"peak_mem_mb": hwm / 1024, "peak_mem_delta_mb": (hwm * 1024 - self.base) / 2**20,
                "peak_mem_kind": "rss_hwm"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------- matmul peak
def matmul_peak(device: torch.device, dtype: torch.dtype, sizes: list[int], repeats: int) -> dict[str, Any]:
    """Median GFLOP/s of an n x n @ n x n matmul (2 n^3 FLOPs) per size; the peak is the best size."""
    by_size, loads = {}, []
    for n in sizes:
        g = torch.Generator(device="cpu").manual_seed(n)
        a = torch.randn(n, n, generator=g).to(device, dtype)
        b = torch.randn(n, n, generator=g).to(device, dtype)
        t_one = time.perf_counter()
        for _ in range(2):
            a @ b
        sync(device)
        t_one = (time.perf_counter() - t_one) / 2
        reps = max(repeats, min(20, int(0.5 / max(t_one, 1e-6))))  # at least ~0.5 s of timing per size
        meter = LoadMeter()
        meter.start()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            sync(device)
            ts.append(time.perf_counter() - t)
        loads.append(meter.stop())
        by_size[n] = 2 * n**3 / statistics.median(ts) / 1e9
        del a, b
    best = max(by_size, key=by_size.get)
    others = [x["other_cores"] for x in loads if x["other_cores"] is not None]
    return {"gflops": by_size[best], "best_size": best, "by_size": by_size,
            "other_cores": max(others) if others else None}


# ----------------------------------------------------------------------------------------------- the step
def train_defaults() -> Any:
    return OmegaConf.load(CONF_DIR / "train" / "default.yaml")


def preset_config(name: str, vocab_size: int, seq_len: int | None) -> tuple[str, GPTConfig]:
    """A preset from conf/model/NAME.yaml, or `family:D` for the size-family member of width D."""
    if name.startswith("family:"):
        mc = OmegaConf.load(CONF_DIR / "model" / "family.yaml")
        mc.d_model = int(name.split(":", 1)[1])
    else:
        path = CONF_DIR / "model" / f"{name}.yaml"
        if not path.exists():
            raise SystemExit(f"unknown preset {name!r}: no {path} (use a preset name or family:D_MODEL)")
        mc = OmegaConf.load(path)
    if seq_len:
        mc.seq_len = seq_len
    return model_config(mc, vocab_size)


def make_trainer(gcfg: GPTConfig, tc: Any, device: torch.device, dtype: torch.dtype, batch_size: int,
                 tokens: np.ndarray, compile: bool = False, seed: int = 0, total_steps: int = 1000) -> Trainer:
    """harness.train.Trainer for this model, batch and precision on `tokens`, with an LR schedule of total_steps
    steps (past them it stays at the final LR): the benchmark times Trainer.step, the trainer's own step."""
    # no learning curve, tracker or live state: a timing harness writes nothing (it used to litter the cwd)
    tc = OmegaConf.merge(tc, {"batch_size": batch_size, "compile": compile, "curve_points": 0, "tracker": "none"})
    fpt = flops_per_token(gcfg)
    plan = RunPlan(fpt, total_steps * batch_size, total_steps, batch_size)
    ctx = RunContext(float(plan.sequences * gcfg.seq_len * fpt), Path(tempfile.mkdtemp(prefix="harness-bench-")), gcfg.vocab_size, "bench", gcfg, plan,
                     learning_rate(tc, gcfg, plan.sequences * gcfg.seq_len)[0])
    corpus = Corpus(tokens, tokens, gcfg.vocab_size, 1.0, "bench", "benchmark tokens")
    return Trainer(ctx, tc, corpus, seed, device, dtype, resume=False)


def time_sampler(tokens: np.ndarray, B: int, T: int, calls: int = 50) -> float:
    """Median seconds of one sample_batch call (the per-step data cost of harness/train.py)."""
    gen = torch.Generator().manual_seed(123)
    for _ in range(3):
        sample_batch(tokens, B, T, gen)
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        sample_batch(tokens, B, T, gen)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def build(preset: str, dtype_name: str, args: argparse.Namespace, tokens: np.ndarray, vocab: int,
          device: torch.device, variant: str = "", batch_size: int = 0,
          compile: bool = False) -> tuple[str, GPTConfig, Trainer]:
    """The preset's (name, GPTConfig) and a Trainer for it at this precision, with `variant` applied."""
    tc = train_defaults()
    name, gcfg = preset_config(preset, vocab, args.seq_len)
    dtype = pick_dtype(dtype_name, device, gcfg.d_model, int(tc.get("cpu_bf16_min_width", 0)))
    B = batch_size or args.batch_size or int(tc.batch_size)
    tr = make_trainer(gcfg, tc, device, dtype, B, tokens, compile=compile, seed=args.seed)
    apply_variant(tr, variant)
    return name, gcfg, tr


def steps_per_window(args: argparse.Namespace, step_s: float) -> int:
    """--steps, or enough steps for about --window-s seconds (at least --min-steps, at most 200)."""
    return args.steps or max(args.min_steps, min(200, math.ceil(args.window_s / max(step_s, 1e-6))))


def timed_windows(tr: Trainer, steps: int, repeats: int, device: torch.device) -> list[dict[str, Any]]:
    """`repeats` windows of `steps` Trainer steps: seconds and the load from other processes during each."""
    windows = []
    for _ in range(repeats):
        meter = LoadMeter()
        meter.start()
        t = time.perf_counter()
        for _ in range(steps):
            tr.step()
        sync(device)
        windows.append({"seconds": time.perf_counter() - t, **meter.stop()})
    return windows


def measure(preset: str, dtype_name: str, threads: int, args: argparse.Namespace, tokens: np.ndarray,
            vocab: int, device: torch.device, compile: bool = False) -> dict[str, Any]:
    """Warm up, then args.repeats timed windows of the real training step; medians and per-window values."""
    if device.type == "cpu":
        torch.set_num_threads(threads)
    mem = MemMeter(device)
    mem.start()
    t_build = time.perf_counter()
    name, gcfg, tr = build(preset, dtype_name, args, tokens, vocab, device, getattr(args, "variant", ""),
                           compile=compile)
    tr.step()  # first step (compile happens here)
    sync(device)
    first_step_s = time.perf_counter() - t_build
    t = time.perf_counter()
    for _ in range(max(0, args.warmup - 1)):
        tr.step()
    sync(device)
    est = (time.perf_counter() - t) / max(1, args.warmup - 1) if args.warmup > 1 else first_step_s
    steps = steps_per_window(args, est)
    ru0 = _rusage()
    windows = timed_windows(tr, steps, args.repeats, device)
    ru1 = _rusage()
    n_timed = steps * len(windows)
    open_window = tr.step_n - tr.last_log  # steps since the last read-back
    loss_check = float(tr.window_sum) / open_window if open_window > 0 else tr.train_loss
    memory = mem.stop()
    fpt = flops_per_token(gcfg)
    B, dtype = tr.batch_size, tr.dtype
    tok_per_step = B * gcfg.seq_len
    step_s = statistics.median(w["seconds"] for w in windows) / steps
    sampler_s = time_sampler(tokens, B, gcfg.seq_len)
    others = [w["other_cores"] for w in windows if w["other_cores"] is not None]
    del tr
    return {
        "preset": name, "n_layer": gcfg.n_layer, "d_model": gcfg.d_model, "n_head": gcfg.n_head, "d_ff": gcfg.d_ff,
        "seq_len": gcfg.seq_len, "vocab_size": gcfg.vocab_size, **param_counts(gcfg), "flops_per_token": fpt,
        "dtype": dtype_name, "torch_dtype": str(dtype).removeprefix("torch."), "threads": threads if device.type == "cpu" else None,
        "device": device.type, "batch_size": B, "compile": compile, "variant": getattr(args, "variant", "") or "base",
        "warmup_steps": args.warmup,
        "steps_per_window": steps, "windows": len(windows), "first_step_s": first_step_s,
        "step_ms": step_s * 1e3, "step_ms_windows": [w["seconds"] / steps * 1e3 for w in windows],
        "tokens_per_s": tok_per_step / step_s,
        "tokens_per_s_windows": [tok_per_step * steps / w["seconds"] for w in windows],
        "achieved_gflops": fpt * tok_per_step / step_s / 1e9,
        "sampler_ms": sampler_s * 1e3, "sampler_frac": sampler_s / step_s,
        "minor_faults_per_step": (ru1[0] - ru0[0]) / n_timed, "sys_cpu_frac": (ru1[1] - ru0[1]) / max(1e-9, (ru1[2] - ru0[2])),
        **memory, "loss_check": loss_check, "own_cores": statistics.median(w["own_cores"] for w in windows),
        "other_cores": statistics.median(others) if others else None,
        "other_cores_max": max(others) if others else None, "loadavg_1m": loadavg(),
    }


# ----------------------------------------------------------------------------------------------- A/B variants
# Candidate changes to the training step, applied to one Trainer instance (the harness code is untouched), so
# `--ab base,attn_math+foreach_adamw` measures a proposed change before anyone edits harness/.
def _attn_math_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return type(self).forward(self, x)


def _gelu_tanh_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return self.down(F.gelu(self.up(x), approximate="tanh"))


def _rebuild_adamw(tr: Trainer, **kw: Any) -> None:
    g = tr.opt.param_groups
    tr.opt = torch.optim.AdamW([{"params": g[0]["params"], "weight_decay": g[0]["weight_decay"]},
                                {"params": g[1]["params"], "weight_decay": g[1]["weight_decay"]}],
                               lr=g[0]["lr"], betas=g[0]["betas"], **kw)


def _patch_blocks(tr: Trainer, part: str, fn: Any) -> None:
    import types

    for b in tr.model.blocks:
        mod = getattr(b, part)
        mod.forward = types.MethodType(fn, mod)


VARIANTS: dict[str, Any] = {
    "base": lambda tr: None,
    "attn_math": lambda tr: _patch_blocks(tr, "attn", _attn_math_forward),  # SDPA math backend
    "gelu_tanh": lambda tr: _patch_blocks(tr, "mlp", _gelu_tanh_forward),
    "foreach_adamw": lambda tr: _rebuild_adamw(tr, foreach=True),  # the optimizer before fused AdamW on CPU
    "plain_adamw": lambda tr: _rebuild_adamw(tr, foreach=False),
    "compile": lambda tr: setattr(tr, "train_model", torch.compile(tr.model)),
}


def apply_variant(tr: Trainer, spec: str) -> None:
    """Apply `a+b+...` from VARIANTS to one Trainer ('' or 'base': the step as harness/train.py runs it)."""
    for p in (spec or "base").split("+"):
        if p not in VARIANTS:
            raise SystemExit(f"unknown variant {p!r}; choose from {', '.join(VARIANTS)}")
        VARIANTS[p](tr)


def ab_compare(preset: str, dtype_name: str, threads: int, spec: str, args: argparse.Namespace, tokens: np.ndarray,
               vocab: int, device: torch.device, peak: float) -> list[dict[str, Any]]:
    """Variants `a+b[@BATCH]` of one config, timed in alternating windows (ABCABC...) so that a drifting load
    from other processes hits every variant alike; ratio = median over rounds of variant / first variant."""
    if device.type == "cpu":
        torch.set_num_threads(threads)
    trainers = []
    for v in spec.split(","):
        parts, _, batch = v.partition("@")
        name, gcfg, tr = build(preset, dtype_name, args, tokens, vocab, device, parts, int(batch or 0))
        for _ in range(max(2, args.warmup)):
            tr.step()
        trainers.append((v, tr))
    sync(device)
    est = []
    for _, tr in trainers:
        t = time.perf_counter()
        tr.step()
        sync(device)
        est.append(time.perf_counter() - t)
    steps = [steps_per_window(args, e) for e in est]
    tps: list[list[float]] = [[] for _ in trainers]
    others: list[float] = []
    for _ in range(args.repeats):
        for i, (_, tr) in enumerate(trainers):
            (w,) = timed_windows(tr, steps[i], 1, device)
            tps[i].append(steps[i] * tr.batch_size * gcfg.seq_len / w["seconds"])
            if w["other_cores"] is not None:
                others.append(w["other_cores"])
    fpt = flops_per_token(gcfg)
    rows = []
    for i, (v, tr) in enumerate(trainers):
        med = statistics.median(tps[i])
        rows.append({"preset": name, "dtype": dtype_name, "threads": threads, "variant": v,
                     "batch_size": tr.batch_size, "tokens_per_s": med, "tokens_per_s_windows": tps[i],
                     "achieved_gflops": fpt * med / 1e9, "mfu": fpt * med / 1e9 / peak,
                     "ratio": statistics.median(a / b for a, b in zip(tps[i], tps[0])),
                     "other_cores": statistics.median(others) if others else None, "loadavg_1m": loadavg()})
    return rows


# ----------------------------------------------------------------------------------------------- profiling
def profile(preset: str, dtype_name: str, threads: int, args: argparse.Namespace, tokens: np.ndarray, vocab: int,
            device: torch.device, top: int = 15) -> list[dict[str, Any]]:
    """torch.profiler over a few steps: the top ops by self time (CPU, or CUDA on a GPU)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    if device.type == "cpu":
        torch.set_num_threads(threads)
    _, _, tr = build(preset, dtype_name, args, tokens, vocab, device, getattr(args, "variant", ""))
    for _ in range(max(2, args.warmup)):
        tr.step()
    sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    n = max(3, min(10, args.steps or 5))
    with tprofile(activities=acts) as prof:
        for _ in range(n):
            tr.step()
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    total = sum(getattr(e, key, 0) for e in events) or 1
    return [{"op": e.key, "calls_per_step": e.count / n, "self_ms_per_step": getattr(e, key) / 1e3 / n,
             "self_frac": getattr(e, key) / total} for e in events[:top]]


# ----------------------------------------------------------------------------------------------- compile child
def compile_probe(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """torch.compile off vs on for args.compile_preset in a child process (bounded by --compile-timeout)."""
    cmd = [sys.executable, __file__, "--_compile-child", "--presets", args.compile_preset,
           "--dtypes", args.compile_dtype, "--threads", str(threads), "--repeats", str(args.repeats),
           "--warmup", str(max(args.warmup, 3)), "--window-s", str(args.window_s), "--min-steps", str(args.min_steps),
           "--data", args.data, "--device", args.device, "--seed", str(args.seed)]
    if args.variant:
        cmd += ["--variant", args.variant]
    for flag, val in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--seq-len", args.seq_len)):
        if val:
            cmd += [flag, str(val)]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_timeout)
    except subprocess.TimeoutExpired:
        return {"status": "skipped", "note": f"torch.compile did not finish within {args.compile_timeout} s"}
    wall = time.perf_counter() - t
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"status": "failed", "note": " | ".join(tail)[-400:], "wall_s": wall}
    out = json.loads(lines[-1])
    off, on = out["off"], out["on"]
    return {"status": "ok", "preset": args.compile_preset, "dtype": args.compile_dtype, "threads": threads,
            "tokens_per_s_off": off["tokens_per_s"], "tokens_per_s_on": on["tokens_per_s"],
            "speedup": on["tokens_per_s"] / off["tokens_per_s"], "compile_first_step_s": on["first_step_s"],
            "eager_first_step_s": off["first_step_s"], "other_cores": on["other_cores"], "wall_s": wall,
            "off": off, "on": on}


# ----------------------------------------------------------------------------------------------- output
def fmt_table(rows: list[dict[str, Any]], peaks: dict[str, dict[str, Any]]) -> str:
    head = ("preset", "params", "dtype", "thr", "B", "steps", "step ms", "tok/s", "GFLOP/s", "MFU", "sampler",
            "faults", "peak MB", "+MB", "others", "load1")
    out = [head, *(_cells(r) for r in rows)]
    widths = [max(len(row[i]) for row in out) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i > 0 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in out]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cells(r: dict[str, Any]) -> tuple[str, ...]:
    """One row of fmt_table's table as text ('-' for what was not measured)."""
    return (r["preset"], f"{r['params_total'] / 1e6:.2f}M", r["dtype"], str(r["threads"] or "-"),
                    str(r["batch_size"]), f"{r['windows']}x{r['steps_per_window']}", f"{r['step_ms']:.1f}",
                    f"{r['tokens_per_s']:,.0f}", f"{r['achieved_gflops']:.1f}",
                    f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-",
                    f"{100 * r['sampler_frac']:.1f}%", f"{r['minor_faults_per_step']:,.0f}", f"{r['peak_mem_mb']:.0f}",
                    f"{r['peak_mem_delta_mb']:.0f}" if r.get("peak_mem_delta_mb") is not None else "-",
                    f"{r['other_cores']:.2f}" if r.get("other_cores") is not None else "-",
                    f"{r['loadavg_1m']:.2f}" if r.get("loadavg_1m") is not None else "-")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--presets", default=DEFAULT_PRESETS, help="comma list of conf/model presets or family:D_MODEL")
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16, fp16, auto")
    ap.add_argument("--threads", default="0", help="comma list of torch CPU thread counts; 0 = all cores")
    ap.add_argument("--batch-size", type=int, default=0, help="sequences per step (0 = conf/train batch_size)")
    ap.add_argument("--seq-len", type=int, default=0, help="override the presets' seq_len (0 = keep)")
    ap.add_argument("--steps", type=int, default=0,
                    help="steps per timed window (0 = auto: about --window-s seconds, at least --min-steps)")
    ap.add_argument("--window-s", type=float, default=1.5, help="target seconds per timed window when --steps=0")
    ap.add_argument("--min-steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed windows per config (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the windows")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--matmul-sizes", default="1024,2048,4096", help="square matmul sizes for the peak")
    ap.add_argument("--data", choices=("stdlib", "random"), default="stdlib",
                    help="stdlib: the memmapped default corpus (as training reads it); random: in-memory tokens")
    ap.add_argument("--compile-preset", default="mini", help="preset for the torch.compile off/on probe")
    ap.add_argument("--compile-dtype", default="bf16")
    ap.add_argument("--compile-timeout", type=float, default=300.0)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile probe")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler top ops per config")
    ap.add_argument("--variant", default="",
                    help="time the step with a candidate change applied (see --ab), e.g. attn_math+foreach_adamw")
    ap.add_argument("--ab", default="",
                    help="instead of the sweep: compare variants of the step per preset x dtype x threads in alternating "
                         "windows, e.g. base,attn_math,gelu_tanh@64 (variants: " + ", ".join(VARIANTS) + ")")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench/throughput.json")
    ap.add_argument("--_compile-child", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def machine_info(device: torch.device, ncores: int) -> dict[str, Any]:
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
                                      "MKL_NUM_THREADS") if k in os.environ}
    return {"torch": torch.__version__, "device": device.type, "cores": ncores,
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu_bf16_supported": cpu_bf16_supported(), "platform": platform.platform(),
            "processor": platform.processor(), "python": platform.python_version(), "env": env}


def write_json(out: Path, result: dict[str, Any]) -> None:
    """Atomic write (temp file in the same folder + os.replace)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


def load_tokens(args: argparse.Namespace, vocab_hint: int = 256) -> tuple[np.ndarray, int, str]:
    if args.data == "random":
        return np.random.default_rng(0).integers(0, vocab_hint, 1 << 20, dtype=np.uint8), vocab_hint, "random"
    dc = OmegaConf.load(CONF_DIR / "data" / "stdlib.yaml")
    corpus = load_corpus(dc, args.seq_len or 128)
    return corpus.train, corpus.vocab_size, corpus.fingerprint


def matmul_peaks(args: argparse.Namespace, device: torch.device, threads_list: list[int],
                 dtypes: list[str]) -> dict[str, dict[str, Any]]:
    """The matmul peak of every precision at every thread count, keyed 'dtype@threads', printed as measured."""
    sizes = [int(s) for s in args.matmul_sizes.split(",")]
    peaks: dict[str, dict[str, Any]] = {}
    for thr in threads_list:
        if device.type == "cpu":
            torch.set_num_threads(thr)
        for d in dtypes:
            key = f"{d}@{thr}"
            peaks[key] = {"dtype": d, "threads": thr, **matmul_peak(device, pick_dtype(d, device), sizes, 5),
                          "loadavg_1m": loadavg()}
            bs = ", ".join(f"{n}: {g:.0f}" for n, g in peaks[key]["by_size"].items())
            oc = peaks[key]["other_cores"]
            print(f"# matmul peak {d:>4} {thr} thr: {peaks[key]['gflops']:.0f} GFLOP/s (by size {bs}); "
                  f"other cores busy {oc if oc is None else round(oc, 2)}", flush=True)
    return peaks


def ab_rows(args: argparse.Namespace, configs: list[tuple[int, str, str]], tokens: np.ndarray, vocab: int,
            device: torch.device, peaks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """--ab: the variants of every (threads, preset, dtype) config, printed as measured."""
    rows = []
    for thr, p, d in configs:
        for r in ab_compare(p, d, thr, args.ab, args, tokens, vocab, device, peaks[f"{d}@{thr}"]["gflops"]):
            oc = r["other_cores"]
            print(f"# {r['preset']:>6} {d:>4} {thr} thr {r['variant']:<34} B={r['batch_size']:<4} "
                  f"{r['tokens_per_s']:>10,.0f} tok/s  MFU {100 * r['mfu']:5.1f}%  x{r['ratio']:.3f}  "
                  f"others {'-' if oc is None else f'{oc:.2f}'}", flush=True)
            rows.append(r)
    return rows


def table_rows(args: argparse.Namespace, configs: list[tuple[int, str, str]], tokens: np.ndarray, vocab: int,
               device: torch.device, peaks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The main table: measure() of every (threads, preset, dtype) config with its MFU, printed as measured."""
    rows = []
    for thr, p, d in configs:
        r = measure(p, d, thr, args, tokens, vocab, device)
        r["peak_gflops"] = peaks[f"{d}@{thr}"]["gflops"]
        r["mfu"] = r["achieved_gflops"] / r["peak_gflops"]
        if args.profile:
            r["profile"] = profile(p, d, thr, args, tokens, vocab, device)
        rows.append(r)
        print(f"# {r['preset']:>6} {d:>4} {thr} thr: {r['tokens_per_s']:,.0f} tok/s, "
              f"{r['achieved_gflops']:.1f} GFLOP/s, MFU {100 * r['mfu']:.1f}%, "
              f"windows {[round(x) for x in r['tokens_per_s_windows']]}, others {r['other_cores']}", flush=True)
        for e in r.get("profile", []):
            print(f"#     {e['op'][:48]:<48} {e['self_ms_per_step']:8.2f} ms/step {100 * e['self_frac']:5.1f}% "
                  f"x{e['calls_per_step']:.0f}")
    return rows


def compile_summary(args: argparse.Namespace, threads: int) -> dict[str, Any] | None:
    """The torch.compile probe (None with --no-compile), printed."""
    if args.no_compile:
        return None
    res = compile_probe(args, threads)
    if res["status"] == "ok":
        print(f"# torch.compile {res['preset']} {res['dtype']}: {res['tokens_per_s_off']:,.0f} -> "
              f"{res['tokens_per_s_on']:,.0f} tok/s (x{res['speedup']:.2f}); first step "
              f"{res['compile_first_step_s']:.1f} s compiled vs {res['eager_first_step_s']:.2f} s eager", flush=True)
    else:
        print(f"# torch.compile probe {res['status']}: {res['note']}", flush=True)
    return res


def finish(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Write the result JSON to --out and say where."""
    write_json(Path(args.out), result)
    print(f"\nwrote {args.out} ({result['wall_s']:.0f} s)")
    return result


def _names(csv: str) -> list[str]:
    """A comma list of names without blanks."""
    return [x.strip() for x in csv.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Peaks, then the --ab comparison or the table (plus the compile probe); writes --out."""
    args = parse_args(argv)
    device = pick_device(args.device)
    if device.type == "cpu":
        keep_freed_memory()  # as harness.train.Trainer does
    ncores = os.cpu_count() or 1
    threads_list = [int(t) or (ncores if device.type == "cpu" else 1) for t in args.threads.split(",")]
    presets, dtypes = _names(args.presets), _names(args.dtypes)
    tokens, vocab, fingerprint = load_tokens(args)

    if args._compile_child:  # internal: compile off/on for one config, one JSON line on stdout
        off, on = (measure(presets[0], dtypes[0], threads_list[0], args, tokens, vocab, device, compile=c)
                   for c in (False, True))
        print(json.dumps({"off": off, "on": on}))
        return {"off": off, "on": on}

    t_all = time.perf_counter()
    print(f"# torch {torch.__version__} on {device.type} ({platform.processor() or platform.machine()}, "
          f"{ncores} cores, cpu_bf16_supported={cpu_bf16_supported()}); load avg 1m at start {loadavg()}",
          flush=True)
    peaks = matmul_peaks(args, device, threads_list, dtypes)
    configs = [(thr, p, d) for thr in threads_list for p in presets for d in dtypes]
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    if args.ab:
        ab = ab_rows(args, configs, tokens, vocab, device, peaks)
        return finish(args, {"machine": machine_info(device, ncores), "settings": settings, "matmul_peak": peaks,
                             "ab": ab, "wall_s": time.perf_counter() - t_all})

    rows = table_rows(args, configs, tokens, vocab, device, peaks)
    compile_res = compile_summary(args, threads_list[-1])
    print()
    print(fmt_table(rows, peaks))
    print("\nthr: torch threads; steps: windows x steps per window; MFU: achieved / measured matmul peak of that "
          "precision;\nsampler: sample_batch time / step time; faults: minor page faults per step; peak MB: RSS high-water mark (+MB over the RSS before "
          "the model was built);\nothers: cores busy with other processes during the timed windows; load1: 1-min load "
          "average at the end.")
    return finish(args, {
        "machine": machine_info(device, ncores), "settings": settings,
        "data_fingerprint": fingerprint, "matmul_peak": peaks, "rows": rows, "compile": compile_res,
        "wall_s": time.perf_counter() - t_all, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


if __name__ == "__main__":
    main()
