"""Held-out validation: fits from a sweep table, a real held-out run, the comparison and the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import harness.cli
from harness.analysis import approach2_loss_at
from harness.analysis.estimate import Estimate
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.data import load_corpus
from harness.errors import HarnessError
from harness.validate import (
    backtest_conflicts,
    compare,
    compare_with_noise,
    holdout_noise,
    target_budget,
    target_budgets,
    validate,
)

BUDGETS = (3e8, 1e9, 3e9)


def _cfg(text_corpus: Path, tmp_path: Path, *extra: str):
    with initialize_config_dir(config_dir=harness.cli.CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=[
            "data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
            f"results_dir={tmp_path / 'res'}", "model.seq_len=32", "train.batch_size=4", "train.eval_windows=8",
            "train.progress=false", "train.checkpoint_every_s=0", "sweep.holdout.threads=1",
            f"sweep.budgets=[{','.join(str(b) for b in BUDGETS)}]", "sweep.min_steps=5", "analysis.bootstrap=50",
            "train.schedule=cosine", "sweep.holdout.multiples=null",  # one cosine held-out run unless a test says
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


def test_a_run_outside_the_laws_interval_can_sit_inside_its_prediction_interval() -> None:
    # the law's interval is for the mean loss; a single run also carries its seed noise (1.35% here)
    law = Estimate(2.10, 2.09, 2.13, 1000)
    c = compare_with_noise(2.15, law, {"rel_sd_of_mean": 0.0135}, "test", 0.95)
    assert c["inside"] is False and c["inside_prediction_interval"] is True
    assert c["prediction_interval"].hi == pytest.approx(2.10 * np.exp(np.hypot(np.log(2.13 / 2.10), 1.96 * 0.0135)),
                                                          rel=1e-4)
    line = harness.cli._comparison_line(c)
    assert "OUTSIDE the interval, inside the prediction interval with seed noise [" in line
    far = compare_with_noise(2.30, law, {"rel_sd_of_mean": 0.0135}, "test", 0.95)
    assert far["inside_prediction_interval"] is False and "OUTSIDE the prediction interval" in harness.cli._comparison_line(far)
    # inside the law's interval: the line does not repeat the wider one; no noise figure: no prediction interval
    assert "prediction interval" not in harness.cli._comparison_line(
        compare_with_noise(2.11, law, {"rel_sd_of_mean": 0.0135}, "test", 0.95))
    bare = compare_with_noise(2.15, law, {"rel_sd_of_mean": None}, "test", 0.95)
    assert bare["prediction_interval"] is None and bare["inside_prediction_interval"] is None


def test_validate_trains_holdout_compares_and_never_fits_it(text_corpus: Path, tmp_path: Path,
                                                            restore_torch_threads) -> None:
    cfg = _cfg(text_corpus, tmp_path, "++analysis.backtest.enabled=false")  # the ladder test below checks it
    res = _sweep_table(cfg, tmp_path)
    out = validate(cfg)
    assert len(out["validation"]) == 1  # the default ladder: one run at 4x
    v = out["validation"][0]
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
    # Approach 2 predicts the trained size, not the optimum: its frontier loss raised along the IsoFLOP parabola
    at_n = approach2_loss_at(out["fits"], v["budget"], v["N"])
    assert v["comparison"]["approach2"]["predicted"] == at_n and at_n.value >= v["approach2_at_optimum"].value
    fits_json = json.loads((res / "fits.json").read_text())
    assert fits_json["validation"][0]["run_id"] == v["run_id"]
    assert set(fits_json["validation"][0]["comparison"]["approach2"]["predicted"]) == {"value", "lo", "hi", "n"}
    assert len(fits_json["predictions"]) == 2  # the default 10x and 100x targets, attached by validate
    report = (res / "report.md").read_text()
    assert "## Held-out validation" in report and v["model"] in report
    assert (res / "frontier.png").stat().st_size > 0
    assert "(curves.png)" in report and (res / "curves.png").stat().st_size > 0  # the held-out run's curve

    # rerunning resumes: the held-out run has an ok row, so nothing is trained again and numbers agree
    again = validate(cfg)
    assert again["records"][0]["run_id"] == v["run_id"]
    assert again["validation"][0]["actual"] == v["actual"]
    assert len(pd.read_csv(res / "results.csv")) == 16


def test_validate_without_results_says_run_the_sweep(text_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="run the sweep first"):
        validate(_cfg(text_corpus, tmp_path))


def test_holdout_ladder_budgets_and_aliases(text_corpus: Path, tmp_path: Path) -> None:
    assert target_budgets(_cfg(text_corpus, tmp_path)) == pytest.approx([1.2e10])  # multiple: 4 alone
    ladder = _cfg(text_corpus, tmp_path, "sweep.holdout.multiples=[8,2,4,4]")
    assert target_budgets(ladder) == pytest.approx([6e9, 1.2e10, 2.4e10])  # sorted, duplicates dropped
    assert target_budgets(_cfg(text_corpus, tmp_path, "sweep.holdout.budgets=[2e10,5e10]")) == pytest.approx(
        [2e10, 5e10])  # absolute FLOPs win over multiples


@pytest.mark.parametrize("override", ["sweep.holdout.multiple=1", "sweep.holdout.multiple=abc",
                                      "sweep.holdout.multiples=[2,0.5]", "sweep.holdout.multiples=[4,x]",
                                      "sweep.holdout.multiples=[]"])
def test_bad_multiples_are_one_clear_error(text_corpus: Path, tmp_path: Path, override: str) -> None:
    cfg = _cfg(text_corpus, tmp_path, override)
    with pytest.raises(HarnessError, match=r"must be numbers > 1 .*sweep.holdout.multiples=\[2,4,8\]"):
        target_budgets(cfg)
    with pytest.raises(HarnessError, match="must be numbers > 1"):
        validate(cfg)  # refused before anything is fitted or trained
    assert not (tmp_path / "res").exists()


def test_validate_trains_a_holdout_ladder(text_corpus: Path, tmp_path: Path, restore_torch_threads,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(text_corpus, tmp_path, "sweep.holdout.multiples=[2,4]", "++analysis.backtest.bootstrap=20")
    res = _sweep_table(cfg, tmp_path)
    out = validate(cfg)
    entries = out["validation"]
    assert [e["budget"] for e in entries] == pytest.approx([6e9, 1.2e10])
    assert [e["multiple_of_largest"] for e in entries] == pytest.approx([2.0, 4.0])
    rows = pd.read_csv(res / "results.csv")
    hold = rows[rows.role == "holdout"]
    assert sorted(hold.run_id) == sorted(e["run_id"] for e in entries) and (hold.status == "ok").all()
    assert out["fits"].data["n_used"] == 15  # neither held-out run is fitted
    fits_json = json.loads((res / "fits.json").read_text())
    assert [e["run_id"] for e in fits_json["validation"]] == [e["run_id"] for e in entries]
    assert fits_json["backtest"]["rows"] and set(fits_json["backtest"]["rows"][0]["predicted"]) == {
        "value", "lo", "hi", "n"}
    report = (res / "report.md").read_text()
    assert "Interval coverage across the ladder: approach2 " in report and "of 2 inside" in report
    # one seed, so the noise is the floor the demo sweep config assumes; the prediction intervals carry it
    assert all(e["noise"]["rel_sd_of_mean"] == pytest.approx(0.0135) for e in entries)
    assert all(c["prediction_interval"].lo < c["predicted"].lo for e in entries for c in e["comparison"].values())
    assert "(with each run's seed noise added: approach2 " in report
    assert all(f"`{e['model']}`" in report for e in entries) and "## Backtest (leave-future-out)" in report
    assert "](holdout.png)" in report and (res / "holdout.png").read_bytes()[:4] == b"\x89PNG"
    assert "and the held-out runs](frontier.png)" in report
    # the console summary (harness-validate without Hydra's wrapper) lists every run and the ladder's coverage;
    # rerunning resumes, so nothing is trained again
    capsys.readouterr()
    assert harness.cli.validate_main.__wrapped__(cfg) == 0
    printed = capsys.readouterr().out
    assert printed.count("held-out family-") == 2 and "held-out ladder interval coverage: approach2 " in printed
    assert "backtest frontier loss: mean |error|" in printed
    assert len(pd.read_csv(res / "results.csv")) == 17


def test_holdout_seeds_measure_the_held_out_runs_own_noise(text_corpus: Path, tmp_path: Path,
                                                           restore_torch_threads) -> None:
    cfg = _cfg(text_corpus, tmp_path, "sweep.holdout.seeds=[0,1]", "++analysis.backtest.enabled=false")
    res = _sweep_table(cfg, tmp_path)
    v = validate(cfg)["validation"][0]
    hold = pd.read_csv(res / "results.csv").query("role == 'holdout'")
    assert sorted(hold.seed.tolist()) == [0, 1] and v["seeds"] == [0, 1]
    assert v["actual"] == pytest.approx(hold.val_bpb.mean())
    assert v["noise"]["source"] == "2 held-out seeds"
    sd = float(np.std(np.log(hold.val_bpb), ddof=1))
    assert v["noise"]["rel_sd_of_mean"] == pytest.approx(sd / np.sqrt(2))
    for c in v["comparison"].values():
        assert c["within_noise"] == (abs(c["rel_error"]) <= 1.96 * sd / np.sqrt(2))
        # the prediction interval holds the law's and is widened by the noise of the seeds' mean
        pi, law = c["prediction_interval"], c["predicted"]
        assert pi.lo <= law.lo and pi.hi >= law.hi
        assert np.log(pi.hi / law.value) >= 1.959 * sd / np.sqrt(2)
        assert c["inside_prediction_interval"] == (pi.lo <= v["actual"] <= pi.hi)
    assert "within noise" in (res / "report.md").read_text()
    spread = float(np.ptp(np.log(hold.val_bpb)))
    assert v["noise"]["rel_range"] == pytest.approx(spread)
    assert v["noise"]["disagree"] == (spread > v["noise"]["disagree_limit"])
    assert ("held-out seeds disagree" in (res / "report.md").read_text()) == v["noise"]["disagree"]


def test_held_out_seeds_that_disagree_are_flagged_not_averaged_silently() -> None:
    """The demo's 10x run measured with 3 seeds (2026-11-29): one stalled 5% above the others. Its ln(loss) range
    passes the sweep's wild-seed limit (4%, or 8x the sweep's pooled noise), so it is marked; the 2x run's is not."""
    unmeasured = {"measured": False}
    stalled = holdout_noise(unmeasured, [1.7231, 1.8108, 1.7173], 2e13)
    calm = holdout_noise(unmeasured, [2.1464, 2.1439, 2.1287], 4e12)
    assert stalled["disagree"] and stalled["rel_range"] == pytest.approx(np.log(1.8108 / 1.7173))
    assert not calm["disagree"] and calm["disagree_limit"] == pytest.approx(0.04)
    # a sweep whose repeats are noisier raises the limit: 8 x 1% = 8% > the 5.3% range
    noisy = {"measured": True, "pooled": {"rel_sd": 0.01}, "per_budget": []}
    assert not holdout_noise(noisy, [1.7231, 1.8108, 1.7173], 2e13)["disagree"]
    single = holdout_noise(unmeasured, [1.7231], 2e13)
    assert "disagree" not in single and single["rel_sd"] is None
    # a sweep without repeats but with a floor measured elsewhere (analysis noise.floor) is judged against it
    assumed = holdout_noise({"measured": False, "assumed": {"rel_sd": 0.0135, "source": "bench/seeds"}}, [1.7231], 2e13)
    assert assumed["rel_sd_of_mean"] == 0.0135 and assumed["source"] == "assumed from bench/seeds"


def _ladder(a2: list[float], a3: list[float], within: bool | None = None) -> list[dict]:
    return [{"comparison": {"approach2": {"rel_error": e2, "within_noise": within},
                            "approach3": {"rel_error": e3, "within_noise": within}}} for e2, e3 in zip(a2, a3)]


def _series(name: str, bias: str | None, mean: float) -> dict:
    return {"approach": name, "quantity": "loss", "bias": bias, "mean_rel_error": mean}


def test_held_out_runs_that_miss_against_the_backtests_lean_are_flagged() -> None:
    """The demo (2026-11-30): its frontier over-predicts its own larger budgets in the backtest (9 of 10 below, mean
    -0.9%), yet both held-out runs land above Approach 2's prediction (+1.86%, +1.00%): flagged. Approach 3 over-
    predicts too, but its held-out errors split (+0.86%, -1.26%): not flagged."""
    summary = [_series("frontier", "over-predicts", -0.009), _series("approach3", "over-predicts", -0.047),
               {"approach": "approach2", "quantity": "N_opt", "bias": "under-predicts", "mean_rel_error": 0.08}]
    demo = backtest_conflicts(_ladder([0.0186, 0.0100], [0.0086, -0.0126]), summary)
    assert len(demo) == 1 and "above approach2's prediction (+1.86%, +1.00%)" in demo[0]
    assert "frontier over-predicts loss" in demo[0] and "recipe" in demo[0]
    # the mirror image: a backtest that under-predicts, held-out runs below both predictions
    under = [_series("frontier", "under-predicts", 0.01), _series("approach3", "under-predicts", 0.02)]
    mirror = backtest_conflicts(_ladder([-0.02], [-0.03]), under)
    assert len(mirror) == 2 and all("lands below" in w for w in mirror)
    # runs on the backtest's own side, errors inside seed noise, or a backtest without a lean: nothing to say
    assert backtest_conflicts(_ladder([-0.02, -0.01], [-0.02, -0.01]), summary) == []
    assert backtest_conflicts(_ladder([0.0186, 0.0100], [0.01, 0.01], within=True), summary) == []
    assert backtest_conflicts(_ladder([0.0186], [0.01]), [_series("frontier", None, -0.009)]) == []
    assert backtest_conflicts(_ladder([None], [None]), summary) == []


@pytest.mark.parametrize("seeds", ["[0,0]", "[a]", "[1.5]"])
def test_bad_holdout_seeds_fail_before_anything_runs(text_corpus: Path, tmp_path: Path, seeds: str) -> None:
    cfg = _cfg(text_corpus, tmp_path, f"sweep.holdout.seeds={seeds}")
    res = _sweep_table(cfg, tmp_path)
    before = (res / "results.csv").read_bytes()
    with pytest.raises(HarnessError, match=r"sweep\.holdout\.seeds"):
        validate(cfg)
    assert (res / "results.csv").read_bytes() == before and not (res / "fits.json").exists()


def _pick(cfg, multiple: float, d_model: int = 16):
    """A held-out run chosen by hand (no fit): family member d_model at multiple x the largest sweep budget."""
    from harness.plan import model_config
    from harness.validate import HeldOut

    name, g = model_config({**cfg.model, "d_model": d_model}, 256)
    return HeldOut(multiple * max(BUDGETS), {}, 1.0, name, g)


def test_held_out_runs_get_the_sweeps_repetition_rule(text_corpus: Path, tmp_path: Path, capsys) -> None:
    """data.max_epochs refuses a held-out run as it refuses a grid run: named, with its epochs and the fixes."""
    from harness.counting import flops_per_token
    from harness.plan import sized_run
    from harness.validate import check_holdout_repetition

    cfg = _cfg(text_corpus, tmp_path)
    far, near = _pick(cfg, 100), _pick(cfg, 2)
    train_tokens = len(load_corpus(cfg.data, 32).train)
    with pytest.raises(HarnessError) as e:
        check_holdout_repetition(cfg, [near, far])
    msg = str(e.value)
    assert msg.startswith("1 of 2 held-out runs would repeat") and "data.max_epochs=4" in msg
    assert re.search(rf"#2 {far.name} @ 3e\+11 \((\d+\.\d) ep\)", msg) and "sweep.holdout.multiples" in msg
    epochs = float(re.search(r"\((\d+\.\d) ep\)", msg).group(1))
    expect = sized_run(cfg, far.budget, far.name, far.gcfg, flops_per_token(far.gcfg)).tokens / train_tokens
    assert epochs == pytest.approx(expect, abs=0.06) and epochs > 4
    check_holdout_repetition(_cfg(text_corpus, tmp_path, "data.max_epochs=1000"), [near, far])  # the limit is a setting
    assert "2 of 2 held-out runs train more than one epoch" in capsys.readouterr().err


def test_held_out_run_over_max_epochs_refused_before_it_trains(text_corpus: Path, tmp_path: Path) -> None:
    cfg = _cfg(text_corpus, tmp_path, "sweep.holdout.multiple=100", "++analysis.backtest.enabled=false")
    res = _sweep_table(cfg, tmp_path)
    before = (res / "results.csv").read_bytes()
    with pytest.raises(HarnessError, match=r"held-out runs would repeat .* ep\).*raise data\.max_epochs"):
        validate(cfg)
    assert (res / "results.csv").read_bytes() == before  # no held-out row: nothing trained
    assert sorted(p.name for p in res.iterdir() if p.name != ".lock") == ["results.csv"]  # no run, fits, report


@pytest.mark.parametrize("override", ["train.warmup_frac=2", "train.eval_windows=0", "role=holdoutt",
                                      "sweep.holdout.seeds=[]", "sweep.holdout.budgets=[-1e12]"])
def test_bad_settings_refused_before_anything_is_fitted(text_corpus: Path, tmp_path: Path, override: str) -> None:
    cfg = _cfg(text_corpus, tmp_path, override)
    res = _sweep_table(cfg, tmp_path)
    with pytest.raises(HarnessError, match=override.split("=")[0].replace(".", r"\.")):
        validate(cfg)
    assert sorted(p.name for p in res.iterdir()) == ["results.csv"]
