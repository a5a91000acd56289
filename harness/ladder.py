"""Size-ladder sweeps (sweep.kind=ladder): train a ladder of model sizes at one data rule, D = tokens_per_param x N
or a fixed number of tokens, so that L(N) can be fitted (Kaplan et al. 2020's loss-vs-parameters plot) and the
next larger size, trained afterwards as a held-out run, checks its prediction.

The rungs are named model presets (sweep.models, e.g. nano..small for GPU budgets) or family widths
(sweep.d_models, the CPU ladder); sweep.holdout.model or sweep.holdout.d_model names the held-out rung. Each
rung's budget is its exact FLOPs per token x its tokens, so harness.train.run trains it to exactly that D.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import CONF_DIR
from harness.counting import flops_per_token, param_counts
from harness.errors import HarnessError
from harness.plan import PlannedRun, estimate_seconds, model_config, sweep_seeds

LADDER_KIND = "ladder"


def is_ladder(cfg: DictConfig) -> bool:
    """Whether the sweep is a size ladder (sweep.kind=ladder)."""
    return str(cfg.sweep.get("kind", "")) == LADDER_KIND


@dataclass(frozen=True)
class Rung:
    """One ladder size: its model config node, name, parameter count (total) and FLOPs per token."""

    node: Any
    name: str
    d_model: int
    params: int
    fpt: int


def _preset(name: str) -> DictConfig:
    """conf/model/<name>.yaml, refused when there is no such preset."""
    path = Path(CONF_DIR) / "model" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml") if p.stem != "family")
        raise HarnessError(f"sweep.models names {name!r}, not a model preset; use some of {', '.join(known)}")
    return OmegaConf.load(path)


def _rung(cfg: DictConfig, entry: Any, vocab: int) -> Rung:
    """A rung from a preset name (sweep.models) or a family width (sweep.d_models)."""
    models = cfg.sweep.get("models")
    node = _preset(str(entry)) if models else OmegaConf.merge(cfg.model, {"d_model": int(entry)})
    name, g = model_config(node, vocab)
    return Rung(node, name, g.d_model, param_counts(g)["params_total"], flops_per_token(g))


def rungs(cfg: DictConfig, vocab: int) -> tuple[list[Rung], Rung]:
    """(the fitted rungs, smallest first; the held-out rung), refusing fewer than 3 sizes or a held-out rung that
    is not larger than all of them."""
    sc = cfg.sweep
    entries = list(sc.get("models") or sc.get("d_models") or [])
    if len(entries) < 3:
        raise HarnessError(f"a size ladder needs >= 3 sizes (Kaplan's L(N) has 2 parameters; 4 sizes also fit "
                           f"E + A N^-alpha), got {len(entries)}; list them in sweep.models (presets) or "
                           "sweep.d_models (family widths)")
    fitted = sorted((_rung(cfg, e, vocab) for e in entries), key=lambda r: r.params)
    held = sc.holdout.get("model") if sc.get("models") else sc.holdout.get("d_model")
    if held is None:
        raise HarnessError("the ladder has no held-out size; set sweep.holdout.model (with sweep.models) or "
                           "sweep.holdout.d_model (with sweep.d_models) to the next larger size")
    holdout = _rung(cfg, held, vocab)
    if holdout.params <= fitted[-1].params:
        raise HarnessError(f"the held-out size {holdout.name} ({holdout.params:,} params) is not larger than the "
                           f"ladder's largest {fitted[-1].name} ({fitted[-1].params:,}); hold out the next larger size")
    return fitted, holdout


def rung_tokens(cfg: DictConfig, rung: Rung) -> int:
    """Training tokens of a rung under the ladder's data rule: sweep.tokens_per_param x N, or sweep.tokens."""
    sc = cfg.sweep
    ratio, fixed = sc.get("tokens_per_param"), sc.get("tokens")
    if (ratio is None) == (fixed is None):
        raise HarnessError("a size ladder needs exactly one data rule: sweep.tokens_per_param=<r> (D = r N) or "
                           "sweep.tokens=<D> (the same D for every size)")
    tokens = float(ratio) * rung.params if ratio is not None else float(fixed)
    if not math.isfinite(tokens) or tokens <= 0:
        raise HarnessError(f"the ladder's data rule gives {tokens:g} tokens; use a positive tokens_per_param or tokens")
    return int(tokens)


def rung_budget(cfg: DictConfig, rung: Rung) -> float:
    """The FLOPs that train the rung on exactly its tokens (exact FLOPs per token, harness.counting)."""
    return float(rung_tokens(cfg, rung) * rung.fpt)


def plan_ladder(cfg: DictConfig, vocab_size: int = 256) -> tuple[list[PlannedRun], list[str]]:
    """The fitted rungs x seeds as planned runs (longest first), refusing rungs under sweep.min_steps steps."""
    sc = cfg.sweep
    fitted, holdout = rungs(cfg, vocab_size)
    B = int(cfg.train.batch_size)
    runs = []
    for r in fitted:
        T = int(r.node.seq_len)
        tokens = rung_tokens(cfg, r)
        steps = math.ceil(tokens / (B * T))
        if steps < int(sc.min_steps):
            raise HarnessError(f"ladder size {r.name} trains {steps} steps on {tokens:,} tokens (min {sc.min_steps}); "
                               "raise sweep.tokens_per_param or sweep.tokens, or lower train.batch_size")
        runs += [PlannedRun(0, rung_budget(cfg, r), s, r.d_model, r.name, r.params, tokens, steps,
                            estimate_seconds(steps, B * T, r.fpt, sc)) for s in sweep_seeds(cfg)]
    rule = (f"D = {float(sc.tokens_per_param):g} x N" if sc.get("tokens_per_param") is not None
            else f"D = {float(sc.tokens):.3g} tokens")
    notes = [f"size ladder at {rule}; held out afterwards: {holdout.name} ({holdout.params:,} params, "
             f"{rung_tokens(cfg, holdout):,} tokens)"]
    order = sorted(runs, key=lambda pr: (-pr.est_seconds, pr.params, pr.seed))
    return [dataclasses.replace(pr, index=i) for i, pr in enumerate(order)], notes


def ladder_job(cfg: DictConfig, rung: Rung, seed: int, role: str) -> DictConfig:
    """The harness-train config of one rung: the sweep's config with this model, its budget, seed and role."""
    job = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    job.model = OmegaConf.create(OmegaConf.to_container(rung.node, resolve=True))
    job.budget = rung_budget(cfg, rung)
    job.seed = seed
    job.role = role
    return job


def ladder_job_config(cfg: DictConfig, pr: PlannedRun, vocab_size: int = 256) -> DictConfig:
    """The harness-train config of a planned ladder run (the rung found again by its name)."""
    fitted, _ = rungs(cfg, vocab_size)
    rung = next(r for r in fitted if r.name == pr.name)
    return ladder_job(cfg, rung, pr.seed, "sweep")
