"""harness.plots: the four report plots, the held-out point and the bootstrap bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.analysis import canonicalize, fit_all, predict_at_budget
from harness.analysis.noise import prediction_interval
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.plots import PLOT_FILES, plot_frontier, plot_holdout, render_plots

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


def test_holdout_plot_draws_the_prediction_interval_only_where_it_is_known(fitted) -> None:
    fits, _ = fitted
    run = holdout(fits)
    plain = plot_holdout(fits, [run]).axes[0]
    wide = {k: prediction_interval(p, 0.02, 0.95) for k, p in run["predicted"].items()}
    noisy = plot_holdout(fits, [{**run, "prediction_interval": wide}]).axes[0]
    labels = [t.get_text() for t in noisy.get_legend().get_texts()]
    assert "approach3, with one run's seed noise" in labels
    assert not any("seed noise" in t.get_text() for t in plain.get_legend().get_texts())
    assert len(noisy.containers) == len(plain.containers) + 2  # one pale bar per approach
    bar = noisy.containers[-1].lines[2][0].get_segments()[0]  # approach3's pale bar spans its prediction interval
    assert (bar[0][1], bar[1][1]) == pytest.approx((wide["approach3"].lo, wide["approach3"].hi))
