"""Seeds packed into one process: the K seeds of one sweep point (size, budget) trained together, batched.

Tiny models leave a core mostly idle on per-op overhead, and a multi-seed sweep multiplies their count. A pack
stacks the K seeds' GPTs into one harness.ensemble.EnsembleGPT, so each step runs one batched op where K runs
would run K small ones. Nothing else is shared: every seed is first built as its own harness.train.Trainer (its
init from torch.manual_seed(seed), its batch sampler seeded seed + 1), draws its own batches from its own
sampler, has its own gradient clipping, and AdamW's update is elementwise, so the stacked moments are each
seed's own. The rows equal those of K separate harness-train runs up to floating-point summation order
(tests/test_pack.py), and each is written through harness.results like any run. One checkpoint per pack
(results_dir/checkpoints/pack-<id>.pt) holds what every member needs to resume.

This module decides which runs share a pack (torch-free, for the plan); harness.pack_run trains a pack.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from harness.errors import HarnessError
from harness.plan import PlannedRun


def plan_reason(cfg: DictConfig, seeds: int) -> str:
    """Why a sweep does not pack its seeds ('' when it does): one seed, train.pack_seeds=false, or a schedule
    other than cosine (WSD chains resume one seed's run from another budget's, so they stay unpacked)."""
    tc = cfg.train
    mode = pack_mode(tc)
    if seeds < 2:
        return "one seed per point"
    if mode == "false":
        return "train.pack_seeds=false"
    schedule = str(tc.get("schedule", "cosine"))
    if schedule != "cosine":
        return f"train.schedule={schedule}: its runs chain per size, so seeds train unpacked"
    return ""


def pack_jobs(cfg: DictConfig, runs: list[PlannedRun], notes: list[str]) -> list[list[PlannedRun]]:
    """The sweep's jobs: one per (budget, size) holding all its seeds when packing applies, else one per run.
    Jobs are ordered longest first (LPT), as harness.plan orders runs."""
    seeds = len({pr.seed for pr in runs})
    reason = plan_reason(cfg, seeds)
    if reason:
        if seeds > 1:
            notes.append(f"seeds train unpacked, one job per run ({reason})")
        return [[pr] for pr in runs]
    groups: dict[tuple[float, int], list[PlannedRun]] = {}
    for pr in runs:
        groups.setdefault((pr.budget, pr.d_model), []).append(pr)
    jobs = [sorted(g, key=lambda pr: pr.seed) for g in groups.values()]
    jobs.sort(key=lambda g: (-sum(pr.est_seconds for pr in g), g[0].budget, g[0].params))
    how = "batched on CUDA, one after another on CPU" if pack_mode(cfg.train) == "auto" else "batched"
    notes.append(f"seeds packed: {len(jobs)} jobs, each training the {seeds} seeds of one (budget, size) "
                 f"in one process ({how}; train.pack_seeds=false: one job per run)")
    return jobs


def pack_mode(tc: Any) -> str:
    """train.pack_seeds as auto | true | false, or one HarnessError."""
    raw = tc.get("pack_seeds", "auto")
    mode = str(raw).lower()
    if mode not in ("auto", "true", "false"):
        raise HarnessError(f"train.pack_seeds={raw!r} must be auto (batched on CUDA, one after another on CPU), "
                           "true (batched anywhere) or false (one job per run)")
    return mode
