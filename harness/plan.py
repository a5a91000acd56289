"""Planning: which model a config names, how a budget becomes optimizer steps, and IsoFLOP sweep grids.

Everything here is arithmetic on configs (no torch training, no data), so plans print instantly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.confcheck import check_train_settings, fixed_lr, grid_prior, parse_budget, seed_list, sizes_per_budget
from harness.confcheck import sweep_budgets as sweep_budgets  # re-exported: the LR sweep plans its budgets with it
from harness.counting import flops_per_token, param_counts
from harness.errors import HarnessError
from harness.lr_rule import load_rule, rule_size, rule_warnings
from harness.schedule import rule_tokens, schedule_of, schedule_spec
from harness.shape import GPTConfig


def vocab_hint(cfg: DictConfig) -> int:
    """The vocabulary to plan with before the corpus is opened: data.vocab_size if set, else 256 (bytes)."""
    return int(cfg.data.vocab_size) if cfg.data.get("vocab_size") else 256


def results_dir(cfg: DictConfig) -> Path:
    """cfg.results_dir with ~ expanded: the one path every command reads and writes."""
    return Path(str(cfg.results_dir)).expanduser()


def model_config(mc: DictConfig | dict, vocab_size: int) -> tuple[str, GPTConfig]:
    """A preset or a size-family member -> (name, GPTConfig). The family derives depth, heads and d_ff from
    d_model by a fixed aspect rule (conf/model/family.yaml). A rope model's name ends in -rope."""
    mc = OmegaConf.create(dict(mc)) if isinstance(mc, dict) else mc
    pos_emb = str(mc.get("pos_emb", "learned"))
    if mc.get("name") == "family":
        d, step = int(mc.d_model), int(mc.d_model_step)
        if d < step or d % step:
            raise HarnessError(f"family d_model={d} must be a positive multiple of model.d_model_step={step}")
        n_layer = max(int(mc.get("min_layers", 1)), math.floor(d / float(mc.aspect) + 0.5))
        # the most heads of at least head_dim channels that divide d_model evenly (at least one); rope rotates channel
        # pairs, so its heads are of an even size
        even = pos_emb == "rope"
        n_head = max(h for h in range(1, max(1, d // int(mc.head_dim)) + 1) if d % h == 0 and not (even and d // h % 2))
        name, dims = f"family-d{d}-L{n_layer}", (n_layer, n_head, d, int(mc.ff_mult) * d)
    else:
        name, dims = str(mc.name), (mc.n_layer, mc.n_head, mc.d_model, mc.d_ff)
    try:
        cfg = GPTConfig(*map(int, (*dims, mc.seq_len)), vocab_size, pos_emb, bool(mc.get("qk_norm", False)))
    except ValueError as e:
        raise HarnessError(f"model {mc.get('name')}: {e}; fix the model.* values") from None
    return name + ("-rope" if pos_emb == "rope" else "") + ("-qk" if cfg.qk_norm else ""), cfg


def learning_rate(tc: DictConfig, gcfg: GPTConfig, tokens: float) -> tuple[float, str]:
    """Peak LR and where it came from: a number (fixed); auto = lr_base * (lr_ref_width / d_model) **
    lr_width_exponent (1/sqrt(width), after muP, Yang et al. 2022); rule = the fitted lr = c N^p D^q of
    train.lr_rule (harness.lr_rule, written by the LR sweep), tagged with the rule file's name and hash."""
    lr = fixed_lr(tc.lr)  # None for auto and rule; anything but those and a positive number is refused
    if lr is not None:
        return lr, "fixed"
    if str(tc.lr) == "auto":
        return float(tc.lr_base) * (float(tc.lr_ref_width) / gcfg.d_model) ** float(tc.lr_width_exponent), "auto"
    rule = load_rule(tc.get("lr_rule"))
    return rule.lr(rule_size(rule.params, param_counts(gcfg), gcfg.d_model), tokens), rule.tag


@dataclass
class RunPlan:
    """How a budget turns into optimizer steps for one model."""

    flops_per_token: int
    sequences: int
    steps: int
    last_batch: int


def plan_steps(budget: float, cfg: GPTConfig, batch_size: int, min_steps: int, multiple: int = 1) -> RunPlan:
    """Sequences and steps that spend `budget` FLOPs; refuses budgets that buy fewer than min_steps steps.
    The sequence count is a multiple of `multiple` (the number of processes) so every rank gets a share."""
    if batch_size < 1:
        raise HarnessError(f"train.batch_size={batch_size} must be a positive integer")
    fpt = flops_per_token(cfg)
    seqs = round(budget / (fpt * cfg.seq_len * multiple)) * multiple
    steps = math.ceil(seqs / batch_size) if seqs > 0 else 0
    if steps < min_steps:
        minimum = min_steps * batch_size * cfg.seq_len * fpt
        raise HarnessError(f"budget {budget:.3g} FLOPs buys {steps} optimizer steps of this model (min {min_steps}); "
                           f"use budget>={minimum:.3g}, a smaller model or a smaller train.batch_size")
    return RunPlan(fpt, seqs, steps, seqs - (steps - 1) * batch_size)


def run_spec(cfg: DictConfig, name: str, gcfg: GPTConfig, fingerprint: str) -> dict[str, Any]:
    """What determines a run's numbers; its hash is the run_id (device, dtype, threads are not in it)."""
    tc = cfg.train
    keys = ["batch_size", "lr", "lr_base", "lr_ref_width", "lr_width_exponent", "min_lr_ratio", "warmup_frac",
            "weight_decay", "beta1", "beta2", "grad_clip", "eval_windows"]
    data_keys = ["val_fraction", "bytes_per_token", "token_dtype", "vocab_size"]
    return {
        "model": name, "budget": float(cfg.budget), "seed": int(cfg.seed),
        "arch": {k: v for k, v in gcfg.__dict__.items() if (k, v) not in (("pos_emb", "learned"), ("qk_norm", False))},
        "data": fingerprint, "split": {k: str(cfg.data.get(k)) for k in data_keys},
        "train": {k: str(tc[k]) for k in keys}, "role": str(cfg.role),
        **({"lr_rule": load_rule(tc.get("lr_rule")).sha256} if str(tc.lr) == "rule" else {}), **schedule_spec(tc),
    }


def run_id(spec: dict[str, Any]) -> str:
    """A short stable hash of everything that determines a run's numbers (not where or how fast it ran)."""
    blob = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_id_of(cfg: DictConfig, fingerprint: str, vocab_size: int) -> str:
    """The run_id a run config gets on the corpus with this fingerprint and vocabulary."""
    name, gcfg = model_config(cfg.model, vocab_size)
    return run_id(run_spec(cfg, name, gcfg, fingerprint))


@dataclass(frozen=True)
class RunContext:
    """Everything one run derives from its config, resolved once and passed on (train, sweep, validate, cli).

    Two stages, since the corpus decides the vocabulary and the run_id: `RunContext.resolve(cfg, world)` checks
    the config without touching data (a bad budget or model is refused instantly), and
    `ctx.with_corpus(fingerprint, vocab_size)` completes it once the corpus is open."""

    budget: float
    results_dir: Path
    vocab_size: int
    name: str
    gcfg: GPTConfig
    plan: RunPlan
    peak_lr: float
    lr_source: str = ""  # fixed | auto | the rule file's tag (recorded in every result row)
    world: int = 1
    fingerprint: str = ""  # set by with_corpus, as is run_id
    run_id: str = ""
    warnings: tuple[str, ...] = ()  # e.g. an LR rule fitted on another corpus; train prints them
    cfg: DictConfig | None = field(default=None, repr=False, compare=False)  # the run config it came from

    @classmethod
    def resolve(cls, cfg: DictConfig, world: int = 1, vocab_size: int | None = None) -> RunContext:
        """Stage 1, no data: budget, model, step plan for `world` processes and peak LR, or a HarnessError
        (planned with vocab_size when the corpus' is known, else with the config's hint)."""
        budget = parse_budget(cfg.budget)
        check_train_settings(cfg)  # warmup, final LR, eval windows, curve points, role: in range before anything
        tc = cfg.train
        name, gcfg = model_config(cfg.model, vocab_size or vocab_hint(cfg))
        if int(tc.batch_size) % world:
            raise HarnessError(f"train.batch_size={tc.batch_size} must be divisible by the number of processes ({world})")
        plan = plan_steps(budget, gcfg, int(tc.batch_size), int(tc.min_steps), world)
        schedule_of(tc).check(plan.steps, float(tc.warmup_frac))  # WSD: cooldown long enough, after warmup
        lr, source = learning_rate(tc, gcfg, rule_tokens(tc, plan.sequences * gcfg.seq_len))
        return cls(budget, results_dir(cfg), gcfg.vocab_size, name, gcfg, plan, lr, source, world=world, cfg=cfg)

    def with_corpus(self, fingerprint: str, vocab_size: int) -> RunContext:
        """Stage 2: the model and plan for the corpus' vocabulary, and the run_id on this corpus."""
        if self.cfg is None:
            raise ValueError("with_corpus needs a context made by RunContext.resolve(cfg)")
        ctx = self if vocab_size == self.gcfg.vocab_size else RunContext.resolve(self.cfg, self.world, vocab_size)
        rid = run_id(run_spec(self.cfg, ctx.name, ctx.gcfg, fingerprint))
        rule = str(self.cfg.train.lr) == "rule"
        warn = tuple(rule_warnings(load_rule(self.cfg.train.get("lr_rule")), fingerprint, self.cfg.model, param_counts(
            ctx.gcfg), ctx.plan.sequences * ctx.gcfg.seq_len, self.cfg.train.get("schedule"))) if rule else ()
        return dataclasses.replace(ctx, fingerprint=fingerprint, run_id=rid, warnings=warn)

    @property
    def checkpoint_path(self) -> Path:
        """Where this run's resumable checkpoint lives while it trains (removed once it is recorded)."""
        return self.results_dir / "checkpoints" / f"{self.run_id}.pt"


def resolve_run(cfg: DictConfig, fingerprint: str, vocab_size: int, world: int = 1) -> RunContext:
    """Both stages at once for a corpus already open: the context (and run_id) harness.train.run would use."""
    return RunContext.resolve(cfg, world).with_corpus(fingerprint, vocab_size)


def job_config_for(cfg: DictConfig, d_model: int, budget: float, seed: int, role: str) -> DictConfig:
    """The harness-train config of one run of a sweep: the sweep's config with this size, budget, seed, role."""
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    job.model.d_model = d_model
    job.budget = budget
    job.seed = seed
    job.role = role
    return job


def sweep_seeds(cfg: DictConfig) -> list[int]:
    """The seeds every sweep point trains: sweep.seeds (distinct integers), or the run's seed when null."""
    return seed_list(cfg.sweep.get("seeds"), int(cfg.seed), "sweep.seeds")


@dataclass
class PlannedRun:
    """One run of an IsoFLOP sweep: a family member trained to one budget with one seed."""

    index: int
    budget: float
    seed: int
    d_model: int
    name: str
    params: int
    tokens: int
    steps: int
    est_seconds: float


def job_config(cfg: DictConfig, pr: PlannedRun) -> DictConfig:
    """The harness-train config of one planned run of a sweep."""
    return job_config_for(cfg, pr.d_model, pr.budget, pr.seed, "sweep")


def family_members(mc: DictConfig, vocab_size: int, d_min: int, d_max: int) -> list[tuple[str, GPTConfig]]:
    """Every size of the family with d_min <= d_model <= d_max (d_model steps by model.d_model_step)."""
    step = int(mc.d_model_step)
    start = max(step, math.ceil(d_min / step) * step)
    return [model_config(OmegaConf.merge(mc, {"d_model": d}), vocab_size) for d in range(start, int(d_max) + 1, step)]


def estimate_seconds(steps: int, batch_tokens: int, fpt: int, sc: DictConfig) -> float:
    """Rough wall time of one worker: matmul FLOPs at the sweep's FLOP rate plus a per-token cost for the
    non-matmul work (norms, softmax, embeddings, optimizer), which dominates the smallest models."""
    est = sc.get("estimate", {}) or {}
    rate = float(est.get("flops_per_second", 6.5e10))
    per_token = float(est.get("token_overhead_s", 2e-6))
    return steps * batch_tokens * (fpt / rate + per_token)


@dataclass
class _Family:
    """The family sizes a sweep picks from, with their parameter counts and FLOPs per token."""

    members: list[tuple[str, GPTConfig]]
    params: list[int]
    fpts: list[int]


def _family(cfg: DictConfig, vocab_size: int) -> _Family:
    """The family members inside sweep.d_model_min..d_model_max, refusing an empty range."""
    sc = cfg.sweep
    members = family_members(cfg.model, vocab_size, int(sc.d_model_min), int(sc.d_model_max))
    if not members:
        raise HarnessError(f"no family size has {sc.d_model_min} <= d_model <= {sc.d_model_max}; widen "
                           "sweep.d_model_min/max")
    return _Family(members, [param_counts(g)["params_total"] for _, g in members],
                   [flops_per_token(g) for _, g in members])


def _grid(C: float, fam: _Family, k: int, prior: tuple[float, float], notes: list[str]) -> list[int]:
    """Indices of the k family members spaced evenly in log N over sweep.spread around the prior optimum
    (prior = (sweep.tokens_per_param, sweep.spread), confcheck.grid_prior)."""
    r, spread = prior
    ratio = [C / f / p for f, p in zip(fam.fpts, fam.params)]  # tokens per param at this budget, falls with N
    log_n0 = _interp_log_n(fam.params, ratio, r)
    if log_n0 is None:
        notes.append(f"budget {C:.3g}: the prior optimum ({r:g} tokens/param) lies outside the family range "
                     f"{fam.params[0]}..{fam.params[-1]} params; the grid sits at the edge (widen d_model_min/max)")
        log_n0 = math.log(fam.params[0]) if ratio[0] < r else math.log(fam.params[-1])
    targets = [log_n0 + math.log(spread) * (i / (k - 1) - 0.5) for i in range(k)]
    return _nearest_unique(fam.params, targets)


def sized_run(cfg: DictConfig, C: float, name: str, g: GPTConfig, fpt: int) -> PlannedRun:
    """One family member at budget C (seed 0): the sequences and steps C buys it, sweep.min_steps unchecked."""
    B, T = int(cfg.train.batch_size), g.seq_len
    seqs = round(C / (fpt * T))
    steps = math.ceil(seqs / B)
    return PlannedRun(0, C, 0, g.d_model, name, param_counts(g)["params_total"], seqs * T, steps,
                      estimate_seconds(steps, B * T, fpt, cfg.sweep))


def _budget_runs(cfg: DictConfig, C: float, fam: _Family, chosen: list[int], seeds: list[int],
                 notes: list[str]) -> list[PlannedRun]:
    """The runs of one budget: each chosen size x seed, dropping sizes under sweep.min_steps steps."""
    min_steps = int(cfg.sweep.min_steps)
    sized = [sized_run(cfg, C, *fam.members[j], fam.fpts[j]) for j in chosen]
    dropped = [f"{pr.name} ({pr.steps} steps)" for pr in sized if pr.steps < min_steps]
    runs = [dataclasses.replace(pr, seed=s) for pr in sized if pr.steps >= min_steps for s in seeds]
    if dropped:
        notes.append(f"budget {C:.3g}: dropped {len(dropped)} size(s) with fewer than {min_steps} steps: "
                     + ", ".join(dropped))
    kept = len({pr.params for pr in runs})
    if kept < 3:
        raise HarnessError(f"budget {C:.3g} keeps {kept} size(s) after dropping those with < {min_steps} steps; "
                           "raise the budget, lower sweep.min_steps or widen sweep.d_model_min/max")
    return runs


def plan_sweep(cfg: DictConfig, vocab_size: int = 256) -> tuple[list[PlannedRun], list[str]]:
    """Budgets x sizes x seeds -> runs, plus notes for the user.

    For each budget the expected optimum N0 is where tokens/params equals sweep.tokens_per_param (a prior:
    ~20 in Hoffmann et al. 2022); sizes_per_budget targets are spaced evenly in log N over a factor
    sweep.spread around N0, each mapped to the nearest family member. Sizes that would train for fewer than
    sweep.min_steps steps are dropped (too few steps to finish warmup and decay: their loss says more about
    the schedule than about N), and budgets left with < 3 sizes are refused."""
    sc = cfg.sweep
    budgets = sweep_budgets(sc)
    k = sizes_per_budget(sc.sizes_per_budget)
    prior = grid_prior(sc)  # a non-positive prior or spread: one error here, not a math domain error below
    fam = _family(cfg, vocab_size)
    seeds = sweep_seeds(cfg)
    runs: list[PlannedRun] = []
    notes: list[str] = []
    for C in budgets:
        budget_runs = _budget_runs(cfg, C, fam, _grid(C, fam, k, prior, notes), seeds, notes)
        kept = len({pr.params for pr in budget_runs})
        if kept < k:
            notes.append(f"budget {C:.3g}: {kept} distinct sizes (asked {k}); the family is coarse here")
        runs += budget_runs
    # Job order = longest first (LPT), so parallel workers finish together instead of one idling at the end.
    order = sorted(runs, key=lambda pr: (-pr.est_seconds, pr.budget, pr.params, pr.seed))
    return [dataclasses.replace(pr, index=i) for i, pr in enumerate(order)], notes


def _nearest_unique(params: list[int], targets: list[float]) -> list[int]:
    """Each log-N target takes the nearest family member not taken yet, so a coarse family still yields
    len(targets) distinct sizes (the grid then spans a little more than asked)."""
    chosen: list[int] = []
    for t in targets:
        free = [j for j in range(len(params)) if j not in chosen]
        if not free:
            break
        chosen.append(min(free, key=lambda j: abs(math.log(params[j]) - t)))
    return sorted(chosen)


def _interp_log_n(params: list[int], ratio: list[float], r: float) -> float | None:
    """log N where tokens/param crosses r (interpolated in log-log), or None if r is outside the family."""
    for j in range(len(params) - 1):
        a, b = ratio[j], ratio[j + 1]
        if a >= r >= b:
            w = (math.log(a) - math.log(r)) / (math.log(a) - math.log(b)) if a != b else 0.0
            return math.log(params[j]) + w * (math.log(params[j + 1]) - math.log(params[j]))
    return None


def format_plan(runs: list[PlannedRun], notes: list[str], train_tokens: int | None = None) -> str:
    """The plan as a table to read before spending compute; epochs (tokens / train tokens) if train_tokens given."""
    w = max([16, *(len(pr.name) for pr in runs)])
    lines = [f"{'#':>3} {'budget':>9} {'model':<{w}} {'params':>9} {'tokens':>10} {'tok/param':>9} "
             f"{'steps':>6} {'seed':>4} {'est':>7}" + (f" {'epochs':>6}" if train_tokens else "")]
    lines.extend(f"{pr.index:>3} {pr.budget:>9.3g} {pr.name:<{w}} {pr.params:>9,} {pr.tokens:>10,} "
                 f"{pr.tokens / pr.params:>9.1f} {pr.steps:>6} {pr.seed:>4} {pr.est_seconds:>6.0f}s"
                 + (f" {pr.tokens / train_tokens:>6.2f}" if train_tokens else "")
                 for pr in sorted(runs, key=lambda pr: (pr.budget, pr.params, pr.seed)))
    total = sum(pr.est_seconds for pr in runs)
    lines.append(f"{len(runs)} runs, {sum(pr.budget for pr in runs):.3g} FLOPs, est. {total / 60:.1f} min "
                 "of one worker")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)
