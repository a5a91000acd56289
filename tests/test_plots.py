"""harness.plots: the four report plots, the held-out point and the bootstrap bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.analysis import canonicalize, fit_all, predict_at_budget
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.plots import PLOT_FILES, plot_frontier, render_plots

LAW = Law()


@pytest.fixture(scope="module")
def fitted():
    df = canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6, noise=0.005, seed=9))
    df.loc[2, "loss"] = np.nan
    return fit_all(df, {"bootstrap": 40}), df


def holdout(fits) -> dict:
    p = predict_at_budget(fits, 1e22)
    return {"flops": 1e22, "loss": float(LAW.frontier(1e22)), "label": "held-out 1e22",
            "predicted": {k: p[k]["loss"] for k in ("approach2", "approach3")}}


def test_frontier_plot_draws_holdout_and_bands(fitted, tmp_path: Path) -> None:
    fits, df = fitted
    fig = plot_frontier(fits, df, tmp_path / "f.png", holdout(fits))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "held-out 1e22" in labels and "approach2 prediction" in labels
    assert len(ax.collections) >= 3  # runs + two bootstrap bands
    assert ax.get_xlim()[1] >= 2e22  # the axis extends to the held-out budget
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    plain = plot_frontier(fits, df, tmp_path / "g.png")
    assert "held-out 1e22" not in [t.get_text() for t in plain.axes[0].get_legend().get_texts()]


def test_render_plots_in_memory(fitted) -> None:
    fits, df = fitted
    plots = render_plots(fits, df)
    assert [p.name for p in plots] == PLOT_FILES
    assert all(p.png[:4] == b"\x89PNG" and len(p.png) > 10_000 for p in plots)
    assert not any("held-out" in p.caption for p in plots)
