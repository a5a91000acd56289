"""The LR sweep: the optimal learning rate per (size, budget), refined in rounds, and the fitted rule.

Round 0 trains a log-spaced LR grid at every point (sweep.d_models x sweep.budgets). Round r > 0 adds, per
point, the LRs its results so far ask for: one grid step past a minimum at the edge of what was tried, or the
two half-step LRs beside a bracketed minimum. Round r's plan is a pure function of the config and the results
of rounds < r, so every parallel job of a round computes the same plan (and a killed sweep resumes). The fit
(harness.analysis.lr) finds each point's optimum and lr* = c N^p D^q, written as a rule file that
`train.lr=rule` reads (harness.lr_rule).

Under train.schedule=wsd the rule is fitted on the schedule the WSD sweeps train with, and cheaply: a round's
runs of one (size, LR, seed) are one chain (harness.chain), whose trunk passes every budget's branch point, and
every run of a size warms up over the same steps (size_warmups), so a run's id does not depend on the round
or chain that trained it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from harness import __version__
from harness.chain import Chain, build_chain, chain_warmup, format_chains
from harness.confcheck import check_train_settings
from harness.counting import flops_per_token
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.lr_report import TunePointData, write_lr_report
from harness.lr_rule import FAMILY_KEYS, PARAM_CONVENTIONS, rule_size
from harness.plan import (
    PlannedRun,
    RunPlan,
    estimate_seconds,
    job_config_for,
    model_config,
    plan_steps,
    results_dir,
    run_id_of,
    sweep_budgets,
    sweep_seeds,
    vocab_hint,
)
from harness.results import check_compatible, check_results_dir, read_records
from harness.schedule import schedule_of
from harness.shape import GPTConfig

Point = tuple[int, float]  # (d_model, budget)


@dataclass(frozen=True)
class TuneRun:
    """One run of the LR sweep: a family size at one budget, one LR and one seed."""

    index: int
    d_model: int
    name: str
    budget: float
    lr: float
    seed: int
    steps: int
    est_seconds: float
    tokens: int = 0
    warmup_steps: int | None = None  # WSD: the size's warmup (size_warmups); None: train.warmup_frac of its steps


def _sig(x: float) -> float:
    """LRs carry 4 significant digits, so the same LR is the same run id in every process and round."""
    return float(f"{x:.4g}")


def lr_grid(sc: DictConfig) -> tuple[list[float], float]:
    """Round 0's log-spaced LRs and the grid ratio between neighbours."""
    g = sc.lr_grid
    lo, hi, k = float(g.min), float(g.max), int(g.points)
    if k < 3:
        raise HarnessError(f"sweep.lr_grid.points={k}; a minimum needs at least 3 LRs (e.g. 5)")
    if not 0 < lo < hi:
        raise HarnessError(f"sweep.lr_grid min={g.min} max={g.max}: need 0 < min < max, e.g. min=3e-3 max=4.8e-2")
    ratio = (hi / lo) ** (1 / (k - 1))
    return [_sig(lo * ratio**i) for i in range(k)], ratio


def refine(lrs: list[float], losses: list[float], ratio: float, bounds: tuple[float, float],
           midpoints: bool) -> list[float]:
    """The LRs one point still needs: a grid step past an edge minimum (within bounds), else the half-step
    LRs beside the minimum if its neighbours are a full step away. Diverged runs count as infinite loss."""
    order = sorted(range(len(lrs)), key=lambda i: lrs[i])
    x = [lrs[i] for i in order]
    y = [losses[i] if math.isfinite(losses[i]) else math.inf for i in order]
    m = min(range(len(x)), key=lambda i: y[i])
    if m == 0:
        return [v for v in [_sig(x[0] / ratio)] if v >= bounds[0]]
    if m == len(x) - 1:
        return [v for v in [_sig(x[-1] * ratio)] if v <= bounds[1]]
    if not midpoints:
        return []
    half = math.sqrt(ratio)
    out = []
    if x[m] / x[m - 1] > half**1.5:  # a full grid step away (not already halved)
        out.append(_sig(x[m] / half))
    if x[m + 1] / x[m] > half**1.5:
        out.append(_sig(x[m] * half))
    return out


def tune_points(cfg: DictConfig, vocab: int) -> list[tuple[Point, str, GPTConfig, RunPlan]]:
    """(point, model name, config, step plan) for every size x budget, refusing those under sweep.min_steps."""
    sc = cfg.sweep
    out = []
    for d in sorted({int(v) for v in sc.d_models}):
        name, g = model_config({**cfg.model, "d_model": d}, vocab)
        for b in sweep_budgets(sc):
            out.append(((d, b), name, g, plan_steps(b, g, int(cfg.train.batch_size), int(sc.min_steps))))
    if len({b for (_, b), *_ in out}) < 2:
        raise HarnessError("sweep.budgets has one budget; the LR rule needs >= 2 to separate N from D")
    return out


def _tried_and_new(cfg: DictConfig, rnd: int, loss_of: Callable[[Point, float], float | None],
                   points: list[Point]) -> dict[Point, list[float]]:
    """The LRs round rnd adds per point: the grid for round 0, else refine() on everything tried before."""
    sc = cfg.sweep
    grid, ratio = lr_grid(sc)
    bounds = (float(sc.lr_bounds[0]), float(sc.lr_bounds[1]))
    tried: dict[Point, list[float]] = {pt: list(grid) for pt in points}
    new = dict(tried)
    for k in range(1, rnd + 1):
        missing = [(pt, lr) for pt, lrs in tried.items() for lr in lrs if loss_of(pt, lr) is None]
        if missing:
            (d, b), lr = missing[0]
            raise HarnessError(f"round {k - 1} of the LR sweep has {len(missing)} unfinished run(s) (e.g. d_model {d} "
                               f"at {b:.3g} FLOPs, lr {lr:g}); rerun scripts/sweep.sh sweep=lr to finish it")
        new = {pt: refine(lrs, [loss_of(pt, lr) for lr in lrs], ratio, bounds, bool(sc.midpoints))
               for pt, lrs in tried.items()}
        tried = {pt: sorted(set(lrs) | set(new[pt])) for pt, lrs in tried.items()}
    return new


def size_warmups(cfg: DictConfig, points: list[tuple[Point, str, GPTConfig, RunPlan]]) -> dict[int, int | None]:
    """Warmup steps per size: under WSD one per size (harness.chain.chain_warmup over its steps at every budget of
    the sweep), whichever of its runs a round trains together; otherwise None (train.warmup_frac per run)."""
    if not schedule_of(cfg.train).wsd:
        return {pt[0]: None for pt, *_ in points}
    steps: dict[int, list[int]] = {}
    for pt, _, _, plan in points:
        steps.setdefault(pt[0], []).append(plan.steps)
    return {d: chain_warmup(cfg, n) for d, n in steps.items()}


def plan_round(cfg: DictConfig, rnd: int, loss_of: Callable[[Point, float], float | None]) -> list[TuneRun]:
    """The runs of round rnd (longest first), from the grid and the losses of rounds before it."""
    points = tune_points(cfg, vocab_hint(cfg))
    new = _tried_and_new(cfg, rnd, loss_of, [pt for pt, *_ in points])
    batch = int(cfg.train.batch_size)
    seeds = sweep_seeds(cfg)
    warm = size_warmups(cfg, points)
    runs: list[TuneRun] = []
    for pt, name, g, plan in points:
        est = estimate_seconds(plan.steps, batch * g.seq_len, flops_per_token(g), cfg.sweep)
        runs += [TuneRun(0, pt[0], name, pt[1], lr, seed, plan.steps, est, plan.sequences * g.seq_len, warm[pt[0]])
                 for lr in new[pt] for seed in seeds]
    runs.sort(key=lambda r: (-r.est_seconds, r.budget, r.d_model, r.lr, r.seed))
    return [dataclasses.replace(r, index=i) for i, r in enumerate(runs)]


def job_config(cfg: DictConfig, run: TuneRun) -> DictConfig:
    """The harness-train config of one LR-sweep run (role=tune: never mixed into IsoFLOP fits)."""
    job = job_config_for(cfg, run.d_model, run.budget, run.seed, "tune")
    job.train.lr = run.lr
    if run.warmup_steps is not None:
        job.train.warmup_steps = run.warmup_steps
    return job


def tune_jobs(cfg: DictConfig, runs: list[TuneRun]) -> list[TuneRun | Chain]:
    """The launcher's jobs for a round: each run alone, or under WSD the runs of one (size, LR, seed) as one
    chain (longest first). A chain's branches carry their TuneRun's plan index."""
    if not schedule_of(cfg.train).wsd:
        return list(runs)
    groups: dict[tuple[int, float, int], list[TuneRun]] = {}
    for r in runs:
        groups.setdefault((r.d_model, r.lr, r.seed), []).append(r)
    jobs: list[TuneRun | Chain] = []
    for group in groups.values():
        group.sort(key=lambda r: r.tokens)
        if len(group) == 1:
            jobs.append(group[0])
            continue
        planned = [PlannedRun(r.index, r.budget, r.seed, r.d_model, r.name, 0, r.tokens, r.steps, r.est_seconds)
                   for r in group]
        jobs.append(build_chain(cfg, planned, group[0].warmup_steps))
    jobs.sort(key=lambda j: -j.est_seconds)
    return [dataclasses.replace(j, index=i) if isinstance(j, Chain) else j for i, j in enumerate(jobs)]


def losses_from(cfg: DictConfig) -> tuple[Callable[[Point, float], float | None], dict[str, dict[str, Any]]]:
    """loss_of(point, lr): the mean val_bpb over the sweep's seeds of the finished runs (inf if any diverged,
    None if any has no record yet), read from the results directory's records. Memoised: every round's plan asks
    again about every LR of the rounds before it."""
    corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
    check_compatible(results_dir(cfg), corpus.fingerprint)
    records = read_records(results_dir(cfg))
    seeds = sweep_seeds(cfg)

    warm = size_warmups(cfg, tune_points(cfg, vocab_hint(cfg)))  # as plan_round: the same run ids

    @functools.cache
    def loss_of(pt: Point, lr: float) -> float | None:
        vals = []
        for seed in seeds:
            job = job_config(cfg, TuneRun(0, pt[0], "", pt[1], lr, seed, 0, 0.0, 0, warm[pt[0]]))
            rec = records.get(run_id_of(job, corpus.fingerprint, corpus.vocab_size))
            if rec is None or rec.get("status") not in ("ok", "diverged"):
                return None
            vals.append(float(rec["val_bpb"]) if rec["status"] == "ok" else math.inf)
        return sum(vals) / len(vals)

    return loss_of, records


def format_round(runs: list[TuneRun], rnd: int) -> str:
    """The round's plan as a table."""
    lines = [f"LR sweep round {rnd}: {len(runs)} run(s)",
             f"{'#':>3} {'budget':>9} {'model':<16} {'lr':>9} {'steps':>6} {'seed':>4} {'est':>7}"]
    lines += [f"{r.index:>3} {r.budget:>9.3g} {r.name:<16} {r.lr:>9.3g} {r.steps:>6} {r.seed:>4} {r.est_seconds:>6.0f}s"
              for r in sorted(runs, key=lambda r: (r.budget, r.d_model, r.lr, r.seed))]
    lines.append(f"est. {sum(r.est_seconds for r in runs) / 60:.1f} min of one worker")
    return "\n".join(lines)


def tune(cfg: DictConfig) -> dict[str, Any]:
    """Dry run (plan_index unset): round `sweep_round`'s plan. Job (plan_index=i): train its run i."""
    rnd, rounds = int(cfg.get("sweep_round") or 0), int(cfg.sweep.max_rounds) + 1
    if rnd >= rounds:
        return {"runs": [], "rounds": rounds, "table": f"LR sweep round {rnd}: past sweep.max_rounds; nothing to train"}
    check_results_dir(results_dir(cfg))
    check_train_settings(cfg)  # train.* out of range fails the dry run, before any round trains
    rule_convention(cfg)
    loss_of, _ = losses_from(cfg)
    runs = plan_round(cfg, rnd, loss_of)
    jobs = tune_jobs(cfg, runs)
    idx = cfg.get("plan_index")
    if idx is None:
        chains = [j for j in jobs if isinstance(j, Chain)]
        table = format_round(runs, rnd) + ("\n" + format_chains(chains) if chains else "")
        return {"runs": runs, "jobs": jobs, "rounds": rounds, "table": table}
    if not 0 <= int(idx) < len(jobs):
        raise HarnessError(f"plan_index={idx} is outside round {rnd}'s plan (0..{len(jobs) - 1}); rerun the dry run")
    from harness.chain_run import run_chain  # the trainers (and torch) load only in a job
    from harness.train import run

    job = jobs[int(idx)]
    if isinstance(job, Chain):
        by_index = {r.index: r for r in runs}
        return {"runs": runs, "records": run_chain(cfg, job, [job_config(cfg, by_index[b.run.index])
                                                               for b in job.branches])}
    return {"runs": runs, "records": [run(job_config(cfg, job))]}


def rule_convention(cfg: DictConfig) -> str:
    """sweep.params, checked before anything trains: what N of the rule counts."""
    convention = str(cfg.sweep.params)
    if convention not in PARAM_CONVENTIONS:
        raise HarnessError(f"sweep.params={convention!r} is not a rule convention; use one of "
                           f"{', '.join(PARAM_CONVENTIONS)} (width: N = d_model)")
    return convention


def collect_points(cfg: DictConfig, records: dict[str, dict[str, Any]]) -> list[TunePointData]:
    """Every (size, budget) of the sweep with the LRs tried and their mean val_bpb over seeds (inf: diverged).
    Only sweep.d_models x sweep.budgets on this sweep's schedule: runs of an earlier grid, or of the other
    schedule, left in the directory stay out of the rule."""
    convention = rule_convention(cfg)
    grid = {(int(d), float(b)) for d in cfg.sweep.d_models for b in sweep_budgets(cfg.sweep)}
    schedule = str(cfg.train.schedule)
    groups: dict[Point, dict[float, list[float]]] = {}
    meta: dict[Point, dict[str, Any]] = {}
    for rec in records.values():
        if str(rec.get("role")) != "tune" or rec.get("status") not in ("ok", "diverged") \
                or str(rec.get("schedule") or "cosine") != schedule:
            continue
        pt = (int(rec["d_model"]), float(rec["budget_flops"]))
        if pt not in grid:
            continue
        loss = float(rec["val_bpb"]) if rec["status"] == "ok" else math.inf
        groups.setdefault(pt, {}).setdefault(_sig(float(rec["lr"])), []).append(loss)
        meta[pt] = rec
    return [TunePointData(pt[0], str(meta[pt]["model"]), pt[1], rule_size(convention, meta[pt], pt[0]),
                          float(meta[pt]["tokens"]), list(by_lr), [sum(v) / len(v) for v in by_lr.values()])
            for pt, by_lr in sorted(groups.items())]


def fit_tune(cfg: DictConfig) -> dict[str, Any]:
    """Fit every point's optimum and the rule, write lr_rule.json + report.md + plots into results_dir."""
    out = results_dir(cfg)
    records = read_records(out)
    points = collect_points(cfg, records)
    if not points:
        raise HarnessError(f"{str(out)!r} holds no LR-sweep runs; run scripts/sweep.sh sweep=lr first")
    fps = sorted({str(r["data_fingerprint"]) for r in records.values()})
    tc = cfg.train
    provenance = {
        "data_fingerprint": fps[0], "sweep": str(cfg.sweep.name), "results_dir": str(out),
        "family": {k: cfg.model.get(k) for k in FAMILY_KEYS}, "harness_version": __version__,
        "train": {k: str(tc.get(k)) for k in ("batch_size", "warmup_frac", "min_lr_ratio", "weight_decay", "beta1",
                                              "beta2", "grad_clip", "schedule", "cooldown_frac", "cooldown_shape")},
    }
    doc = write_lr_report(points, out, str(cfg.sweep.params), float(cfg.sweep.noise_rel), provenance)
    return {"doc": doc, "files": [str(out / f) for f in ("lr_rule.json", "report.md", "lr_curves.png",
                                                                  "lr_rule.png")]}
