"""harness.results: the record schema, crash-safe concurrent writes, foreign rows, refusing mixed directories."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.results import (
    COLUMNS,
    REQUIRED,
    check_compatible,
    check_results_dir,
    find_ok,
    read_csv_rows,
    read_records,
    write_record,
)


def make_record(rid: str, fingerprint: str = "fp-1", status: str = "ok", **kw) -> dict:
    rec = {c: 0 for c in COLUMNS}
    rec.update(run_id=rid, model="nano", status=status, role="sweep", data_fingerprint=fingerprint,
               budget_flops=1e9, params_total=1000, val_bpb=2.5, device="cpu", dtype="float32", error="",
               harness_version="0.1.0")
    rec.update(kw)
    return rec


def parse_csv(path: Path) -> list[dict[str, str]]:
    text = path.read_text()
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert header[: len(COLUMNS)] == COLUMNS
    assert all(len(r) == len(header) for r in body), "torn or ragged row"
    return [dict(zip(header, r)) for r in body]


def _writer(results_dir: str, worker: int, n: int) -> None:
    for i in range(n):
        write_record(Path(results_dir), make_record(f"w{worker}-r{i}", budget_flops=float(i), note="x" * 200))
    # rewrite one of this worker's records: a duplicate run_id must not add a row
    write_record(Path(results_dir), make_record(f"w{worker}-r0", val_bpb=1.0, note="x" * 200))


def _reader(results_dir: str, stop, bad) -> None:
    path = Path(results_dir) / "results.csv"
    while not stop.is_set():
        if path.exists():
            try:
                parse_csv(path)
            except Exception as e:
                bad.put(repr(e))
                return


def test_concurrent_writers_never_tear_rows(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    workers, per = 4, 15
    stop, bad = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(tmp_path), stop, bad))
    reader.start()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, per)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    stop.set()
    reader.join(30)
    assert bad.empty(), bad.get()
    rows = parse_csv(tmp_path / "results.csv")
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)) == workers * per
    assert len(list((tmp_path / "runs").glob("*.json"))) == workers * per
    assert not list(tmp_path.rglob("*.tmp")), "temp files left behind"
    by_id = {r["run_id"]: r for r in rows}
    assert all(float(by_id[f"w{w}-r0"]["val_bpb"]) == 1.0 for w in range(workers))
    assert all(r["note"] == "x" * 200 for r in rows)  # extra columns survive the rebuild


def test_write_record_roundtrip_and_order(tmp_path: Path) -> None:
    write_record(tmp_path, make_record("b", budget_flops=3e9, params_total=10))
    write_record(tmp_path, make_record("a", budget_flops=1e9, params_total=20))
    write_record(tmp_path, make_record("h", budget_flops=1e8, role="holdout"))
    rows = parse_csv(tmp_path / "results.csv")
    assert [r["run_id"] for r in rows] == ["h", "a", "b"]  # role, then budget, then size
    rec = json.loads((tmp_path / "runs" / "a.json").read_text())
    assert rec == make_record("a", budget_flops=1e9, params_total=20)
    assert find_ok(tmp_path, "a")["run_id"] == "a"
    assert find_ok(tmp_path, "zzz") is None


def test_write_record_requires_all_columns(tmp_path: Path) -> None:
    rec = make_record("x")
    del rec["val_bpb"]
    with pytest.raises(ValueError, match="val_bpb"):
        write_record(tmp_path, rec)
    assert not (tmp_path / "results.csv").exists()


def test_find_ok_ignores_failed_runs(tmp_path: Path) -> None:
    write_record(tmp_path, make_record("d", status="diverged"))
    assert find_ok(tmp_path, "d") is None


def test_foreign_csv_rows_preserved(tmp_path: Path) -> None:
    """Rows of results.csv without a runs/*.json (copied or hand-made) survive the rebuild."""
    header = ["run_id", "status", "data_fingerprint", "params_total", "flops", "tokens", "val_bpb", "budget_flops",
              "role", "comment"]
    lines = [",".join(header), "old1,ok,fp-1,5000,1e9,100,3.1,1e9,sweep,hand made",
             "old2,ok,fp-1,9000,1e9,100,3.0,1e9,sweep,"]
    (tmp_path / "results.csv").write_text("\n".join(lines) + "\n")
    assert find_ok(tmp_path, "old1") is None  # a row without a record of its own is not a finished run
    write_record(tmp_path, make_record("new"))
    rows = {r["run_id"]: r for r in parse_csv(tmp_path / "results.csv")}
    assert set(rows) == {"old1", "old2", "new"}
    assert rows["old1"]["val_bpb"] == "3.1" and rows["old1"]["comment"] == "hand made"
    assert rows["old2"]["params_total"] == "9000"
    assert set(read_records(tmp_path)) == {"old1", "old2", "new"}


def test_incompatible_schema_refused(tmp_path: Path) -> None:
    before = "step,loss\n1,2.0\n"
    (tmp_path / "results.csv").write_text(before)
    with pytest.raises(HarnessError, match=r"not a harness results.csv"):
        read_csv_rows(tmp_path / "results.csv")
    with pytest.raises(HarnessError, match=r"not a harness results.csv"):
        check_compatible(tmp_path, "fp-1")
    with pytest.raises(HarnessError, match=r"not a harness results.csv"):
        write_record(tmp_path, make_record("x"))
    assert (tmp_path / "results.csv").read_text() == before
    # a refused write must not leave a record behind that a later reader would pick up
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_missing_required_column_named(tmp_path: Path) -> None:
    cols = sorted(REQUIRED - {"data_fingerprint"})
    (tmp_path / "results.csv").write_text(",".join(cols) + "\n")
    with pytest.raises(HarnessError, match="data_fingerprint"):
        read_csv_rows(tmp_path / "results.csv")


def test_other_fingerprint_refused(tmp_path: Path) -> None:
    write_record(tmp_path, make_record("a", fingerprint="fp-1"))
    check_compatible(tmp_path, "fp-1")  # same corpus: fine
    with pytest.raises(HarnessError, match="another corpus"):
        check_compatible(tmp_path, "fp-2")
    check_compatible(tmp_path / "fresh", "fp-2")  # an empty directory takes anything


def recipe(lr: str, schedule: str, seq_len: int = 128, batch_size: int = 16) -> dict[str, str]:
    return {"lr_rule": lr, "schedule": schedule, "seq_len": str(seq_len), "batch_size": str(batch_size)}


def test_sweep_rows_of_another_recipe_refused(tmp_path: Path) -> None:
    """A directory whose sweep rows were trained under another LR rule, schedule, context or batch (a committed demo
    from before its rule changed) is refused with the fix; held-out and LR-sweep rows, other budgets and an empty
    dir are fine."""
    same = {"seq_len": 128, "batch_size": 16.0}  # a float as a CSV-read record holds it
    write_record(tmp_path, make_record("a", lr_rule="rule.json@aaa", schedule="wsd", budget_flops=1e9, **same))
    write_record(tmp_path, make_record("b", lr_rule="rule.json@aaa", schedule="wsd", budget_flops=3e9, **same))
    write_record(tmp_path, make_record("h", lr_rule="rule.json@bbb", schedule="cosine", role="holdout", seq_len=64))
    write_record(tmp_path, make_record("t", lr_rule="fixed", schedule="wsd", role="tune", batch_size=8))
    write_record(tmp_path, make_record("u", lr_rule="", schedule="", seq_len=None, batch_size=None))  # hand-made
    check_compatible(tmp_path, recipe=recipe("rule.json@aaa", "wsd"))
    with pytest.raises(HarnessError, match=r"2 sweep run\(s\) trained under another recipe \(lr_rule rule.json@aaa, "
                                           r"schedule wsd, seq_len 128, batch_size 16; this sweep: lr_rule "
                                           r"rule.json@bbb, schedule wsd, seq_len 128, batch_size 16\).*move"):
        check_compatible(tmp_path, recipe=recipe("rule.json@bbb", "wsd"))
    with pytest.raises(HarnessError, match=r"this sweep: lr_rule rule\.json@aaa, schedule cosine"):
        check_compatible(tmp_path, recipe=recipe("rule.json@aaa", "cosine"))
    # the context or the batch changed between a run and its resume: the loss moves as much as with another LR
    with pytest.raises(HarnessError, match=r"seq_len 128, batch_size 16; this sweep: .*seq_len 64, batch_size 16"):
        check_compatible(tmp_path, recipe=recipe("rule.json@aaa", "wsd", seq_len=64))
    with pytest.raises(HarnessError, match=r"this sweep: .*seq_len 128, batch_size 8\)"):
        check_compatible(tmp_path, recipe=recipe("rule.json@aaa", "wsd", batch_size=8))
    check_compatible(tmp_path / "fresh", recipe=recipe("auto", "cosine"))
    check_compatible(tmp_path, "fp-1", recipe("rule.json@aaa", "wsd"))  # the sweep's dry run: one read, both checks
    with pytest.raises(HarnessError, match="another recipe"):
        check_compatible(tmp_path, "fp-1", recipe("rule.json@bbb", "wsd"))


def test_results_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("hello")
    with pytest.raises(HarnessError, match="is a file"):
        check_results_dir(f)
    check_results_dir(tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"status": "ok"}'])
def test_a_damaged_run_record_is_one_error_naming_it(tmp_path: Path, content: str) -> None:
    from harness.results import find_ok, read_records

    (tmp_path / "runs").mkdir()
    bad = tmp_path / "runs" / "abc.json"
    bad.write_text(content)
    for read in (lambda: read_records(tmp_path), lambda: find_ok(tmp_path, "abc")):
        with pytest.raises(HarnessError, match=r"abc\.json' is empty or not a run record; delete it"):
            read()


def test_a_run_held_by_another_process_is_refused_and_the_lock_dies_with_it(tmp_path: Path) -> None:
    """Two processes training one run interleaved its curve file (a rerun beside a killed sweep's orphaned
    workers); the second now refuses, naming the first's pid, and a SIGKILLed holder leaves no stale lock."""
    import signal
    import subprocess
    import sys
    import time

    from harness.results import run_lock

    code = ("import sys, time; from pathlib import Path; from harness.results import run_lock\n"
            "with run_lock(Path(sys.argv[1]), 'abc'):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        held = rf"run abc is being trained by another process \(pid {holder.pid}\)"
        with pytest.raises(HarnessError, match=held), run_lock(tmp_path, "abc"):
            pass
        with run_lock(tmp_path, "other"):  # another run of the same directory is free
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    time.sleep(0.05)
    with run_lock(tmp_path, "abc"):  # the kernel dropped the dead holder's lock
        assert (tmp_path / "locks" / "abc.lock").read_text() == str(os.getpid())
