"""IsoFLOP sweep jobs: print the plan, or train planned run number `plan_index` (one Hydra multirun job).

Hydra's launchers (basic, joblib, submitit) run the jobs; this module only maps a job number to a run,
skips runs that already have an ok row (so a killed sweep rerun finishes only what is missing) and prints
an overall progress line after each job.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from omegaconf import DictConfig

from harness.adapt import adapt_rounds, adaptive_plan
from harness.chain import Chain, chain_costs, format_chains, plan_chains, sweep_jobs
from harness.confcheck import check_holdout, check_train_settings, sizes_per_budget, sizes_warning
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.fsutil import say
from harness.ladder import is_ladder, ladder_job_config, plan_ladder
from harness.lr_rule import lr_source
from harness.pack import pack_jobs
from harness.plan import PlannedRun, format_plan, plan_sweep, results_dir, run_id_of, vocab_hint
from harness.repetition import check_repetition
from harness.results import check_compatible, check_results_dir, find_ok, recipe_of
from harness.schedule import schedule_of
from harness.trackers import check_tracker

# What the dry run prints (print=...): `plan` is the table followed by machine-readable lines for scripts.
PRINT_MODES = ("table", "count", "results_dir", "plan")


def planned_ids(cfg: DictConfig, runs: list[PlannedRun], fingerprint: str, vocab: int) -> list[str]:
    """The run_id each planned run records on this corpus (the same derivation as harness.train.run)."""
    return [run_id_of(job, fingerprint, vocab) for job in _jobs(cfg, runs)]


def plan_jobs(cfg: DictConfig) -> tuple[list[PlannedRun], list[str], list[Any]]:
    """The sweep's runs, plan notes and launcher jobs (plan_index i = jobs[i]): under WSD one chain per size and
    seed (harness.chain), else the seeds of one (budget, size) packed where they can be (harness.pack), else one
    run per job (a ladder rung, a single seed)."""
    runs, notes = _plan(cfg)
    if is_ladder(cfg):
        return runs, notes, [[pr] for pr in runs]
    if schedule_of(cfg.train).wsd:
        return runs, notes, plan_chains(cfg, runs)
    return runs, notes, pack_jobs(cfg, runs, notes)


def job_runs(job: Any) -> list[PlannedRun]:
    """The planned runs one launcher job trains: a chain's branches, or a pack's (or a single run's) runs."""
    return [b.run for b in job.branches] if isinstance(job, Chain) else list(job)


def _plan(cfg: DictConfig) -> tuple[list[PlannedRun], list[str]]:
    """The sweep's runs: a size ladder (sweep.kind=ladder, harness.ladder), or an IsoFLOP grid in round 0 and its
    extra sizes in round sweep_round > 0 (harness.adapt)."""
    if is_ladder(cfg):
        return plan_ladder(cfg, vocab_hint(cfg))
    return adaptive_plan(cfg, *plan_sweep(cfg, vocab_hint(cfg)))


def _jobs(cfg: DictConfig, runs: list[PlannedRun]) -> list[DictConfig]:
    """The harness-train config of each planned run: a ladder rung keeps its own model config; under WSD a run is
    its chain's branch (harness.chain)."""
    if is_ladder(cfg):
        return [ladder_job_config(cfg, pr, vocab_hint(cfg)) for pr in runs]
    return sweep_jobs(cfg, runs)


def progress_line(cfg: DictConfig, runs: list[PlannedRun], ids: list[str], jobs: list[Any] | None = None) -> str:
    """Runs done / total, FLOPs done / total and an ETA from the plan's time estimates (under WSD, jobs' chains:
    the FLOPs and time each run costs in its chain, harness.chain.chain_costs)."""
    out_dir = results_dir(cfg)
    cost = chain_costs(jobs or [])
    flops = {pr.index: cost[pr.index][0] if pr.index in cost else pr.budget for pr in runs}
    est = {pr.index: cost[pr.index][2] if pr.index in cost else pr.est_seconds for pr in runs}
    done = [pr for pr, rid in zip(runs, ids) if find_ok(out_dir, rid) is not None]
    flops_done = sum(flops[pr.index] for pr in done)
    flops_all = sum(flops.values())
    est_done = sum(est[pr.index] for pr in done)
    est_left = sum(est.values()) - est_done
    start = float(os.environ.get("HARNESS_SWEEP_START", "0") or 0)
    eta = ""
    if start and est_done > 0 and est_left > 0:
        eta = f" | ETA ~{(time.time() - start) / est_done * est_left / 60:.1f} min (from plan estimates)"
    return (f"[sweep {cfg.sweep.name}] {len(done)}/{len(runs)} runs ok | {flops_done:.3g}/{flops_all:.3g} FLOPs "
            f"({100 * flops_done / flops_all:.0f}%){eta}")


def print_mode(cfg: DictConfig) -> str:
    """cfg.print, refused unless it is one of PRINT_MODES (a typo must not silently print the table)."""
    mode = str(cfg.get("print", "table"))
    if mode not in PRINT_MODES:
        raise HarnessError(f"unknown print={mode!r}; use one of {', '.join(PRINT_MODES)}")
    return mode


def dry_run_text(cfg: DictConfig, out: dict[str, Any]) -> str:
    """What `harness-sweep print=MODE` prints: the plan table, the run count, the results directory, or (plan)
    the table then `count=N`, `results_dir=DIR` and `rounds=R` lines (R > 1: an LR sweep trained in rounds), so scripts/sweep.sh plans once and parses them."""
    count, where, rounds = len(out.get("jobs", out["runs"])), results_dir(cfg), out.get("rounds", 1)
    return {"table": out["table"], "count": str(count), "results_dir": str(where),
            "plan": f"{out['table']}\ncount={count}\nresults_dir={where}\nrounds={rounds}"}[print_mode(cfg)]


def dry_run_checks(cfg: DictConfig) -> list[str]:
    """What the dry run checks before the corpus is read, so scripts/sweep.sh stops before anything trains: the
    print mode, train.tracker and (an IsoFLOP sweep) the held-out ladder harness-validate trains after the grid,
    by the check harness-validate itself applies. Returns the plan's warnings (3 sizes per budget)."""
    print_mode(cfg)
    check_tracker(str(cfg.train.get("tracker", "none")))  # a bad train.tracker stops scripts/sweep.sh here
    if is_ladder(cfg):
        return []
    check_holdout(cfg)
    return sizes_warning(sizes_per_budget(cfg.sweep.sizes_per_budget))


def sweep(cfg: DictConfig) -> dict[str, Any]:
    """Dry run (plan_index unset): check inputs and return the plan. Job (plan_index=i): train job i, one run
    or the packed seeds of one (budget, size) (harness.pack)."""
    check_results_dir(results_dir(cfg))
    check_train_settings(cfg)  # the checks harness-train makes, before planning (batch_size=0 divides the plan)
    runs, notes, jobs = plan_jobs(cfg)
    chains = [j for j in jobs if isinstance(j, Chain)]
    idx = cfg.get("plan_index")
    if idx is None:
        warnings = dry_run_checks(cfg)
        corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
        check_compatible(results_dir(cfg), corpus.fingerprint,
                         recipe_of(cfg, lr_source(cfg.train.lr, cfg.train.get("lr_rule"))))
        for w in [*check_repetition(runs, len(corpus.train), cfg.data), *warnings]:
            say(f"warning: {w}", sys.stderr)
        table = format_plan(runs, notes, len(corpus.train)) + ("\n" + format_chains(chains) if chains else "")
        rounds = 1 if is_ladder(cfg) else adapt_rounds(cfg)
        return {"runs": runs, "notes": notes, "table": table, "jobs": jobs, "chains": chains, "rounds": rounds}
    idx = int(idx)
    if not 0 <= idx < len(jobs):
        raise HarnessError(f"plan_index={idx} is outside the plan (0..{len(jobs) - 1}); rerun the dry run")
    # the trainers (and torch) load only in a job, so the dry run that prints the plan never imports them
    from harness.chain_run import run_chain
    from harness.pack_run import run_pack
    from harness.train import run

    job = jobs[idx]
    if isinstance(job, Chain):
        records = run_chain(cfg, job)
    else:
        records = run_pack(cfg, job) if len(job) > 1 else [run(_jobs(cfg, job)[0])]
    record = records[-1]  # the record names the corpus: no second load for the progress line
    ids = planned_ids(cfg, runs, str(record["data_fingerprint"]), int(record["vocab_size"]))
    say(progress_line(cfg, runs, ids, jobs))
    return {"runs": runs, "jobs": jobs, "notes": notes, "record": record, "records": records}
