"""report.write_report: plots, report.md, fits.json, extra sections and the held-out point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from harness.analysis import canonicalize, fit_all, predict_at_budget
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.report import PLOTS, fmt, fmt_est, plot_frontier, render_markdown, write_report

LAW = Law()


@pytest.fixture(scope="module")
def fitted():
    df = canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6, noise=0.005, seed=9))
    df.loc[2, "loss"] = np.nan  # one NaN run: excluded with a warning that must reach the report
    return fit_all(df, {"bootstrap": 40}), df


def holdout(fits) -> dict:
    p = predict_at_budget(fits, 1e22)
    return {"flops": 1e22, "loss": float(LAW.frontier(1e22)), "label": "held-out 1e22",
            "predicted": {k: {"loss": p[k]["loss"], "lo": p[k]["loss_lo"], "hi": p[k]["loss_hi"]}
                          for k in ("approach2", "approach3")}}


def test_write_report_outputs(fitted, tmp_path: Path) -> None:
    fits, df = fitted
    fig = Figure()
    fig.add_subplot().plot([1, 2], [3, 4])
    png = tmp_path / "lr_sweep.png"
    fig.savefig(png)
    extra = ["## Plain section\n\nraw markdown", {"title": "Held-out check", "body": "predicted vs measured",
                                                   "image": fig}, {"title": "LR sweep", "body": "", "image": str(png)}]
    files = write_report(fits, df, tmp_path / "out", extra_sections=extra, holdout=holdout(fits))
    out = tmp_path / "out"
    assert set(files) >= {"report.md", "fits.json", "bootstrap_samples.npz", *PLOTS.values(), "held_out_check.png"}
    report = (out / "report.md").read_text()
    assert "## Plain section" in report and "## Held-out check" in report and "](held_out_check.png)" in report
    assert "excluded" in report and "NaN" in report  # the warning reaches the report
    assert report.index("## Limitations") < report.index("## Held-out check")
    assert "![LR sweep](lr_sweep.png)" in report and (out / "lr_sweep.png").read_bytes()[:4] == b"\x89PNG"
    d = json.loads((out / "fits.json").read_text())
    assert d["data"]["excluded"] == {"nan_loss": 1}
    for name in PLOTS.values():
        assert (out / name).stat().st_size > 10_000


def test_frontier_plot_draws_holdout_and_bands(fitted, tmp_path: Path) -> None:
    fits, df = fitted
    fig = plot_frontier(fits, df, tmp_path / "f.png", holdout(fits))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "held-out 1e22" in labels and "approach2 prediction" in labels
    assert len(ax.collections) >= 3  # runs + two bootstrap bands
    assert ax.get_xlim()[1] >= 2e22  # the axis extends to the held-out budget
    plain = plot_frontier(fits, df, tmp_path / "g.png")
    assert "held-out 1e22" not in [t.get_text() for t in plain.axes[0].get_legend().get_texts()]


def test_rewrite_replaces_previous_outputs(fitted, tmp_path: Path) -> None:
    fits, df = fitted
    out = tmp_path / "out"
    out.mkdir()
    (out / "fits.json").write_text("stale")
    (out / "user_notes.txt").write_text("keep me")
    write_report(fits, df, out)
    assert json.loads((out / "fits.json").read_text())["schema_version"] == 1
    assert (out / "user_notes.txt").read_text() == "keep me"


def test_markdown_tables_and_formatting(fitted) -> None:
    fits, _ = fitted
    md = render_markdown(fits)
    assert "| a (N_opt ∝ C^a) |" in md and "## Budgets" in md and "## Predictions" in md
    assert fmt(1.23456e21) == "1.235e+21" and fmt(None) == "-" and fmt(0.4516) == "0.4516"
    assert fmt_est({"value": 0.45, "lo": 0.4, "hi": 0.5}) == "0.45 [0.4, 0.5]"
