"""Packed seeds (harness.pack, harness.ensemble): K seeds of one sweep point trained as one batched model give
the rows K separate harness-train runs give; the pack resumes from its checkpoint; sweeps plan one job per pack."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.data import load_corpus
from harness.ensemble import EnsembleGPT, clip_member_grads
from harness.errors import HarnessError
from harness.model import GPT, GPTConfig
from harness.pack import pack_jobs, plan_reason
from harness.pack_run import pack_checkpoint_path, run_pack
from harness.plan import PlannedRun, job_config, plan_sweep, resolve_run
from harness.results import read_records
from harness.sweep import dry_run_text, planned_ids, sweep
from harness.train import run
from tests.conftest import SWEEP_SMALL

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("restore_torch_threads")

CFG = GPTConfig(n_layer=2, n_head=2, d_model=24, d_ff=96, seq_len=16, vocab_size=64)


def members(seeds: list[int], cfg: GPTConfig = CFG) -> list[GPT]:
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(GPT(cfg))
    return out


@pytest.mark.parametrize(("pos_emb", "qk_norm"), [("learned", False), ("rope", False), ("rope", True)])
def test_ensemble_losses_and_gradients_equal_each_members_own(pos_emb: str, qk_norm: bool) -> None:
    torch.set_num_threads(1)
    gpts = members([0, 1, 2], dataclasses.replace(CFG, pos_emb=pos_emb, qk_norm=qk_norm))
    with torch.no_grad():  # members' own q/k gains, so a gain applied to the wrong member shows
        for k, m in enumerate(gpts):
            for n, p in m.named_parameters():
                if "_norm." in n:
                    p.uniform_(0.5 + k, 1.5 + k)
    ens = EnsembleGPT(gpts)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randint(0, 64, (3, 4, 16), generator=g), torch.randint(0, 64, (3, 4, 16), generator=g)
    losses = ens(x, y)
    losses.sum().backward()
    for k, m in enumerate(gpts):
        _, loss = m(x[k], y[k])
        loss.backward()
        torch.testing.assert_close(losses[k], loss, rtol=1e-5, atol=1e-6)
        for n, p in m.named_parameters():
            torch.testing.assert_close(ens.w[n.replace(".", "__")].grad[k], p.grad, rtol=1e-4, atol=1e-7)
        assert ens.member_state(k).keys() == m.state_dict().keys()


def test_ensemble_under_bf16_autocast_matches_its_members() -> None:
    """Autocast (CPU here; the same ops run under CUDA autocast): bmm runs in bf16 as F.linear does, the loss
    in fp32, and each member's loss matches its GPT's to bf16 accuracy."""
    gpts = members([0, 1])
    ens = EnsembleGPT(gpts)
    g = torch.Generator().manual_seed(6)
    x, y = torch.randint(0, 64, (2, 4, 16), generator=g), torch.randint(0, 64, (2, 4, 16), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = ens(x, y)
        assert ens.logits(x).dtype == torch.bfloat16 and losses.dtype == torch.float32
        ref = torch.stack([m(x[k], y[k])[1] for k, m in enumerate(gpts)])
    torch.testing.assert_close(losses, ref, rtol=2e-2, atol=2e-2)
    losses.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ens.parameters())


def test_member_clipping_is_clip_grad_norm_per_member() -> None:
    gpts = members([0, 1])
    ens = EnsembleGPT(gpts)
    for p in ens.parameters():
        p.grad = torch.randn_like(p) * torch.tensor([0.001, 10.0]).view(-1, *[1] * (p.dim() - 1))
    for k, m in enumerate(gpts):
        for n, p in m.named_parameters():
            p.grad = ens.w[n.replace(".", "__")].grad[k].clone()
    clip_member_grads(ens, 1.0)
    for k, m in enumerate(gpts):
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        for n, p in m.named_parameters():
            torch.testing.assert_close(ens.w[n.replace(".", "__")].grad[k], p.grad)


def test_members_of_different_shapes_are_refused() -> None:
    torch.manual_seed(0)
    other = GPT(GPTConfig(2, 2, 32, 128, 16, 64))
    with pytest.raises(ValueError, match="one GPTConfig"):
        EnsembleGPT([*members([0]), other])


def _planned(seeds: list[int]) -> list[PlannedRun]:
    return [PlannedRun(0, 3e9, s, 24, "family-d24-L2", 0, 0, 0, 0.0) for s in seeds]


def test_packed_rows_equal_separate_runs(tiny_cfg, tmp_path: Path) -> None:
    """Three seeds packed vs three harness-train runs: same run_ids, steps, tokens, losses to fp tolerance."""
    cfg = tiny_cfg("model=family", "train.pack_seeds=true", "model.d_model=24", "role=sweep", "train.log_every=5")
    packed = run_pack(cfg, _planned([0, 1, 2]))
    alone = [run(job_config(tiny_cfg("model=family", "train.pack_seeds=true", "role=sweep", "train.log_every=5",
                                     f"results_dir={tmp_path / 'alone'}"), pr)) for pr in _planned([0, 1, 2])]
    assert [r["run_id"] for r in packed] == [r["run_id"] for r in alone]
    assert len({r["val_loss"] for r in packed}) == 3  # three different seeds, not one run copied
    for p, a in zip(packed, alone):
        for key in ("seed", "steps", "tokens", "flops", "status", "lr", "role"):
            assert p[key] == a[key], key
        assert p["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
        assert p["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    on_disk = read_records(tmp_path / "results")
    assert sorted(on_disk) == sorted(r["run_id"] for r in packed)
    assert not list((tmp_path / "results").glob("checkpoints/*"))
    again = run_pack(cfg, _planned([0, 1, 2]))  # every seed has an ok row: nothing trains, rows come back
    assert [r["val_loss"] for r in again] == [r["val_loss"] for r in packed]


def test_pack_resumes_from_its_checkpoint(tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped mid-run (as a kill after a checkpoint would leave it), the pack resumes to the same rows."""
    import harness.pack_run

    cfg = tiny_cfg("model=family", "train.pack_seeds=true", "model.d_model=24", "role=sweep")
    whole = run_pack(tiny_cfg("model=family", "train.pack_seeds=true", "role=sweep", f"results_dir={tmp_path / 'whole'}"), _planned([0, 1]))
    steps = whole[0]["steps"]
    real_step = harness.pack_run.PackTrainer.step

    def dying_step(self):
        out = real_step(self)
        if self.step_n == steps // 2:
            self.checkpoint()
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(harness.pack_run.PackTrainer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_pack(cfg, _planned([0, 1]))
    monkeypatch.setattr(harness.pack_run.PackTrainer, "step", real_step)
    ctxs = [resolve_run(job_config(cfg, pr), whole[0]["data_fingerprint"], whole[0]["vocab_size"]) for pr in _planned([0, 1])]
    assert pack_checkpoint_path(ctxs).exists()
    resumed = run_pack(cfg, _planned([0, 1]))
    assert [r["val_loss"] for r in resumed] == [r["val_loss"] for r in whole]  # exactly: CPU fp32, one thread
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in whole]
    assert not pack_checkpoint_path(ctxs).exists()


def sweep_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=list(overrides))


@pytest.fixture
def sweep_args(text_corpus: Path, tmp_path: Path) -> list[str]:
    return [*SWEEP_SMALL, "train.eval_windows=8", "train.progress=false", "data=text", f"data.path={text_corpus}",
            f"data.cache_dir={tmp_path / 'cache'}", "train.pack_seeds=true", f"results_dir={tmp_path / 'results'}",
            "sweep.seeds=[0,1]"]


def test_sweep_plans_one_job_per_point_and_says_so(sweep_args) -> None:
    cfg = sweep_cfg(*sweep_args)
    runs, notes = plan_sweep(cfg)
    jobs = pack_jobs(cfg, runs, notes)
    assert len(runs) == 12 and len(jobs) == 6
    assert all(len({(pr.budget, pr.d_model) for pr in j}) == 1 and [pr.seed for pr in j] == [0, 1] for j in jobs)
    assert any("seeds packed" in n for n in notes)
    out = sweep(cfg)
    assert "count=6" in dry_run_text(sweep_cfg(*sweep_args, "print=plan"), out)


@pytest.mark.parametrize(("extra", "why"), [("train.pack_seeds=false", "pack_seeds=false"),
                                            ("++train.schedule=wsd", "schedule=wsd")])
def test_sweep_falls_back_to_one_job_per_run(sweep_args, extra: str, why: str) -> None:
    cfg = sweep_cfg(*sweep_args, extra)
    runs, notes = plan_sweep(cfg)
    assert len(pack_jobs(cfg, runs, notes)) == 12
    assert any("unpacked" in n and why in n for n in notes)
    assert plan_reason(sweep_cfg(*sweep_args[:-1]), 1) == "one seed per point"


def test_sweep_job_trains_a_whole_pack(sweep_args, tmp_path: Path) -> None:
    out = sweep(sweep_cfg(*sweep_args, "plan_index=5"))
    assert len(out["records"]) == 2 and [r["seed"] for r in out["records"]] == [0, 1]
    assert sorted(read_records(tmp_path / "results")) == sorted(r["run_id"] for r in out["records"])


def test_sweep_sh_packs_seeds_resumes_after_a_kill_and_matches_unpacked_runs(sweep_args, tmp_path: Path) -> None:
    """scripts/sweep.sh with four seeds at one budget: 3 packed jobs; SIGKILLed while a pack checkpoints, the same
    command resumes that pack and ends with the 12 planned rows, the resumed pack's equal to four separate runs."""
    results = tmp_path / "results"
    args = [*sweep_args[:-1], "sweep.budgets=[2e9]", "sweep.seeds=[0,1,2,3]", "train.checkpoint_every_s=0.05",
            "hydra.launcher.n_jobs=1"]
    cfg = sweep_cfg(*args)
    runs, notes = plan_sweep(cfg)
    jobs = pack_jobs(cfg, runs, notes)
    corpus = load_corpus(cfg.data, 32)
    paths = [pack_checkpoint_path([resolve_run(job_config(cfg, pr), corpus.fingerprint, corpus.vocab_size)
                                   for pr in job]) for job in jobs]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PATH=f"{Path(sys.executable).parent}:"
               f"{os.environ['PATH']}", HARNESS_VALIDATE_PREFIX="echo")  # the fit of so tiny a sweep is not the point
    cmd = [str(ROOT / "scripts" / "sweep.sh"), *args]
    (tmp_path / "cwd").mkdir()
    proc = subprocess.Popen(cmd, cwd=tmp_path / "cwd", env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, caught = time.time() + 200, []
        while time.time() < deadline and proc.poll() is None and not caught:
            caught = [p for p in paths if p.exists()]
            time.sleep(0.01)
        assert caught and proc.poll() is None, "no pack checkpoint appeared while the sweep ran"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(0.5)
    again = subprocess.run(cmd, cwd=tmp_path / "cwd", env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[sweep.sh] 3 jobs" in again.stdout and "resuming pack of 4 seeds" in again.stdout
    rows = read_records(results)
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows.values())
    assert sorted(rows) == sorted(planned_ids(cfg, runs, corpus.fingerprint, corpus.vocab_size))
    assert not list(results.glob("checkpoints/*"))
    resumed = jobs[paths.index(caught[0])]
    alone_cfg = sweep_cfg(*[a for a in args if not a.startswith("results_dir=")], f"results_dir={tmp_path / 'alone'}")
    for pr in resumed:
        alone = run(job_config(alone_cfg, pr))
        assert rows[alone["run_id"]]["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-5)
        assert rows[alone["run_id"]]["steps"] == alone["steps"]


def test_a_diverging_member_stops_alone(tiny_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A member whose weights go NaN is recorded 'diverged' at its first log window, as its own run would be;
    the other member's numbers are untouched by it (nothing is shared between members)."""
    import harness.pack_run

    clean = run_pack(tiny_cfg("model=family", "train.pack_seeds=true", "role=sweep", "train.log_every=5",
                              f"results_dir={tmp_path / 'clean'}"), _planned([0, 1]))

    class Poisoned(EnsembleGPT):
        def __init__(self, gpts: list[GPT]) -> None:
            super().__init__(gpts)
            with torch.no_grad():
                self.w["lm_head__weight"][1].fill_(float("nan"))

    monkeypatch.setattr(harness.pack_run, "EnsembleGPT", Poisoned)
    ok, bad = run_pack(tiny_cfg("model=family", "train.pack_seeds=true", "role=sweep", "train.log_every=5"), _planned([0, 1]))
    assert (bad["status"], bad["steps"]) == ("diverged", 5) and "non-finite training loss" in bad["error"]
    assert ok["status"] == "ok" and ok["val_loss"] == clean[0]["val_loss"] and ok["steps"] == clean[0]["steps"]
    assert sorted(read_records(tmp_path / "results")) == sorted([ok["run_id"], bad["run_id"]])


def test_packs_fall_back_under_fp16_and_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.pack_run import runtime_reason

    assert runtime_reason(torch.float32) == runtime_reason(torch.bfloat16) == ""
    assert "fp16" in runtime_reason(torch.float16)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert "auto on CPU" in runtime_reason(torch.float32, cpu, "auto")  # batching measured no faster there
    assert runtime_reason(torch.float32, cpu, "true") == runtime_reason(torch.bfloat16, cuda, "auto") == ""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "torchrun" in runtime_reason(torch.float32)


def test_packed_members_keep_their_learning_curves(tiny_cfg, tmp_path: Path) -> None:
    """Each packed seed writes its own curve (train points per log window, val points on its own weights), and
    its live state is gone once its row is written."""
    from harness.curves import curve_path, live_path, read_curve

    recs = run_pack(tiny_cfg("model=family", "train.pack_seeds=true", "role=sweep", "train.log_every=5"), _planned([0, 1]))
    curves = [read_curve(curve_path(tmp_path / "results", r["run_id"])) for r in recs]
    for r, pts in zip(recs, curves):
        train = [p for p in pts if p["kind"] == "train"]
        val = [p for p in pts if p["kind"] == "val"]
        assert train[-1]["step"] == r["steps"] and train[-1]["loss"] == pytest.approx(r["train_loss"])
        assert len(val) >= 2 and val[0]["loss"] > val[-1]["loss"]  # evaluated on weights that trained
        assert not live_path(tmp_path / "results", r["run_id"]).exists()
    assert [p["loss"] for p in curves[0] if p["kind"] == "val"] != [p["loss"] for p in curves[1] if p["kind"] == "val"]


def test_auto_on_cpu_trains_a_packs_seeds_one_after_another(tiny_cfg, tmp_path: Path, capsys) -> None:
    """pack_seeds=auto (the default) on a CPU: the job trains its seeds unpacked, rows exactly a separate run's."""
    cfg = tiny_cfg("model=family", "model.d_model=24", "role=sweep", "train.log_every=5")
    assert cfg.train.pack_seeds == "auto"
    recs = run_pack(cfg, _planned([0, 1]))
    assert "training 2 seeds unpacked: train.pack_seeds=auto on CPU" in capsys.readouterr().out
    alone = run(job_config(tiny_cfg("model=family", "role=sweep", "train.log_every=5",
                                    f"results_dir={tmp_path / 'alone'}"), _planned([0, 1])[1]))
    assert recs[1]["val_loss"] == alone["val_loss"] and recs[1]["run_id"] == alone["run_id"]


@pytest.mark.parametrize("bad", ["maybe", "2"])
def test_a_bad_pack_seeds_value_is_one_clear_error(sweep_args, bad: str) -> None:
    with pytest.raises(HarnessError, match=r"train.pack_seeds=.* must be auto"):
        sweep(sweep_cfg(*sweep_args, f"train.pack_seeds={bad}"))
