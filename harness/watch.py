"""What a sweep is doing, read from its results directory alone: the plan manifest, the records, the live state
and the curves. Read-only (no lock file, no writes), so `harness-status` and the live view are safe while jobs
write: every file they read is replaced atomically or appended a whole line at a time.

    plan.json   the planned runs (run_id, model, budget, steps, est. seconds, role; a WSD branch also its cost:
                flops, start_step), written when a multirun starts (harness.live); an LR sweep adds each round's
                runs to it.
A run is `done` (an ok record), `failed` (a diverged/failed record), `running` (a live state whose process is
alive, or, on another host, that changed in the last `stale_s` seconds), else `missing` (planned, no record, not
running: not started yet, or killed; a kill leaves its last step in the live state and a checkpoint to resume).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.curves import CURVES_DIR, LIVE_DIR, read_live
from harness.errors import HarnessError
from harness.fsutil import atomic_write
from harness.results import read_records

MANIFEST = "plan.json"
STATES = ("done", "running", "failed", "missing")


# ------------------------------------------------------------------------------------------------ the manifest
def write_manifest(results_dir: Path, name: str, runs: list[dict[str, Any]]) -> None:
    """Record the planned runs of a sweep (merged with those already listed, so LR-sweep rounds add up)."""
    old = read_manifest(results_dir)
    keep = [r for r in old.get("runs", []) if old.get("sweep") == name]
    ids = {r["run_id"] for r in runs}
    doc = {"sweep": name, "updated": time.time(), "runs": [*(r for r in keep if r["run_id"] not in ids), *runs]}
    atomic_write(Path(results_dir) / MANIFEST, [json.dumps(doc, indent=1).encode()])


def read_manifest(results_dir: Path) -> dict[str, Any]:
    """plan.json of a results directory, or {} when there is none (runs trained outside a sweep)."""
    try:
        doc = json.loads((Path(results_dir) / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


# ------------------------------------------------------------------------------------------------ the state
def _alive(live: dict[str, Any], stale_s: float, now: float) -> bool:
    """Whether a live state belongs to a process still training."""
    if live.get("host") == socket.gethostname() and live.get("pid"):
        try:
            os.kill(int(live["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process: it exists
            return True
        return True
    return now - float(live.get("updated") or 0) < stale_s


@dataclass
class RunState:
    """One run as the status table and the live view show it."""

    run_id: str
    model: str
    budget: float
    role: str
    state: str
    step: int | None = None
    steps: int | None = None
    loss: float | None = None  # last training-loss window
    val_bpb: float | None = None
    est_seconds: float = 0.0
    note: str = ""
    flops: float = 0.0  # what training it costs (a WSD branch: its cooldown only); 0: its budget
    start_step: int = 0  # the step its training starts at (a WSD branch: its branch point)

    @property
    def cost(self) -> float:
        """The FLOPs this run's training spends (the plan's `flops`, else its budget)."""
        return self.flops or self.budget

    @property
    def fraction(self) -> float:
        """How much of the run's training is done: 1 with a record, its share of steps from start_step while it
        trains, 0 otherwise."""
        if self.state in ("done", "failed"):
            return 1.0
        if not self.steps or self.state != "running" or self.steps <= self.start_step:
            return 0.0
        return max(0.0, ((self.step or 0) - self.start_step) / (self.steps - self.start_step))


@dataclass
class SweepState:
    """Every run of a results directory: planned (manifest) and recorded (records, live states)."""

    results_dir: Path
    sweep: str
    runs: list[RunState] = field(default_factory=list)
    planned: int = 0

    def count(self, state: str) -> int:
        """How many runs are in this state."""
        return sum(r.state == state for r in self.runs)


def _from_record(rid: str, rec: dict[str, Any], plan: dict[str, Any]) -> RunState:
    ok = rec.get("status") == "ok"
    return RunState(rid, str(rec.get("model", plan.get("model", ""))), float(rec.get("budget_flops") or 0),
                    str(rec.get("role", "")), "done" if ok else "failed", _int(rec.get("steps")),
                    _int(rec.get("steps")) if ok else plan.get("steps"), _float(rec.get("train_loss")),
                    _float(rec.get("val_bpb")) if ok else None, float(plan.get("est_seconds") or 0),
                    "" if ok else f"{rec.get('status')}: {rec.get('error', '')}".strip(": "), *_cost(plan))


def _cost(plan: dict[str, Any]) -> tuple[float, int]:
    """A planned run's training cost and first step (plan.json's `flops`, `start_step`; absent: 0, 0)."""
    return float(plan.get("flops") or 0), int(plan.get("start_step") or 0)


def _int(x: Any) -> int | None:
    try:
        return int(float(x))
    except (TypeError, ValueError):
        return None


def _float(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _unrecorded(rid: str, plan: dict[str, Any], live: dict[str, Any] | None, alive: bool,
                resumable: bool = False) -> RunState:
    """A planned run without its record: running, or stopped (resumable: a checkpoint of it is on disk)."""
    src = {**plan, **(live or {})}
    state = "running" if live and alive else "missing"
    again = ("rerun the sweep to resume from its checkpoint" if resumable
             else "no checkpoint on disk: a rerun trains it from the start")
    note = "" if state == "running" or not live else f"stopped at step {live.get('step')} ({again})"
    return RunState(rid, str(src.get("model", "")), float(src.get("budget") or 0), str(plan.get("role", "sweep")),
                    state, _int(src.get("step")) if live else None, _int(src.get("steps")), _float(src.get("loss")),
                    None, float(plan.get("est_seconds") or 0), note, *_cost(plan))


def check_results_dir_readable(results_dir: Path) -> None:
    """Refuse a path that is not a results directory (one `error:` line, exit 2, nothing written)."""
    p = Path(results_dir)
    if not p.is_dir():
        raise HarnessError(f"{str(p)!r} is not a directory; give the results directory of a sweep, e.g. "
                           "harness-status results/demo")
    marks = ("results.csv", "runs", MANIFEST, LIVE_DIR, CURVES_DIR)
    if not any((p / m).exists() for m in marks):
        raise HarnessError(f"{str(p)!r} is not a results directory (none of {', '.join(marks)} in it); give the "
                           "directory a sweep writes to, e.g. harness-status results/demo")


def sweep_state(results_dir: Path, stale_s: float = 600.0) -> SweepState:
    """The state of every planned or recorded run of results_dir, planned runs first in plan order."""
    results_dir = Path(results_dir)
    manifest = read_manifest(results_dir)
    plan = {r["run_id"]: r for r in manifest.get("runs", [])}
    records = read_records(results_dir)
    runs_dir = results_dir / "runs"
    # a planned run is done only with its own runs/ record (harness.results.find_ok): a committed reference row in
    # results.csv (results/demo) is retrained by a rerun, so it must not show as done
    own = {p.stem for p in runs_dir.glob("*.json")} if runs_dir.is_dir() else set()
    lives = read_live(results_dir)
    current = _current(lives)
    now = time.time()
    out = SweepState(results_dir, str(manifest.get("sweep", results_dir.name)), planned=len(plan))
    for rid in [*plan, *(r for r in records if r not in plan), *(r for r in lives if r not in plan and r not in records)]:
        if rid in records and (rid in own or rid not in plan):
            out.runs.append(_from_record(rid, records[rid], plan.get(rid, {})))
        else:
            live = lives.get(rid)
            alive = live is not None and rid in current and _alive(live, stale_s, now)
            resumable = (results_dir / "checkpoints" / f"{rid}.pt").exists()
            out.runs.append(_unrecorded(rid, plan.get(rid, {}), live, alive, resumable))
    return out


def _current(lives: dict[str, dict[str, Any]]) -> set[str]:
    """The run each process (host, pid) started last: a process trains one run at a time, so an older live
    state of the same process (a run that raised or was preempted inside a worker that lives on) is not running."""
    latest: dict[tuple[Any, Any], tuple[float, str]] = {}
    for rid, live in lives.items():
        key = (live.get("host"), live.get("pid"))
        started = float(live.get("started") or 0)
        if key not in latest or started > latest[key][0]:
            latest[key] = (started, rid)
    return {rid for _, rid in latest.values()}


# ------------------------------------------------------------------------------------------------ rendering
def _num(x: float | None, fmt: str = ".4f") -> str:
    return "-" if x is None else format(x, fmt)


def status_table(st: SweepState) -> str:
    """The `harness-status` text: a summary line, then one row per run (state, model, budget, step, losses)."""
    counts = " | ".join(f"{st.count(s)} {s}" for s in STATES)
    planned = f"{st.planned} planned" if st.planned else "no plan.json (written when a multirun starts): recorded runs only"
    lines = [f"{st.results_dir}  sweep {st.sweep}: {planned} | {counts}",
             f"{'state':<8} {'run_id':<14} {'model':<16} {'role':<8} {'budget':>9} {'step':>11} {'train loss':>10} "
             f"{'val_bpb':>8}  note"]
    order = {s: i for i, s in enumerate(("running", "failed", "missing", "done"))}
    for r in sorted(st.runs, key=lambda r: (order[r.state], r.role, r.budget, r.model)):
        step = f"{r.step if r.step is not None else '-'}/{r.steps if r.steps is not None else '-'}"
        lines.append(f"{r.state:<8} {r.run_id[:14]:<14} {r.model[:16]:<16} {r.role[:8]:<8} {r.budget:>9.3g} "
                     f"{step:>11} {_num(r.loss):>10} {_num(r.val_bpb):>8}  {r.note}".rstrip())
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def overall(st: SweepState, ids: list[str], elapsed: float, skip: set[str] | frozenset[str] = frozenset()
            ) -> dict[str, Any]:
    """Progress of the runs `ids` (this multirun's): runs done, FLOPs spent (partial runs by their step; a WSD
    chain's branches by their cooldown, RunState.cost), and an
    ETA = elapsed x (est. seconds left / est. seconds done), i.e. the plan's estimates corrected by the measured
    speed (parallel jobs included); runs in `skip` (done before this multirun started) stay out of the ETA."""
    mine = [r for r in st.runs if r.run_id in set(ids)]
    done = sum(r.state in ("done", "failed") for r in mine)
    flops_all = sum(r.cost for r in mine) or 1.0
    flops_done = sum(r.cost * r.fraction for r in mine)
    timed = [r for r in mine if r.run_id not in skip]
    est_all = sum(r.est_seconds for r in timed)
    est_done = sum(r.est_seconds * r.fraction for r in timed)
    eta = elapsed * (est_all - est_done) / est_done if est_done > 0 and elapsed > 0 else None
    return {"done": done, "total": len(mine), "flops_done": flops_done, "flops_all": flops_all,
            "failed": sum(r.state == "failed" for r in mine), "eta": eta, "elapsed": elapsed}


def bar(fraction: float, width: int = 24) -> str:
    """A text bar, e.g. '██████░░░░' for 0.6."""
    n = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * n + "░" * (width - n)


def view_lines(st: SweepState, ids: list[str], elapsed: float, width: int = 100,
               skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The live view: one overall line (runs, FLOPs, elapsed, ETA) and one line per running job of `ids`."""
    o = overall(st, ids, elapsed, skip)
    eta = "-" if o["eta"] is None else _clock(o["eta"])
    failed = f" | {o['failed']} failed" if o["failed"] else ""
    head = (f"[{st.sweep}] {bar(o['flops_done'] / o['flops_all'], 16)} {o['done']}/{o['total']} runs | "
            f"{o['flops_done']:.3g}/{o['flops_all']:.3g} FLOPs ({100 * o['flops_done'] / o['flops_all']:.0f}%) | "
            f"{_clock(elapsed)} elapsed | ETA {eta}{failed}")
    out = [head[:width]]
    for r in (r for r in st.runs if r.state == "running" and r.run_id in set(ids)):
        line = (f"  {r.model:<16} {r.budget:>8.3g} FLOPs  step {r.step or 0:>6}/{r.steps or 0:<6} "
                f"{bar(r.fraction, 12)}  loss {_num(r.loss, '.3f')}")
        out.append(line[:width])
    return out


def status_command(argv: list[str] | None = None) -> str:
    """`harness-status [results_dir] [--stale S]`: the status table of a results directory (default results/demo),
    or a HarnessError when the path is not one."""
    import argparse

    p = argparse.ArgumentParser(prog="harness-status", description="Planned, done, running, failed and missing "
                                "runs of a sweep, read from its results directory (read-only, safe mid-sweep).")
    p.add_argument("results_dir", nargs="?", default="results/demo", help="a sweep's results directory")
    p.add_argument("--stale", type=float, default=600.0, metavar="S",
                   help="a run on another host counts as running if its live state changed in the last S seconds")
    args = p.parse_args(argv)
    check_results_dir_readable(Path(args.results_dir))
    return status_table(sweep_state(Path(args.results_dir), args.stale))
