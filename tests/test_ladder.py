"""Size-ladder sweeps (harness.ladder, harness.ladder_validate): the plan at one data rule, its refusals, the
preset ladder, and the last step (fit L(N), train the held-out size, compare, report) on a tiny corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.analysis.synthetic import Law, runs_table
from harness.counting import flops_per_token
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.ladder import ladder_job_config, plan_ladder, rung_tokens, rungs
from harness.ladder_validate import validate_ladder
from harness.plan import model_config, vocab_hint
from harness.validate import analysis_config


def job_fpt(job) -> int:
    return flops_per_token(model_config(job.model, vocab_hint(job))[1])


def cfg(*overrides: str, sweep: str = "ladder"):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=[f"sweep={sweep}", *overrides])


def test_cpu_ladder_plans_every_size_at_one_data_rule() -> None:
    c = cfg()
    runs, notes = plan_ladder(c, vocab_hint(c))
    assert len(runs) == len(c.sweep.d_models) and len({r.params for r in runs}) == len(runs)
    assert all(r.tokens == int(20 * r.params) for r in runs)  # the CPU ladder's rule: D = 20 N
    for r in runs:
        job = ladder_job_config(c, r, vocab_hint(c))
        assert job.model.d_model == r.d_model and job.budget == pytest.approx(r.budget) and job.role == "sweep"
        assert r.budget == pytest.approx(r.tokens * job_fpt(job))
    assert "held out afterwards: family-d64" in notes[0]
    fixed, _ = plan_ladder(cfg("sweep.tokens_per_param=null", "sweep.tokens=1.5e6"))
    assert {r.tokens for r in fixed} == {1_500_000}


def test_gpu_ladder_uses_the_presets() -> None:
    c = cfg(sweep="ladder_gpu")
    fitted, holdout = rungs(c, vocab_hint(c))
    assert [r.name for r in fitted] == ["nano", "micro", "mini"] and holdout.name == "small"
    assert rung_tokens(c, holdout) == 20 * holdout.params


@pytest.mark.parametrize(("overrides", "message"), [
    (["sweep.d_models=[16,24]"], "needs >= 3 sizes"),
    (["sweep.holdout.d_model=32"], "not larger than"),
    (["sweep.tokens=1e6"], "exactly one data rule"),
    (["sweep.tokens_per_param=0.5"], "trains 5 steps"),
    (["sweep.models=[nano,micro,huge]", "sweep.holdout.model=small"], "not a model preset"),
])
def test_bad_ladders_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        plan_ladder(cfg(*overrides))


def c_overrides(text_corpus: Path, tmp_path: Path) -> list[str]:
    return ["data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
            f"results_dir={tmp_path / 'res'}", "model.seq_len=32", "train.batch_size=4", "train.eval_windows=8",
            "train.progress=false", "train.checkpoint_every_s=0", "sweep.d_models=[8,16,24,32]",
            "sweep.holdout.d_model=40", "sweep.tokens_per_param=null", "sweep.tokens=4e4", "sweep.min_steps=5",
            "sweep.holdout.threads=1", "analysis.bootstrap=50"]


def test_validate_ladder_fits_trains_the_held_out_size_and_reports(text_corpus: Path, tmp_path: Path) -> None:
    c = cfg(*c_overrides(text_corpus, tmp_path))
    fitted, _ = rungs(c, vocab_hint(c))
    N = np.array([r.params for r in fitted], float)
    df = runs_table(N, np.full(N.size, 4e4), law=Law(), noise=0.002)
    df["data_fingerprint"] = load_corpus(c.data, 32).fingerprint
    (tmp_path / "res").mkdir()
    df.to_csv(tmp_path / "res" / "results.csv", index=False)
    train_tokens = len(load_corpus(c.data, 32).train)
    tight = cfg(*c_overrides(text_corpus, tmp_path), f"data.max_epochs={4e4 / train_tokens / 2}")
    with pytest.raises(HarnessError, match=r"1 of 1 held-out runs would repeat the [\d,]+-token train split more than "
                                           r"data\.max_epochs=.*#1 family-d40-L2 @ .*sweep\.holdout\.d_model"):
        validate_ladder(tight, analysis_config(tight))  # refused before it trains: nothing written
    assert not (tmp_path / "res" / "runs").exists()
    res = validate_ladder(c, analysis_config(c))
    assert res["status"] == "ok" and res["validation"][0]["law"].startswith("L(N) E + A N^-alpha")
    assert all(np.isfinite(r["rel_error"]) for r in res["validation"])
    fits = json.loads((tmp_path / "res" / "fits.json").read_text())
    assert fits["targets"]["model"]["actual"] > 0 and fits["laws"]["L(N)"]["ladder"]["fixed"] == "D"
    assert "## Held-out size" in (tmp_path / "res" / "report.md").read_text()
    assert any(line.startswith("held-out family-d40") for line in res["lines"])
