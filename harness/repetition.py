"""Repetition: how many passes over the train split each planned run makes, and the sweep's limit on it.

Muennighoff et al. 2023 (Scaling Data-Constrained Language Models) find up to ~4 epochs of repeated data almost
as good as fresh data, and returns falling fast beyond: a sweep whose large runs repeat a small corpus many
times measures memorisation, not scaling. So the plan shows epochs per run, the sweep warns above 1 epoch
and refuses above data.max_epochs, and harness-validate applies the same rule to its held-out runs.
"""

from __future__ import annotations

from typing import Any

from harness.confcheck import number_in
from harness.errors import HarnessError
from harness.plan import PlannedRun

DEFAULT_MAX_EPOCHS = 4.0
# The fix check_repetition names besides a bigger corpus and a higher data.max_epochs: smaller budgets of the grid,
# or (harness.validate, for the held-out runs) a held-out ladder closer to the sweep.
SWEEP_FIX = "smaller sweep.budgets"
HOLDOUT_FIX = "smaller sweep.holdout.multiples (or sweep.holdout.budgets)"


def epochs(tokens: float, train_tokens: int) -> float:
    """Passes over the train split: tokens trained / tokens in the train split."""
    return tokens / max(1, train_tokens)


def max_epochs(dc: Any) -> float:
    """data.max_epochs, or DEFAULT_MAX_EPOCHS when unset (null); a HarnessError unless it is a positive number (0
    must not silently mean the default, nor -1 refuse every run with a message about repetition)."""
    raw = dc.get("max_epochs")
    if raw is None:
        return DEFAULT_MAX_EPOCHS
    return number_in("data.max_epochs", raw, lambda x: x > 0, "a positive number of passes over the train split "
                     f"(default {DEFAULT_MAX_EPOCHS:g}; null for the default)")


def _names(runs: list[PlannedRun], train_tokens: int, limit: int = 4) -> str:
    """'#3 family-d64-L5 @ 1e12 (5.2 ep), ...' for the runs with the most epochs."""
    worst = sorted(runs, key=lambda pr: -pr.tokens)
    text = ", ".join(f"#{pr.index} {pr.name} @ {pr.budget:.3g} ({epochs(pr.tokens, train_tokens):.1f} ep)"
                     for pr in worst[:limit])
    return text + (f" and {len(worst) - limit} more" if len(worst) > limit else "")


def check_repetition(runs: list[PlannedRun], train_tokens: int, dc: Any, kind: str = "planned",
                     fix: str = SWEEP_FIX) -> list[str]:
    """Warnings for runs above 1 epoch; a HarnessError naming the runs above data.max_epochs and the fixes. `kind`
    names the runs (planned: the sweep's grid; held-out: harness.validate's ladder), `fix` the setting to lower."""
    limit = max_epochs(dc)
    over = [pr for pr in runs if epochs(pr.tokens, train_tokens) > limit]
    if over:
        raise HarnessError(
            f"{len(over)} of {len(runs)} {kind} runs would repeat the {train_tokens:,}-token train split more than "
            f"data.max_epochs={limit:g} times ({_names(over, train_tokens)}): repeated data past ~4 epochs is worth "
            f"little (Muennighoff et al. 2023); use a bigger corpus, {fix}, or raise data.max_epochs"
        )
    repeated = [pr for pr in runs if epochs(pr.tokens, train_tokens) > 1]
    if not repeated:
        return []
    return [f"{len(repeated)} of {len(runs)} {kind} runs train more than one epoch of the {train_tokens:,}-token "
            f"train split ({_names(repeated, train_tokens)}); repeated tokens are worth less than fresh ones "
            "(Muennighoff et al. 2023), so the fit mixes scaling with repetition"]
