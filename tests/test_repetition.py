"""Repetition: epochs per planned run in the plan table, a warning above 1 epoch, a refusal above
data.max_epochs (naming the runs and the fix), and the analysis flagging fits on repeated data."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.analysis.load import select_fit_rows
from harness.errors import HarnessError
from harness.plan import plan_sweep
from harness.repetition import check_repetition
from harness.sweep import dry_run_text, sweep
from tests.conftest import SWEEP_SMALL


def sweep_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=list(overrides))


def args(text_corpus: Path, tmp_path: Path, budgets: str) -> list[str]:
    return [*SWEEP_SMALL, f"sweep.budgets={budgets}", "data=text", f"data.path={text_corpus}",
            f"data.cache_dir={tmp_path / 'cache'}", f"results_dir={tmp_path / 'res'}"]


def test_plan_shows_epochs_and_warns_above_one(text_corpus: Path, tmp_path: Path, capsys) -> None:
    cfg = sweep_cfg(*args(text_corpus, tmp_path, "[1e9,5e9]"), "print=plan")
    out = sweep(cfg)
    err = capsys.readouterr().err
    text = dry_run_text(cfg, out)
    header = text.splitlines()[0]
    assert header.split()[-1] == "epochs"
    train_tokens = int(re.search(r"of the ([\d,]+)-token train split", err).group(1).replace(",", ""))
    for pr in out["runs"]:
        row = next(line for line in text.splitlines() if line.split()[0] == str(pr.index))
        assert float(row.split()[-1]) == pytest.approx(pr.tokens / train_tokens, abs=0.006)
    many = [pr for pr in out["runs"] if pr.tokens > train_tokens]
    assert many and err.startswith(f"warning: {len(many)} of {len(out['runs'])} planned runs train more than one")


def test_sweep_refuses_runs_above_max_epochs(text_corpus: Path, tmp_path: Path) -> None:
    cfg = sweep_cfg(*args(text_corpus, tmp_path, "[1e9,1e11]"))
    with pytest.raises(HarnessError) as e:
        sweep(cfg)
    msg = str(e.value)
    assert "data.max_epochs=4" in msg and "bigger corpus" in msg and "raise data.max_epochs" in msg
    assert "\n" not in msg and re.search(r"#\d+ family-d\d+-L\d+ @ 1e\+11 \(\d+\.\d ep\)", msg)
    sweep(sweep_cfg(*args(text_corpus, tmp_path, "[1e9,1e11]"), "data.max_epochs=1000"))  # the limit is a setting


def test_check_repetition_counts_only_runs_over_the_limit() -> None:
    cfg = sweep_cfg(*SWEEP_SMALL)
    runs, _ = plan_sweep(cfg)
    most = max(pr.tokens for pr in runs)
    assert check_repetition(runs, most * 10, cfg.data) == []
    assert len(check_repetition(runs, most - 1, cfg.data)) == 1
    n_most = sum(pr.tokens == most for pr in runs)
    with pytest.raises(HarnessError, match=rf"^{n_most} of {len(runs)} planned runs would repeat"):
        check_repetition(runs, most // 4 - 1, cfg.data)  # only the longest runs exceed 4 epochs


def test_analysis_flags_fits_on_repeated_data_and_approximate_bpb() -> None:
    df = pd.DataFrame({"params": [1e5, 2e5, 4e5], "tokens": [1e7, 5e6, 2.5e6], "flops": [6e12] * 3,
                       "loss": [1.0, 0.9, 1.1], "budget": [6e12] * 3, "epochs": [3.5, 0.8, 0.4],
                       "bpb_method": ["exact"] * 3})
    warnings = select_fit_rows(df).warnings
    assert len(warnings) == 1 and "1 of 3 fitted runs trained on repeated data (up to 3.5 epochs" in warnings[0]
    fresh = select_fit_rows(df.assign(epochs=0.5, bpb_method="approximate")).warnings
    assert len(fresh) == 1 and fresh[0].startswith("val_bpb is approximate")
    assert select_fit_rows(df.drop(columns=["epochs", "bpb_method"])).warnings == []


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "true"])
def test_bad_max_epochs_is_one_error_not_the_default(text_corpus: Path, tmp_path: Path, value: str) -> None:
    """data.max_epochs=0 was silently the default (4) and -1 refused every run as repetition; each is now refused
    as the setting it is, by the dry run, before anything is written."""
    from harness.repetition import max_epochs

    with pytest.raises(HarnessError, match=r"data\.max_epochs=.* must be a positive number of passes"):
        max_epochs({"max_epochs": value})
    with pytest.raises(HarnessError, match=r"data\.max_epochs="):
        sweep(sweep_cfg(*args(text_corpus, tmp_path, "[1e9,2e9]"), f"data.max_epochs={value}"))
    assert not (tmp_path / "res").exists()


def test_max_epochs_null_is_the_default_and_a_fraction_is_a_limit() -> None:
    from omegaconf import OmegaConf

    from harness.repetition import DEFAULT_MAX_EPOCHS, max_epochs

    assert max_epochs(OmegaConf.create({"max_epochs": None})) == DEFAULT_MAX_EPOCHS == 4
    assert max_epochs(OmegaConf.create({})) == 4
    assert max_epochs(OmegaConf.create({"max_epochs": 0.5})) == 0.5


def test_held_out_runs_are_named_with_their_own_fix() -> None:
    from harness.repetition import HOLDOUT_FIX

    runs, _ = plan_sweep(sweep_cfg(*SWEEP_SMALL))
    most = max(pr.tokens for pr in runs)
    with pytest.raises(HarnessError) as e:
        check_repetition(runs[:1] + [r for r in runs if r.tokens == most][:1], most // 5, {}, "held-out", HOLDOUT_FIX)
    msg = str(e.value)
    assert re.match(r"\d of 2 held-out runs would repeat", msg) and "smaller sweep.holdout.multiples" in msg
    assert "sweep.budgets" not in msg and "raise data.max_epochs" in msg
