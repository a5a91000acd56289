"""WSD chains (harness.chain): a chain's branches give the rows their runs give alone, a killed chain resumes
from its checkpoint or branch point without retraining finished branches, and the sweep plans one job per
chain. The LR schedule itself is tested in tests/test_schedule.py."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.analysis import load_results, select_fit_rows
from harness.chain import Chain, chain_job, plan_chains, sweep_jobs
from harness.chain_run import TrunkTrainer, run_chain
from harness.errors import HarnessError
from harness.plan import job_config, learning_rate, model_config, plan_sweep, vocab_hint
from harness.results import read_records
from harness.schedule import rule_tokens
from harness.sweep import dry_run_text, progress_line, sweep
from harness.train import Trainer, run
from tests.conftest import SWEEP_SMALL

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

# 3 budgets, 2x apart: family-d16 is planned at all three (27, 53 and 106 steps); the LR rule (lr ~ D^0.49) puts
# their own LRs up to 1.4x from the chain's shared one, so the tolerance is raised to keep them in one chain
WSD = [*SWEEP_SMALL, "sweep.budgets=[1e9,2e9,4e9]", "train.schedule=wsd", "train.eval_windows=8",
       "train.progress=false", "train.threads=1", "train.checkpoint_every_s=0", "train.chain_lr_tolerance=1.5"]
COMPARED = ("run_id", "tokens", "flops", "steps", "lr", "warmup_steps", "train_loss", "val_loss", "val_bpb",
            "schedule", "cooldown_frac", "cooldown_shape", "status")


def sweep_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=list(overrides))


@pytest.fixture
def args(text_corpus: Path, tmp_path: Path) -> list[str]:
    return [*WSD, "data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}"]


def three_branch_chain(cfg) -> Chain:
    runs, _ = plan_sweep(cfg)
    chains = [c for c in plan_chains(cfg, runs) if len(c.branches) == 3]
    return min(chains, key=lambda c: c.branches[-1].run.steps)


def test_chain_rows_equal_the_branches_trained_alone(args, tmp_path: Path) -> None:
    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'chain'}")
    chain = three_branch_chain(cfg)
    assert chain.name == "family-d16-L2"
    starts = [b.branch_step for b in chain.branches]
    assert starts == sorted(starts) and len(set(starts)) == 3
    records = run_chain(cfg, chain)
    assert [r["budget_flops"] for r in records] == [4e9, 1e9, 2e9]  # the trunk first
    assert not list((tmp_path / "chain").glob("checkpoints/*.pt"))  # branch points consumed and removed
    for rec, b in zip(records, [chain.branches[-1], *chain.branches[:-1]]):
        alone = run(chain_job(sweep_cfg(*args, f"results_dir={tmp_path / 'alone'}"), chain, b))
        assert {k: rec[k] for k in COMPARED} == {k: alone[k] for k in COMPARED}, b.run.budget
        assert rec["status"] == "ok" and rec["schedule"] == "wsd" and rec["branch_step"] == b.branch_step
        assert rec["flops_spent"] == pytest.approx(b.flops_spent) and rec["flops"] == pytest.approx(b.flops)
    # what the chain spent: the trunk once plus each shorter cooldown, well under the three runs alone
    spent = sum(r["flops_spent"] for r in records)
    alone_flops = sum(r["flops"] for r in records)
    tokens = [b.run.tokens for b in chain.branches]
    assert spent < 0.8 * alone_flops
    assert spent / records[0]["flops"] == pytest.approx(1 + 0.2 * (tokens[0] + tokens[1]) / tokens[2], abs=0.03)
    rows = read_records(tmp_path / "chain")
    assert {float(r["flops_spent"]) for r in rows.values()} == {r["flops_spent"] for r in records}


def test_a_killed_chain_resumes_and_never_retrains_a_finished_branch(args, tmp_path: Path, capsys,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed in the trunk between two branch points, then in the last cooldown: each rerun picks up from the
    checkpoint or branch point, and the final rows equal an uninterrupted chain's."""
    ref_cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'ref'}")
    chain = three_branch_chain(ref_cfg)
    reference = {r["run_id"]: r for r in run_chain(ref_cfg, chain)}
    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'killed'}", "train.checkpoint_every_s=1e-9")
    results = tmp_path / "killed"
    kill_at = {"trunk": (chain.branches[0].branch_step + chain.branches[1].branch_step) // 2}
    original = Trainer.step

    def step(self: Trainer):
        loss = original(self)
        target = kill_at.get("trunk" if isinstance(self, TrunkTrainer) else "branch")
        if target is not None and self.step_n == target:
            raise KeyboardInterrupt("killed")
        return loss

    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        run_chain(cfg, chain)
    points = sorted(p.name for p in results.glob("checkpoints/*.pt"))
    assert len(points) == 2  # the trunk's own checkpoint and the first branch point (the second not reached)
    assert not (results / "results.csv").exists()
    capsys.readouterr()

    kill_at = {"branch": chain.branches[1].branch_step + 2, "trunk_was": kill_at["trunk"]}  # 2e9's cooldown killed
    with pytest.raises(KeyboardInterrupt):
        run_chain(cfg, chain)
    out = capsys.readouterr().out
    assert f"from checkpoint at step {kill_at['trunk_was'] - 1}/" in out  # the trunk resumed, not restarted
    done = read_records(results)
    assert len(done) == 2  # the trunk and the 1e9 branch are recorded

    kill_at = {}
    again = run_chain(cfg, chain)
    out = capsys.readouterr().out
    assert out.count("already has an ok row; skipping") == 2  # finished branches are not retrained
    assert f"at step {chain.branches[1].branch_step + 1}/" in out  # the cooldown resumed where it was killed
    for rec in again:
        ref = reference[rec["run_id"]]
        assert {k: rec[k] for k in COMPARED} == {k: ref[k] for k in COMPARED}
    assert not list(results.glob("checkpoints/*.pt"))


def test_wsd_sweep_plans_one_job_per_chain(args, tmp_path: Path) -> None:
    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'r'}", "print=plan")
    out = sweep(cfg)
    runs, chains = out["runs"], out["chains"]
    assert sum(len(c.branches) for c in chains) == len(runs) == 9 and len(out["jobs"]) == len(chains) < len(runs)
    text = dry_run_text(cfg, out)
    assert f"count={len(chains)}" in text and "WSD chains" in text and "as independent runs (ratio 0." in text
    # every planned run is some chain's branch, with the chain's warmup; its run_id differs from a cosine run's
    jobs = sweep_jobs(cfg, runs)
    assert {int(j.train.warmup_steps) for j in jobs} == {c.warmup_steps for c in chains}
    assert [float(j.budget) for j in jobs] == [pr.budget for pr in runs]
    assert jobs[0].train.schedule == "wsd" and job_config(cfg, runs[0]).train.warmup_steps is None


def test_a_chains_costs_in_training_order_add_up_to_what_it_spends(args, tmp_path: Path) -> None:
    from harness.live import planned_runs

    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'r'}")
    chain = three_branch_chain(cfg)
    costs = chain.costs_in_order()
    assert sum(f for f, _ in costs) == pytest.approx(chain.flops_spent, rel=1e-9)
    assert costs[-1] == (chain.branches[-1].flops, 0)  # the trunk trains every step from 0
    for b, (flops, start) in zip(chain.branches[:-1], costs):  # a shorter branch: its cooldown only
        step_flops = int(cfg.train.batch_size) * int(cfg.model.seq_len) * b.flops / b.run.tokens
        assert start == b.branch_step > 0 and flops == pytest.approx(b.flops - start * step_flops)
    # the live view's plan and each job's progress line carry them: FLOPs spent, not the independent runs' FLOPs
    plan = {p["index"]: p for p in planned_runs(cfg)}
    for b, (flops, start) in zip(chain.branches, costs):
        p = plan[b.run.index]
        assert (p["flops"], p["start_step"]) == (flops, start)
        assert p["est_seconds"] == pytest.approx(b.run.est_seconds * flops / b.flops)
    runs, _ = plan_sweep(cfg)
    chains = plan_chains(cfg, runs)
    line = progress_line(cfg, runs, [p["run_id"] for p in sorted(plan.values(), key=lambda p: p["index"])], chains)
    assert f"0/{len(runs)} runs ok | 0/{sum(c.flops_spent for c in chains):.3g} FLOPs" in line


def _own_and_shared_lr(cfg, chain: Chain) -> list[tuple[float, float]]:
    """(the run's own rule LR, the LR its chain trains it at) for every branch of a chain."""
    gcfg = model_config(job_config(cfg, chain.branches[0].run).model, vocab_hint(cfg))[1]
    return [(learning_rate(cfg.train, gcfg, b.run.tokens)[0],
             learning_rate(tc, gcfg, rule_tokens(tc, b.run.tokens))[0])
            for b in chain.branches for tc in [chain_job(cfg, chain, b).train]]


def test_chains_split_where_the_lr_rule_would_put_a_branch_off_its_own_lr(args, tmp_path: Path) -> None:
    """lr=rule depends on D: with a tolerance of 1.2, d16's three budgets (4x apart in D, own LRs 4^q = 1.54x
    apart under the shipped rule's q = 0.31) cannot share one stable LR, so they split, and every branch stays
    within 1.2x of its own LR; with an LR that does not depend on D (lr=auto) they form one chain whose LR is
    each branch's own exactly."""
    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'r'}", "train.chain_lr_tolerance=1.2")
    runs, _ = plan_sweep(cfg)
    chains = plan_chains(cfg, runs)
    assert sorted(b.run.index for c in chains for b in c.branches) == [pr.index for pr in runs]
    d16 = [c for c in chains if c.name == "family-d16-L2"]
    assert len(d16) == 2 and sorted(len(c.branches) for c in d16) == [1, 2]
    for c in chains:
        for own, shared in _own_and_shared_lr(cfg, c):
            assert 1 / 1.2 <= own / shared <= 1.2
    wide = plan_chains(sweep_cfg(*args, f"results_dir={tmp_path / 'r'}"), runs)  # tolerance 1.5
    assert max(len(c.branches) for c in wide) == 3
    assert any(abs(own / shared - 1) > 0.2 for c in wide for own, shared in _own_and_shared_lr(cfg, c))
    auto = sweep_cfg(*args, f"results_dir={tmp_path / 'r'}", "train.chain_lr_tolerance=1.25", "train.lr=auto")
    chains = plan_chains(auto, runs)
    assert max(len(c.branches) for c in chains) == 3
    assert all(own == shared for c in chains for own, shared in _own_and_shared_lr(auto, c))


def test_a_chain_warms_up_over_the_geometric_mean_of_its_branches(args, tmp_path: Path) -> None:
    """Warmup is warmup_frac of the geometric mean of the branches' steps (not of the shortest branch, which
    left a long trunk a fraction of its own warmup), capped at half the shortest branch's stable phase."""
    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'r'}", "train.warmup_frac=0.1")
    chain = three_branch_chain(cfg)
    steps = [b.run.steps for b in chain.branches]
    mean = (steps[0] * steps[1] * steps[2]) ** (1 / 3)
    assert chain.warmup_steps == round(0.1 * mean) > round(0.1 * steps[0])
    capped = three_branch_chain(sweep_cfg(*args, f"results_dir={tmp_path / 'r'}", "train.warmup_frac=0.9"))
    assert capped.warmup_steps == capped.branches[0].branch_step // 2


@pytest.mark.parametrize("tol", ["1.0", "0.5", "nan", "abc"])
def test_a_bad_chain_lr_tolerance_is_one_clear_error(args, tmp_path: Path, tol: str) -> None:
    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'r'}", f"train.chain_lr_tolerance={tol}")
    with pytest.raises(HarnessError, match=r"train.chain_lr_tolerance=.* must be a factor above 1"):
        plan_chains(cfg, plan_sweep(cfg)[0])


def test_wsd_sweep_refuses_a_grid_whose_lrs_are_too_far_apart_to_share(args, tmp_path: Path) -> None:
    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'r'}", "sweep.budgets=[1e9,4e9]", "train.chain_lr_tolerance=1.01")
    with pytest.raises(HarnessError, match="close enough to share a stable LR"):
        sweep(cfg)


def test_wsd_sweep_refuses_a_grid_without_shared_sizes(args, tmp_path: Path) -> None:
    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'r'}", "sweep.budgets=[2e9]")
    with pytest.raises(HarnessError, match="no model size appears at two budgets"):
        sweep(cfg)


def test_wsd_sweep_refuses_a_cooldown_of_too_few_steps(args, tmp_path: Path) -> None:
    cfg = sweep_cfg(*args, f"results_dir={tmp_path / 'r'}", "train.cooldown_frac=0.05")
    with pytest.raises(HarnessError, match=r"WSD chain of family-d\w+-L2, budget .*leaves a cooldown of \d step"):
        sweep(cfg)


def test_sweep_sh_with_wsd_runs_end_to_end_then_trains_nothing(args, tmp_path: Path) -> None:
    """scripts/sweep.sh train.schedule=wsd: plan, one joblib job per chain, rows the analysis loads like any
    sweep's; a rerun skips every run. The fit and held-out step (harness-validate) is skipped through
    HARNESS_VALIDATE_PREFIX: on this tiny grid the smallest size wins at every budget, so there is no parabola
    to fit (the fit refuses it, as it should); benchmarks/wsd_vs_cosine.py fits WSD rows of the demo grid."""
    root = Path(__file__).resolve().parents[1]
    bindir = Path(sys.executable).parent
    if not (bindir / "harness-sweep").exists():
        pytest.skip(f"harness-sweep not installed beside {sys.executable}")
    results = tmp_path / "results"
    cmd = ["bash", str(root / "scripts" / "sweep.sh"), *args, f"results_dir={results}", "hydra.launcher.n_jobs=2"]
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", OMP_NUM_THREADS="1", HARNESS_VALIDATE_PREFIX="echo")
    env.pop("HYDRA_FULL_ERROR", None)
    (tmp_path / "cwd").mkdir()
    out = subprocess.run(cmd, cwd=tmp_path / "cwd", env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "WSD chains" in out.stdout and "[sweep.sh] 5 jobs" in out.stdout  # 5 jobs (chains) for 9 runs
    assert "harness-validate" in out.stdout  # the last step was reached (and echoed)
    rows = list(csv.DictReader(io.StringIO((results / "results.csv").read_text())))
    assert len(rows) == 9 and all(r["status"] == "ok" and r["schedule"] == "wsd" for r in rows)
    assert sum(float(r["flops_spent"]) for r in rows) < 0.85 * sum(float(r["flops"]) for r in rows)
    df = load_results(str(results / "results.csv"))
    assert len(select_fit_rows(df).used) == 9  # every row is a fit row, as a cosine sweep's
    again = subprocess.run(cmd, cwd=tmp_path / "cwd", env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already has an ok row; skipping") == 9 and "resuming" not in again.stdout


def test_a_chain_under_torchrun_matches_one_process(args, tmp_path: Path) -> None:
    """One sweep job (a 3-branch chain) under torchrun with 2 gloo processes: the rows of one process, written once."""
    exe = Path(sys.executable).parent / "harness-sweep"
    if not exe.exists():
        pytest.skip(f"harness-sweep not installed beside {sys.executable}")
    fp32 = [*args, "train.dtype=fp32"]
    cfg = sweep_cfg(*fp32, f"results_dir={tmp_path / 'single'}")
    chain = three_branch_chain(cfg)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "HYDRA_FULL_ERROR"):
        env.pop(k, None)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(exe), *fp32, f"results_dir={tmp_path / 'ddp'}", f"plan_index={chain.index}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    single = {r["run_id"]: r for r in run_chain(cfg, chain)}
    ddp = read_records(tmp_path / "ddp")
    assert set(ddp) == set(single) and len(ddp) == 3
    assert len(list((tmp_path / "ddp").glob("runs/*.json"))) == 3 and not list((tmp_path / "ddp").glob("checkpoints/*"))
    for rid, r in ddp.items():
        assert r["status"] == "ok" and int(r["world_size"]) == 2 and int(r["branch_step"]) > 0
        assert float(r["val_bpb"]) == pytest.approx(single[rid]["val_bpb"], rel=1e-3)
