"""IsoFLOP sweeps end to end: `harness-sweep --multirun` through the joblib launcher trains every planned run
once, a rerun trains nothing, a SIGKILLed sweep leaves no torn or duplicate rows and resumes to exactly the
plan, and the progress line counts ok runs."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness import CONF_DIR
from harness.data import load_corpus
from harness.plan import plan_sweep
from harness.results import COLUMNS, _csv_text, read_records, write_record
from harness.sweep import planned_ids, progress_line, sweep
from tests.conftest import SWEEP_SMALL

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

SMALL = [*SWEEP_SMALL, "train.eval_windows=8", "train.progress=false"]
N_RUNS = 6
PROGRESS = re.compile(r"^\[sweep (\S+)\] (\d+)/(\d+) runs ok \| ", re.M)


def sweep_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("sweep_run", overrides=list(overrides))


@pytest.fixture
def args(text_corpus: Path, tmp_path: Path) -> list[str]:
    return [*SMALL, "data=text", f"data.path={text_corpus}", f"data.cache_dir={tmp_path / 'cache'}",
            f"results_dir={tmp_path / 'results'}"]


@pytest.fixture
def planned(args: list[str]) -> list[str]:
    """The run_ids of the plan, computed in-process (what every job must end up writing)."""
    cfg = sweep_cfg(*args)
    runs, _ = plan_sweep(cfg)
    assert len(runs) == N_RUNS
    corpus = load_corpus(cfg.data, int(cfg.model.seq_len))
    ids = planned_ids(cfg, runs, corpus.fingerprint, corpus.vocab_size)
    assert len(set(ids)) == N_RUNS
    return ids


def command(args: list[str], *extra: str) -> list[str]:
    exe = Path(sys.executable).parent / "harness-sweep"
    if not exe.exists():
        pytest.skip(f"harness-sweep not installed beside {sys.executable}")
    return [str(exe), "--multirun", *args, *extra, f"plan_index=range(0,{N_RUNS})"]


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e.pop("HYDRA_FULL_ERROR", None)
    return e


def multirun(args: list[str], cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    cwd.mkdir(exist_ok=True)
    return subprocess.run(command(args, *extra), cwd=cwd, env=env(), capture_output=True, text=True, timeout=240)


def rows(results: Path) -> list[dict[str, str]]:
    """results.csv parsed strictly: the harness header and every row complete (no torn line)."""
    text = (results / "results.csv").read_text()
    assert text.endswith("\n")
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames[: len(COLUMNS)] == COLUMNS
    out = list(reader)
    for r in out:
        assert None not in r and None not in r.values(), f"torn row {r}"
        assert all(r[c] != "" for c in COLUMNS if c != "error"), r
    return out


def files(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes() for p in sorted(results.glob("runs/*.json"))} | {
        "results.csv": (results / "results.csv").read_bytes()}


def assert_complete(results: Path, planned: list[str]) -> None:
    got = rows(results)
    ids = [r["run_id"] for r in got]
    assert len(ids) == len(set(ids)) == N_RUNS
    assert set(ids) == set(planned)
    assert all(r["status"] == "ok" and r["role"] == "sweep" for r in got)
    assert sorted(p.stem for p in (results / "runs").glob("*.json")) == sorted(planned)
    assert not list(results.glob("checkpoints/*.pt"))


# ---------------------------------------------------------------- a whole sweep, then a rerun


def test_multirun_trains_each_planned_run_once_then_skips(args, planned, tmp_path: Path) -> None:
    results = tmp_path / "results"
    out = multirun(args, tmp_path / "cwd", "hydra.launcher.n_jobs=2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "n_jobs=2" in out.stdout + out.stderr  # it went through the joblib launcher
    assert_complete(results, planned)
    got = {r["run_id"]: r for r in rows(results)}
    runs, _ = plan_sweep(sweep_cfg(*args))
    for pr, rid in zip(runs, planned):  # each job trained the run its plan_index names
        r = got[rid]
        assert (int(r["d_model"]), float(r["budget_flops"]), int(r["tokens"]), int(r["steps"])) == (
            pr.d_model, pr.budget, pr.tokens, pr.steps)
        assert r["model"] == pr.name and int(r["threads"]) == 1
    # (3) progress: one line per job, counting ok runs of this plan, the last at N/N
    progress = [(m.group(1), int(m.group(2)), int(m.group(3))) for m in PROGRESS.finditer(out.stdout)]
    assert len(progress) == N_RUNS, out.stdout[-3000:]
    assert {name for name, _, _ in progress} == {"demo"} and {n for _, _, n in progress} == {N_RUNS}
    assert all(1 <= k <= N_RUNS for _, k, _ in progress) and max(k for _, k, _ in progress) == N_RUNS

    before = files(results)
    t0 = time.time()
    again = multirun(args, tmp_path / "cwd", "hydra.launcher.n_jobs=2")
    rerun_s = time.time() - t0
    assert again.returncode == 0, again.stderr[-3000:]
    skipped = re.findall(r"run (\w+) \(.*\) already has an ok row; skipping", again.stdout)
    assert sorted(skipped) == sorted(planned)
    assert "resuming" not in again.stdout
    assert files(results) == before  # nothing retrained, results.csv byte-identical
    assert [int(m.group(2)) for m in PROGRESS.finditer(again.stdout)] == [N_RUNS] * N_RUNS
    assert rerun_s < 120, rerun_s  # no training: the time is process start-up (the bytes above prove it)


# ---------------------------------------------------------------- SIGKILL mid-sweep, then resume


def test_sigkilled_sweep_resumes_to_exactly_the_plan(args, planned, tmp_path: Path) -> None:
    results = tmp_path / "results"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cmd = command(args, "hydra.launcher.n_jobs=2", "train.checkpoint_every_s=0.2")
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.time() + 120
            done = 0
            while time.time() < deadline and proc.poll() is None:
                csv_path = results / "results.csv"  # replaced whole, so safe to read at any moment
                done = csv_path.read_text().count("\n") - 1 if csv_path.exists() else 0
                if done >= 1:
                    break
                time.sleep(0.02)
            assert proc.poll() is None, "the sweep finished before it could be killed"
            assert 1 <= done < N_RUNS
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every joblib worker
            proc.wait(timeout=30)
    for _ in range(100):  # wait until no process of the group is left writing
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)

    partial = rows(results)  # parses: no torn line, no duplicate
    ids = [r["run_id"] for r in partial]
    assert len(ids) == len(set(ids)) and 1 <= len(ids) < N_RUNS
    assert set(ids) <= set(planned)
    assert set(ids) <= {p.stem for p in results.glob("runs/*.json")}

    again = multirun(args, cwd, "hydra.launcher.n_jobs=2", "train.checkpoint_every_s=0.2")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert_complete(results, planned)
    skipped = set(re.findall(r"run (\w+) \(.*\) already has an ok row; skipping", again.stdout))
    assert set(ids) <= skipped  # what was done is not trained again
    assert max(int(m.group(2)) for m in PROGRESS.finditer(again.stdout)) == N_RUNS


# ---------------------------------------------------------------- in-process: one job, progress, repair


def test_job_trains_its_planned_run_and_prints_progress(args, planned, tmp_path: Path, capsys) -> None:
    cfg = sweep_cfg(*args, "plan_index=2", "train.threads=1")
    out = sweep(cfg)
    rec = out["record"]
    pr = out["runs"][2]
    assert rec["run_id"] == planned[2] and rec["status"] == "ok"
    assert (rec["d_model"], rec["tokens"], rec["steps"], rec["budget_flops"]) == (pr.d_model, pr.tokens, pr.steps,
                                                                                pr.budget)
    assert f"[sweep demo] 1/{N_RUNS} runs ok | {pr.budget:.3g}/" in capsys.readouterr().out


def fake_record(rid: str, fingerprint: str, status: str = "ok", budget: float = 1e9) -> dict:
    rec = {c: 1 for c in COLUMNS}
    rec.update(run_id=rid, status=status, data_fingerprint=fingerprint, role="sweep", error="", model="m",
               budget_flops=budget, dtype="float32", device="cpu", harness_version="0")
    return rec


def test_progress_line_counts_only_ok_runs_of_the_plan(args, planned, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = sweep_cfg(*args)
    runs, _ = plan_sweep(cfg)
    fp = load_corpus(cfg.data, int(cfg.model.seq_len)).fingerprint
    results = tmp_path / "results"
    write_record(results, fake_record(planned[0], fp, budget=runs[0].budget))
    write_record(results, fake_record(planned[4], fp, budget=runs[4].budget))
    write_record(results, fake_record(planned[1], fp, status="diverged"))
    write_record(results, fake_record("notplanned01", fp))
    monkeypatch.delenv("HARNESS_SWEEP_START", raising=False)
    line = progress_line(cfg, runs, planned)
    done = runs[0].budget + runs[4].budget
    total = sum(pr.budget for pr in runs)
    assert line == (f"[sweep demo] 2/{N_RUNS} runs ok | {done:.3g}/{total:.3g} FLOPs "
                    f"({100 * done / total:.0f}%)")
    monkeypatch.setenv("HARNESS_SWEEP_START", str(time.time() - 60))
    assert "ETA ~" in progress_line(cfg, runs, planned)


def test_skipped_run_restores_its_missing_csv_row(args, planned, tmp_path: Path) -> None:
    """A SIGKILL between a run's JSON write and the results.csv rebuild leaves the record without a row. The
    rerun skips that run (its JSON says ok) and must still put the row into results.csv: the analysis reads
    results.csv, and otherwise the sweep reports N/N runs ok while the fit silently lacks a run."""
    results = tmp_path / "results"
    sweep(sweep_cfg(*args, "plan_index=2", "train.threads=1"))
    sweep(sweep_cfg(*args, "plan_index=5", "train.threads=1"))
    assert len(rows(results)) == 2
    # the state a kill leaves after runs/<id>.json of the second run is written but before results.csv is
    records = read_records(results)
    (results / "results.csv").write_text(_csv_text([records[planned[2]]]))
    assert len(rows(results)) == 1
    again = sweep(sweep_cfg(*args, "plan_index=5", "train.threads=1"))
    assert again["record"]["run_id"] == planned[5]
    assert {r["run_id"] for r in rows(results)} == {planned[2], planned[5]}, "the skipped run's row is still missing"


def test_progress_jsons_and_csv_agree_after_a_sweep_job(args, planned, tmp_path: Path) -> None:
    """results.csv and runs/*.json hold the same records after a job (the JSON is the row)."""
    results = tmp_path / "results"
    sweep(sweep_cfg(*args, "plan_index=2", "train.threads=1"))
    (row,) = rows(results)
    rec = json.loads((results / "runs" / f"{planned[2]}.json").read_text())
    assert row["run_id"] == rec["run_id"] and float(row["val_bpb"]) == pytest.approx(rec["val_bpb"])
    assert int(row["tokens"]) == rec["tokens"] and float(row["flops"]) == rec["flops"]


# ---------------------------------------------------------------- the dry run checks what later stages would refuse


@pytest.mark.parametrize("override", [
    "sweep.holdout.multiples=[0.5,2]", "sweep.holdout.multiples=[2,x]", "sweep.holdout.multiple=1",
    "sweep.holdout.budgets=[]", "sweep.holdout.budgets=[-1e12]", "sweep.holdout.seeds=[0,0]", "sweep.holdout.seeds=[]",
])
def test_dry_run_refuses_bad_held_out_settings_as_validate_does(args: list[str], tmp_path: Path,
                                                                 override: str) -> None:
    """The held-out ladder trains after the whole grid: its settings are refused by the dry run, with the very
    message harness-validate gives (one check, harness.confcheck.check_holdout), before anything is written."""
    from harness.errors import HarnessError
    from harness.validate import validate

    cfg = sweep_cfg(*args, override)
    with pytest.raises(HarnessError) as dry:
        sweep(cfg)
    with pytest.raises(HarnessError) as later:
        validate(cfg)
    assert str(dry.value) == str(later.value) and "sweep.holdout." in str(dry.value)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("override", ["train.warmup_frac=2", "train.min_lr_ratio=-1", "train.eval_windows=0",
                                      "train.curve_points=-2", "role=holdoutt", "train.batch_size=0"])
def test_dry_run_refuses_bad_train_settings(args: list[str], tmp_path: Path, override: str) -> None:
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match=re.escape(override.split("=")[0])):
        sweep(sweep_cfg(*args, override))
    assert not (tmp_path / "results").exists()


def test_dry_run_warns_that_three_sizes_give_zero_width_intervals(args: list[str], capsys) -> None:
    sweep(sweep_cfg(*args))  # SWEEP_SMALL: 3 sizes per budget
    err = capsys.readouterr().err
    assert "warning: sweep.sizes_per_budget=3: a parabola through exactly 3 sizes" in err and "zero-width" in err
    out = sweep(sweep_cfg(*args, "sweep.sizes_per_budget=4", "sweep.d_model_max=64", "sweep.budgets=[2e9,4e9]"))
    assert len({pr.params for pr in out["runs"] if pr.budget == 2e9}) == 4
    assert "sizes_per_budget" not in capsys.readouterr().err
