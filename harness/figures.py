"""Figure helpers shared by every plot the harness writes: one palette and one way to turn a figure into PNG
bytes (so reports are rendered in memory and written atomically)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def colors(n: int) -> list[Any]:
    """n colours from viridis, avoiding its palest end (readable on white)."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.1 + 0.8 * i / max(1, n - 1)) for i in range(n)]


def png_bytes(fig: Any) -> bytes:
    """A figure's PNG bytes, as every report writes them (dpi 120, tight box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def bar_lengths(value: Any, lo: Any, hi: Any) -> list[Any]:
    """matplotlib's xerr/yerr [[below], [above]] for intervals around value, each at least 0: a bootstrap percentile
    interval need not contain the point estimate (an LR vertex near its grid's edge), and errorbar refuses negatives."""
    v, lo, hi = np.asarray(value, float), np.asarray(lo, float), np.asarray(hi, float)
    return [np.maximum(0.0, v - lo).ravel(), np.maximum(0.0, hi - v).ravel()]


# Every file an analysis may write (harness.report for IsoFLOP tables, harness.table_report for the rest)
ANALYSIS_FILES = ("report.md", "fits.json", "bootstrap_samples.npz", "isoflop.png", "optimal_nd.png", "frontier.png",
                  "approach3.png", "backtest.png", "holdout.png", "law_N.png", "law_D.png", "law_C.png")


def stale_outputs(files: Sequence[str] | dict[str, bytes]) -> list[str]:
    """The analysis files a new set lacks: removed on publishing, so a rerun never leaves an old analysis's plots."""
    return [name for name in ANALYSIS_FILES if name not in files]
