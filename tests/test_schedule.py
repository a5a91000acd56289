"""LR schedules (harness.schedule, harness.train.lr_at): cosine unchanged, WSD's warmup, stable phase and 1-sqrt or
linear cooldown at chosen steps, the recorded columns, and one clear error per bad setting."""

from __future__ import annotations

import itertools
import math

import pytest
from omegaconf import OmegaConf

from harness.errors import HarnessError
from harness.plan import RunContext, run_spec
from harness.schedule import MIN_COOLDOWN_STEPS, Schedule, schedule_of, schedule_spec
from harness.train import lr_at

PEAK, MIN = 1e-2, 0.1


def test_cosine_is_the_default_and_unchanged() -> None:
    """The cosine values of the harness before WSD (warmup 5 of 100 steps, half-way cosine, floor)."""
    assert lr_at(0, 100, PEAK, 0.05, MIN) == pytest.approx(PEAK / 5)
    assert lr_at(4, 100, PEAK, 0.05, MIN) == pytest.approx(PEAK)
    mid = 5 + (100 - 5) / 2  # progress 0.5: min + (1 - min) / 2
    assert lr_at(int(mid), 100, PEAK, 0.05, MIN) == pytest.approx(PEAK * (MIN + (1 - MIN) * 0.5 * (
        1 + math.cos(math.pi * (int(mid) - 5) / 95))))
    assert lr_at(60, 100, PEAK, 0.05, MIN) < PEAK * 0.6
    assert schedule_of(OmegaConf.create({})) == Schedule()


@pytest.mark.parametrize("shape", ["1-sqrt", "linear"])
def test_wsd_lr_at_chosen_steps(shape: str) -> None:
    """100 steps, warmup 5, cooldown_frac 0.2: steps 80..99 decay, the last one at min_lr_ratio * peak."""
    s = Schedule("wsd", 0.2, shape)
    lr = [lr_at(t, 100, PEAK, 0.05, MIN, s) for t in range(100)]
    assert lr[0] == pytest.approx(PEAK / 5) and lr[4] == pytest.approx(PEAK)
    assert all(x == PEAK for x in lr[5:80])  # stable: exactly the peak
    f = (lambda p: 1 - math.sqrt(p)) if shape == "1-sqrt" else (lambda p: 1 - p)
    for t in (80, 85, 90, 99):
        p = (t - 80 + 1) / 20
        assert lr[t] == pytest.approx(PEAK * (MIN + (1 - MIN) * f(p))), t
    assert lr[99] == pytest.approx(PEAK * MIN)
    assert all(a > b for a, b in itertools.pairwise(lr[79:]))  # strictly decreasing through the cooldown
    if shape == "1-sqrt":  # 1-sqrt drops fast first: below linear at every inner cooldown step
        assert all(lr[t] < PEAK * (MIN + (1 - MIN) * (1 - (t - 79) / 20)) for t in range(80, 99))


def test_wsd_stable_phase_does_not_depend_on_the_length() -> None:
    """With one warmup step count, runs of 50, 120 and 400 steps have the same LR until the shortest one's
    cooldown: what lets a chain branch them from one run (harness.chain)."""
    s = Schedule("wsd", 0.2, "1-sqrt", warmup_steps=3)
    starts = {n: s.cooldown_start(n) for n in (50, 120, 400)}
    assert starts == {50: 40, 120: 96, 400: 320}
    for t in range(starts[50]):
        assert lr_at(t, 50, PEAK, 0.05, MIN, s) == lr_at(t, 120, PEAK, 0.05, MIN, s) == lr_at(t, 400, PEAK, 0.05, MIN, s)
    assert lr_at(2, 400, PEAK, 0.05, MIN, s) == PEAK and lr_at(1, 400, PEAK, 0.05, MIN, s) < PEAK


def test_schedule_columns_of_a_row() -> None:
    assert Schedule("wsd", 0.25, "linear").row() == {"schedule": "wsd", "cooldown_frac": 0.25,
                                                     "cooldown_shape": "linear"}
    assert Schedule().row()["schedule"] == "cosine"


def test_cosine_run_ids_are_unchanged_and_wsd_ones_differ(tiny_cfg) -> None:
    cos = tiny_cfg()
    assert schedule_spec(cos.train) == {}  # so every existing cosine run_id stays what it was
    wsd = tiny_cfg("train.schedule=wsd")
    assert run_spec(wsd, "m", RunContext.resolve(wsd).gcfg, "fp")["schedule"] == {
        "schedule": "wsd", "cooldown_frac": "0.2", "cooldown_shape": "1-sqrt"}
    assert schedule_spec(tiny_cfg("train.schedule=wsd", "train.cooldown_shape=linear").train) != schedule_spec(wsd.train)


@pytest.mark.parametrize(("override", "message"), [
    ("train.cooldown_frac=0", r"cooldown_frac=0.* strictly between 0 and 1"),
    ("train.cooldown_frac=1", r"cooldown_frac=1.* strictly between 0 and 1"),
    ("train.cooldown_frac=1.5", "strictly between 0 and 1"),
    ("train.cooldown_frac=-0.2", "strictly between 0 and 1"),
    ("train.schedule=step", "unknown train.schedule='step'; use cosine or wsd"),
    ("train.cooldown_shape=cosine", "unknown train.cooldown_shape='cosine'; use 1-sqrt or linear"),
    ("train.warmup_steps=0", "warmup_steps=0 must be a positive integer"),
    ("train.cooldown_frac=0.05", rf"leaves a cooldown of 2 step\(s\) \(min {MIN_COOLDOWN_STEPS}\)"),
    ("train.warmup_steps=30", "warmup of 30 steps runs into the cooldown"),
])
def test_bad_schedule_settings_are_one_clear_error(tiny_cfg, override: str, message: str) -> None:
    """conftest's BUDGET buys 32 steps: 0.05 of them is a 2-step cooldown; warmup 30 overlaps step 26's."""
    cfg = tiny_cfg("train.schedule=wsd", override)
    with pytest.raises(HarnessError, match=message):
        RunContext.resolve(cfg)


def test_a_bad_cooldown_fraction_exits_2_with_one_line(run_cli, tiny_overrides) -> None:
    out = run_cli("harness-train", *tiny_overrides, "train.schedule=wsd", "train.cooldown_frac=1.2")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: train.cooldown_frac=1.2 must lie strictly between")
