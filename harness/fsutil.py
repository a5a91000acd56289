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


def say(line: str, stream: TextIO | None = None) -> None:
    """Print one line with a single write() and flush: parallel jobs sharing a pipe (joblib workers,
    PYTHONUNBUFFERED, where print() writes the text and the newline separately) never glue lines together."""
    out = stream or sys.stdout
    out.write(line + "\n")
    out.flush()
