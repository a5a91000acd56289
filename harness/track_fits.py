"""An analysis logged to the sweep's tracker group (harness-analyze, and harness-validate at the end of
scripts/sweep.sh): the PNG plots it wrote and the key numbers of its fits.json (the exponents a, b and the other
fitted parameters of each approach, the predictions, the held-out errors, the backtest summary), as one run named
`analysis` beside the sweep's training runs (harness.trackers.log_summary).

Which tracker: `tracker` in conf/analyze.yaml (`analysis.tracker` for harness-validate); null means what the sweep
used: train.tracker for harness-validate, and for harness-analyze the tracker whose files are under
<results dir>/tracker (none if there are none). Offline like the training runs; a bad or missing tracker is refused
before anything is fitted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.analysis.load import cfg_get
from harness.plan import results_dir
from harness.trackers import check_tracker, log_summary

RUN_NAME = "analysis"
SECTIONS = ("data", "approach2", "approach3", "frontier", "laws")  # fits.json sections logged whole


@dataclass(frozen=True)
class AnalysisTarget:
    """Where an analysis is logged: the tracker, its directory and the sweep's group (the results dir's name)."""

    kind: str
    logdir: Path
    group: str


def detect_tracker(logdir: Path) -> str:
    """The tracker a sweep logged to, from the files under its tracker directory: TensorBoard event files in
    <group>/<run>/, else a W&B directory, else none."""
    logdir = Path(logdir)
    if not logdir.is_dir():
        return "none"
    if next(logdir.glob("*/*/events.out.tfevents.*"), None) is not None:  # <group>/<run>/, as both write
        return "tensorboard"
    return "wandb" if (logdir / "wandb").is_dir() else "none"


def analysis_target(where: Path, tracker: str | None, tracker_dir: str | None) -> AnalysisTarget:
    """The target of the analysis of the results directory `where`: `tracker` (null: detect_tracker) under
    tracker_dir (null: <where>/tracker, train.tracker_dir's default); refuses an unknown or missing tracker."""
    logdir = Path(str(tracker_dir)).expanduser() if tracker_dir else Path(where) / "tracker"
    kind = detect_tracker(logdir) if tracker is None else str(tracker)
    return AnalysisTarget(check_tracker(kind, "tracker"), logdir, Path(where).absolute().name)


def analyze_target(cfg: Any) -> AnalysisTarget:
    """harness-analyze's target: results=CSV or directory; tracker / tracker_dir from conf/analyze.yaml."""
    p = Path(str(cfg_get(cfg, "results") or ".")).expanduser()
    return analysis_target(p if p.is_dir() else p.parent, cfg_get(cfg, "tracker"), cfg_get(cfg, "tracker_dir"))


def sweep_target(cfg: Any) -> AnalysisTarget:
    """harness-validate's target: analysis.tracker / analysis.tracker_dir, else the sweep's train.tracker and
    train.tracker_dir, so the analysis joins the group its runs logged to."""
    a, tc = cfg.get("analysis") or {}, cfg.train
    kind = a.get("tracker") if a.get("tracker") is not None else tc.get("tracker", "none")
    return analysis_target(results_dir(cfg), kind, a.get("tracker_dir") or tc.get("tracker_dir"))


def _number(x: Any) -> float | None:
    """x as a finite float (bools and non-numbers: None)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _flatten(obj: Any, prefix: str) -> dict[str, float]:
    """Every number under obj as {prefix/key/...: value}; an estimate {value, lo, hi, n} as prefix (its value),
    prefix_lo and prefix_hi. Lists and strings are left out."""
    if isinstance(obj, dict) and "value" in obj and set(obj) <= {"value", "lo", "hi", "n"}:
        pairs = ((prefix, obj.get("value")), (f"{prefix}_lo", obj.get("lo")), (f"{prefix}_hi", obj.get("hi")))
        return {k: v for k, v in ((k, _number(x)) for k, x in pairs) if v is not None}
    if isinstance(obj, dict):
        out: dict[str, float] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
        return out
    v = _number(obj)
    return {} if v is None else {prefix: v}


def _comparison(c: dict[str, Any], label: str) -> dict[str, float]:
    """A prediction checked against a held-out run: predicted (with its interval ends), relative error, inside
    the law's interval and inside the prediction interval (1/0)."""
    out = _flatten({k: c.get(k) for k in ("predicted", "rel_error")}, label)
    for key in ("inside", "inside_prediction_interval"):
        if c.get(key) is not None:
            out[f"{label}/{key}"] = float(bool(c[key]))
    return out


def _holdout_scalars(v: dict[str, Any]) -> dict[str, float]:
    """One held-out run of an IsoFLOP sweep (a fits.json validation entry): its actual loss, and each approach's
    prediction, error and coverage."""
    label = f"holdout/C={float(v.get('budget') or math.nan):.3g}"
    out = _flatten({"actual": v.get("actual")}, label)
    for name, c in (v.get("comparison") or {}).items():
        out.update(_comparison(c, f"{label}/{name}"))
    return out


def _target_scalars(t: dict[str, Any]) -> dict[str, float]:
    """A table analysis' targets (harness.table_report): each law's loss at the model target and at each compute
    target, and a ladder's held-out run (actual loss; each law's prediction, error and coverage)."""
    model = t.get("model") or {}
    out = _flatten({"actual": model.get("actual")}, "holdout")
    for p in model.get("predictions") or []:
        out.update(_flatten(p.get("loss"), f"target/{p.get('law')}/loss"))
    for c in t.get("C") or []:
        for p in c.get("predictions") or []:
            out.update(_flatten(p.get("loss"), f"predict/C={float(c['C']):.3g}/{p.get('law')}/loss"))
    for r in t.get("validation") or []:
        out.update(_comparison(r, f"holdout/{r.get('law')}"))
    return out


def _backtest_scalars(row: dict[str, Any]) -> dict[str, float]:
    """One backtest summary row: mean and max |relative error| and the interval coverage of an (approach, quantity)."""
    label = f"backtest/{row.get('approach')}/{row.get('quantity')}"
    out = _flatten({k: row.get(k) for k in ("mean_abs_rel_error", "max_abs_rel_error")}, label)
    if row.get("n_intervals"):
        out[f"{label}/coverage"] = float(row.get("inside", 0)) / float(row["n_intervals"])
    if row.get("n_with_target"):  # with the target's own interval added (backtest.summarize)
        out[f"{label}/coverage_with_target"] = float(row["inside_with_target"]) / float(row["n_with_target"])
    return out


def fit_scalars(doc: dict[str, Any]) -> dict[str, float]:
    """The key numbers of a fits.json: every fitted parameter of each approach and law, each prediction (by budget,
    or at a table's targets), each held-out run's actual loss and each prediction's error and coverage, and the
    backtest summary."""
    out: dict[str, float] = {}
    for section in SECTIONS:
        out.update(_flatten(doc.get(section) or {}, section))
    for p in doc.get("predictions") or []:
        body = {k: v for k, v in p.items() if k not in ("C", "extrapolation")}
        out.update(_flatten(body, f"predict/C={float(p['C']):.3g}"))
    for v in doc.get("validation") or []:
        out.update(_holdout_scalars(v))
    for row in (doc.get("backtest") or {}).get("summary") or []:
        out.update(_backtest_scalars(row))
    return {**out, **_target_scalars(doc.get("targets") or {})}


def log_analysis(target: AnalysisTarget, files: dict[str, Any]) -> Path | None:
    """Log an analysis' outputs (files: name -> path, as write_report returns them; fits.json and the PNGs are
    used) to the target; returns where the tracker wrote (None for tracker none)."""
    if target.kind == "none":
        return None
    paths = {Path(str(p)).name: Path(str(p)) for p in files.values()}
    doc = json.loads(paths["fits.json"].read_text()) if "fits.json" in paths else {}
    images = {f"plots/{p.stem}": p for name, p in sorted(paths.items()) if name.endswith(".png") and p.exists()}
    config = {"settings": doc.get("settings", {}), "inputs": doc.get("inputs", {}), "warnings": doc.get("warnings")}
    return log_summary(target.kind, target.logdir, target.group, RUN_NAME, fit_scalars(doc), images, config)
