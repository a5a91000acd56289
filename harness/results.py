"""The run record: its schema, its crash-safe write, and reading a results directory back.

Layout of a results directory:
    runs/<run_id>.json   one record per run, written atomically (temp file + fsync + rename)
    results.csv          every record as one row, rebuilt atomically under an exclusive lock
A crash, a SIGKILL or a parallel writer can therefore never leave a torn or duplicate row: a record is
either wholly there or not, and results.csv is replaced whole. Rows already in results.csv whose JSON is
missing (a copied or hand-made CSV) are kept when it is rebuilt.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.fsutil import atomic_write

COLUMNS = [
    "run_id", "model", "n_layer", "n_head", "d_model", "d_ff", "seq_len", "vocab_size",
    "params_total", "params_nonembedding", "params_scaling", "flops_per_token", "flops_per_token_6n",
    "budget_flops", "flops", "tokens", "steps", "batch_size", "lr", "train_loss", "val_loss", "val_bpb",
    "status", "role", "seed", "data_fingerprint", "device", "dtype", "compile", "threads", "world_size",
    "wall_seconds", "tokens_per_second", "harness_version", "error", "lr_rule", "tokenizer", "epochs", "bpb_method",
    "schedule", "cooldown_frac", "cooldown_shape", "warmup_steps",
]
REQUIRED = {"run_id", "status", "data_fingerprint", "params_total", "flops", "tokens", "val_bpb"}
STATUSES = ("ok", "diverged", "failed")


def atomic_write_text(path: Path, text: str) -> None:
    """Replace path with text in one step (see harness.fsutil.atomic_write)."""
    atomic_write(path, [text.encode()])


@contextmanager
def locked(results_dir: Path, exclusive: bool = True) -> Iterator[None]:
    """fcntl lock on results_dir/.lock, shared for readers and exclusive for writers."""
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def run_lock(results_dir: Path, run_id: str) -> Iterator[None]:
    """Hold results_dir/locks/<run_id>.lock while a run trains, so a second process (a rerun beside a killed
    sweep's orphaned workers, the same command twice) refuses it instead of interleaving its curve and checkpoint.
    The kernel drops the lock when its process dies, however it dies, so no lock outlives its run."""
    path = results_dir / "locks" / f"{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise HarnessError(f"run {run_id} is being trained by another process (pid {pid}) in "
                               f"{str(results_dir)!r}; wait for it to finish (or stop it), then rerun") from None
        fh.truncate(0)
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_results_dir(results_dir: Path, key: str = "results_dir") -> None:
    """Refuse an output directory (results_dir, or harness-analyze's out) that is a file, under a file or not
    writable, before anything is trained or fitted; `key` is the setting the message names."""
    if results_dir.exists() and not results_dir.is_dir():
        raise HarnessError(f"{key} {str(results_dir)!r} is a file; point {key} at a directory")
    probe = results_dir.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise HarnessError(f"{key} {str(results_dir)!r}: {str(probe)!r} is a file, not a directory; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise HarnessError(
            f"{key} {str(results_dir)!r} cannot be written ({str(probe)!r} is read-only or not yours); point "
            f"{key} at a writable directory"
        )


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a results.csv, refusing one whose header lacks the harness schema."""
    if not path.exists():
        return []
    text = path.read_text()
    if not text.strip():
        return []
    reader = csv.DictReader(io.StringIO(text))
    missing = REQUIRED - set(reader.fieldnames or [])
    if missing:
        raise HarnessError(
            f"{str(path)!r} is not a harness results.csv (missing columns {sorted(missing)}); "
            "use a fresh results_dir instead of mixing schemas"
        )
    return list(reader)


def read_record(path: Path) -> dict[str, Any]:
    """One run's JSON record; a file that is empty or not a record (a disk that filled up, a hand edit) is one error
    naming it, not a traceback (records are written atomically, so a kill never leaves one half-written)."""
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        rec = None
    if not isinstance(rec, dict) or "run_id" not in rec:
        raise HarnessError(f"run record {str(path)!r} is empty or not a run record; delete it (the run is then "
                           "trained again) or restore it from a copy")
    return rec


def read_records(results_dir: Path) -> dict[str, dict[str, Any]]:
    """All records of a directory keyed by run_id: CSV rows, overridden by per-run JSON records."""
    records: dict[str, dict[str, Any]] = {r["run_id"]: dict(r) for r in read_csv_rows(results_dir / "results.csv")}
    runs = results_dir / "runs"
    if runs.is_dir():
        for p in sorted(runs.glob("*.json")):
            rec = read_record(p)
            records[rec["run_id"]] = rec
    return records


def check_compatible(results_dir: Path, fingerprint: str | None = None,
                     recipe: dict[str, str] | None = None) -> None:
    """Refuse to add runs to a directory whose results would not fit with them, from one read of its records:
    - fingerprint: results on another corpus (never mix fits);
    - recipe ({column: value}, e.g. lr_rule, schedule, seq_len, batch_size): sweep rows trained under another LR
      source (rule file and hash, auto, fixed), schedule, context or batch, e.g. a committed results/demo from
      before its config changed. Rows that do not record a field (a hand-made table) are not judged on it, and
      other budgets or sizes are fine: they extend the sweep."""
    if not results_dir.is_dir():
        return
    with locked(results_dir, exclusive=False):
        records = read_records(results_dir)
    if fingerprint is not None:
        _check_fingerprints(records, fingerprint, results_dir)
    if recipe is not None:
        _check_recipe(records, recipe, results_dir)


def _check_fingerprints(records: dict[str, dict[str, Any]], fingerprint: str, results_dir: Path) -> None:
    others = {str(r.get("data_fingerprint")) for r in records.values()} - {fingerprint}
    if others:
        raise HarnessError(
            f"{str(results_dir)!r} holds results on another corpus (fingerprint {sorted(others)[0]}, this run: "
            f"{fingerprint}); use a different results_dir"
        )


def _recorded(value: Any) -> str:
    """A record's field as the recipe compares it ('' when absent); 16.0 from a CSV reads as 16."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _check_recipe(records: dict[str, dict[str, Any]], recipe: dict[str, str], results_dir: Path) -> None:
    rows = [{k: _recorded(r.get(k)) for k in recipe} for r in records.values() if str(r.get("role")) == "sweep"]
    other = [row for row in rows if any(v and v != recipe[k] for k, v in row.items())]
    if other:
        first = min(other, key=lambda row: tuple(row.values()))
        theirs = ", ".join(f"{k} {first[k] or '?'}" for k in recipe)
        ours = ", ".join(f"{k} {v}" for k, v in recipe.items())
        raise HarnessError(
            f"{str(results_dir)!r} holds {len(other)} sweep run(s) trained under another recipe ({theirs}; this "
            f"sweep: {ours}), and fitting them together would mix the two; move that directory aside (or set "
            "results_dir=...) and rerun")


def recipe_of(cfg: Any, lr: str) -> dict[str, str]:
    """The fields a sweep's rows must share (check_compatible): LR source, schedule, context and batch."""
    return {"lr_rule": lr, "schedule": str(cfg.train.schedule), "seq_len": str(int(cfg.model.seq_len)),
            "batch_size": str(int(cfg.train.batch_size))}


def find_ok(results_dir: Path, rid: str) -> dict[str, Any] | None:
    """The ok record of run rid written by a run into this directory (so a resumed sweep skips it).

    Rows of results.csv without a runs/ record (a committed reference such as results/demo, or a hand-made
    table) do not count as done: rerunning trains them and replaces their rows."""
    p = results_dir / "runs" / f"{rid}.json"
    if p.exists():
        rec = read_record(p)
        return rec if rec.get("status") == "ok" else None
    return None


def _csv_text(records: list[dict[str, Any]]) -> str:
    extra = sorted({k for r in records for k in r} - set(COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS + extra, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS + extra})
    return buf.getvalue()


def write_record(results_dir: Path, record: dict[str, Any]) -> None:
    """Persist one run: its JSON record atomically, then results.csv rebuilt whole under the lock."""
    missing = [c for c in COLUMNS if c not in record]
    if missing:
        raise ValueError(f"record lacks columns {missing}")
    with locked(results_dir, exclusive=True):
        records = read_records(results_dir)  # refuses an incompatible CSV before anything is written
        _check_fingerprints(records, str(record["data_fingerprint"]), results_dir)
        atomic_write_text(results_dir / "runs" / f"{record['run_id']}.json", json.dumps(record, indent=1))
        records[record["run_id"]] = record
        atomic_write_text(results_dir / "results.csv", _csv_text(_ordered(records)))


def _ordered(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        records.values(),
        key=lambda r: (str(r.get("role")), float(r.get("budget_flops") or 0), float(r.get("params_total") or 0),
                       str(r["run_id"])),
    )


def sync_csv(results_dir: Path) -> None:
    """Rebuild results.csv when a record in runs/ has no row in it (a kill between the two writes)."""
    with locked(results_dir, exclusive=True):
        records = read_records(results_dir)
        have = {r["run_id"] for r in read_csv_rows(results_dir / "results.csv")}
        if set(records) - have:
            atomic_write_text(results_dir / "results.csv", _csv_text(_ordered(records)))
