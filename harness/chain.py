"""Many budgets from one run: a WSD chain trains a size's stable phase once and branches a cooldown per budget.

Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations") show that a
constant LR with a short cooldown matches cosine at each length, so the runs of one size N at token counts
D1 < ... < Dk share everything up to their cooldowns. A chain trains the longest run (the trunk) and, as it
passes the cooldown start of each shorter run, saves the state there as that run's own checkpoint (its branch
point); each shorter run then resumes from it as a normal run and records a normal row. A chain costs
Dk + f * (D1 + ... + Dk-1) tokens (f = train.cooldown_frac) instead of D1 + ... + Dk.

Exactness: branch i at step t < s_i (its cooldown start) must see the trunk's LR, batch and state. The batch
stream is the run's seed alone; the stable LR is the peak, so what remains is the warmup and the peak:
- warmup is one step count per chain, round(warmup_frac * the geometric mean of its branches' steps), at most
  half the shortest branch's stable phase. (It used to be warmup_frac of the SHORTEST branch: a chain spanning
  15x in D then warmed its trunk up over 12 steps instead of 71, and came out 13.5% worse than the same run
  alone, results/bench/wsd_vs_cosine_4budgets.json in git history before its refit.)
- with train.lr=rule the LR rule is evaluated at one token count per chain, the geometric mean of its
  branches'. The rule depends on D (lr ~ D^q, q ~ 0.5 on the embedded corpus), so a size's runs are split
  into consecutive chains in which every branch's own rule LR lies within train.chain_lr_tolerance (x or /)
  of the shared one; a 15x span had put branches 2x off their LR, and 7% off their loss.
Both go into each branch's config (train.warmup_steps, train.lr_rule_tokens), so a branch's run_id is that of
the same run trained alone, which gives the same numbers (tests/test_chain.py).

This module plans chains (torch-free, so a plan prints without importing it); harness.chain_run trains them.
Resume: the trunk checkpoints like any run; branch points already written are kept; branches with an ok row
are skipped; a branch whose branch point is lost trains from scratch (same numbers, its full cost).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from harness.counting import flops_per_token
from harness.errors import HarnessError
from harness.plan import PlannedRun, job_config, learning_rate, model_config, vocab_hint
from harness.schedule import schedule_of


@dataclass(frozen=True)
class Branch:
    """One budget of a chain: its planned run, where its cooldown starts, what it costs alone and in the chain."""

    run: PlannedRun
    branch_step: int  # the cooldown's first step; the trunk's state after this many steps is the branch point
    flops: float  # the FLOPs of the run trained alone (the row's `flops`)
    flops_spent: float  # the trunk's steps since the previous branch point plus this cooldown (sums to the chain's)
    cooldown_flops: float  # this run's steps from its branch point on (the trunk: all of it)


@dataclass(frozen=True)
class Chain:
    """The runs of one size and seed, shortest first; the last is the trunk."""

    index: int
    name: str
    d_model: int
    seed: int
    branches: tuple[Branch, ...]
    warmup_steps: int
    lr_rule_tokens: float | None  # the token count the LR rule is evaluated at (None: not lr=rule)
    est_seconds: float

    @property
    def flops_spent(self) -> float:
        """What the chain trains in all."""
        return sum(b.flops_spent for b in self.branches)

    @property
    def flops_independent(self) -> float:
        """What its runs would cost trained one by one."""
        return sum(b.flops for b in self.branches)

    def costs_in_order(self) -> list[tuple[float, int]]:
        """(FLOPs, first step) of each branch as run_chain trains them: the trunk all its steps, then every shorter
        branch only its cooldown from its branch step (the live view's progress and ETA; they sum to flops_spent)."""
        *short, trunk = self.branches
        return [(b.cooldown_flops, b.branch_step) for b in short] + [(trunk.flops, 0)]


def chain_costs(jobs: list[Any]) -> dict[int, tuple[float, int, float]]:
    """Each chained run's (FLOPs, first step, est. seconds) as its chain trains it (Chain.costs_in_order), by plan
    index; runs outside a chain are absent (they cost their budget). Progress and ETAs count these under WSD."""
    return {b.run.index: (flops, start, b.run.est_seconds * flops / b.flops)
            for chain in jobs if isinstance(chain, Chain)
            for b, (flops, start) in zip(chain.branches, chain.costs_in_order())}


def chain_warmup(cfg: DictConfig, steps: list[int]) -> int:
    """A chain's warmup steps: warmup_frac of the geometric mean of its branches' steps, at most half the shortest
    branch's stable phase (module docstring)."""
    sched = schedule_of(cfg.train)
    mean_steps = statistics.geometric_mean(steps)
    return max(1, min(round(float(cfg.train.warmup_frac) * mean_steps), sched.cooldown_start(min(steps)) // 2))


def build_chain(cfg: DictConfig, group: list[PlannedRun], warmup: int | None = None) -> Chain:
    """One size's runs (sorted by tokens) as a chain, refusing a cooldown too short or inside warmup; warmup
    (steps) overrides chain_warmup, e.g. the LR sweep's one warmup per size (harness.tune)."""
    tc = cfg.train
    sched = schedule_of(tc)
    batch, seq = int(tc.batch_size), int(cfg.model.seq_len)
    warmup = chain_warmup(cfg, [pr.steps for pr in group]) if warmup is None else warmup
    sched = dataclasses.replace(sched, warmup_steps=warmup)
    branches, prev = [], 0
    for pr in group:
        try:
            sched.check(pr.steps, float(tc.warmup_frac))
        except HarnessError as e:
            raise HarnessError(f"WSD chain of {pr.name}, budget {pr.budget:.3g}: {e}") from None
        start = sched.cooldown_start(pr.steps)
        fpt = _fpt(pr, cfg)
        cooldown = (pr.tokens - start * batch * seq) * fpt  # the last step may be partial: tokens, not steps
        branches.append(Branch(pr, start, float(pr.tokens * fpt), float((start - prev) * batch * seq * fpt + cooldown),
                               float(cooldown)))
        prev = start
    tokens = _rule_tokens(cfg, group)
    est = sum(b.run.est_seconds * b.flops_spent / b.flops for b in branches)
    return Chain(0, group[0].name, group[0].d_model, group[0].seed, tuple(branches), warmup, tokens, est)


def _rule_tokens(cfg: DictConfig, group: list[PlannedRun]) -> float | None:
    """The token count a chain evaluates the LR rule at (train.lr=rule): the geometric mean of its branches'
    (or train.lr_rule_tokens when set); None when the LR does not depend on D."""
    if str(cfg.train.lr) != "rule":
        return None
    if cfg.train.get("lr_rule_tokens") is not None:
        return float(cfg.train.lr_rule_tokens)
    return float(round(statistics.geometric_mean(pr.tokens for pr in group)))


def _lr_tolerance(tc: DictConfig) -> float:
    """train.chain_lr_tolerance as a factor > 1, or one HarnessError."""
    raw = tc.get("chain_lr_tolerance", 1.25)
    try:
        tol = float(raw)
    except (TypeError, ValueError):
        tol = math.nan
    if not tol > 1 or not math.isfinite(tol):
        raise HarnessError(f"train.chain_lr_tolerance={raw!r} must be a factor above 1 (e.g. 1.25: every branch of a "
                           "WSD chain within x/÷1.25 of its own rule LR)")
    return tol


def _split(cfg: DictConfig, group: list[PlannedRun]) -> list[list[PlannedRun]]:
    """One size's runs (sorted by tokens) as consecutive groups that can share one stable LR: a run joins the
    group before it while every member's own LR stays within train.chain_lr_tolerance of the group's LR."""
    tol = _lr_tolerance(cfg.train)
    if str(cfg.train.lr) != "rule" or cfg.train.get("lr_rule_tokens") is not None:
        return [group]  # the LR does not depend on the run's length: one chain shares it exactly
    gcfg = model_config(job_config(cfg, group[0]).model, vocab_hint(cfg))[1]
    own = {pr.index: learning_rate(cfg.train, gcfg, pr.tokens)[0] for pr in group}
    out: list[list[PlannedRun]] = []
    for pr in group:
        trial = [*out[-1], pr] if out else [pr]
        shared = learning_rate(cfg.train, gcfg, float(_rule_tokens(cfg, trial) or pr.tokens))[0]
        if out and all(1 / tol <= own[m.index] / shared <= tol for m in trial):
            out[-1] = trial
        else:
            out.append([pr])
    return out


def _fpt(pr: PlannedRun, cfg: DictConfig) -> int:
    """FLOPs per token of a planned run's model (exact count, harness.counting)."""
    return flops_per_token(model_config(job_config(cfg, pr).model, vocab_hint(cfg))[1])


def plan_chains(cfg: DictConfig, runs: list[PlannedRun]) -> list[Chain]:
    """A WSD sweep's runs grouped by (size, seed) into chains, longest (estimated time) first; refuses a grid in
    which no size appears at two budgets (nothing to share: use train.schedule=cosine), except for the extra
    sizes of an adaptive round (harness.adapt), which may be single runs."""
    groups: dict[tuple[int, int], list[PlannedRun]] = {}
    for pr in runs:
        groups.setdefault((pr.d_model, pr.seed), []).append(pr)
    extra_round = int(cfg.get("sweep_round") or 0) > 0  # an adaptive round's extra sizes: single runs are fine
    if groups and all(len(g) == 1 for g in groups.values()) and not extra_round:
        raise HarnessError("train.schedule=wsd, but no model size appears at two budgets of sweep.budgets, so no "
                           "run can share a stable phase; add budgets, widen sweep.spread, or use train.schedule=cosine")
    chains = [build_chain(cfg, part) for g in groups.values() for part in _split(cfg, sorted(g, key=lambda pr: pr.tokens))]
    if chains and all(len(c.branches) == 1 for c in chains) and not extra_round:
        raise HarnessError("train.schedule=wsd, but no two budgets of one size are close enough to share a stable LR "
                           f"(train.lr=rule puts their LRs more than x{_lr_tolerance(cfg.train):g} apart); add "
                           "budgets between them, raise train.chain_lr_tolerance, or use train.schedule=cosine")
    chains.sort(key=lambda c: (-c.est_seconds, c.d_model, c.seed))
    return [Chain(i, c.name, c.d_model, c.seed, c.branches, c.warmup_steps, c.lr_rule_tokens, c.est_seconds)
            for i, c in enumerate(chains)]


def chain_job(cfg: DictConfig, chain: Chain, branch: Branch) -> DictConfig:
    """The harness-train config of one branch: the run alone, with the chain's warmup and LR-rule length."""
    job = job_config(cfg, branch.run)
    job.train.warmup_steps = chain.warmup_steps
    if chain.lr_rule_tokens is not None:
        job.train.lr_rule_tokens = chain.lr_rule_tokens
    return job


def sweep_jobs(cfg: DictConfig, runs: list[PlannedRun]) -> list[DictConfig]:
    """The harness-train config of each planned run (in plan order): its chain's branch under WSD, else alone."""
    if not schedule_of(cfg.train).wsd:
        return [job_config(cfg, pr) for pr in runs]
    by_index = {b.run.index: chain_job(cfg, c, b) for c in plan_chains(cfg, runs) for b in c.branches}
    return [by_index[pr.index] for pr in runs]


def format_chains(chains: list[Chain]) -> str:
    """The chains of a WSD sweep and their cost against the same runs trained independently."""
    if not chains:
        return ""
    w = max([16, *(len(c.name) for c in chains)])  # the model column widens for long names (a -rope size)
    lines = ["WSD chains (one job each; warmup steps fixed per chain, cooldown branches at the listed steps):",
             f"{'job':>3} {'model':<{w}} {'seed':>4} {'warmup':>6}  budgets @ branch step"]
    lines += [f"{c.index:>3} {c.name:<{w}} {c.seed:>4} {c.warmup_steps:>6}  "
              + ", ".join(f"{b.run.budget:.3g}@{b.branch_step}/{b.run.steps}" for b in c.branches) for c in chains]
    spent, indep = sum(c.flops_spent for c in chains), sum(c.flops_independent for c in chains)
    lines.append(f"{len(chains)} chains for {sum(len(c.branches) for c in chains)} runs: {spent:.3g} FLOPs spent vs "
                 f"{indep:.3g} as independent runs (ratio {spent / indep:.2f}), est. "
                 f"{sum(c.est_seconds for c in chains) / 60:.1f} min of one worker")
    return "\n".join(lines)
