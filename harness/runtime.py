"""Where and how a run executes: device, precision, torchrun process group, allocator tuning and preemption.

None of this changes a run's numbers (device, dtype and threads are not in the run_id); it is split from
harness/train.py so the trainer reads as the training algorithm only.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from harness.errors import HarnessError

# SIGTERM (scheduler, torchrun), SIGUSR1, SIGUSR2 (submitit's timeout/preemption signal), SIGINT (Ctrl-C: a run
# stops at its next step with a checkpoint, so the same command resumes it).
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
PREEMPTED_EXIT = 143


def keep_freed_memory() -> None:
    """glibc: keep freed activations instead of returning them to the OS every step, which otherwise costs
    ~20k page faults per mini step (10-16% of it, scripts/bench.sh). A no-op where mallopt is missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: serve activations from the heap, not fresh mmaps
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not hand the heap top back after each step
    except (OSError, AttributeError):
        pass


def pick_device(requested: str) -> torch.device:
    """train.device -> a torch.device (auto: CUDA where available), refusing CUDA where there is none."""
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


def autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], AbstractContextManager[Any]]:
    """A factory of the forward pass's precision context: autocast to dtype, or nothing for fp32."""
    if dtype == torch.float32:
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def env_world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun), known before the process group."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints, records and messages."""
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when launched under torchrun (NCCL on CUDA, gloo on CPU); on CUDA each
    rank then uses the GPU of its LOCAL_RANK. Returns the process's place and its device."""
    if "RANK" not in os.environ or env_world_size() == 1:
        return Dist(), device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ddp = Dist(dist.get_rank(), dist.get_world_size())
    if ddp.world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return ddp, device


def all_ranks_mean(value: torch.Tensor, ddp: Dist) -> torch.Tensor:
    """value averaged over the ranks in place (a no-op in one process)."""
    if ddp.world > 1:
        dist.all_reduce(value)
        value /= ddp.world
    return value


class Preemption:
    """Preemption signals as a flag the training loop polls at the end of each step.

    Inside `with Preemption(ddp, device) as p:` SIGTERM, SIGUSR1, SIGUSR2 and SIGINT only record the signal;
    `p.requested()` is the ranks' agreement on it (all ranks stop at the same step, or the next collective would
    hang); leaving the block puts the previous handlers back, whatever happened; `p.hand_on()` then calls the
    handler that was installed before (submitit's requeue, if any) and exits with status 143 (130 after Ctrl-C)."""

    def __init__(self, ddp: Dist, device: torch.device) -> None:
        self.ddp = ddp
        self.signum = 0
        self.previous: dict[int, Any] = {}
        self._flag = torch.zeros(1, device=device)  # on the device: NCCL reduces only CUDA tensors

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> Preemption:
        self.previous = {s: signal.signal(s, self._on_signal) for s in PREEMPT_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)

    def requested(self) -> bool:
        """Whether any rank got a preemption signal (a collective under torchrun: every rank must call it)."""
        if self.ddp.world == 1:
            return self.signum != 0
        self._flag.fill_(float(self.signum != 0))
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX)
        return bool(self._flag.item())

    def hand_on(self) -> NoReturn:
        """Call the handler installed before ours for the signal received (it may requeue and exit), then exit
        with 143 (128 + SIGTERM), the status a scheduler expects of a preempted job."""
        previous = self.previous.get(self.signum)
        if self.signum == signal.SIGINT:  # Ctrl-C: the checkpoint is saved; stop as the shell expects (130)
            raise SystemExit(128 + signal.SIGINT)
        if callable(previous):  # e.g. submitit's handler, which requeues the job
            previous(self.signum, None)
        raise SystemExit(PREEMPTED_EXIT)
