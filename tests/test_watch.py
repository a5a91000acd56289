"""Watching a sweep: `harness-status` (harness.watch) on synthetic and live results directories, and the live view
of a multirun (harness.live) under a pseudo-terminal: one overall bar, per-job lines, no launch listing."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.cli import status_main
from harness.curves import live_path
from harness.watch import MANIFEST, status_command, sweep_state, view_lines, write_manifest
from tests.conftest import SWEEP_SMALL


def _plan(results: Path, n: int = 4) -> list[str]:
    runs = [{"index": i, "run_id": f"run{i}", "model": f"m{i}", "budget": 1e9 * (i + 1), "steps": 10,
             "est_seconds": 10.0, "role": "sweep"} for i in range(n)]
    write_manifest(results, "toy", runs)
    return [r["run_id"] for r in runs]


def _record(results: Path, rid: str, status: str, budget: float) -> None:
    rec = {"run_id": rid, "model": "m", "budget_flops": budget, "role": "sweep", "status": status, "steps": 10,
           "train_loss": 3.5, "val_bpb": 2.25 if status == "ok" else float("nan"), "error": "" if status == "ok" else "nan"}
    (results / "runs").mkdir(parents=True, exist_ok=True)
    (results / "runs" / f"{rid}.json").write_text(json.dumps(rec))


def _live(results: Path, rid: str, pid: int, step: int, budget: float, started: float = 0.0) -> None:
    live_path(results, rid).parent.mkdir(parents=True, exist_ok=True)
    live_path(results, rid).write_text(json.dumps({"run_id": rid, "model": "m", "budget": budget, "step": step,
                                                   "steps": 10, "loss": 4.0, "pid": pid, "host": os.uname().nodename,
                                                   "started": started, "updated": time.time()}))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_status_classifies_done_failed_running_and_missing(tmp_path: Path) -> None:
    ids = _plan(tmp_path)
    _record(tmp_path, "run0", "ok", 1e9)
    _record(tmp_path, "run1", "diverged", 2e9)
    _live(tmp_path, "run2", os.getpid(), 4, 3e9)  # this process: alive
    _live(tmp_path, "run3", _dead_pid(), 7, 4e9)  # killed: its live state stays behind
    _live(tmp_path, "old", os.getpid(), 2, 1e9, started=-1.0)  # this process ran it before run2: not running
    states = {r.run_id: r for r in sweep_state(tmp_path).runs}
    assert {k: r.state for k, r in states.items()} == {"run0": "done", "run1": "failed", "run2": "running",
                                                        "run3": "missing", "old": "missing"}
    assert (states["run2"].step, states["run2"].steps, states["run2"].loss) == (4, 10, 4.0)
    assert "stopped at step 7 (no checkpoint on disk: a rerun trains it from the start)" in states["run3"].note
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "run3.pt").write_bytes(b"")  # a checkpoint of it: a rerun resumes
    assert "resume from its checkpoint" in {r.run_id: r for r in sweep_state(tmp_path).runs}["run3"].note
    table = status_command([str(tmp_path)])
    assert "sweep toy: 4 planned | 1 done | 1 running | 1 failed | 2 missing" in table
    assert re.search(r"^running\s+run2 .* 4/10\s+4\.0000", table, re.M)
    # the live view of the same state: runs 0 and 1 finished, run 2 at 4/10; FLOPs 1e9 + 2e9 + 0.4 x 3e9
    head, *jobs = view_lines(sweep_state(tmp_path), ids, elapsed=60.0, width=200)
    assert "2/4 runs" in head and "4.2e+09/1e+10 FLOPs (42%)" in head and "1 failed" in head
    assert "ETA 0:40" in head  # 24 of 40 estimated seconds done in 60 s: 16 left take 40 s
    assert "ETA 1:08" in view_lines(sweep_state(tmp_path), ids, 60.0, 200, skip={"run0"})[0]  # 14 of 30: 16 take 68 s
    assert len(jobs) == 1 and "step      4/10" in jobs[0]


def test_a_committed_reference_row_is_not_done_until_rerun(tmp_path: Path) -> None:
    # results/demo ships results.csv without runs/: a rerun retrains those runs (find_ok), so the view must not
    # count them as done; an unplanned CSV-only row still shows
    ids = _plan(tmp_path, 2)
    head = "run_id,status,budget_flops,val_bpb,data_fingerprint,flops,params_total,tokens\n"
    (tmp_path / "results.csv").write_text(head + "run0,ok,1e9,2.0,fp,1e9,100,1e6\nextra,ok,1e9,2.1,fp,1e9,200,1e6\n")
    states = {r.run_id: r.state for r in sweep_state(tmp_path).runs}
    assert states == {"run0": "missing", "run1": "missing", "extra": "done"}
    assert "0/2 runs" in view_lines(sweep_state(tmp_path), ids, elapsed=5.0, width=200)[0]
    _record(tmp_path, "run0", "ok", 1e9)
    assert {r.run_id: r.state for r in sweep_state(tmp_path).runs}["run0"] == "done"


def test_status_is_read_only(tmp_path: Path) -> None:
    _plan(tmp_path)
    _record(tmp_path, "run0", "ok", 1e9)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    status_command([str(tmp_path)])
    assert sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before


def test_status_without_a_plan_lists_recorded_runs(tmp_path: Path) -> None:
    _record(tmp_path, "solo", "ok", 1e9)
    out = status_command([str(tmp_path)])
    assert "no plan.json" in out and "1 done" in out and "solo" in out


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_status_on_something_else_is_one_error(tmp_path: Path, capsys, make: str) -> None:
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("hi")
    assert status_main([str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "harness-status results/demo" in err[0]


# ---------------------------------------------------------------- a live sweep under a pseudo-terminal


def _drain(fd: int, sink: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        sink.extend(chunk)


def test_live_sweep_view_and_status(text_corpus: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "harness-sweep"
    if not exe.exists():
        pytest.skip("harness-sweep not installed")
    results = tmp_path / "results"
    # 4x the usual tiny budgets: each run then trains for about a second, so the view (redrawn every second)
    # catches jobs mid-run even on a loaded box (at 1e9-2e9 it once drew none while the suite shared two cores)
    small = [a for a in SWEEP_SMALL if not a.startswith("sweep.budgets=")] + ["sweep.budgets=[4e9,8e9]"]
    cmd = [str(exe), "--multirun", *small, "train.eval_windows=8", "train.log_every=2", "data=text",
           f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}", f"results_dir={results}",
           "hydra.launcher.n_jobs=2", "plan_index=range(0,6)"]
    master, slave = pty.openpty()
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="120")
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path, env=env)
    os.close(slave)
    screen = bytearray()
    reader = threading.Thread(target=_drain, args=(master, screen), daemon=True)
    reader.start()
    seen: set[str] = set()
    polls = 0
    while proc.poll() is None:  # poll the status while the sweep runs (read-only, never in the way)
        if (results / MANIFEST).exists():
            if polls % 20 == 0:  # the console script now and then, the same function in between (fast)
                run = subprocess.run([str(exe.parent / "harness-status"), str(results)], capture_output=True,
                                     text=True, timeout=60)
                assert run.returncode == 0, run.stderr
                table = run.stdout
            else:
                table = status_command([str(results)])
            polls += 1
            seen |= set(re.findall(r"^(running|done|missing)\s", table, re.M))
            for line in re.findall(r"^running\s.*$", table, re.M):  # with its step and steps
                assert re.search(r"\s\d+/\d+\s", line), table
        time.sleep(0.1)
    reader.join(timeout=10)
    os.close(master)
    out = screen.decode(errors="replace")
    assert proc.returncode == 0, out[-3000:]
    assert {"running", "done"} <= seen
    final = status_command([str(results)])
    assert "6 planned | 6 done | 0 running | 0 failed | 0 missing" in final
    # the terminal: one overall bar redrawn in place and per-job lines; no launch listing, no bars of the jobs
    assert re.search(r"\[demo\] [█░]+ 6/6 runs \| 3\.6e\+10/3\.6e\+10 FLOPs \(100%\)", out), out[-2000:]
    assert "\x1b[1F\x1b[J[demo]" in out or "\x1b[2F\x1b[J[demo]" in out
    assert re.search(r"^  family-d\d+-L\d+ +\d\S* FLOPs  step +\d+/\d+ ", out.replace("\r", ""), re.M)
    assert "#0 : " not in out and "plan_index=0" not in out and "it/s" not in out and "Traceback" not in out
    assert "[live] 6 done, 0 running, 0 failed, 0 missing" in out
    logs = list((results / ".hydra").glob("*/sweep.log"))
    assert len(logs) == 1 and "#5 : " in logs[0].read_text()  # the listing went to the log


def test_a_wsd_branch_counts_its_cooldown_not_its_budget(tmp_path: Path) -> None:
    from harness.watch import overall

    # a chain of two runs: the trunk (10 steps, 2e9 FLOPs) and a shorter branch whose cooldown starts at step 8 of
    # 10 (its budget 1e9, its cost 2e8); the branch runs, at step 9 of its cooldown's 8..10
    runs = [{"index": 0, "run_id": "short", "model": "m", "budget": 1e9, "steps": 10, "est_seconds": 2.0,
             "role": "sweep", "flops": 2e8, "start_step": 8},
            {"index": 1, "run_id": "trunk", "model": "m", "budget": 2e9, "steps": 10, "est_seconds": 20.0,
             "role": "sweep"}]
    write_manifest(tmp_path, "toy", runs)
    _record(tmp_path, "trunk", "ok", 2e9)
    _live(tmp_path, "short", os.getpid(), 9, 1e9)
    st = sweep_state(tmp_path)
    short = next(r for r in st.runs if r.run_id == "short")
    assert short.state == "running" and short.fraction == pytest.approx(0.5) and short.cost == 2e8
    o = overall(st, ["short", "trunk"], elapsed=21.0)
    assert o["flops_all"] == pytest.approx(2.2e9) and o["flops_done"] == pytest.approx(2.1e9)
    assert o["eta"] == pytest.approx(21.0 * 1.0 / 21.0)  # 1 of 22 estimated seconds left after 21 s


def test_launched_indices_follow_the_plan_index_override() -> None:
    from omegaconf import OmegaConf

    from harness.live import launched_indices

    def cfg(*task: str):
        return OmegaConf.create({"hydra": {"overrides": {"task": list(task)}}})

    assert launched_indices(cfg("seed=1", "plan_index=range(1,3)"), 6) == [1, 2]
    assert launched_indices(cfg("plan_index=0,4,9"), 6) == [0, 4]  # outside the plan: the job refuses it itself
    assert launched_indices(cfg("plan_index=5"), 6) == [5]
    assert launched_indices(cfg("seed=1"), 3) == [0, 1, 2]


def test_plain_view_prints_at_a_modest_rate(tmp_path: Path) -> None:
    import io

    from harness.live import Renderer

    ids = _plan(tmp_path)
    out = io.StringIO()
    r = Renderer(tmp_path, ids, out, tty=False, every_s=3600)
    r.draw()
    _record(tmp_path, "run0", "ok", 1e9)
    r.draw()  # changed, but within every_s: nothing
    assert out.getvalue().count("\n") == 1 and "0/4 runs" in out.getvalue() and "\x1b" not in out.getvalue()
    r.stop()  # the final state is always printed
    assert out.getvalue().count("\n") == 2 and out.getvalue().splitlines()[-1].startswith("[toy] ")
    assert "1/4 runs" in out.getvalue().splitlines()[-1]
