"""Runs near a bigram model's loss are named, kept in the fit, and drawn against (harness.analysis.plateau)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from harness.analysis import fit_all
from harness.analysis.load import canonicalize
from harness.analysis.plateau import NEAR, bigram_plateau
from harness.analysis.synthetic import isoflop_sweep
from harness.analysis.units import load_table
from harness.plots import plot_isoflop

CFG = OmegaConf.create({"bootstrap": 50, "backtest": {"enabled": False}})


def _table_with_bigram():
    raw = isoflop_sweep(budgets=(1e18, 3e18, 1e19), sizes_per_budget=5, noise=0.0)
    ref = float(raw["val_bpb"].max()) * 1.01  # the worst run ends 1% below the reference
    raw["bigram_val_bpb"] = ref
    raw["bigram_val_loss"] = ref * 0.7
    return raw, ref


def test_the_runs_within_near_of_the_bigram_are_named_and_still_fitted() -> None:
    raw, ref = _table_with_bigram()
    fits = fit_all(canonicalize(raw, CFG), CFG)
    block = fits.data["bigram"]
    expected = raw[raw["val_bpb"] > (1 - NEAR) * ref]
    assert 0 < len(expected) < len(raw)
    assert block["reference"] == pytest.approx(ref)
    assert sorted(r["run_id"] for r in block["runs"]) == sorted(expected["run_id"])
    assert all(0 <= r["below_bigram"] < NEAR for r in block["runs"])
    assert fits.data["n_used"] == len(raw)  # named, not left out
    note = [n for n in fits.notes if "bigram" in n]
    assert len(note) == 1 and f"{len(expected)} of {len(raw)} fitted runs" in note[0]


def test_the_reference_follows_the_metric_and_is_absent_without_a_column() -> None:
    raw, ref = _table_with_bigram()
    cfg = OmegaConf.merge(CFG, {"metric": "val_loss"})
    df = canonicalize(raw, cfg)
    assert np.allclose(df["bigram"], ref * 0.7)  # bigram_val_loss sits beside val_loss
    fits = fit_all(canonicalize(raw.drop(columns=["bigram_val_bpb", "bigram_val_loss"]), CFG), CFG)
    assert fits.data["bigram"] is None and not [n for n in fits.notes if "bigram" in n]


def test_no_run_near_the_reference_gives_a_block_without_a_note() -> None:
    raw, ref = _table_with_bigram()
    raw["bigram_val_bpb"] = ref * 2
    df = canonicalize(raw, CFG)
    block = bigram_plateau(df, None)
    assert block is not None and block["runs"] == [] and block["reference"] == pytest.approx(2 * ref)


def test_a_perplexity_column_converts_its_bigram_reference_too(tmp_path: Path) -> None:
    raw, ref = _table_with_bigram()
    table = raw[["params_total", "tokens", "flops", "budget_flops"]].assign(
        ppl=np.exp(raw["val_bpb"]), bigram_ppl=np.exp(ref))
    path = tmp_path / "ppl.csv"
    table.to_csv(path, index=False)
    df = load_table(str(path), OmegaConf.create({"metric": "ppl", "units": {"loss": "perplexity"}}))
    assert np.allclose(df["loss"], raw["val_bpb"]) and np.allclose(df["bigram"], ref)


def test_the_isoflop_plot_draws_the_reference() -> None:
    raw, ref = _table_with_bigram()
    df = canonicalize(raw, CFG)
    fig = plot_isoflop(fit_all(df, CFG), df)
    lines = [ln for ln in fig.axes[0].get_lines() if str(ln.get_label()).startswith("bigram model")]
    assert len(lines) == 1 and np.allclose(lines[0].get_ydata(), ref)
