"""Held-out validation: fits from a sweep table, a real held-out run, the comparison and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import harness.cli
from harness.analysis.estimate import Estimate
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.validate import compare, target_budget, validate

BUDGETS = (3e8, 1e9, 3e9)


def _cfg(text_corpus: Path, tmp_path: Path, *extra: str):
    with initialize_config_dir(config_dir=harness.cli.CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=[
            "data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
            f"results_dir={tmp_path / 'res'}", "model.seq_len=32", "train.batch_size=4", "train.eval_windows=8",
            "train.progress=false", "train.checkpoint_every_s=0", "sweep.holdout.threads=1",
            f"sweep.budgets=[{','.join(str(b) for b in BUDGETS)}]", "sweep.min_steps=5", "analysis.bootstrap=50",
            *extra,
        ])


def _sweep_table(cfg, tmp_path: Path) -> Path:
    """A sweep's results.csv drawn from a known law, stamped with the real corpus fingerprint."""
    fp = load_corpus(cfg.data, 32).fingerprint
    df = isoflop_sweep(Law(), budgets=BUDGETS, sizes_per_budget=5, noise=0.002, seed=0)
    df["data_fingerprint"] = fp
    res = tmp_path / "res"
    res.mkdir()
    df.to_csv(res / "results.csv", index=False)
    return res


def test_target_budget_multiple_and_absolute(text_corpus: Path, tmp_path: Path) -> None:
    assert target_budget(_cfg(text_corpus, tmp_path)) == pytest.approx(4 * 3e9)
    assert target_budget(_cfg(text_corpus, tmp_path, "sweep.holdout.budget=5e10")) == pytest.approx(5e10)
    with pytest.raises(HarnessError, match="multiple"):
        target_budget(_cfg(text_corpus, tmp_path, "sweep.holdout.multiple=0"))


def test_compare_errors_and_interval() -> None:
    c = compare(2.0, Estimate(2.1, 1.9, 2.2, 50))
    assert c["abs_error"] == pytest.approx(-0.1)
    assert c["rel_error"] == pytest.approx(-0.05)
    assert c["inside"] is True
    assert compare(2.5, Estimate(2.1, 1.9, 2.2, 50))["inside"] is False
    assert c["predicted"] == Estimate(2.1, 1.9, 2.2, 50)
    missing = compare(2.0, Estimate(None))
    assert missing["abs_error"] is None and missing["inside"] is None


def test_validate_trains_holdout_compares_and_never_fits_it(text_corpus: Path, tmp_path: Path,
                                                            restore_torch_threads) -> None:
    cfg = _cfg(text_corpus, tmp_path)
    res = _sweep_table(cfg, tmp_path)
    out = validate(cfg)
    v = out["validation"]
    rows = pd.read_csv(res / "results.csv")
    hold = rows[rows.role == "holdout"]
    assert len(hold) == 1 and hold.status.iloc[0] == "ok"
    assert v["run_id"] == hold.run_id.iloc[0]
    assert v["budget"] == pytest.approx(1.2e10)
    assert float(hold.flops.iloc[0]) == pytest.approx(1.2e10, rel=0.01)
    assert v["actual"] == pytest.approx(float(hold.val_bpb.iloc[0]))
    # the fits saw only the 15 sweep rows, never the held-out one
    assert out["fits"].data["n_used"] == 15
    for name in ("approach2", "approach3"):
        c = v["comparison"][name]
        p = c["predicted"]
        assert p.value is not None and c["rel_error"] == pytest.approx((c["actual"] - p.value) / c["actual"])
    fits_json = json.loads((res / "fits.json").read_text())
    assert fits_json["validation"]["run_id"] == v["run_id"]
    assert set(fits_json["validation"]["comparison"]["approach2"]["predicted"]) == {"value", "lo", "hi", "n"}
    assert len(fits_json["predictions"]) == 2  # the default 10x and 100x targets, attached by validate
    report = (res / "report.md").read_text()
    assert "## Held-out validation" in report and v["model"] in report
    assert (res / "frontier.png").stat().st_size > 0

    # rerunning resumes: the held-out run has an ok row, so nothing is trained again and numbers agree
    again = validate(cfg)
    assert again["record"]["run_id"] == v["run_id"]
    assert again["validation"]["actual"] == v["actual"]
    assert len(pd.read_csv(res / "results.csv")) == 16


def test_validate_without_results_says_run_the_sweep(text_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="run the sweep first"):
        validate(_cfg(text_corpus, tmp_path))
