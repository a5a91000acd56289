"""harness.lr_report's figures: an LR optimum whose bootstrap interval does not contain its point estimate (it
happens near a grid's edge: the LR sweep at train.batch_size=8 crashed on it after 87 trained runs) is drawn,
not refused by matplotlib's errorbar."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.estimate import Estimate
from harness.analysis.lr import LROptimum, LRRule
from harness.figures import bar_lengths, png_bytes
from harness.lr_report import TunePointData, plot_curves, plot_rule


def test_bar_lengths_are_never_negative() -> None:
    below, above = bar_lengths(1.0, 1.2, 3.0)  # the interval sits above the estimate
    assert below.tolist() == [0.0] and above.tolist() == [2.0]
    below, above = bar_lengths([2.0, 5.0], [1.0, 6.0], [4.0, 5.5])
    assert below.tolist() == [1.0, 0.0] and above.tolist() == [2.0, 0.5]


def test_lr_figures_draw_an_interval_that_misses_its_estimate() -> None:
    points = [TunePointData(d, f"family-d{d}-L2", b, 1e4 * d, 1e6 * b / 1e11, [1e-3, 2e-3, 4e-3], [3.0, 2.9, 3.1])
              for b in (1e11, 3e11) for d in (16, 24)]
    off = Estimate(2e-3, 2.2e-3, 3e-3, 100)  # lo above the value
    optima = [LROptimum(off, 2.9, "ok", 3, np.full(10, np.log(2e-3))) for _ in points]
    rule = LRRule(Estimate(1e-3, 5e-4, 2e-3, 100), Estimate(-0.2, -0.5, 0.1, 100), Estimate(0.5, 0.2, 0.8, 100), 4,
                  0.1)
    for fig in (plot_curves(points, optima), plot_rule(points, optima, rule)):
        assert png_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_errorbar_itself_refuses_negative_lengths() -> None:
    """Why bar_lengths exists: the raw differences would raise."""
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    with pytest.raises(ValueError, match="negative"):
        ax.errorbar([2e-3], [2.9], xerr=[[2e-3 - 2.2e-3], [3e-3 - 2e-3]])
