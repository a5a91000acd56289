"""harness.runtime: device and precision choice, the process group outside torchrun, and preemption signals."""

from __future__ import annotations

import os
import signal
from contextlib import nullcontext

import pytest
import torch

from harness.errors import HarnessError
from harness.runtime import (
    PREEMPT_SIGNALS,
    Dist,
    Preemption,
    autocast,
    init_distributed,
    pick_device,
    pick_dtype,
)


def test_pick_device_and_dtype() -> None:
    cpu = pick_device("cpu")
    assert cpu == torch.device("cpu")
    with pytest.raises(HarnessError, match=r"train.device"):
        pick_device("tpu")
    assert pick_dtype("fp32", cpu) == torch.float32 and pick_dtype("bf16", cpu) == torch.bfloat16
    assert pick_dtype("auto", cpu, d_model=8, cpu_bf16_min_width=128) == torch.float32  # too narrow for bf16
    with pytest.raises(HarnessError, match=r"train.dtype"):
        pick_dtype("fp8", cpu)


def test_autocast_only_below_fp32() -> None:
    cpu = torch.device("cpu")
    assert autocast(cpu, torch.float32) is nullcontext
    with autocast(cpu, torch.bfloat16)():
        assert torch.is_autocast_enabled("cpu")


def test_outside_torchrun_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    ddp, device = init_distributed(torch.device("cpu"))
    assert ddp == Dist(0, 1) and ddp.main and device == torch.device("cpu")


def test_preemption_records_signal_restores_handlers_and_hands_on() -> None:
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    old = signal.signal(signal.SIGUSR2, previous)
    try:
        before = {s: signal.getsignal(s) for s in PREEMPT_SIGNALS}
        with Preemption(Dist(), torch.device("cpu")) as p:
            assert not p.requested()
            os.kill(os.getpid(), signal.SIGUSR2)
            assert p.requested() and p.signum == signal.SIGUSR2
            assert calls == []  # only recorded while training
        assert {s: signal.getsignal(s) for s in PREEMPT_SIGNALS} == before
        with pytest.raises(SystemExit) as exc:
            p.hand_on()
        assert exc.value.code == 143 and calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_preemption_handlers_restored_on_error() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError), Preemption(Dist(), torch.device("cpu")):
        assert signal.getsignal(signal.SIGTERM) is not before
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGTERM) is before
