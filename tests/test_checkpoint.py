"""Checkpoints: a harness-train process SIGKILLed or SIGTERMed mid-run resumes from
results_dir/checkpoints/<run_id>.pt to the same numbers as an uninterrupted run, and removes the file at the end."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import harness.train
from harness.train import run

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

# nano at context 32, batch 4: 2e10 FLOPs buy 848 sequences = 212 optimizer steps (~2 s on one thread), so a
# checkpoint written every 0.2 s exists long before the end.
STEPS = 212


@pytest.fixture
def train_args(text_corpus: Path, tmp_path: Path) -> list[str]:
    return ["model=nano", "model.seq_len=32", "train.batch_size=4", "train.eval_windows=8", "train.progress=false",
            "train.threads=1", "data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
            "budget=2e10"]


@pytest.fixture
def reference(compose_cfg, train_args: list[str], tmp_path: Path) -> dict:
    """The uninterrupted run (in-process, same numbers as the CLI: one thread, fp32 at this width)."""
    rec = run(compose_cfg(*train_args, "train.checkpoint_every_s=0", f"results_dir={tmp_path / 'whole'}"))
    assert rec["status"] == "ok" and rec["steps"] == STEPS and rec["dtype"] == "float32"
    return rec


def cmd(train_args: list[str], results: Path) -> list[str]:
    exe = Path(sys.executable).parent / "harness-train"
    if not exe.exists():
        pytest.skip(f"harness-train not installed beside {sys.executable}")
    return [str(exe), *train_args, "train.checkpoint_every_s=0.2", f"results_dir={results}"]


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e.pop("HYDRA_FULL_ERROR", None)
    return e


def start_and_wait_for_checkpoint(command: list[str], results: Path, tmp_path: Path) -> subprocess.Popen:
    """Start harness-train and return once its first checkpoint exists (so it is inside the training loop)."""
    proc = subprocess.Popen(command, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list(results.glob("checkpoints/*.pt")):
            return proc
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    out = proc.communicate(timeout=60)[0]
    pytest.fail(f"no checkpoint appeared before the run ended (rc={proc.poll()}): {out[-2000:]}")


def checkpoint_step(results: Path) -> tuple[Path, int]:
    (ckpt,) = results.glob("checkpoints/*.pt")
    return ckpt, int(torch.load(ckpt, map_location="cpu", weights_only=False)["step"])


def finish(command: list[str], results: Path, tmp_path: Path, ckpt: Path, step: int, reference: dict) -> None:
    """Restart the same command: it resumes at `step` and ends with the uninterrupted run's numbers."""
    out = subprocess.run(command, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"resuming run {reference['run_id']} from checkpoint at step {step}/{STEPS}" in out.stdout
    rec = json.loads((results / "runs" / f"{reference['run_id']}.json").read_text())
    assert rec["status"] == "ok"
    assert rec["val_bpb"] == reference["val_bpb"]  # exactly: CPU fp32, one thread, RNG state restored
    assert rec["val_loss"] == reference["val_loss"]
    assert (rec["steps"], rec["tokens"], rec["flops"]) == (reference["steps"], reference["tokens"],
                                                           reference["flops"])
    assert (results / "results.csv").read_text().count(reference["run_id"]) == 1
    assert not ckpt.exists() and not list(results.glob("checkpoints/*.pt"))


def test_sigkill_then_restart_matches_uninterrupted(train_args, reference, tmp_path: Path) -> None:
    results = tmp_path / "killed"
    command = cmd(train_args, results)
    proc = start_and_wait_for_checkpoint(command, results, tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (results / "results.csv").exists() and not list(results.glob("runs/*.json"))
    ckpt, step = checkpoint_step(results)  # the atomic save left a whole, loadable file
    assert ckpt.name == f"{reference['run_id']}.pt"
    assert 0 < step < STEPS
    finish(command, results, tmp_path, ckpt, step, reference)


def test_sigterm_saves_checkpoint_exits_143_then_restart_completes(train_args, reference, tmp_path: Path) -> None:
    results = tmp_path / "termed"
    command = cmd(train_args, results)
    proc = start_and_wait_for_checkpoint(command, results, tmp_path)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 143, out[-2000:]
    m = re.search(r"preempted at step (\d+)/(\d+); checkpoint saved to (\S+)", out)
    assert m, out[-2000:]
    assert int(m.group(2)) == STEPS
    ckpt, step = checkpoint_step(results)
    assert Path(m.group(3)) == ckpt and step == int(m.group(1))  # saved at the signal, not only periodically
    assert not (results / "results.csv").exists()
    finish(command, results, tmp_path, ckpt, step, reference)


# ---------------------------------------------------------------- in-process, deterministic preemption points


def preempt_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Send SIGUSR1 to this process while the trainer draws batch number `call` (as SLURM does)."""
    real = harness.train.sample_batch
    calls = {"n": 0}

    def preempting(*a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(*a, **k)

    monkeypatch.setattr(harness.train, "sample_batch", preempting)


def test_resume_inside_the_last_log_window_keeps_train_loss(tiny_cfg, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """train_loss is the mean loss of the last log window (steps 25..32 of 32 at log_every=25). A run preempted
    at step 30 and resumed must report the same value as the uninterrupted run, not the mean of steps 30..32."""
    whole = run(tiny_cfg(f"results_dir={tmp_path / 'whole'}"))
    assert whole["steps"] == 32
    cfg = tiny_cfg(f"results_dir={tmp_path / 'split'}")
    real = harness.train.sample_batch
    preempt_at(monkeypatch, 30)
    with pytest.raises(SystemExit) as exc:
        run(cfg)
    assert exc.value.code == 143
    monkeypatch.setattr(harness.train, "sample_batch", real)
    resumed = run(cfg)
    assert resumed["val_bpb"] == whole["val_bpb"]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)


def test_checkpoint_belongs_to_its_run_only(tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys) -> None:
    """Another run (another seed) in the same results_dir starts fresh and leaves the first run's checkpoint."""
    results = tmp_path / "results"
    real = harness.train.sample_batch
    preempt_at(monkeypatch, 5)
    with pytest.raises(SystemExit):
        run(tiny_cfg())
    monkeypatch.setattr(harness.train, "sample_batch", real)
    (ckpt,) = results.glob("checkpoints/*.pt")
    before = ckpt.read_bytes()
    other = run(tiny_cfg("seed=1"))
    assert other["status"] == "ok" and ckpt.stem != other["run_id"]
    assert "resuming" not in capsys.readouterr().out
    assert ckpt.read_bytes() == before
    resumed = run(tiny_cfg())
    assert resumed["run_id"] == ckpt.stem and not ckpt.exists()


def test_ctrl_c_mid_run_saves_a_checkpoint_and_the_rerun_resumes_it(tiny_cfg, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGINT (Ctrl-C) stops a run at its next step with a checkpoint, as SIGTERM does; before, it raised
    KeyboardInterrupt through the trainer and every step since the last checkpoint was lost."""
    whole = run(tiny_cfg(f"results_dir={tmp_path / 'whole'}"))
    cfg = tiny_cfg(f"results_dir={tmp_path / 'split'}")
    real = harness.train.sample_batch
    calls = {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 20:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(harness.train, "sample_batch", interrupting)
    with pytest.raises(SystemExit) as exc:
        run(cfg)
    assert exc.value.code == 130
    assert list((tmp_path / "split" / "checkpoints").glob("*.pt"))
    monkeypatch.setattr(harness.train, "sample_batch", real)
    assert run(cfg)["val_bpb"] == whole["val_bpb"]
