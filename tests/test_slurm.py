"""SLURM through hydra-submitit-launcher (conf/hydra/launcher/slurm.yaml).

Always: the launcher config composes over sweep_run, and the sbatch script submitit writes from it asks for
the preemption signal that the trainer catches; the trainer checkpoints on that signal and hands it on to
submitit's handler (which requeues the job); a 2-run sweep goes through submitit_local (hydra/launcher=local).
With a cluster (`sinfo` shows an idle node) or HARNESS_TEST_SLURM=1: scripts/slurm_local.sh runs a real sweep
on SLURM (starting a one-node loopback cluster first when root), checks every planned run has an ok row, and
checks that a signalled job is requeued and resumes from its checkpoint.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

import harness.cli

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher is not installed "
                    "(pip install -e '.[slurm]')")

REPO = Path(__file__).resolve().parents[1]
SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def compose_sweep(*overrides: str, hydra: bool = True) -> Any:
    """sweep_run with these overrides; hydra=True keeps the hydra node (the launcher's config)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.utils import setup_globals

    setup_globals()  # the ${now:} resolver of hydra.sweep.dir
    with initialize_config_dir(config_dir=harness.cli.CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=list(overrides), return_hydra_config=hydra)


def test_slurm_launcher_config_composes(tmp_path: Path) -> None:
    cfg = compose_sweep("hydra/launcher=slurm", f"results_dir={tmp_path}", "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_TARGET
    for key in ("partition", "account", "qos", "nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node",
                "mem_gb", "timeout_min", "array_parallelism", "signal_delay_s", "max_num_timeout", "setup",
                "additional_parameters", "submitit_folder"):
        assert key in launcher, key
    assert launcher.partition == "gpu"
    assert launcher.nodes == 1 and launcher.tasks_per_node == 1  # one planned run per job
    assert launcher.cpus_per_task == cfg.train.threads  # one torch thread per allocated core
    assert launcher.max_num_timeout >= 1  # the trainer resumes from checkpoints, so requeue on timeout
    assert 0 < launcher.signal_delay_s < launcher.timeout_min * 60
    params = OmegaConf.to_container(launcher, resolve=True)
    assert params["name"] == f"harness-{cfg.sweep.name}"
    assert Path(params["submitit_folder"]).parts[: len(tmp_path.parts) + 1] == (*tmp_path.parts, ".hydra")


def test_sbatch_script_asks_for_a_signal_the_trainer_catches(tmp_path: Path, monkeypatch) -> None:
    """Build the sbatch script exactly as the launcher does (hydra-submitit-launcher 1.2 launch())."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.core.job_environment import JobEnvironment
    from submitit.slurm import slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun needed
    cfg = compose_sweep("hydra/launcher=slurm", f"results_dir={tmp_path}", "hydra.launcher.timeout_min=90")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    text = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    lines = set(text.splitlines())
    sig = JobEnvironment.USR_SIG  # USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise
    assert f"#SBATCH --signal={sig}@{params['signal_delay_s']}" in lines
    assert "#SBATCH --time=90" in lines and "#SBATCH --cpus-per-task=1" in lines
    assert f"#SBATCH --job-name=harness-{cfg.sweep.name}" in lines
    assert "#SBATCH --mem=4GB" in lines
    assert getattr(signal, f"SIG{sig}") == signal.SIGUSR2


@pytest.fixture
def submitit_like_handler():
    """A SIGUSR2 handler standing in for submitit's (which dumps a resubmission, requeues and exits)."""
    calls: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        calls.append(signum)
        raise SystemExit(-1)

    old = signal.signal(signal.SIGUSR2, handler)
    yield handler, calls
    signal.signal(signal.SIGUSR2, old)


def test_trainer_checkpoints_on_submitit_signal_then_hands_it_on(
    tiny_cfg, submitit_like_handler, monkeypatch, restore_torch_threads, tmp_path: Path, capsys
) -> None:
    """SIGUSR2 mid-run: checkpoint at the end of the step, then submitit's handler runs (requeue + exit);
    the rerun (the requeued job) resumes from that step and finishes with an ok row."""
    import harness.train

    real_sample = harness.train.sample_batch
    n = {"calls": 0}

    def sample_and_signal(*args: Any, **kwargs: Any) -> Any:
        n["calls"] += 1
        if n["calls"] == 5:
            os.kill(os.getpid(), signal.SIGUSR2)  # as SLURM does signal_delay_s before the time limit
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(harness.train, "sample_batch", sample_and_signal)
    cfg = tiny_cfg()
    with pytest.raises(SystemExit) as exc:
        harness.train.run(cfg)
    handler, calls = submitit_like_handler
    assert exc.value.code == -1, "the trainer did not hand SIGUSR2 on to the handler installed before it"
    assert calls == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR2) is handler  # the trainer put the previous handler back
    ckpts = list((tmp_path / "results" / "checkpoints").glob("*.pt"))
    assert len(ckpts) == 1, "no checkpoint saved on SIGUSR2"
    assert "preempted at step 5/" in capsys.readouterr().out

    monkeypatch.setattr(harness.train, "sample_batch", real_sample)
    record = harness.train.run(cfg)  # the requeued job: same config, same run_id
    assert "from checkpoint at step 5/" in capsys.readouterr().out
    assert record["status"] == "ok"
    assert not ckpts[0].exists()  # removed once the run is recorded


def test_submitit_local_sweep(run_cli, tiny_overrides: list[str], tmp_path: Path) -> None:
    """Two planned runs through hydra/launcher=local: the submitit path (pickled job, result files) end to end.
    ~15 s on 2 cores (two jobs at once, each paying its own `import torch`)."""
    results = tmp_path / "res"
    data = [o for o in tiny_overrides if o.startswith("data")]
    sweep = ["sweep.name=local", "sweep.budgets=[5e9]", "sweep.sizes_per_budget=3", "sweep.d_model_min=8",
             "sweep.d_model_max=64", "sweep.min_steps=10", "model.seq_len=32", "train.batch_size=16",
             "train.eval_windows=8", "train.progress=false", "train.schedule=cosine", f"results_dir={results}"]
    # runs 1 and 2 of the plan: the two larger sizes of the budget, the cheap ones (fewest steps)
    proc = run_cli("harness-sweep", "--multirun", "hydra/launcher=local", *data, *sweep, "plan_index=range(1,3)")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from harness.data import load_corpus
    from harness.plan import plan_sweep
    from harness.sweep import planned_ids

    cfg = compose_sweep(*data, *sweep, hydra=False)
    corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
    runs, _ = plan_sweep(cfg, corpus.vocab_size)
    with open(results / "results.csv", newline="") as f:
        rows = {r["run_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(planned_ids(cfg, runs, corpus.fingerprint, corpus.vocab_size)[1:3])
    assert all(r["status"] == "ok" for r in rows.values())
    assert list(results.glob(".hydra/*/.submitit/*/*_result.pkl")), "jobs did not go through submitit"


def cluster_up() -> bool:
    """sinfo shows an idle (or partly used) node. Without a controller sinfo retries ~10 s: cut it at 3."""
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=3).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(state in {"idle", "mixed"} for state in out.split())


def test_sweep_on_slurm(tmp_path: Path) -> None:
    """scripts/slurm_local.sh: a 6-run sweep through hydra/launcher=slurm, every planned run ok, and a job
    signalled like a timeout is requeued and resumes from its checkpoint (~1-2 min on 2 cores)."""
    if not (os.environ.get("HARNESS_TEST_SLURM") == "1" or cluster_up()):
        pytest.skip("no SLURM cluster (sinfo shows no idle node); HARNESS_TEST_SLURM=1 runs scripts/slurm_local.sh, "
                    "which starts a one-node loopback cluster (needs root and apt the first time)")
    # On a multi-node cluster point SLURM_LOCAL_WORK at a directory every node sees (tmp_path may not be).
    env = dict(os.environ, SLURM_LOCAL_WORK=os.environ.get("SLURM_LOCAL_WORK") or str(tmp_path / "work"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's harness-sweep
    proc = subprocess.run([str(REPO / "scripts" / "slurm_local.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "6/6 planned runs have an ok row" in proc.stdout
    assert "all checks passed" in proc.stdout
