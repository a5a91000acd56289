"""Crash-safe file replacement shared by the data cache and the result records."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, chunks: Iterable[bytes]) -> None:
    """Replace path with the chunks in one step: temp file in the same directory, fsync, os.replace, so a
    reader or a crash never sees a torn file. The file gets the umask's usual mode (mkstemp makes 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(out: Path, files: dict[str, bytes], last: str, stale: Iterable[str] = ()) -> dict[str, Path]:
    """Write a set of output files into `out`, each atomically, removing `last` (the completion mark, e.g.
    fits.json) first and writing it last, so an interrupted publish never leaves outputs that look complete;
    `stale` names earlier outputs this set no longer has (removed right after the mark). Returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    (out / last).unlink(missing_ok=True)
    for name in stale:
        (out / name).unlink(missing_ok=True)
    written = {}
    for name in [*sorted(n for n in files if n != last), last]:
        atomic_write(out / name, [files[name]])
        written[name] = out / name
    return written


def say(line: str, stream: TextIO | None = None) -> None:
    """Print one line with a single write() and flush: parallel jobs sharing a pipe (joblib workers,
    PYTHONUNBUFFERED, where print() writes the text and the newline separately) never glue lines together."""
    out = stream or sys.stdout
    out.write(line + "\n")
    out.flush()
