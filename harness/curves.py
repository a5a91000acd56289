"""Learning curves of every run, stored beside its record, and the live state a sweep view or status reads.

Layout inside a results directory (next to runs/<run_id>.json):
    curves/<run_id>.jsonl   one JSON object per line: a `meta` line, then `train` points (mean training loss of
                            each log window, at train.log_every) and `val` points (loss and bits per byte on a
                            small fixed eval slice, train.curve_eval_windows windows, at train.curve_points
                            evenly spaced steps). Each line is appended with one write(), so a kill leaves at most
                            a torn last line, which readers drop.
    live/<run_id>.json      the run's latest step/loss, pid and host, replaced atomically at each log point and
                            removed once the record is written (what `harness-status` and the live view poll).
A resumed run keeps the points up to its checkpoint's step and continues from there, so its curve is one
continuous curve without duplicates. The final row's val_bpb is still computed on the full eval slice.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.figures import colors, png_bytes
from harness.fsutil import atomic_write
from harness.trackers import check_tracker, make_tracker

CURVES_DIR, LIVE_DIR = "curves", "live"
LIVE_VIEW = "HARNESS_LIVE_VIEW"  # set by a sweep's live view (harness.live): per-run bars off in its jobs
CURVES_PLOT = ("curves.png", "Learning curves: training loss (lines) and validation loss on the curve slice (dots) "
               "per budget, and the held-out runs")


def curve_path(results_dir: Path, run_id: str) -> Path:
    """Where run run_id's learning curve lives."""
    return Path(results_dir) / CURVES_DIR / f"{run_id}.jsonl"


def live_path(results_dir: Path, run_id: str) -> Path:
    """Where run run_id's live state lives while it trains."""
    return Path(results_dir) / LIVE_DIR / f"{run_id}.json"


def val_steps(steps: int, points: int) -> set[int]:
    """The steps (1-based, after the step) at which a curve takes a validation point: `points` evenly spaced,
    the last at the final step."""
    if points <= 0 or steps <= 0:
        return set()
    n = min(points, steps)
    return {max(1, round(k * steps / n)) for k in range(1, n + 1)}


def read_curve(path: Path) -> list[dict[str, Any]]:
    """The points of a curve file in order; a torn or unreadable line (a kill mid-append) is dropped."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def _append(path: Path, obj: dict[str, Any]) -> None:
    """Append one line with a single write() (O_APPEND), so concurrent readers see whole lines or a torn tail."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, _line(obj))
    finally:
        os.close(fd)


@dataclass
class CurveLog:
    """One run's curve writer: train points at each log window, val points at val_steps, live state, tracker."""

    results_dir: Path
    run_id: str
    meta: dict[str, Any]
    steps: int
    points: set[int]
    evaluate: Callable[[], tuple[float, float]] | None = None  # -> (val loss, val bpb) on the curve slice
    tracker: Any = None
    enabled: bool = True
    started: float = field(default_factory=time.time)

    def open(self, start_step: int) -> CurveLog:
        """Start the file (fresh run) or cut it back to start_step (resumed run), atomically, before appending."""
        if not self.enabled:
            return self
        path = curve_path(self.results_dir, self.run_id)
        kept = [p for p in read_curve(path) if p.get("kind") != "meta" and int(p.get("step", 0)) <= start_step]
        head = {"kind": "meta", **self.meta, "steps": self.steps}
        atomic_write(path, [_line(head), *(_line(p) for p in kept)])
        self._live(start_step, float("nan"))
        return self

    def after_step(self, step: int, logged: bool, train_loss: float, lr: float) -> None:
        """Called after every optimizer step: a train point when a log window just closed, a val point when due."""
        if not self.enabled:
            return
        if logged:
            self.add({"kind": "train", "step": step, "loss": train_loss, "lr": lr})
            self._live(step, train_loss)
        if step in self.points and self.evaluate is not None:
            loss, bpb = self.evaluate()
            self.add({"kind": "val", "step": step, "loss": loss, "bpb": bpb})

    def add(self, point: dict[str, Any]) -> None:
        """Append one point (with its wall time since the run started) and hand it to the tracker."""
        point = {**point, "t": round(time.time() - self.started, 3)}
        _append(curve_path(self.results_dir, self.run_id), point)
        if self.tracker is not None:
            self.tracker.log_point(point)

    def _live(self, step: int, loss: float) -> None:
        state = {**self.meta, "step": step, "steps": self.steps, "loss": None if not math.isfinite(loss) else loss,
                 "pid": os.getpid(), "host": socket.gethostname(), "started": self.started, "updated": time.time()}
        atomic_write(live_path(self.results_dir, self.run_id), [json.dumps(state).encode()])

    def close(self, record: dict[str, Any]) -> None:
        """The run's record is written: log the final row to the tracker, close it, drop the live state."""
        if not self.enabled:
            return
        if self.tracker is not None:
            self.tracker.log_final(record)
            self.tracker.close()
        live_path(self.results_dir, self.run_id).unlink(missing_ok=True)


def curve_log(ctx: Any, tc: Any, start_step: int, main: bool, evaluate: Callable[[], tuple[float, float]]) -> CurveLog:
    """The CurveLog of a run (ctx: harness.plan.RunContext, tc: the train config), opened at start_step with its
    tracker (train.tracker, logging to train.tracker_dir or <results_dir>/tracker, grouped by the results
    directory's name, i.e. the sweep); inactive off the main rank."""
    kind = check_tracker(str(tc.get("tracker", "none")))  # on every rank, so all refuse alike
    tracker = None
    if main and kind != "none":
        from omegaconf import OmegaConf

        logdir = Path(str(tc.get("tracker_dir") or Path(ctx.results_dir) / "tracker"))
        config = OmegaConf.to_container(ctx.cfg, resolve=True) if ctx.cfg is not None else {}
        tracker = make_tracker(kind, logdir, Path(ctx.results_dir).absolute().name, ctx.run_id, config, start_step)
    meta = {"run_id": ctx.run_id, "model": ctx.name, "budget": ctx.budget, "d_model": ctx.gcfg.d_model,
            "log_every": int(tc.log_every), "curve_eval_windows": int(tc.get("curve_eval_windows", 32))}
    points = val_steps(ctx.plan.steps, int(tc.get("curve_points", 10)))
    log = CurveLog(Path(ctx.results_dir), ctx.run_id, meta, ctx.plan.steps, points, evaluate, tracker, main)
    return log.open(start_step)


# ------------------------------------------------------------------------------------------------ reading back
def load_curves(results_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every curve of a results directory, keyed by run_id."""
    d = Path(results_dir) / CURVES_DIR
    return {p.stem: read_curve(p) for p in sorted(d.glob("*.jsonl"))} if d.is_dir() else {}


def read_live(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The live state of every run that is training (or was killed before writing its record), by run_id."""
    d = Path(results_dir) / LIVE_DIR
    out = {}
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):  # replaced or removed while we read it
            continue
    return out


def _series(points: list[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    pts = [p for p in points if p.get("kind") == kind and p.get(key) is not None]
    return [int(p["step"]) for p in pts], [float(p[key]) for p in pts]


def _budget_groups(curves: dict[str, list[dict[str, Any]]], records: dict[str, dict[str, Any]]
                   ) -> dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]]:
    """Curves grouped into one panel per budget of the sweep runs, plus one 'held-out' panel."""
    groups: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {}
    for rid, pts in curves.items():
        rec = records.get(rid)
        if rec is None or not pts:
            continue
        key = "held-out" if rec.get("role") == "holdout" else f"{float(rec['budget_flops']):.3g} FLOPs"
        groups.setdefault(key, []).append((rec, pts))
    order = sorted(groups, key=lambda k: (k == "held-out", float(k.split()[0]) if k != "held-out" else 0.0))
    return {k: sorted(groups[k], key=lambda rp: float(rp[0].get("params_total") or 0)) for k in order}


def plot_curves(results_dir: Path, records: dict[str, dict[str, Any]]) -> Any:
    """One panel per budget (and one for the held-out runs): training loss (lines) and validation loss on the
    curve slice (dots), both in nats, vs the fraction of the run's steps, one colour per size; None without
    curves."""
    import matplotlib.pyplot as plt

    groups = _budget_groups(load_curves(results_dir), records)
    if not groups:
        return None
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, runs) in zip(axes.flat, groups.items()):
        for color, (rec, pts) in zip(colors(len(runs)), runs):
            steps = max(1, int(rec.get("steps") or 1))
            label = f"{rec.get('model')} ({float(rec.get('params_total') or 0):.2g} params)"
            x, y = _series(pts, "train", "loss")
            ax.plot([s / steps for s in x], y, color=color, lw=1.2, label=label)
            vx, vy = _series(pts, "val", "loss")
            ax.plot([s / steps for s in vx], vy, "o", color=color, ms=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("fraction of the run's steps")
        ax.set_ylabel("loss (nats): train lines, val dots")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


@dataclass
class CurvesPlot:
    """The curves figure as report.write_report takes it (harness.report.RenderedPlot)."""

    name: str
    caption: str
    png: bytes


def curves_plots(results_dir: Path, records: dict[str, dict[str, Any]]) -> list[CurvesPlot]:
    """[the curves figure] for report.md when results_dir holds curves of these records (run_id -> record,
    harness.results.read_records), else []."""
    import matplotlib.pyplot as plt

    if not Path(results_dir).is_dir():
        return []
    fig = plot_curves(results_dir, records)
    if fig is None:
        return []
    png = png_bytes(fig)
    plt.close(fig)
    return [CurvesPlot(CURVES_PLOT[0], CURVES_PLOT[1], png)]
