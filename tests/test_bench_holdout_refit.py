"""benchmarks/holdout_refit.py: held-out rows judged against the sweep rows' fits, on a synthetic table of a known law."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.synthetic import Law, isoflop_sweep

LAW = Law()
BUDGETS = (1e18, 3e18, 1e19, 3e19, 1e20)


@pytest.fixture(scope="module")
def refit_mod(load_benchmark):
    return load_benchmark("holdout_refit")


def _holdout(C: float, N: float, scale: float = 1.0) -> dict:
    D = C / (6 * N)
    loss = float(LAW.loss(N, D)) * scale
    return {"run_id": f"h{C:g}-{N:.0f}", "seed": 0, "params_total": N, "params_nonembedding": N, "params_scaling": N,
            "budget_flops": C, "flops": C, "tokens": D, "val_bpb": loss, "val_loss": loss, "status": "ok",
            "role": "holdout", "data_fingerprint": "synthetic"}


def test_held_out_rows_of_the_law_land_on_it_and_a_worse_one_shows_its_gap(refit_mod, tmp_path: Path, capsys) -> None:
    sweep = isoflop_sweep(LAW, budgets=BUDGETS, sizes_per_budget=7, noise=0.0, seed=0)
    C = 10 * BUDGETS[-1]
    N = float(LAW.n_opt(C))
    held = pd.DataFrame([_holdout(C, N), _holdout(C, 2 * N, scale=1.05)])  # the second: 5% worse than the law
    pd.concat([sweep, held]).to_csv(tmp_path / "results.csv", index=False)
    report = refit_mod.refit(tmp_path, {"bootstrap": 40})
    on_law, worse = report["holdouts"]
    assert [h["N"] for h in report["holdouts"]] == [N, 2 * N] and on_law["multiple_of_largest"] == pytest.approx(10)
    for a in ("approach2", "approach3"):
        assert abs(on_law[a]["error"]) < 0.005, a  # held-out rows are never fitted, so a 5% gap stays a 5% gap
        assert worse[a]["error"] == pytest.approx(0.05 / 1.05, abs=0.005), a
    text = refit_mod.markdown(report)
    assert text.count("\n") == 3 and "+4.7" in text.splitlines()[-1]
    # no seed noise known: no prediction interval; with a floor of 1%, each row's interval widens by it
    assert on_law["seed_noise"] is None and on_law["approach3"]["pi_lo"] is None
    noisy = refit_mod.refit(tmp_path, {"bootstrap": 40, "noise": {"floor": 0.01, "source": "test"}})["holdouts"]
    for h in noisy:
        e = h["approach3"]
        assert h["seed_noise"] == 0.01 and e["pi_lo"] < e["lo"] and e["pi_hi"] > e["hi"]
        assert e["inside_pi"] == (e["pi_lo"] <= h["actual"] <= e["pi_hi"])
    assert noisy[0]["approach3"]["inside_pi"] and not noisy[1]["approach3"]["inside_pi"]  # 5% is beyond 1.96 x 1%


def test_a_table_without_held_out_rows_says_so(refit_mod, tmp_path: Path) -> None:
    isoflop_sweep(LAW, budgets=BUDGETS, sizes_per_budget=5, noise=0.0, seed=0).to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(SystemExit, match="no ok held-out rows"):
        refit_mod.refit(tmp_path, {"bootstrap": 0})


def test_overrides_and_short_runs_left_out_change_the_fit_not_the_judging(refit_mod, tmp_path: Path) -> None:
    sweep = isoflop_sweep(LAW, budgets=BUDGETS, sizes_per_budget=7, noise=0.0, seed=0)
    C = 10 * BUDGETS[-1]
    held = pd.DataFrame([_holdout(C, float(LAW.n_opt(C)))])
    table = pd.concat([sweep, held])
    table.to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(SystemExit, match="no steps column"):
        refit_mod.refit(tmp_path, {"bootstrap": 0}, min_steps=10)
    table["steps"] = (table["tokens"] / 2048).round()  # e.g. batch 16 x 128 tokens
    table.to_csv(tmp_path / "results.csv", index=False)
    full = refit_mod.refit(tmp_path, {"bootstrap": 0})
    cut = int(sweep["tokens"].quantile(0.2) / 2048)
    short = int(((table["role"] == "sweep") & (table["steps"] < cut)).sum())
    fewer = refit_mod.refit(tmp_path, {"bootstrap": 0}, min_steps=cut)
    assert 0 < short and fewer["n_fitted"] == full["n_fitted"] - short == len(sweep) - short
    assert [h["actual"] for h in fewer["holdouts"]] == [h["actual"] for h in full["holdouts"]]
    worst = float(sweep["val_bpb"].quantile(0.9))  # --max-loss: the sweep's highest losses out, the held-out row kept
    high = int((sweep["val_bpb"] >= worst).sum())
    capped = refit_mod.refit(tmp_path, {"bootstrap": 0}, max_loss=worst)
    assert 0 < high and capped["n_fitted"] == len(sweep) - high
    assert [h["actual"] for h in capped["holdouts"]] == [h["actual"] for h in full["holdouts"]]
    env = refit_mod.refit(tmp_path, {"bootstrap": 0, "frontier": {"source": "envelope"}})
    # the frontier through lowest observed losses: the same a (parabola optima), another loss prediction for
    # Approach 2 (grid points lie above the parabola minima), and Approach 3 untouched
    assert env["approach2_a"] == full["approach2_a"]
    e, f = env["holdouts"][0], full["holdouts"][0]
    assert e["approach2"]["predicted"] > f["approach2"]["predicted"] and e["approach3"] == f["approach3"]


def test_bad_overrides_get_one_line_and_a_nonzero_exit(refit_mod, tmp_path: Path, monkeypatch, capsys) -> None:
    sweep = isoflop_sweep(LAW, budgets=BUDGETS, sizes_per_budget=5, noise=0.0, seed=0)
    C = 10 * BUDGETS[-1]
    pd.concat([sweep, pd.DataFrame([_holdout(C, float(LAW.n_opt(C)))])]).to_csv(tmp_path / "results.csv", index=False)
    monkeypatch.setattr("sys.argv", ["holdout_refit.py", str(tmp_path), "--set", "frontier.source"])
    with pytest.raises(SystemExit) as no_value:
        refit_mod.main()
    assert no_value.value.code == 2 and "--set takes KEY=VALUE" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["holdout_refit.py", str(tmp_path), "--set", "frontier.source=bogus"])
    with pytest.raises(SystemExit, match=r"^error: .*frontier\.source='bogus'; use frontier\.source=minima or envelope"):
        refit_mod.main()
