"""report.write_report: report.md, fits.json, the samples, extra sections and the plots, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import harness.fsutil
import harness.report
from harness.analysis import Estimate, canonicalize, fit_all, predict_at_budget, predict_many
from harness.analysis.synthetic import Law, isoflop_sweep
from harness.plots import PLOT_FILES, render_plots
from harness.report import fmt, fmt_est, render_markdown, write_report

LAW = Law()


@pytest.fixture(scope="module")
def fitted():
    df = canonicalize(isoflop_sweep(LAW, budgets=(1e18, 1e19, 1e20, 1e21), sizes_per_budget=6, noise=0.005, seed=9))
    df.loc[2, "loss"] = np.nan  # one NaN run: excluded with a warning that must reach the report
    fits = fit_all(df, {"bootstrap": 40})
    fits.predictions = predict_many(fits)
    return fits, df


def holdout(fits) -> dict:
    p = predict_at_budget(fits, 1e22)
    return {"flops": 1e22, "loss": float(LAW.frontier(1e22)), "label": "held-out 1e22",
            "predicted": {k: p[k]["loss"] for k in ("approach2", "approach3")}}


def test_write_report_outputs(fitted, tmp_path: Path) -> None:
    fits, df = fitted
    fig = Figure()
    fig.add_subplot().plot([1, 2], [3, 4])
    png = tmp_path / "lr_sweep.png"
    fig.savefig(png)
    extra = ["## Plain section\n\nraw markdown", {"title": "Held-out check", "body": "predicted vs measured",
                                                   "image": fig}, {"title": "LR sweep", "body": "", "image": str(png)}]
    files = write_report(fits, render_plots(fits, df, holdout(fits)), tmp_path / "out", extra_sections=extra)
    out = tmp_path / "out"
    assert set(files) >= {"report.md", "fits.json", "bootstrap_samples.npz", *PLOT_FILES, "held_out_check.png"}
    report = (out / "report.md").read_text()
    assert "## Plain section" in report and "## Held-out check" in report and "](held_out_check.png)" in report
    assert "excluded" in report and "NaN" in report  # the warning reaches the report
    assert report.index("## Limitations") < report.index("## Held-out check")
    assert "![LR sweep](lr_sweep.png)" in report and (out / "lr_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "and the held-out run](frontier.png)" in report
    d = json.loads((out / "fits.json").read_text())
    assert d["data"]["excluded"] == {"nan_loss": 1}
    for name in PLOT_FILES:
        assert (out / name).stat().st_size > 10_000
        assert f"]({name})" in report


def test_rewrite_replaces_previous_outputs(fitted, tmp_path: Path) -> None:
    fits, df = fitted
    out = tmp_path / "out"
    out.mkdir()
    (out / "fits.json").write_text("stale")
    (out / "user_notes.txt").write_text("keep me")
    write_report(fits, render_plots(fits, df), out)
    assert json.loads((out / "fits.json").read_text())["schema_version"] == 2
    assert (out / "user_notes.txt").read_text() == "keep me"


def test_files_go_through_atomic_write_with_fits_json_last(fitted, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fits, _ = fitted
    order: list[str] = []
    real = harness.fsutil.atomic_write

    def spy(path: Path, chunks) -> None:
        order.append(path.name)
        real(path, chunks)

    monkeypatch.setattr(harness.fsutil, "atomic_write", spy)  # publish() writes through it
    write_report(fits, [], tmp_path / "out")
    assert order[-1] == "fits.json" and set(order) == {"report.md", "bootstrap_samples.npz", "fits.json"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(order)  # no temp files left


def test_markdown_tables_and_formatting(fitted) -> None:
    fits, _ = fitted
    md = render_markdown(fits)
    assert "| a (N_opt ∝ C^a) |" in md and "## Budgets" in md and "## Predictions" in md
    assert fmt_est(fits.predictions[0]["approach2"]["N"], 3) in md  # predictions print as Estimates
    # each budget's parabola minimum against its best run: the gap is L* / lowest observed loss - 1
    b = next(b for b in fits.budgets if b["L_opt"].value is not None)
    assert "| L* vs best run |" in md and f"{b['L_opt'].value / b['L_min_observed'] - 1:+.2%}" in md
    assert fmt(1.23456e21) == "1.235e+21" and fmt(None) == "-" and fmt(0.4516) == "0.4516"
    assert fmt_est(Estimate(0.45, 0.4, 0.5)) == "0.45 [0.4, 0.5]" and fmt_est(None) == "-"
