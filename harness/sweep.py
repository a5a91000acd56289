"""IsoFLOP sweep jobs: print the plan, or train planned run number `plan_index` (one Hydra multirun job).

Hydra's launchers (basic, joblib, submitit) run the jobs; this module only maps a job number to a run,
skips runs that already have an ok row (so a killed sweep rerun finishes only what is missing) and prints
an overall progress line after each job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.data import load_corpus
from harness.errors import HarnessError
from harness.plan import PlannedRun, format_plan, model_config, plan_sweep, run_spec
from harness.results import check_compatible, check_results_dir, find_ok, run_id


def job_config_for(cfg: DictConfig, d_model: int, budget: float, seed: int, role: str) -> DictConfig:
    """The harness-train config of one run of the sweep: the sweep's config with this size, budget, seed."""
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    job.model.d_model = d_model
    job.budget = budget
    job.seed = seed
    job.role = role
    return job


def job_config(cfg: DictConfig, pr: PlannedRun) -> DictConfig:
    """The harness-train config of one planned run."""
    return job_config_for(cfg, pr.d_model, pr.budget, pr.seed, "sweep")


def planned_ids(cfg: DictConfig, runs: list[PlannedRun], fingerprint: str, vocab: int) -> list[str]:
    ids = []
    for pr in runs:
        job = job_config(cfg, pr)
        name, g = model_config(job.model, vocab)
        ids.append(run_id(run_spec(job, name, g, fingerprint)))
    return ids


def progress_line(cfg: DictConfig, runs: list[PlannedRun], ids: list[str]) -> str:
    """Runs done / total, FLOPs done / total and an ETA from the plan's time estimates."""
    results_dir = Path(str(cfg.results_dir))
    done = [pr for pr, rid in zip(runs, ids) if find_ok(results_dir, rid) is not None]
    flops_done = sum(pr.budget for pr in done)
    flops_all = sum(pr.budget for pr in runs)
    est_done = sum(pr.est_seconds for pr in done)
    est_left = sum(pr.est_seconds for pr in runs) - est_done
    start = float(os.environ.get("HARNESS_SWEEP_START", "0") or 0)
    eta = ""
    if start and est_done > 0 and est_left > 0:
        eta = f" | ETA ~{(time.time() - start) / est_done * est_left / 60:.1f} min (from plan estimates)"
    return (f"[sweep {cfg.sweep.name}] {len(done)}/{len(runs)} runs ok | {flops_done:.3g}/{flops_all:.3g} FLOPs "
            f"({100 * flops_done / flops_all:.0f}%){eta}")


def sweep(cfg: DictConfig) -> dict[str, Any]:
    """Dry run (plan_index unset): check inputs and return the plan. Job (plan_index=i): train run i."""
    check_results_dir(Path(str(cfg.results_dir)))
    vocab = int(cfg.data.vocab_size) if cfg.data.get("vocab_size") else 256
    runs, notes = plan_sweep(cfg, vocab)
    idx = cfg.get("plan_index")
    if idx is None:
        corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
        check_compatible(Path(str(cfg.results_dir)), corpus.fingerprint)
        return {"runs": runs, "notes": notes, "table": format_plan(runs, notes)}
    idx = int(idx)
    if not 0 <= idx < len(runs):
        raise HarnessError(f"plan_index={idx} is outside the plan (0..{len(runs) - 1}); rerun the dry run")
    from harness.train import run

    record = run(job_config(cfg, runs[idx]))  # the record names the corpus: no second load for the progress line
    ids = planned_ids(cfg, runs, str(record["data_fingerprint"]), int(record["vocab_size"]))
    print(progress_line(cfg, runs, ids), flush=True)
    return {"runs": runs, "notes": notes, "record": record}
