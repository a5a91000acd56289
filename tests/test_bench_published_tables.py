"""benchmarks/published_tables.py on a stand-in checkout: the published tables' layout and columns, synthetic runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from harness.analysis.synthetic import Law, isoflop_sweep

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "published_tables.py"


def _lab_table(seed: int, experiment: str) -> pd.DataFrame:
    """One experiment in Open-Athena's schema: source, experiment, tokens, params, budget, loss (no compute)."""
    raw = isoflop_sweep(Law(), budgets=(1e18, 3e18, 1e19, 3e19), sizes_per_budget=7, span=12, noise=0.003, seed=seed)
    return pd.DataFrame({"source": "lab", "experiment": experiment, "tokens": raw["tokens"],
                         "params": raw["params_total"], "budget": raw["budget_flops"], "loss": raw["val_bpb"]})


def test_each_experiment_is_fitted_alone(tmp_path: Path) -> None:
    table = tmp_path / "checkout" / "data" / "isoflops" / "extract" / "lab" / "isoflops.csv"
    table.parent.mkdir(parents=True)
    pd.concat([_lab_table(0, "lab__a"), _lab_table(1, "lab__b")]).to_csv(table, index=False)
    out = tmp_path / "published.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tables", str(tmp_path / "checkout"), "--bootstrap", "20",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["isoflop_tables"]
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert [r["experiment"] for r in rows] == ["lab__a", "lab__b"]
    for r in rows:
        assert r["runs"] == 28 and "error" not in r
        assert abs(r["a_approach2"][0] - Law().a) < 0.03  # the truth, from each experiment on its own
        assert "frontier loss" in r["backtest_mean_abs_error"]


def test_a_directory_without_the_tables_says_where_to_get_them(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tables", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "clone https://github.com/Open-Athena" in proc.stderr + proc.stdout
