"""One live view of a sweep in the launching terminal: a Hydra callback (hydra.experimental.callback.Callback,
registered in conf/sweep_run.yaml under hydra.callbacks) that works for every launcher, since it only reads the
results directory (harness.watch) from a thread of the launching process.

on_multirun_start writes the plan manifest (plan.json, what `harness-status` reads), turns per-run tqdm bars off
in the jobs (HARNESS_LIVE_VIEW=1, inherited by joblib's workers), sends Hydra's per-job launch listing
(`#k : plan_index=k ...`) to <sweep dir>/sweep.log, and starts the view:
- tty (a terminal): the process's stdout/stderr (so every job's output) go to sweep.log, and the terminal shows
  one overall bar (runs, FLOPs, elapsed, ETA) plus one line per running job, redrawn in place once a second;
  at the end the log's error and warning lines are repeated on the terminal.
- plain (CI, nohup, a pipe): output is left alone, and a progress line is printed at most every live_every_s.
The view never stops a sweep: if it cannot plan (a bad config), the jobs report the error themselves.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.curves import LIVE_VIEW
from harness.watch import STATES, sweep_state, view_lines, write_manifest

LAUNCH_LINE = re.compile(r"^\s*#\d+ : ")
LAUNCHER_LOGGERS = ("hydra._internal.core_plugins.basic_launcher", "hydra_plugins.hydra_joblib_launcher._core",
                    "hydra_plugins.hydra_submitit_launcher.submitit_launcher")


def _plain_cfg(config: DictConfig) -> DictConfig:
    """The sweep config without Hydra's node (whose runtime fields are not set yet at multirun start)."""
    data = OmegaConf.to_container(config, resolve=False)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return OmegaConf.create(data)


def planned_runs(cfg: DictConfig) -> list[dict[str, Any]]:
    """The runs a sweep config plans (an IsoFLOP sweep, or the LR sweep's current round), with their run ids."""
    from harness.data import load_corpus
    from harness.plan import results_dir, run_id_of

    corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
    if cfg.sweep.get("kind") == "lr":
        from harness.tune import job_config, losses_from, plan_round

        loss_of, _ = losses_from(cfg)
        jobs = [(r, job_config(cfg, r), "tune") for r in plan_round(cfg, int(cfg.get("sweep_round") or 0), loss_of)]
    else:
        from harness.chain import chain_costs
        from harness.results import check_compatible
        from harness.sweep import job_runs, plan_jobs, planned_ids

        check_compatible(results_dir(cfg), corpus.fingerprint)
        plan, _, groups = plan_jobs(cfg)  # a job is one run, a pack of seeds or a WSD chain
        job_of = {pr.index: j for j, group in enumerate(groups) for pr in job_runs(group)}
        cost = {i: {"flops": f, "start_step": s, "est_seconds": e} for i, (f, s, e) in chain_costs(groups).items()}
        ids = planned_ids(cfg, plan, corpus.fingerprint, corpus.vocab_size)
        return [{"index": r.index, "run_id": rid, "model": r.name, "budget": r.budget, "steps": r.steps,
                 "est_seconds": r.est_seconds, "role": "sweep", "job": job_of.get(r.index, r.index),
                 **cost.get(r.index, {})} for r, rid in zip(plan, ids)]
    return [{"index": r.index, "run_id": run_id_of(job, corpus.fingerprint, corpus.vocab_size), "model": r.name,
             "budget": r.budget, "steps": r.steps, "est_seconds": r.est_seconds, "role": role,
             "job": r.index} for r, job, role in jobs]


def launched_indices(config: DictConfig, n: int) -> list[int]:
    """The plan indices this multirun launches (its plan_index sweep override), else all n."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        task = list(config.hydra.overrides.task)
        for ov in OverridesParser.create().parse_overrides(task):
            if ov.key_or_group == "plan_index":
                vals = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.value()]
                return [int(v) for v in vals if 0 <= int(v) < n]
    except Exception:  # an override the parser cannot expand: show the whole plan
        pass
    return list(range(n))


class _LaunchListing(logging.Filter):
    """Drops Hydra's `#k : overrides` lines from the terminal, appending them to the sweep log instead."""

    def __init__(self, log_path: Path) -> None:
        super().__init__()
        self.log_path = log_path

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not LAUNCH_LINE.match(msg):
            return True
        with open(self.log_path, "a") as f:
            f.write(msg.strip() + "\n")
        return False


class Renderer(threading.Thread):
    """Polls the results directory and draws the view: in place on a terminal, or as plain lines at a modest rate."""

    def __init__(self, results_dir: Path, ids: list[str], out: TextIO, tty: bool, every_s: float) -> None:
        """ids: this multirun's run ids; out: the terminal (tty) or stdout (plain)."""
        super().__init__(daemon=True)
        self.results_dir, self.ids, self.out, self.tty, self.every_s = results_dir, ids, out, tty, every_s
        self.started = time.time()
        self.halt = threading.Event()
        self.drawn = 0  # lines on screen (tty)
        self.last_plain = ("", 0.0)
        st = sweep_state(results_dir)
        self.skip = {r.run_id for r in st.runs if r.state in ("done", "failed")}  # done before: not in the ETA

    def run(self) -> None:
        """Redraw until stopped (tty: every second; plain: check every second, print when due)."""
        while not self.halt.wait(1.0):
            self.draw()

    def lines(self) -> list[str]:
        """The current view's lines."""
        width = shutil.get_terminal_size((100, 20)).columns - 1 if self.tty else 160
        return view_lines(sweep_state(self.results_dir), self.ids, time.time() - self.started, width, self.skip)

    def draw(self, final: bool = False) -> None:
        """Draw once; a read error (a file replaced mid-read, a bad CSV) skips this frame."""
        try:
            lines = self.lines()
        except Exception:
            return
        if self.tty:
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.out.write(up + "\x1b[J" + "\n".join(lines) + "\n")
            self.drawn = len(lines)
        else:
            text, when = "; ".join([lines[0], *(ln.strip() for ln in lines[1:])]), time.time()
            if final or (text != self.last_plain[0] and when - self.last_plain[1] >= self.every_s):
                self.out.write(text + "\n")
                self.last_plain = (text, when)
        self.out.flush()

    def stop(self) -> None:
        """Stop polling and draw the final state."""
        self.halt.set()
        if self.is_alive():
            self.join(timeout=5)
        self.draw(final=True)


def _mode(config: DictConfig) -> str:
    """live: auto | tty | plain | off (auto: tty when stdout is a terminal)."""
    mode = str(config.get("live", "auto")).lower()
    if mode == "auto":
        return "tty" if sys.stdout.isatty() else "plain"
    return mode if mode in ("tty", "plain") else "off"


class LiveView(Callback):
    """The Hydra callback (conf/sweep_run.yaml: hydra.callbacks.live): starts and ends the view of a multirun."""

    def __init__(self) -> None:
        """Nothing runs until on_multirun_start."""
        super().__init__()
        self.renderer: Renderer | None = None
        self.saved: tuple[int, int] | None = None  # the terminal's stdout/stderr fds while output goes to the log
        self.log_path: Path | None = None
        self.filter: _LaunchListing | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Hydra ships its callbacks to joblib's workers with every job: they get a fresh, idle view."""
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """See __getstate__."""
        self.__init__()  # type: ignore[misc]

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Write plan.json, hide the launch listing and per-run bars, start the view (never fails the sweep)."""
        mode = _mode(config)
        if mode == "off":
            return
        try:
            cfg = _plain_cfg(config)
            from harness.plan import results_dir

            where = results_dir(cfg)
            runs = planned_runs(cfg)
            write_manifest(where, str(cfg.sweep.name), runs)
            launched = set(launched_indices(config, 1 + max((r["job"] for r in runs), default=-1)))
            ids = [r["run_id"] for r in runs if r["job"] in launched]  # plan_index = a job: one run or a pack
            self.log_path = Path(str(config.hydra.sweep.dir)) / "sweep.log"
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        except Exception as e:  # a bad config: the jobs say what is wrong
            print(f"[live] no live view ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", flush=True)
            return
        os.environ[LIVE_VIEW] = "1"
        self.filter = _LaunchListing(self.log_path)
        for name in LAUNCHER_LOGGERS:
            logging.getLogger(name).addFilter(self.filter)
        out = self._redirect() if mode == "tty" else sys.stdout
        print(f"[live] {len(ids)} runs -> {where}; job output and the launch listing: {self.log_path}", file=out,
              flush=True)
        self.renderer = Renderer(where, ids, out, mode == "tty", float(config.get("live_every_s", 30)))
        self.renderer.start()

    def _redirect(self) -> TextIO:
        """Point fds 1 and 2 (this process and the workers it starts) at the sweep log; return the terminal."""
        assert self.log_path is not None
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        atexit.register(self._restore)  # a sweep that raises never reaches on_multirun_end
        return os.fdopen(os.dup(self.saved[0]), "w", buffering=1)

    def _restore(self) -> None:
        """Give the terminal back and repeat the log's error/warning lines on it."""
        if self.saved is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.saved = None
        if self.renderer is not None:
            self.renderer.out.close()
        for line in _notable(self.log_path):
            print(line, file=sys.stderr)
        print(f"[live] job output: {self.log_path}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Final view, terminal restored, a one-line summary by state."""
        if self.renderer is None:
            return
        self.renderer.stop()
        st = sweep_state(self.renderer.results_dir)
        self._restore()
        mine = [r for r in st.runs if r.run_id in set(self.renderer.ids)]
        print("[live] " + ", ".join(f"{sum(r.state == s for r in mine)} {s}" for s in STATES), flush=True)
        os.environ.pop(LIVE_VIEW, None)
        for name in LAUNCHER_LOGGERS:
            logging.getLogger(name).removeFilter(self.filter)
        self.renderer = None


def _notable(log_path: Path | None, limit: int = 20) -> list[str]:
    """The log's error/warning lines (deduplicated, at most `limit`), and a traceback's last line."""
    if log_path is None or not log_path.exists():
        return []
    out: list[str] = []
    for line in log_path.read_text(errors="replace").splitlines():
        s = line.strip()
        if (s.startswith(("error:", "warning:", "Error", "[harness] preempted")) or "Error:" in s) and s not in out:
            out.append(s)
    return out[:limit]
