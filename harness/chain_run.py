"""Train one WSD chain (harness.chain plans them): the trunk saves each shorter run's branch point as it passes
that run's cooldown start, then every shorter run resumes from its own as a normal run with a normal row."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from harness.chain import Branch, Chain, chain_job
from harness.data import load_corpus
from harness.fsutil import say
from harness.plan import resolve_run
from harness.results import find_ok
from harness.runtime import env_world_size
from harness.schedule import schedule_of
from harness.train import Trainer, run


class TrunkTrainer(Trainer):
    """The chain's longest run; after the step that ends a shorter run's stable phase it saves the state as that
    run's checkpoint (unless one is there: written earlier, or that branch has begun its cooldown)."""

    def __init__(self, *args: Any, points: dict[int, list[Path]], **kwargs: Any) -> None:
        self.points = points
        super().__init__(*args, **kwargs)

    def step(self) -> Any:
        """One step, then the branch points that fall here."""
        loss = super().step()
        for path in self.points.get(self.step_n, ()):
            if not path.exists():
                self.checkpoint(path)
        return loss


def run_chain(cfg: DictConfig, chain: Chain, jobs: list[DictConfig] | None = None) -> list[dict[str, Any]]:
    """Train a chain (the trunk, then every shorter branch from its branch point); returns the rows, trunk first.
    Branches with an ok row are skipped, so a killed chain rerun finishes only what is missing. jobs: each
    branch's harness-train config, when not an IsoFLOP sweep's (chain_job), e.g. the LR sweep's."""
    jobs = jobs or [chain_job(cfg, chain, b) for b in chain.branches]
    corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
    ctxs = [resolve_run(j, corpus.fingerprint, corpus.vocab_size, env_world_size()) for j in jobs]
    todo = [bool(cfg.get("force", False)) or find_ok(c.results_dir, c.run_id) is None for c in ctxs]
    # from the resolved step plans: under torchrun the sequence count rounds to the process count
    starts = [schedule_of(j.train).cooldown_start(c.plan.steps) for j, c in zip(jobs, ctxs)]
    points: dict[int, list[Path]] = {}
    for start, ctx, t in zip(starts[:-1], ctxs[:-1], todo[:-1]):
        if t:
            points.setdefault(start, []).append(ctx.checkpoint_path)
    say(f"[chain {chain.index}] {chain.name} seed {chain.seed}: {len(chain.branches)} budgets, "
        f"{sum(todo)} to train; {chain.flops_spent:.3g} FLOPs vs {chain.flops_independent:.3g} independent")
    make: Callable[..., Trainer] = functools.partial(TrunkTrainer, points=points)
    records = [run(jobs[-1], make=make, extra=_extra(chain.branches[-1], starts[-1], True))]
    for b, start, job, ctx in zip(chain.branches[:-1], starts[:-1], jobs[:-1], ctxs[:-1]):
        records.append(run(job, extra=_extra(b, start, ctx.checkpoint_path.exists())))
    return records


def _extra(b: Branch, start: int, branched: bool) -> dict[str, Any]:
    """A branch's chain columns: FLOPs spent and branch step (a branch trained from scratch: its full cost, 0)."""
    return {"flops_spent": b.flops_spent if branched else b.flops, "branch_step": start if branched else 0}
