"""The value checks of harness.confcheck: each bad value is one HarnessError naming the setting, refused by
harness-train (RunContext.resolve) before anything is written, and good values pass unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness import CONF_DIR
from harness.confcheck import (
    ROLES,
    check_train_settings,
    fixed_lr,
    grid_prior,
    seed_list,
    sizes_per_budget,
    sizes_warning,
)
from harness.errors import HarnessError
from harness.plan import RunContext
from tests.conftest import SWEEP_SMALL

# (override, what the message must name): each trained and wrote a row before (warmup_frac=2 warmed up for 34 of
# 17 steps, eval_windows=0 measured one window, role=holdoutt wrote a row no fit reads as either role).
BAD_TRAIN = [
    ("train.warmup_frac=2", r"train\.warmup_frac=2 must be in \[0, 1\)"),
    ("train.warmup_frac=1", r"train\.warmup_frac=1 must be in \[0, 1\)"),
    ("train.warmup_frac=-1", r"train\.warmup_frac=-1 must be in \[0, 1\)"),
    ("train.warmup_frac=nan", r"train\.warmup_frac=nan"),
    ("train.min_lr_ratio=1.5", r"train\.min_lr_ratio=1\.5 must be in \[0, 1\]"),
    ("train.min_lr_ratio=-0.1", r"train\.min_lr_ratio=-0\.1 must be in \[0, 1\]"),
    ("train.eval_windows=0", r"train\.eval_windows=0 must be an integer >= 1"),
    ("train.eval_windows=-3", r"train\.eval_windows=-3 must be an integer >= 1"),
    ("train.eval_windows=2.5", r"train\.eval_windows=2\.5 must be an integer >= 1"),
    ("train.curve_points=-1", r"train\.curve_points=-1 must be an integer >= 0"),
    ("train.curve_eval_windows=0", r"train\.curve_eval_windows=0 must be an integer >= 1"),
    ("train.batch_size=0", r"train\.batch_size=0 must be a positive integer"),
    ("train.lr=fast", r"train\.lr='fast' must be auto, rule or a positive number"),
    ("train.lr=-1e-3", r"train\.lr=-0\.001 must be auto, rule or a positive number"),
    ("role=holdoutt", r"unknown role='holdoutt' \(did you mean 'holdout'\?\); use one of sweep, holdout, tune"),
    ("role=fitted", r"unknown role='fitted'"),
]


def run_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("run", overrides=list(overrides))


def sweep_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=list(overrides))


@pytest.mark.parametrize(("override", "match"), BAD_TRAIN)
def test_bad_train_settings_are_one_error_naming_them(override: str, match: str) -> None:
    with pytest.raises(HarnessError, match=match) as e:
        check_train_settings(run_cfg(override))
    assert "\n" not in str(e.value)
    with pytest.raises(HarnessError, match=match):  # the context every run resolves first refuses it too
        RunContext.resolve(run_cfg("model=nano", "budget=1e10", override))


@pytest.mark.parametrize("override", ["train.warmup_frac=0", "train.warmup_frac=0.99", "train.min_lr_ratio=0",
                                      "train.min_lr_ratio=1", "train.eval_windows=1", "train.curve_points=0",
                                      "train.lr=3e-3", "train.lr=rule", "role=holdout", "role=tune"])
def test_edge_values_in_range_pass(override: str) -> None:
    check_train_settings(run_cfg(override))


def test_roles_are_the_ones_the_harness_writes() -> None:
    assert set(ROLES) == {"sweep", "holdout", "tune"}
    assert fixed_lr("auto") is None and fixed_lr("rule") is None and fixed_lr(1e-3) == pytest.approx(1e-3)


@pytest.mark.parametrize(("override", "match"), BAD_TRAIN[:3] + BAD_TRAIN[6:7] + BAD_TRAIN[-2:-1])
def test_harness_train_refuses_before_writing(tiny_cfg, tmp_path: Path, override: str, match: str) -> None:
    from harness.train import run

    with pytest.raises(HarnessError, match=match):
        run(tiny_cfg(override))
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(("raw", "match"), [
    ([], r"sweep\.seeds=\[\] names no seed"),
    ([1, 1], r"sweep\.seeds=\[1,1\] must be distinct integers"),
    (["a"], r"sweep\.seeds=\[a\] must be distinct integers"),
    ([1.5], r"sweep\.seeds=\[1\.5\] must be distinct integers"),
    ([True], r"must be distinct integers"),
])
def test_bad_seed_lists_refused(raw: list, match: str) -> None:
    with pytest.raises(HarnessError, match=match):
        seed_list(OmegaConf.create({"s": raw}).s, 0, "sweep.seeds")


def test_seed_lists_null_means_the_runs_seed() -> None:
    assert seed_list(None, 7, "sweep.seeds") == [7]
    assert seed_list(OmegaConf.create({"s": [2, 0]}).s, 7, "sweep.seeds") == [2, 0]
    assert seed_list(3, 7, "sweep.seeds") == [3]


@pytest.mark.parametrize(("override", "match"), [
    ("sweep.spread=-2", r"sweep\.spread=-2 must be a number > 1"),
    ("sweep.spread=0", r"sweep\.spread=0 must be a number > 1"),
    ("sweep.spread=1", r"sweep\.spread=1 must be a number > 1"),
    ("sweep.spread=inf", r"sweep\.spread=inf must be a number > 1"),
    ("sweep.tokens_per_param=0", r"sweep\.tokens_per_param=0 must be a positive number"),
    ("sweep.tokens_per_param=-20", r"sweep\.tokens_per_param=-20 must be a positive number"),
])
def test_bad_grid_prior_refused(override: str, match: str) -> None:
    with pytest.raises(HarnessError, match=match):
        grid_prior(sweep_cfg(*SWEEP_SMALL, override).sweep)


def test_sizes_per_budget_and_its_warning() -> None:
    assert grid_prior(sweep_cfg("sweep.spread=8", "sweep.tokens_per_param=20").sweep) == (20.0, 8.0)
    for bad in (2, 0, -1, "many", 3.5):
        with pytest.raises(HarnessError, match=r"sweep\.sizes_per_budget=.* must be an integer >= 3"):
            sizes_per_budget(bad)
    assert sizes_per_budget(3) == 3 and sizes_per_budget(5) == 5
    (warning,) = sizes_warning(3)
    assert "zero-width" in warning and "sweep.sizes_per_budget>=4" in warning
    assert sizes_warning(4) == [] and sizes_warning(7) == []
