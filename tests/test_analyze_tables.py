"""harness-analyze on tables that are not IsoFLOP grids (harness.table_report.analyze_table): a compute ladder in
PF-days through the console script, the target predictions, units, the IsoFLOP path's untouched outputs and its
fallback, and the bad inputs that must stop with one error line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness import CONF_DIR
from harness.analysis.synthetic import isoflop_sweep, runs_table
from harness.analysis.units import PF_DAY, unit_factors
from harness.analyze import run_analysis
from harness.errors import HarnessError

REPO = Path(__file__).resolve().parents[1]
# A compute ladder as a lab publishes one: sizes and data grown together, compute in PF-days, one run per budget.
LADDER = """parameters,tokens,compute_pf_days,final_loss
1.25e8,2.5e9,0.0217,3.35
3.5e8,7.0e9,0.170,3.02
1.3e9,2.6e10,2.35,2.72
6.7e9,1.34e11,62.4,2.45
"""
LADDER_ARGS = ["columns.params=parameters", "columns.flops=compute_pf_days", "columns.loss=final_loss",
               "units.flops=pf_days"]


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("analyze", overrides=list(overrides))


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    code = "from harness.cli import analyze_main; analyze_main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def write(tmp_path: Path, df: pd.DataFrame, name: str = "results.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_compute_ladder_in_pf_days_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "ladder.csv"
    path.write_text(LADDER)
    out = tmp_path / "out"
    proc = cli([f"results={path}", f"out={out}", "bootstrap=300", *LADDER_ARGS, "predict.N=1e10", "predict.D=1e12"],
               tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "compute ladder (4 compute levels" in proc.stdout
    assert "predicted loss at N=1.00e+10, D=1.00e+12: L(C) E + A C^-alpha" in proc.stdout
    fits = json.loads((out / "fits.json").read_text())
    assert fits["kind"] == "table" and fits["data"]["C_range"][0] == pytest.approx(0.0217 * PF_DAY)
    lc = fits["laws"]["L(C)"]["irreducible"]
    assert lc["alpha"]["lo"] < lc["alpha"]["value"] < lc["alpha"]["hi"] and lc["E"]["lo"] is not None
    model = fits["targets"]["model"]
    assert model["C"] == pytest.approx(6e22, rel=0.05)  # kappa = C / (N D) of the table, about 6
    pred = {r["law"]: r["loss"] for r in model["predictions"]}["L(C) E + A C^-alpha"]
    assert pred["lo"] < pred["value"] < pred["hi"] < 2.45  # below the largest run's loss, with an interval
    assert any(r["law"] == "L(N)" and "D/N = 20" in r["reason"] for r in model["not_applicable"])
    report = (out / "report.md").read_text()
    assert "flops given in pf_days (x 8.64e+19)" in report and "## Not fitted" in report
    assert "Approach 3 L(N, D): needs >= 6 distinct (N, D) points" in report
    assert (out / "law_C.png").read_bytes()[:4] == b"\x89PNG" and (out / "law_N.png").exists()


def test_compute_target_recommends_from_the_tables_own_trend(tmp_path: Path) -> None:
    path = tmp_path / "ladder.csv"
    path.write_text(LADDER)
    res = run_analysis(cfg(f"results={path}", f"out={tmp_path / 'o'}", "bootstrap=100", *LADDER_ARGS,
                           "predict.C=[1e23]"))
    (target,) = res["fits"].targets["C"]
    rec = target["recommendation"]
    assert "own trend" in rec["source"] and rec["D"].value / rec["N"].value == pytest.approx(20, rel=0.05)
    assert any("C = 1.00e+23: N = " in line for line in res["summary"]["lines"])


def test_isoflop_outputs_unchanged_without_targets_and_extended_with_them(tmp_path: Path) -> None:
    path = write(tmp_path, isoflop_sweep(budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6, seed=4))
    plain = run_analysis(cfg(f"results={path}", f"out={tmp_path / 'a'}", "bootstrap=20", "backtest.enabled=false"))
    assert "targets" not in json.loads((tmp_path / "a" / "fits.json").read_text())
    assert "## Predictions at your targets" not in (tmp_path / "a" / "report.md").read_text()
    assert "lines" not in plain["summary"]
    res = run_analysis(cfg(f"results={path}", f"out={tmp_path / 'b'}", "bootstrap=20", "backtest.enabled=false",
                           "predict.N=1e9", "predict.D=2e10"))
    fits = json.loads((tmp_path / "b" / "fits.json").read_text())
    laws = [r["law"] for r in fits["targets"]["model"]["predictions"]]
    assert laws == ["Approach 3 L(N, D)", "Approach 2 L(C, N)", "frontier L_opt(C)"]
    a3, a2, frontier = (r["loss"]["value"] for r in fits["targets"]["model"]["predictions"])
    assert a2 > frontier and abs(a2 / a3 - 1) < 0.02  # N=1e9 is off C=6ND's optimum: Approach 2 rises toward A3
    assert "## Predictions at your targets" in (tmp_path / "b" / "report.md").read_text()
    assert res["summary"]["targets"][0].startswith("predicted loss at N=1.00e+09, D=2.00e+10: Approach 3")


def test_isoflop_grid_that_approach2_cannot_use_falls_back(tmp_path: Path) -> None:
    # every budget's sizes sit far above its optimum: no bracketed minimum, so Approach 2 refuses
    path = write(tmp_path, isoflop_sweep(budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=5, offset=30.0))
    res = run_analysis(cfg(f"results={path}", f"out={tmp_path / 'o'}", "bootstrap=30"))
    fits = json.loads((tmp_path / "o" / "fits.json").read_text())
    assert fits["kind"] == "table" and fits["approach3"] and "L(C)" in fits["laws"]
    reason = fits["not_fitted"][0]
    assert reason["fit"].startswith("Approach 2") and "usable parabola minimum" in reason["reason"]
    assert res["summary"]["lines"][0].startswith("shape: IsoFLOP grid")


def test_units_for_params_and_tokens(tmp_path: Path) -> None:
    df = runs_table(np.geomspace(1e7, 1e9, 5), np.full(5, 1e10))
    df["params_total"] /= 1e6
    df["tokens"] /= 1e9
    res = run_analysis(cfg(f"results={write(tmp_path, df)}", f"out={tmp_path / 'o'}", "bootstrap=0",
                           "units.params=millions", "units.tokens=B"))
    assert res["fits"].data["N_range"] == pytest.approx([1e7, 1e9])
    assert res["fits"].shape["size_ladders"][0]["value"] == pytest.approx(1e10)
    with pytest.raises(HarnessError, match=r"units\.flops='petaflop_weeks' is not a known unit"):
        unit_factors({"units": {"flops": "petaflop_weeks"}})


def test_perplexity_and_plain_names_with_units(tmp_path: Path) -> None:
    """A hand-made size ladder: N in millions under a plain name, perplexities: fitted as the log-loss table."""
    df = runs_table(np.geomspace(1e7, 1e9, 5), np.full(5, 1e10))
    theirs = pd.DataFrame({"N": df["params_total"] / 1e6, "Tokens": df["tokens"], "PPL": np.exp(df["val_bpb"])})
    res = run_analysis(cfg(f"results={write(tmp_path, theirs)}", f"out={tmp_path / 'o'}", "bootstrap=0",
                           "units.params=millions", "units.loss=perplexity", "columns.loss=PPL"))
    want = run_analysis(cfg(f"results={write(tmp_path, df, 'ours.csv')}", f"out={tmp_path / 'w'}", "bootstrap=0"))
    assert res["fits"].data["N_range"] == pytest.approx([1e7, 1e9])
    assert res["fits"].data["loss_range"] == pytest.approx(want["fits"].data["loss_range"])
    for form in ("irreducible", "kaplan"):
        got, ref = res["fits"].laws["L(N)"][form]["alpha"].value, want["fits"].laws["L(N)"][form]["alpha"].value
        assert got == pytest.approx(ref, rel=1e-6)
    assert "perplexities: their natural log is fitted" in (tmp_path / "o" / "report.md").read_text()
    with pytest.raises(HarnessError, match=r"units\.loss='accuracy' is not a known unit"):
        run_analysis(cfg(f"results={tmp_path / 'results.csv'}", "units.loss=accuracy"))


def test_units_named_in_the_headers_as_papers_write_them(tmp_path: Path) -> None:
    """'Parameters (M)', 'Tokens [B]', 'FLOPs (1e18)', 'Loss (ppl)': found and converted with no mapping and no
    units.*; an explicit units.* still wins over the header."""
    df = runs_table(np.geomspace(1e7, 1e9, 5), np.full(5, 1e10))
    theirs = pd.DataFrame({"Parameters (M)": df["params_total"] / 1e6, "Tokens [B]": df["tokens"] / 1e9,
                           "FLOPs (1e18)": df["flops"] / 1e18, "Loss (ppl)": np.exp(df["val_bpb"])})
    res = run_analysis(cfg(f"results={write(tmp_path, theirs)}", f"out={tmp_path / 'o'}", "bootstrap=0"))
    want = run_analysis(cfg(f"results={write(tmp_path, df, 'ours.csv')}", f"out={tmp_path / 'w'}", "bootstrap=0"))
    for key in ("N_range", "D_range", "C_range", "loss_range"):
        assert res["fits"].data[key] == pytest.approx(want["fits"].data[key])
    units = (tmp_path / "o" / "report.md").read_text()
    assert "params given in millions" in units and "flops given in units of 1e+18" in units and "perplexities" in units
    raw = run_analysis(cfg(f"results={tmp_path / 'results.csv'}", f"out={tmp_path / 'r'}", "bootstrap=0",
                           "units.params=count"))
    assert raw["fits"].data["N_range"] == pytest.approx([10.0, 1000.0])


def test_a_table_of_many_ladders_keeps_the_terminal_line_short(tmp_path: Path) -> None:
    """A 6 x 6 grid of (N, D) holds 18 shapes: the terminal names 4 and points to report.md, which lists them all."""
    N, D = np.meshgrid(np.geomspace(1e7, 1e9, 6), np.geomspace(1e9, 1e11, 6))
    res = run_analysis(cfg(f"results={write(tmp_path, runs_table(N.ravel(), D.ravel()))}", f"out={tmp_path / 'o'}",
                           "bootstrap=0"))
    labels = res["fits"].shape["labels"]
    line = res["summary"]["lines"][0]
    assert len(labels) > 4 and line.count("; ") == 4 and f"and {len(labels) - 4} more (report.md)" in line
    report = (tmp_path / "o" / "report.md").read_text()
    assert all(f"- {label}" in report for label in labels)


def test_one_row_exits_2_with_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("parameters,tokens,compute_pf_days,final_loss\n1e8,2e9,0.01,3.3\n")
    proc = cli([f"results={path}", f"out={tmp_path / 'out'}", *LADDER_ARGS], tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: the table has 1 usable run")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda df: df.assign(params_total=1e8, tokens=1e9), "same N and D"),
    (lambda df: df.assign(params_total=[-1.0] + [1e8] * 4), "must be > 0"),
    (lambda df: df.assign(flops=[0.0, *df["flops"][1:]]), "must be > 0"),
    (lambda df: df.assign(tokens=[0.0, *df["tokens"][1:]]), "must be > 0"),
    (lambda df: df.assign(val_bpb=np.nan), "no usable runs"),
])
def test_bad_tables_are_refused(tmp_path: Path, edit, message: str) -> None:
    df = edit(runs_table(np.geomspace(1e7, 1e9, 5), np.full(5, 1e10)))
    with pytest.raises(HarnessError, match=message):
        run_analysis(cfg(f"results={write(tmp_path, df)}", f"out={tmp_path / 'o'}", "bootstrap=0"))
    assert not (tmp_path / "o").exists()


def test_partial_problems_are_warnings(tmp_path: Path) -> None:
    df = runs_table(np.geomspace(1e7, 1e9, 6), np.full(6, 1e10))
    df.loc[2, "val_bpb"] = np.inf
    res = run_analysis(cfg(f"results={write(tmp_path, df)}", f"out={tmp_path / 'o'}", "bootstrap=50"))
    assert res["fits"].data["excluded"] == {"nan_loss": 1}
    assert any("NaN/inf loss" in w for w in res["summary"]["warnings"]) and "L(N)" in res["fits"].laws


def test_planning_refuses_a_table_analysis(tmp_path: Path) -> None:
    from harness.analysis import load_fits

    path = tmp_path / "ladder.csv"
    path.write_text(LADDER)
    run_analysis(cfg(f"results={path}", f"out={tmp_path / 'o'}", "bootstrap=0", *LADDER_ARGS))
    with pytest.raises(HarnessError, match="non-IsoFLOP table"):
        load_fits(tmp_path / "o")


def test_a_rerun_into_the_same_out_directory_leaves_no_files_of_the_earlier_analysis(tmp_path: Path) -> None:
    """An IsoFLOP table, then a size ladder, into one out= directory: only the ladder's files stay, and back."""
    grid, ladder = tmp_path / "grid.csv", tmp_path / "ladder.csv"
    isoflop_sweep(budgets=(1e18, 1e19, 1e20), sizes_per_budget=5, noise=0.005).to_csv(grid, index=False)
    pd.DataFrame({"N": np.geomspace(1e7, 1e9, 6), "D": 2e10,
                  "loss": 1.7 + 400 * np.geomspace(1e7, 1e9, 6) ** -0.34}).to_csv(ladder, index=False)
    out = tmp_path / "out"
    cfg = {"bootstrap": 20, "backtest": {"bootstrap": 10}, "out": str(out)}
    first = set(run_analysis(OmegaConf.create({**cfg, "results": str(grid)}))["files"])
    assert {"isoflop.png", "bootstrap_samples.npz"} <= first
    second = set(run_analysis(OmegaConf.create({**cfg, "results": str(ladder)}))["files"])
    assert {p.name for p in out.iterdir()} == second and "law_N.png" in second and "isoflop.png" not in second
    third = set(run_analysis(OmegaConf.create({**cfg, "results": str(grid)}))["files"])
    assert {p.name for p in out.iterdir()} == third == first


def test_a_compute_target_no_law_can_price_says_so(tmp_path: Path) -> None:
    ladder = tmp_path / "ladder.csv"
    sizes = np.geomspace(1e7, 1e9, 6)
    pd.DataFrame({"N": sizes, "D": 2e10, "loss": 1.7 + 400 * sizes ** -0.34}).to_csv(ladder, index=False)
    res = run_analysis(OmegaConf.create({"results": str(ladder), "out": str(tmp_path / "out"), "bootstrap": 20,
                                         "predict": {"C": 1e30}}))
    assert any(line.startswith("C=1.00e+30: no fitted law predicts") for line in res["summary"]["lines"])
    assert "no fitted law predicts a loss at a compute budget" in (tmp_path / "out" / "report.md").read_text()
