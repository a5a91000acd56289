"""Repetition: how many passes over the train split each planned run makes, and the sweep's limit on it.

Muennighoff et al. 2023 (Scaling Data-Constrained Language Models) find up to ~4 epochs of repeated data almost
as good as fresh data, and returns falling fast beyond: a sweep whose large runs repeat a small corpus many
times measures memorisation, not scaling. So the plan shows epochs per run, the sweep warns above 1 epoch
and refuses above data.max_epochs.
"""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError
from harness.plan import PlannedRun

DEFAULT_MAX_EPOCHS = 4.0


def epochs(tokens: float, train_tokens: int) -> float:
    """Passes over the train split: tokens trained / tokens in the train split."""
    return tokens / max(1, train_tokens)


def max_epochs(dc: Any) -> float:
    """data.max_epochs, or DEFAULT_MAX_EPOCHS when unset."""
    return float(dc.get("max_epochs") or DEFAULT_MAX_EPOCHS)


def _names(runs: list[PlannedRun], train_tokens: int, limit: int = 4) -> str:
    """'#3 family-d64-L5 @ 1e12 (5.2 ep), ...' for the runs with the most epochs."""
    worst = sorted(runs, key=lambda pr: -pr.tokens)
    text = ", ".join(f"#{pr.index} {pr.name} @ {pr.budget:.3g} ({epochs(pr.tokens, train_tokens):.1f} ep)"
                     for pr in worst[:limit])
    return text + (f" and {len(worst) - limit} more" if len(worst) > limit else "")


def check_repetition(runs: list[PlannedRun], train_tokens: int, dc: Any) -> list[str]:
    """Warnings for runs above 1 epoch; a HarnessError naming the runs above data.max_epochs and the fixes."""
    limit = max_epochs(dc)
    over = [pr for pr in runs if epochs(pr.tokens, train_tokens) > limit]
    if over:
        raise HarnessError(
            f"{len(over)} of {len(runs)} planned runs would repeat the {train_tokens:,}-token train split more than "
            f"data.max_epochs={limit:g} times ({_names(over, train_tokens)}): repeated data past ~4 epochs is worth "
            "little (Muennighoff et al. 2023); use a bigger corpus, smaller sweep.budgets, or raise data.max_epochs"
        )
    repeated = [pr for pr in runs if epochs(pr.tokens, train_tokens) > 1]
    if not repeated:
        return []
    return [f"{len(repeated)} of {len(runs)} planned runs train more than one epoch of the {train_tokens:,}-token "
            f"train split ({_names(repeated, train_tokens)}); repeated tokens are worth less than fresh ones "
            "(Muennighoff et al. 2023), so the fit mixes scaling with repetition"]
