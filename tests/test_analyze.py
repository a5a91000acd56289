"""harness.analyze (harness-analyze) end to end: composed config -> run_analysis, the console wrapper's exit codes,
atomic outputs, scripts/analyze.sh, and the analysis package's purity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import harness.plots
from harness import CONF_DIR
from harness.analysis.synthetic import isoflop_sweep
from harness.analyze import OUTPUT_NAMES, default_out, run_analysis
from harness.errors import HarnessError

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("analyze", overrides=list(overrides))


def results_csv(tmp_path: Path, **kw) -> Path:
    path = tmp_path / "sweep" / "results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    isoflop_sweep(budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6, noise=0.005, seed=4, **kw).to_csv(
        path, index=False)
    return path


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    code = "from harness.cli import analyze_main; analyze_main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_run_analysis_writes_complete_outputs(tmp_path: Path) -> None:
    path = results_csv(tmp_path)
    res = run_analysis(cfg(f"results={path}", "bootstrap=40"))
    out = default_out(path)
    assert Path(res["out"]) == out == tmp_path / "sweep" / "analysis"
    assert set(res["files"]) == set(OUTPUT_NAMES)
    fits = json.loads((out / "fits.json").read_text())
    assert fits["bootstrap"]["n"] == 40 and fits["inputs"]["sha256"]
    assert abs(fits["approach2"]["a"]["value"] - 0.4516) < 0.05
    assert [p["extrapolation"] for p in fits["predictions"]] == [10.0, 100.0]  # attached by run_analysis
    report = (out / "report.md").read_text()
    for png in harness.plots.PLOT_FILES:
        assert (out / png).read_bytes()[:8] == PNG and f"]({png})" in report
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".analysis.tmp")]


def test_conventions_and_foreign_tables_through_overrides(tmp_path: Path) -> None:
    path = results_csv(tmp_path)
    raw = pd.read_csv(path)
    foreign = tmp_path / "theirs.csv"
    pd.DataFrame({"Model Size": raw["params_total"], "Training FLOP": raw["flops"], "loss": raw["val_bpb"]}).to_csv(
        foreign, index=False)
    res = run_analysis(cfg(f"results={foreign}", f"out={tmp_path / 'theirs'}", "bootstrap=0",
                           "columns.params=Model Size", "columns.flops=Training FLOP", "columns.loss=loss"))
    fits = json.loads((Path(res["out"]) / "fits.json").read_text())
    assert fits["data"]["tokens_derived"] and fits["inputs"]["columns"]["params"] == "Model Size"
    assert "derived: the table has no tokens column" in (Path(res["out"]) / "report.md").read_text()
    res2 = run_analysis(cfg(f"results={path}", f"out={tmp_path / 'ne'}", "bootstrap=0", "params=nonembedding",
                            "metric=val_loss"))
    cols = res2["fits"].inputs["columns"]
    assert cols["params"] == "params_nonembedding" and cols["loss"] == "val_loss"


def test_missing_results_argument_is_a_harness_error() -> None:
    with pytest.raises(HarnessError, match="results=PATH"):
        run_analysis(cfg())


def test_crash_while_writing_leaves_no_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = results_csv(tmp_path)
    out = tmp_path / "out"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(harness.plots, "plot_approach3", boom)
    with pytest.raises(RuntimeError):
        run_analysis(cfg(f"results={path}", f"out={out}", "bootstrap=0"))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sweep"]  # no temp dir left behind


def test_console_wrapper_exits_2_without_outputs_on_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("run_id,flops,val_bpb\na,1e18,3.0\nb,1e18,3.1\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = run_python([f"results={bad}", f"out={tmp_path / 'out'}", "bootstrap=0"], cwd)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: no column 'params_total'") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and list(cwd.iterdir()) == []  # and Hydra left nothing in the cwd


def test_analyze_script_end_to_end(tmp_path: Path) -> None:
    path = results_csv(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "analyze.sh"), str(path), "bootstrap=20",
                           "backtest.enabled=false"], cwd=cwd, env=env,  # the backtest: tests/test_analysis_backtest.py
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "a (N_opt ~ C^a)" in proc.stdout
    assert (path.parent / "analysis" / "fits.json").exists() and list(cwd.iterdir()) == []
    usage = subprocess.run(["bash", str(REPO / "scripts" / "analyze.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_plan_budget_console_wrapper(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    code = "from harness.cli import plan_budget_main; plan_budget_main()"
    ok = subprocess.run([sys.executable, "-c", code, "C=1e21"], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and "compute: 1e+21 FLOPs" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-c", code, "C=-1"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


def test_analysis_package_imports_nothing_above_it() -> None:
    code = ("import sys, harness.analysis, harness.analysis.predict, harness.analysis.synthetic; "
            "print([m for m in ('harness.report', 'harness.plots', 'harness.budget', 'harness.train', "
            "'harness.analyze', 'harness.cli', 'matplotlib') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
