"""Learning-rate schedule settings: cosine (the default) or warmup-stable-decay (WSD), checked once.

WSD after Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"):
linear warmup, a constant LR, then a cooldown over the last `train.cooldown_frac` of the steps (shape `1-sqrt`,
their best, or `linear`) down to `min_lr_ratio`. Since the stable LR does not depend on the run's length, runs of
one size at several lengths share their stable phase, and cooldowns branched from one run give every length
(harness.chain). harness.train.lr_at computes the LR from these settings; this module holds only the step
arithmetic (where warmup ends, where the cooldown starts) and the checks, so the planner can use it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

SCHEDULES = ("cosine", "wsd")
SHAPES = ("1-sqrt", "linear")
MIN_COOLDOWN_STEPS = 3  # a shorter cooldown is a step change, not a decay


@dataclass(frozen=True)
class Schedule:
    """A run's LR schedule: kind, WSD cooldown fraction and shape, and a fixed warmup step count (or None:
    round(warmup_frac * steps), at least one)."""

    kind: str = "cosine"
    cooldown_frac: float = 0.2
    shape: str = "1-sqrt"
    warmup_steps: int | None = None

    @property
    def wsd(self) -> bool:
        """Whether this is warmup-stable-decay."""
        return self.kind == "wsd"

    def warmup(self, steps: int, warmup_frac: float) -> int:
        """Warmup length in steps: the fixed count (a WSD chain shares one), else a fraction of the run."""
        if self.warmup_steps is not None:
            return max(1, self.warmup_steps)
        return max(1, round(warmup_frac * steps))

    def cooldown_start(self, steps: int) -> int:
        """First step of the WSD cooldown: the last round(cooldown_frac * steps) steps decay."""
        return steps - round(self.cooldown_frac * steps)

    def check(self, steps: int, warmup_frac: float) -> None:
        """Refuse a WSD run whose cooldown is under MIN_COOLDOWN_STEPS or starts before warmup ends."""
        if not self.wsd:
            return
        cooldown, warmup = steps - self.cooldown_start(steps), self.warmup(steps, warmup_frac)
        if cooldown < MIN_COOLDOWN_STEPS:
            raise HarnessError(
                f"train.cooldown_frac={self.cooldown_frac:g} of {steps} steps leaves a cooldown of {cooldown} step(s) "
                f"(min {MIN_COOLDOWN_STEPS}); raise the budget or train.cooldown_frac, or use fewer/larger budgets")
        if warmup > self.cooldown_start(steps):
            raise HarnessError(
                f"warmup of {warmup} steps runs into the cooldown (starts at step {self.cooldown_start(steps)} of "
                f"{steps}); lower train.warmup_frac/warmup_steps or train.cooldown_frac, or raise the budget")

    def row(self) -> dict[str, Any]:
        """The schedule's columns of a result row (cosine: its decay spans the whole run after warmup)."""
        if self.wsd:
            return {"schedule": "wsd", "cooldown_frac": self.cooldown_frac, "cooldown_shape": self.shape}
        return {"schedule": "cosine", "cooldown_frac": 1.0, "cooldown_shape": "cosine"}


COSINE = Schedule()


def schedule_of(tc: Any) -> Schedule:
    """train.schedule, cooldown_frac, cooldown_shape and warmup_steps as a Schedule, or one HarnessError."""
    kind = str(tc.get("schedule") or "cosine")
    if kind not in SCHEDULES:
        raise HarnessError(f"unknown train.schedule={kind!r}; use cosine or wsd")
    shape = str(tc.get("cooldown_shape") or "1-sqrt")
    if shape not in SHAPES:
        raise HarnessError(f"unknown train.cooldown_shape={shape!r}; use 1-sqrt or linear")
    raw = tc.get("cooldown_frac", 0.2)
    try:
        frac = float(raw)
    except (TypeError, ValueError):
        frac = math.nan
    if not 0 < frac < 1:
        raise HarnessError(f"train.cooldown_frac={raw!r} must lie strictly between 0 and 1 (Hägele et al. 2024 "
                           "use 0.2)")
    warm = tc.get("warmup_steps")
    if warm is not None and (not isinstance(warm, int) or isinstance(warm, bool) or warm < 1):
        raise HarnessError(f"train.warmup_steps={warm!r} must be a positive integer, or null for warmup_frac")
    return Schedule(kind, frac, shape, warm)


def schedule_spec(tc: Any) -> dict[str, str]:
    """What the schedule adds to a run's identity (harness.plan.run_spec): nothing for a plain cosine run, so the
    run_ids of cosine runs stay what they were; the WSD settings, a fixed warmup and a fixed LR-rule length."""
    s = schedule_of(tc)
    spec = {"schedule": s.kind, "cooldown_frac": str(s.cooldown_frac), "cooldown_shape": s.shape} if s.wsd else {}
    if s.warmup_steps is not None:
        spec["warmup_steps"] = str(s.warmup_steps)
    if tc.get("lr_rule_tokens") is not None:
        spec["lr_rule_tokens"] = str(float(tc.lr_rule_tokens))
    return {"schedule": spec} if spec else {}


def rule_tokens(tc: Any, tokens: float) -> float:
    """The token count the LR rule is evaluated at: train.lr_rule_tokens when set (a WSD chain sets one for all
    its branches, since they share one stable LR), else the run's own."""
    fixed = tc.get("lr_rule_tokens")
    if fixed is None:
        return tokens
    try:
        value = float(fixed)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise HarnessError(f"train.lr_rule_tokens={fixed!r} must be a positive token count, or null")
    return value
